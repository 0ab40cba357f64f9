"""`vfstack vf setup` and `vfstack vf restore`: the journal kept between
them, and the mode (SR-IOV or VMDq) each PF is handled in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._args import SetupRequest
from ._discovery import SYSFS_ROOT
from ._errors import VfError, VfSetupError
from ._journal import Journal, JournalStore, SriovState, resolve_journal_dir
from ._netlink import Netlink, open_netlink
from ._sriov import check_sriov, restore_sriov, setup_sriov
from ._vmdq import check_vmdq, restore_vmdq, setup_vmdq


def setup_vfs(
    request: SetupRequest,
    sysfs_root: str | Path = SYSFS_ROOT,
    netlink: Netlink | None = None,
    say: Callable[[str], None] = print,
    journal_dir: str | Path | None = None,
) -> None:
    """Give PF `request.pf` `request.num` VFs (SR-IOV) or VMDq ports, VF i
    with MAC base+i and the VLAN, if asked.

    Before its first change it writes what it found to the PF's journal in
    `journal_dir` (see `resolve_journal_dir`), unless the PF has one: that
    one holds the state before an earlier setup, and `restore_vfs` puts
    that back. A failed setup leaves the journal too (restore then finds
    little or nothing to do).

    Raises VfError before changing anything when the request does not fit
    the system (or the PF's journal is of the other mode, or cannot be
    read or written), VfSetupError when a step failed (after putting back
    what had been changed), OSError when the kernel refuses the VF count.
    """
    if netlink is None:
        with open_netlink() as opened:
            return setup_vfs(request, sysfs_root, opened, say, journal_dir)
    store = JournalStore(resolve_journal_dir(journal_dir))
    kept = store.load(request.pf)
    if kept is not None and kept.mode != request.mode:
        raise VfError(
            f"--mode: {request.pf} was set up in {kept.mode} mode (journal "
            f"{store.path(request.pf)}); run `vfstack vf restore --pf {request.pf}` first"
        )
    if request.mode == "vmdq":
        vmdq = check_vmdq(request, netlink)
        if kept is None:
            store.create(Journal(request.pf, vmdq.found))
        return setup_vmdq(vmdq, netlink, say)
    sriov = check_sriov(request, sysfs_root, netlink)
    if kept is None:
        store.create(Journal(request.pf, sriov.found))
    return setup_sriov(sriov, sysfs_root, netlink, say)


def restore_vfs(
    pf: str,
    sysfs_root: str | Path = SYSFS_ROOT,
    netlink: Netlink | None = None,
    say: Callable[[str], None] = print,
    journal_dir: str | Path | None = None,
) -> None:
    """Put PF `pf` back as its journal says the first `setup_vfs` found it
    (VF count, each VF's MAC, VLAN, QoS, spoof check, trust, link state and
    rate; or the VMDq ports and their MACs), then remove the journal.

    Raises VfError, before any change, when there is no journal (nothing
    to restore), it cannot be read, or it does not fit the system (the PF
    gone or another device); VfSetupError when something could not be put
    back: the journal stays, and a restore run again retries what is
    still different.
    """
    store = JournalStore(resolve_journal_dir(journal_dir))
    journal = store.load(pf)
    path = store.path(pf)
    if journal is None:
        raise VfError(
            f"nothing to restore on {pf}: no journal {path} "
            f"(no `vfstack vf setup --pf {pf}` since the last restore)"
        )
    if netlink is None:
        with open_netlink() as opened:
            return restore_vfs(pf, sysfs_root, opened, say, journal_dir)
    changed: list[str] = []

    def tell(line: str) -> None:
        changed.append(line)
        say(line)

    if isinstance(journal.found, SriovState):
        failed = restore_sriov(pf, journal.found, sysfs_root, netlink, tell)
    else:
        failed = restore_vmdq(pf, journal.found, netlink, tell)
    if failed:
        raise VfSetupError(
            f"{pf}: could not put back {'; '.join(failed)}; the journal {path} stays: "
            f"run `vfstack vf restore --pf {pf}` again"
        )
    store.remove(pf)
    done = "restored" if changed else "already"
    say(f"PF {pf}: {done} as before `vfstack vf setup`; journal {path} removed")
