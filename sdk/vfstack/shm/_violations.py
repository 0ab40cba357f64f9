"""What a breach of the shared-memory contract raises (vfstack.shm "Trust")."""

from __future__ import annotations

__all__ = ["BadRecord", "CorruptRing", "Violation"]


class Violation(Exception):
    """The other side broke the contract: the session cannot go on.

    `reason` says how (for logs, drop counters and the session's error).
    The stack ends that session only; the SDK raises SDKError.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRecord(Violation):
    """A record breaks the layout: unknown op or kind, a slot out of
    range, non-zero padding, an argument out of range or not zero."""


class CorruptRing(Violation):
    """A ring's header or index is impossible (the other side's index
    moved backwards or beyond the capacity, or the geometry differs)."""
