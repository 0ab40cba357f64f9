"""`vfstack vf setup`: one entry for both modes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._args import SetupRequest
from ._discovery import SYSFS_ROOT
from ._netlink import Netlink, open_netlink
from ._sriov import setup_sriov
from ._vmdq import setup_vmdq


def setup_vfs(
    request: SetupRequest,
    sysfs_root: str | Path = SYSFS_ROOT,
    netlink: Netlink | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """Give PF `request.pf` `request.num` VFs (SR-IOV) or VMDq ports, VF i
    with MAC base+i and the VLAN, if asked.

    Raises VfError before changing anything when the request does not fit
    the system, VfSetupError when a step failed (after putting back what
    had been changed), OSError when the kernel refuses the VF count.
    """
    if netlink is None:
        with open_netlink() as opened:
            return setup_vfs(request, sysfs_root, opened, say)
    if request.mode == "vmdq":
        return setup_vmdq(request, netlink, say)
    return setup_sriov(request, sysfs_root, netlink, say)
