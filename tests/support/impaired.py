"""An emulated port with the impairing relay spliced into its wire.

```
 <P>stack-peer (netns)       <P>relay (netns)                   host netns
 +-----------------+       +-------------------------+       +-----------------------+
 | <P>wire         |  veth | <P>ra  ==relay==  <P>rb |  veth | <P>pf0                |
 | 198.18.0.1/24   |-------|  (side A)     (side B)  |-------|  +- <P>pf0v0 (VF 0)   |
 | Linux kernel    |       |  AF_PACKET both sides   |       |  +- <P>pf0v1 (VF 1)   |
 +-----------------+       +-------------------------+       +-----------------------+
```

Side A of the relay faces the peer, side B the PF: stats `a_to_b` is
peer -> PF, `b_to_a` is PF -> peer. The peer, PF and VFs are exactly what
`emulate_up` builds (it completes the port once the two veths exist), so a
stack sees the same port as without the relay. The relay's interfaces live
in their own namespace with IPv6 off, no addresses and offloads off, so no
kernel answers, merges or checksums-later anything on them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2 import IPRoute, NetNS, netns

from stackservice.nic.emulate import (
    EmulatedPort,
    emulate_down,
    emulate_up,
)
from stackservice.nic.netconf import (
    disable_offloads,
    inside_netns,
    link_index,
    silence_kernel,
)
from tests.support.netns import quiet, release_prefix, unique_prefix
from tests.support.relay import ImpairedRelay, RelayStats


@dataclass
class ImpairedPort:
    """Names of an impaired port, like `EmulatedPort`, plus its relay."""

    port: EmulatedPort
    relay: ImpairedRelay | None = None

    @property
    def prefix(self) -> str:
        return self.port.prefix

    @property
    def netns(self) -> str:
        return self.port.netns

    @property
    def wire(self) -> str:
        return self.port.wire

    @property
    def pf(self) -> str:
        return self.port.pf

    def vf(self, index: int) -> str:
        return self.port.vf(index)

    @property
    def relay_netns(self) -> str:
        return f"{self.prefix}relay"

    @property
    def relay_a(self) -> str:
        """The relay's peer-facing interface (in `relay_netns`)."""
        return f"{self.prefix}ra"

    @property
    def relay_b(self) -> str:
        """The relay's PF-facing interface (in `relay_netns`)."""
        return f"{self.prefix}rb"

    def stats(self) -> RelayStats:
        """The running relay's counters (a_to_b = peer -> PF)."""
        if self.relay is None:
            raise RuntimeError("no relay running")
        return self.relay.stats()

    def start_relay(self, **impairment) -> None:
        self.relay = ImpairedRelay(self.relay_a, self.relay_b, netns=self.relay_netns, **impairment)
        self.relay.start()

    def reimpair(self, **impairment) -> RelayStats | None:
        """Restart the relay with new settings (frames in flight are lost).

        Returns the old relay's final counters.
        """
        old = self.stop_relay()
        self.start_relay(**impairment)
        return old

    def stop_relay(self) -> RelayStats | None:
        relay, self.relay = self.relay, None
        return relay.stop() if relay is not None else None


@contextlib.contextmanager
def impaired_port(vfs: int = 2, **impairment) -> Iterator[ImpairedPort]:
    """Build an emulated port whose wire runs through an impairing relay.

    `impairment` is passed to `ImpairedRelay` (loss, reorder, duplicate,
    corrupt, delay_us, jitter_us, seed, reorder_gap, reorder_hold_us,
    direction). Everything is removed on exit, however the block ends.
    """
    ip = ImpairedPort(EmulatedPort(prefix=unique_prefix()))
    try:
        _build(ip, vfs)
        ip.start_relay(**impairment)
        yield ip
    finally:
        try:
            ip.stop_relay()
        finally:
            _tear_down(ip)


def _build(ip: ImpairedPort, vfs: int) -> None:
    for name in (ip.netns, ip.relay_netns):
        if name not in netns.listnetns():
            netns.create(name)
    with IPRoute() as ipr:
        # Ends that would land in the host namespace are created there and
        # moved, so the host never holds a relay interface after this call.
        ipr.link(
            "add",
            ifname=ip.relay_a,
            kind="veth",
            peer={"ifname": ip.wire, "net_ns_fd": ip.netns},
        )
        ipr.link("set", index=link_index(ipr, ip.relay_a), net_ns_fd=ip.relay_netns)
        ipr.link(
            "add",
            ifname=ip.pf,
            kind="veth",
            peer={"ifname": ip.relay_b, "net_ns_fd": ip.relay_netns},
        )
    with NetNS(ip.relay_netns) as rns, inside_netns(ip.relay_netns):
        for name in (ip.relay_a, ip.relay_b):
            silence_kernel(name)  # before "up": never an IPv6 address
            disable_offloads(name)
            rns.link("set", index=link_index(rns, name), state="up")
    emulate_up(ip.port, vfs, say=quiet)


def _tear_down(ip: ImpairedPort) -> None:
    # The relay namespace holds one end of each veth: removing it removes
    # both wires, and the macvlans with the PF; emulate_down checks the rest.
    try:
        if ip.relay_netns in netns.listnetns():
            netns.remove(ip.relay_netns)
    finally:
        emulate_down(ip.port, say=quiet)
        release_prefix(ip.port.prefix)
