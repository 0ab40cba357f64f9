"""VMDq mode: on a port without SR-IOV, each "VF" is a bridge-mode macvlan
``<pf>v<i>`` (macvlan is the kernel's MAC-demultiplexing, VMDq, interface).
A setup creates the ports it lacks, gives each its MAC and removes the
ports past the number asked for; a restore puts back the ports it found."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._changes import LinkStep, run_all, run_steps
from ._errors import VfError
from ._journal import PortState, VmdqState
from ._mac import check_mac_clashes, mac_sequence, parse_mac
from ._netlink import Netlink, VmdqPort

if TYPE_CHECKING:
    from ._args import SetupRequest  # which imports this module

MAX_VMDQ_PORTS = 64


def vmdq_port_name(pf: str, i: int) -> str:
    return f"{pf}v{i}"


def macvlan_request(pf_index: int, name: str, mac: str) -> dict:
    """Keyword arguments of ``ipr.link("add", ...)`` for a VMDq port:
    a bridge-mode macvlan (its own MAC; ports on one PF reach each other)."""
    return {
        "ifname": name,
        "kind": "macvlan",
        "link": pf_index,
        "macvlan_mode": "bridge",
        "address": mac,
    }


def link_set_request(name: str, mac: str | None = None, state: str | None = None) -> dict:
    """Keyword arguments of ``ipr.link("set", ...)`` for a MAC and/or link
    state change of an existing interface."""
    request: dict = {"ifname": name}
    if mac is not None:
        request["address"] = parse_mac(mac, f"{name} MAC")
    if state is not None:
        if state not in ("up", "down"):
            raise VfError(f"{name}: link state must be up or down, not {state!r}")
        request["state"] = state
    return request


@dataclass(frozen=True, slots=True)
class VmdqPlan:
    """A checked VMDq setup: its steps, and the PF's ports as found."""

    pf: str
    num: int
    steps: list[LinkStep]
    found: VmdqState


def check_vmdq(request: SetupRequest, netlink: Netlink) -> VmdqPlan:
    """Raises VfError when the request does not fit the system."""
    pf_index = _pf_index(request.pf, netlink)
    macs = mac_sequence(request.mac_base, request.num) if request.mac_base else []
    existing = netlink.vmdq_ports(pf_index, request.pf)
    ours = {port.name for port in existing.values()}
    addresses = netlink.addresses()
    _check_names_free(request.pf, range(request.num), addresses, ours)
    in_use = {n: m for n, m in addresses.items() if n not in ours}
    check_mac_clashes({vmdq_port_name(request.pf, i): m for i, m in enumerate(macs)}, in_use)
    found = VmdqState({i: PortState(port.mac, port.up) for i, port in existing.items()})
    return VmdqPlan(request.pf, request.num, _vmdq_steps(request, pf_index, macs, existing), found)


def setup_vmdq(plan: VmdqPlan, netlink: Netlink, say: Callable[[str], None]) -> None:
    """Run a checked setup. Raises VfSetupError when a step failed (after
    putting back what the steps before it had changed)."""
    run_steps(plan.steps, netlink.issue)
    for step in plan.steps:
        say(step.what)
    if not plan.steps:
        say(f"PF {plan.pf}: {plan.num} VMDq ports (unchanged)")


def _pf_index(pf: str, netlink: Netlink) -> int:
    pf_index = netlink.index(pf)
    if pf_index is None:
        raise VfError(f"no such interface: {pf}")
    return pf_index


def _check_names_free(
    pf: str, indices: Iterable[int], addresses: Mapping[str, str], ours: set[str]
) -> None:
    for i in indices:
        name = vmdq_port_name(pf, i)
        if name in addresses and name not in ours:
            raise VfError(f"{name} exists and is not a macvlan on {pf}")


def _vmdq_steps(
    request: SetupRequest, pf_index: int, macs: list[str], existing: dict[int, VmdqPort]
) -> list[LinkStep]:
    """Creates and MAC changes first, removals last: a failure before the
    removals leaves nothing to re-create."""
    steps = []
    for i, mac in enumerate(macs):
        name = vmdq_port_name(request.pf, i)
        port = existing.get(i)
        if port is None:
            steps.append(_create(pf_index, name, mac))
        elif port.mac != mac:
            steps.append(_change_mac(name, port.mac, mac))
    for i, port in sorted(existing.items()):
        if i >= request.num:
            steps.append(_remove(pf_index, port.name, port.mac))
    return steps


def _create(pf_index: int, name: str, mac: str) -> LinkStep:
    return LinkStep(
        "add",
        macvlan_request(pf_index, name, mac),
        f"VMDq port {name}: created, mac {mac}",
        LinkStep("del", {"ifname": name}, f"remove {name}"),
    )


def _change_mac(name: str, old: str, new: str) -> LinkStep:
    return LinkStep(
        "set",
        link_set_request(name, mac=new),
        f"VMDq port {name}: mac {old} -> {new}",
        LinkStep("set", link_set_request(name, mac=old), f"restore {name} MAC"),
    )


def _remove(pf_index: int, name: str, mac: str) -> LinkStep:
    return LinkStep(
        "del",
        {"ifname": name},
        f"VMDq port {name}: removed",
        LinkStep("add", macvlan_request(pf_index, name, mac), f"re-create {name}"),
    )


# --- `vfstack vf restore` -------------------------------------------------------


def restore_vmdq(
    pf: str, found: VmdqState, netlink: Netlink, say: Callable[[str], None]
) -> list[str]:
    """Put the VMDq ports of `pf` back as `found`: remove the ports it did
    not have, give the others their MACs back, re-create the ones it had
    (up if they were). Removals go first, so the MACs and names they free
    are there for the rest.

    Raises VfError, before any change, when the PF is gone or a port's
    name is taken by another interface. Returns what could not be put
    back, after trying everything else.
    """
    pf_index = _pf_index(pf, netlink)
    current = netlink.vmdq_ports(pf_index, pf)
    _check_names_free(pf, found.ports, netlink.addresses(), {p.name for p in current.values()})
    removals, changes, creations = [], [], []
    for i, port in sorted(current.items(), reverse=True):
        before = found.ports.get(i)
        if before is None:
            removals.append(_remove(pf_index, port.name, port.mac))
        elif port.mac != before.mac:
            changes.append(_change_mac(port.name, port.mac, before.mac))
    for i, before in sorted(found.ports.items(), reverse=True):
        name = vmdq_port_name(pf, i)
        if i not in current:
            creations.append(_create(pf_index, name, before.mac))
            if before.up:
                creations.append(
                    LinkStep("set", link_set_request(name, state="up"), f"VMDq port {name}: up")
                )
    return run_all(removals + changes + creations, netlink.issue, say)
