"""The two ways a VF request fails, and a failure in one line."""

from __future__ import annotations

import os

from pyroute2 import NetlinkError


class VfError(ValueError):
    """A request that cannot be carried out as asked (no such PF, no SR-IOV,
    too many VFs, a bad MAC or VLAN, an address clash). Raised before
    anything is changed."""


class VfSetupError(RuntimeError):
    """A step failed after others had changed the system; the message says
    what failed and whether everything was put back."""


def describe(exc: Exception) -> str:
    """What went wrong, without the exception's type: the errno's text for
    a netlink or OS error."""
    if isinstance(exc, NetlinkError):
        return os.strerror(exc.code) if exc.code else str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
