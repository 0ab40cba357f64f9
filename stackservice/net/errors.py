"""Exceptions of the net layer (STYLE.md house rule 6)."""

from __future__ import annotations

from stackservice.net.drops import DropReason


class LocalProtocolError(Exception):
    """The caller misused the API (e.g. a payload larger than the MTU)."""


class RemoteProtocolError(Exception):
    """A peer sent something invalid."""


class MalformedFrame(RemoteProtocolError):
    """A received frame failed validation; `reason` is the counter to bump."""

    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason)
        self.reason = reason
