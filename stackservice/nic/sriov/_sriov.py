"""SR-IOV mode: the PF's VF count (sysfs) and each VF's MAC and VLAN
(netlink, through the PF). Everything is checked before the first change;
a failed step puts back the VF settings changed before it and, when the
count had changed, the old count and the old VFs' settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._args import SetupRequest
from ._changes import LinkStep, run_steps, set_num_vfs
from ._discovery import PhysicalFunction, read_pf
from ._errors import VfError, describe
from ._mac import check_mac_clashes, mac_sequence
from ._netlink import Netlink, VfSettings, settings_change, settings_text, vf_request


@dataclass(frozen=True, slots=True)
class _SriovPlan:
    """A checked SR-IOV setup: the PF, each VF's wanted settings, and (when
    settings are asked for) the PF's ifindex and its VFs' settings before."""

    pf: PhysicalFunction
    num: int
    targets: dict[int, VfSettings]
    pf_index: int | None
    before: dict[int, VfSettings]


def _check_sriov(request: SetupRequest, sysfs_root: str | Path, netlink: Netlink) -> _SriovPlan:
    pf = read_pf(request.pf, sysfs_root)
    if request.num > pf.total_vfs:
        raise VfError(f"--num: {pf.name} supports at most {pf.total_vfs} VFs, not {request.num}")
    macs = mac_sequence(request.mac_base, request.num) if request.mac_base else []
    targets = {
        i: VfSettings(mac=macs[i] if macs else None, vlan=request.vlan) for i in range(request.num)
    }
    if request.mac_base is None and request.vlan is None:
        return _SriovPlan(pf, request.num, {}, None, {})
    pf_index = netlink.index(pf.name)
    if pf_index is None:
        raise VfError(f"--pf: {pf.name} is in sysfs but not in this network namespace")
    # The PF's own VFs get new MACs (or go away): their current MACs do not count.
    own = {vf.netdev for vf in pf.vfs if vf.netdev}
    in_use = {name: mac for name, mac in netlink.addresses().items() if name not in own}
    check_mac_clashes({f"VF {i}": mac for i, mac in enumerate(macs)}, in_use)
    return _SriovPlan(pf, request.num, targets, pf_index, netlink.vf_settings(pf_index))


def setup_sriov(
    request: SetupRequest, sysfs_root: str | Path, netlink: Netlink, say: Callable[[str], None]
) -> None:
    plan = _check_sriov(request, sysfs_root, netlink)
    # Everything is checked: from here on, changes.
    previous = set_num_vfs(plan.pf.name, plan.num, sysfs_root)
    counted = "unchanged" if previous == plan.num else f"was {previous}"
    say(f"PF {plan.pf.name}: {plan.num} VFs ({counted})")
    if plan.pf_index is None:
        return
    # Re-created VFs start from the driver's defaults, not from `before`.
    current = plan.before if previous == plan.num else netlink.vf_settings(plan.pf_index)
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
        return _restore_count(plan, previous, sysfs_root, netlink)

    run_steps(list(steps.values()), netlink.issue, put_back_count)
    for i in plan.targets:
        say(steps[i].what if i in steps else f"VF {i}: unchanged")


def _restore_count(
    plan: _SriovPlan, previous: int, sysfs_root: str | Path, netlink: Netlink
) -> list[str]:
    """After a failed setup that changed the VF count: the old count back,
    then the old VFs' settings, which re-creating them had dropped."""
    if previous == plan.num or plan.pf_index is None:
        return []
    try:
        set_num_vfs(plan.pf.name, previous, sysfs_root)
    except OSError as exc:
        return [f"restoring {previous} VFs on {plan.pf.name}: {exc}"]
    fresh = netlink.vf_settings(plan.pf_index)
    failed = []
    for i, settings in sorted(plan.before.items()):
        change, _ = settings_change(settings, fresh.get(i, VfSettings()))
        if change.is_empty():
            continue
        try:
            netlink.issue("set", vf_request(plan.pf_index, i, change))
        except Exception as exc:  # report it and restore the others
            failed.append(f"restore VF {i}: {describe(exc)}")
    return failed
