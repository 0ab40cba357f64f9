"""The emulated SR-IOV port: what `vfstack emulate up|down` builds.

A veth "wire" joins the PF stand-in (`vfpf0`, host namespace) to `vfwire` in
the peer namespace `vfstack-peer`, where the Linux kernel plays the far host
(198.18.0.1/24). Bridge-mode macvlans on the PF play the VFs: macvlan is the
kernel's own MAC-demultiplexing (VMDq-like) interface, so each VF sees only
its own unicast frames plus broadcasts, as a real VF does.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from pyroute2 import IPRoute, NetlinkError, NetNS, netns

from stackservice.nic.netconf import (
    disable_offloads,
    inside_netns,
    link_index,
    silence_kernel,
    write_sysctl,
)

PEER_ADDRESS = "198.18.0.1"
PREFIX_LEN = 24
MAX_VFS = 64
# Interface names are limited to 15 bytes; "<prefix>pf0v<NN>" must fit.
MAX_PREFIX_LEN = 9


def vf_mac(index: int) -> str:
    """VF i has MAC 02:00:00:00:00:(0x10 + i): locally administered, unicast."""
    return f"02:00:00:00:00:{0x10 + index:02x}"


def vf_stack_address(index: int) -> str:
    """The default address a stack instance on VF i uses (not the kernel's)."""
    return str(ipaddress.IPv4Address(PEER_ADDRESS) + 9 + index)


@dataclass(frozen=True, slots=True)
class EmulatedPort:
    """Names of one emulated port. The default prefix "vf" gives the
    docs/architecture.md names; tests pass a unique prefix to build private copies."""

    prefix: str = "vf"
    pf_name: str | None = None

    def __post_init__(self) -> None:
        if not self.prefix.isalnum() or not 0 < len(self.prefix) <= MAX_PREFIX_LEN:
            raise ValueError(f"prefix must be 1..{MAX_PREFIX_LEN} letters or digits")
        if self.pf_name is not None and not 0 < len(self.pf_name) <= 15 - 6:
            raise ValueError("PF name must be 1..9 characters so VF names fit in 15")

    @property
    def netns(self) -> str:
        return f"{self.prefix}stack-peer"

    @property
    def wire(self) -> str:
        return f"{self.prefix}wire"

    @property
    def pf(self) -> str:
        return self.pf_name or f"{self.prefix}pf0"

    def vf(self, index: int) -> str:
        return f"{self.pf}v{index}"


def emulate_up(port: EmulatedPort, vfs: int, say: Callable[[str], None] = print) -> None:
    """Build (or complete) the emulated port with `vfs` VFs. Idempotent:
    what exists is kept and reported, what is missing is made."""
    if not 1 <= vfs <= MAX_VFS:
        raise ValueError(f"--vfs must be 1..{MAX_VFS}")
    if port.netns in netns.listnetns():
        say(f"namespace {port.netns}: exists")
    else:
        netns.create(port.netns)
        say(f"namespace {port.netns}: created")
    with IPRoute() as ipr:
        _wire_up(ipr, port, say)
        pf_index = link_index(ipr, port.pf)
        for i in range(vfs):
            _vf_up(ipr, port, i, pf_index, say)


def _wire_up(ipr: IPRoute, port: EmulatedPort, say: Callable[[str], None]) -> None:
    if link_index(ipr, port.pf) is None:
        ipr.link(
            "add",
            ifname=port.pf,
            kind="veth",
            peer={"ifname": port.wire, "net_ns_fd": port.netns},
        )
        say(f"wire {port.pf} <-> {port.netns}:{port.wire}: created")
    else:
        say(f"wire {port.pf} <-> {port.netns}:{port.wire}: exists")
    silence_kernel(port.pf)
    disable_offloads(port.pf)
    ipr.link("set", index=link_index(ipr, port.pf), state="up")
    with NetNS(port.netns) as peer, inside_netns(port.netns):
        wire = link_index(peer, port.wire)
        if wire is None:
            raise RuntimeError(
                f"{port.wire} is missing from {port.netns}; run `emulate down` first"
            )
        # The peer is an IPv4 host; IPv6 chatter would only show up as drops.
        write_sysctl(f"net/ipv6/conf/{port.wire}/disable_ipv6", 1)
        disable_offloads(port.wire)
        have = {a.get("address") for a in peer.get_addr(index=wire, family=2)}
        if PEER_ADDRESS not in have:
            peer.addr("add", index=wire, address=PEER_ADDRESS, prefixlen=PREFIX_LEN)
        peer.link("set", index=wire, state="up")
        lo = link_index(peer, "lo")
        peer.link("set", index=lo, state="up")
    say(f"peer {port.netns}:{port.wire} {PEER_ADDRESS}/{PREFIX_LEN}, offloads off")


def _vf_up(
    ipr: IPRoute, port: EmulatedPort, i: int, pf_index: int, say: Callable[[str], None]
) -> None:
    name = port.vf(i)
    if link_index(ipr, name) is None:
        ipr.link(
            "add",
            ifname=name,
            kind="macvlan",
            link=pf_index,
            macvlan_mode="bridge",
            address=vf_mac(i),
        )
        verb = "created"
    else:
        verb = "exists"
    # Before the link goes up, so the kernel never assigns it an IPv6 address.
    silence_kernel(name)
    disable_offloads(name)
    ipr.link("set", index=link_index(ipr, name), state="up")
    say(f"VF {i} {name} mac {vf_mac(i)} (stack address {vf_stack_address(i)}): {verb}")


def emulate_down(port: EmulatedPort, say: Callable[[str], None] = print) -> None:
    """Remove the port. Removing the namespace removes the wire, whose host
    end carries the macvlans with it; each is still checked by name."""
    if port.netns in netns.listnetns():
        netns.remove(port.netns)
        say(f"namespace {port.netns}: removed")
    with IPRoute() as ipr:
        index = link_index(ipr, port.pf)
        if index is not None:
            for vf in ipr.get_links(link=index):
                _delete_link(ipr, vf["index"])
            _delete_link(ipr, index)
            say(f"wire {port.pf}: removed")
    say("emulated port down")


def _delete_link(ipr: IPRoute, index: int) -> None:
    # Removing the namespace tears the veth down asynchronously: a link seen
    # a moment ago may be gone by the time we ask.
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
