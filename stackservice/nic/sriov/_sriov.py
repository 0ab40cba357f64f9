"""SR-IOV mode: the PF's VF count (sysfs) and each VF's MAC and VLAN
(netlink, through the PF). Everything is checked before the first change;
a failed step puts back the VF settings changed before it and, when the
count had changed, the old count and the old VFs' settings. A restore puts
back the count and every VF setting the PF had before setup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._args import SetupRequest
from ._changes import LinkStep, run_all, run_steps, set_num_vfs
from ._discovery import PhysicalFunction, read_pf
from ._errors import VfError, describe
from ._journal import SriovState
from ._mac import check_mac_clashes, mac_sequence
from ._netlink import Netlink, VfSettings, settings_change, settings_text, vf_request


@dataclass(frozen=True, slots=True)
class SriovPlan:
    """A checked SR-IOV setup: the PF as found, each VF's wanted settings
    and (when settings are asked for) the PF's ifindex."""

    pf: PhysicalFunction
    num: int
    targets: dict[int, VfSettings]
    pf_index: int | None
    found: SriovState


def check_sriov(request: SetupRequest, sysfs_root: str | Path, netlink: Netlink) -> SriovPlan:
    """Raises VfError when the request does not fit the system."""
    pf = read_pf(request.pf, sysfs_root)
    if request.num > pf.total_vfs:
        raise VfError(f"--num: {pf.name} supports at most {pf.total_vfs} VFs, not {request.num}")
    macs = mac_sequence(request.mac_base, request.num) if request.mac_base else []
    targets = {
        i: VfSettings(mac=macs[i] if macs else None, vlan=request.vlan) for i in range(request.num)
    }
    if request.mac_base is None and request.vlan is None:
        return SriovPlan(pf, request.num, {}, None, _found(pf, netlink))
    pf_index = netlink.index(pf.name)
    if pf_index is None:
        raise VfError(f"--pf: {pf.name} is in sysfs but not in this network namespace")
    # The PF's own VFs get new MACs (or go away): their current MACs do not count.
    own = {vf.netdev for vf in pf.vfs if vf.netdev}
    in_use = {name: mac for name, mac in netlink.addresses().items() if name not in own}
    check_mac_clashes({f"VF {i}": mac for i, mac in enumerate(macs)}, in_use)
    found = SriovState(pf.pci_address, pf.num_vfs, netlink.vf_settings(pf_index))
    return SriovPlan(pf, request.num, targets, pf_index, found)


def _found(pf: PhysicalFunction, netlink: Netlink) -> SriovState:
    """The PF as it is, for the journal, when setup only sets the count.
    That needs no netlink, so a PF outside this network namespace is no
    error: its VFs' settings are then unknown (None)."""
    if not pf.num_vfs:
        return SriovState(pf.pci_address, 0, {})
    pf_index = netlink.index(pf.name)
    vfs = None if pf_index is None else netlink.vf_settings(pf_index)
    return SriovState(pf.pci_address, pf.num_vfs, vfs)


def setup_sriov(
    plan: SriovPlan, sysfs_root: str | Path, netlink: Netlink, say: Callable[[str], None]
) -> None:
    """Run a checked setup. Raises VfSetupError when a step failed (after
    putting back what had been changed), OSError when the kernel refuses
    the VF count."""
    previous = set_num_vfs(plan.pf.name, plan.num, sysfs_root)
    counted = "unchanged" if previous == plan.num else f"was {previous}"
    say(f"PF {plan.pf.name}: {plan.num} VFs ({counted})")
    if plan.pf_index is None:
        return
    # Re-created VFs start from the driver's defaults, not from `found`.
    current = (plan.found.vfs or {}) if previous == plan.num else netlink.vf_settings(plan.pf_index)
    steps = {}
    for i, target in plan.targets.items():
        change, undo = settings_change(target, current.get(i, VfSettings()))
        if not change.is_empty():
            restore = LinkStep("set", vf_request(plan.pf_index, i, undo), f"restore VF {i}")
            steps[i] = LinkStep(
                "set",
                vf_request(plan.pf_index, i, change),
                f"VF {i}: {settings_text(change)}",
                None if undo.is_empty() else restore,
            )

    def put_back_count() -> list[str]:
        # The undo steps cannot bring back VFs the new count re-created.
        if previous == plan.num:
            return []
        return _put_back(plan.pf.name, plan.found, plan.pf_index, sysfs_root, netlink)

    run_steps(list(steps.values()), netlink.issue, put_back_count)
    for i in plan.targets:
        say(steps[i].what if i in steps else f"VF {i}: unchanged")


def restore_sriov(
    name: str,
    found: SriovState,
    sysfs_root: str | Path,
    netlink: Netlink,
    say: Callable[[str], None],
) -> list[str]:
    """Put PF `name` back as `found`: its VF count, then every VF setting.

    Raises VfError, before any change, when the PF is gone, is another
    device now (its PCI address), or is not in this network namespace.
    Returns what could not be put back, after trying everything else.
    """
    pf = read_pf(name, sysfs_root)
    if found.pci_address and pf.pci_address != found.pci_address:
        raise VfError(
            f"{name} is PCI {pf.pci_address} now, the journal is of PCI {found.pci_address}"
        )
    if found.num_vfs > pf.total_vfs:
        raise VfError(
            f"{name} supports at most {pf.total_vfs} VFs, the journal has {found.num_vfs}"
        )
    pf_index = netlink.index(name) if found.vfs else None
    if found.vfs and pf_index is None:
        raise VfError(f"{name} is in sysfs but not in this network namespace")
    if found.vfs is None and found.num_vfs:
        say(f"PF {name}: setup could not read its VFs' settings; they get the driver's defaults")
    return _put_back(name, found, pf_index, sysfs_root, netlink, say)


def _put_back(
    name: str,
    found: SriovState,
    pf_index: int | None,
    sysfs_root: str | Path,
    netlink: Netlink,
    say: Callable[[str], None] | None = None,
) -> list[str]:
    """The VF count of `found` first (a new count re-creates the VFs, with
    the driver's defaults), then each VF's settings that differ from it,
    the last VF first. Returns what could not be put back; goes on past a
    VF that fails, since every other one still helps."""
    try:
        previous = set_num_vfs(name, found.num_vfs, sysfs_root)
    except OSError as exc:
        return [f"restoring {found.num_vfs} VFs on {name}: {exc}"]
    if previous != found.num_vfs and say is not None:
        say(f"PF {name}: {found.num_vfs} VFs (was {previous})")
    if not found.vfs or pf_index is None:
        return []
    try:
        current = netlink.vf_settings(pf_index)
    except OSError as exc:
        return [f"reading the VFs of {name}: {describe(exc)}"]
    steps, failed = [], []
    for i in sorted(found.vfs, reverse=True):
        change, _ = settings_change(found.vfs[i], current.get(i, VfSettings()))
        if change.is_empty():
            continue
        what = f"VF {i}: {settings_text(change)}"
        try:
            steps.append(LinkStep("set", vf_request(pf_index, i, change), what))
        except VfError as exc:  # a value this kernel would refuse
            failed.append(f"{what}: {exc}")
    return failed + run_all(steps, netlink.issue, say)
