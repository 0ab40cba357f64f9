"""VMDq mode: on a port without SR-IOV, each "VF" is a bridge-mode macvlan
``<pf>v<i>`` (macvlan is the kernel's MAC-demultiplexing, VMDq, interface).
A setup creates the ports it lacks, gives each its MAC and removes the
ports past the number asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._changes import LinkStep, run_steps
from ._errors import VfError
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


def setup_vmdq(request: SetupRequest, netlink: Netlink, say: Callable[[str], None]) -> None:
    pf_index = netlink.index(request.pf)
    if pf_index is None:
        raise VfError(f"no such interface: {request.pf}")
    macs = mac_sequence(request.mac_base, request.num) if request.mac_base else []
    existing = netlink.vmdq_ports(pf_index, request.pf)
    ours = {port.name for port in existing.values()}
    addresses = netlink.addresses()
    for i in range(request.num):
        name = vmdq_port_name(request.pf, i)
        if name in addresses and name not in ours:
            raise VfError(f"{name} exists and is not a macvlan on {request.pf}")
    in_use = {n: m for n, m in addresses.items() if n not in ours}
    check_mac_clashes({vmdq_port_name(request.pf, i): m for i, m in enumerate(macs)}, in_use)
    steps = _vmdq_steps(request, pf_index, macs, existing)
    run_steps(steps, netlink.issue)
    for step in steps:
        say(step.what)
    if not steps:
        say(f"PF {request.pf}: {request.num} VMDq ports (unchanged)")


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
            steps.append(
                LinkStep(
                    "add",
                    macvlan_request(pf_index, name, mac),
                    f"VMDq port {name}: created, mac {mac}",
                    LinkStep("del", {"ifname": name}, f"remove {name}"),
                )
            )
        elif port.mac != mac:
            steps.append(
                LinkStep(
                    "set",
                    link_set_request(name, mac=mac),
                    f"VMDq port {name}: mac {port.mac} -> {mac}",
                    LinkStep("set", link_set_request(name, mac=port.mac), f"restore {name} MAC"),
                )
            )
    for i, port in sorted(existing.items()):
        if i >= request.num:
            steps.append(
                LinkStep(
                    "del",
                    {"ifname": port.name},
                    f"VMDq port {port.name}: removed",
                    LinkStep(
                        "add",
                        macvlan_request(pf_index, port.name, port.mac),
                        f"re-create {port.name}",
                    ),
                )
            )
    return steps
