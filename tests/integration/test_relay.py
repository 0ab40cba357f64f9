"""The impairing relay on a real wire, with the Linux kernel on both sides.

There is no stack on the VFs yet, so a kernel host (198.18.0.50, a macvlan
of the PF in its own namespace) answers the peer's pings through the relay.
Neighbour entries are pinned, so the relay sees only the pings: every lost,
duplicated or corrupted echo is accounted for by its counters exactly.
Decisions are seeded, so each test sees the same drops on every run.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass

import pytest
from pyroute2 import IPRoute, netns

from tests.support.impaired import impaired_port
from tests.support.netns import KERNEL_HOST_ADDRESS, in_netns, kernel_host
from tests.support.stack import sample_until

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


@dataclass
class Ping:
    transmitted: int
    received: int
    duplicates: int
    rtt_min_ms: float | None
    output: str

    @property
    def lost(self) -> int:
        return self.transmitted - self.received


def ping(netns_name: str, count: int, interval: float = 0.005, wait: float = 1.0) -> Ping:
    out = in_netns(
        netns_name,
        "ping",
        "-n",
        "-c",
        str(count),
        "-i",
        str(interval),
        "-W",
        str(wait),
        KERNEL_HOST_ADDRESS,
        check=False,
        timeout=count * interval + 20,
    ).stdout
    summary = re.search(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?", out)
    assert summary, out
    rtt = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/", out)
    return Ping(
        transmitted=int(summary[1]),
        received=int(summary[2]),
        duplicates=int(summary[3] or 0),
        rtt_min_ms=float(rtt[1]) if rtt else None,
        output=out,
    )


def near(observed: int, p: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(observed - p * n) <= sigmas * math.sqrt(n * p * (1 - p))


def _host_links() -> set[str]:
    with IPRoute() as ipr:
        return {link.get("IFLA_IFNAME") for link in ipr.get_links()}


def test_relay_clean_wire_forwards_every_ping(impaired_port_factory):
    ip = impaired_port_factory(seed=1)
    links = _host_links()
    assert {ip.pf, ip.vf(0), ip.vf(1)} <= links
    assert not {ip.relay_a, ip.relay_b, ip.wire} & links  # relay ends live apart
    with kernel_host(ip) as host:
        result = ping(ip.netns, 50)
        stats = ip.stats()
    assert (result.transmitted, result.received, result.duplicates) == (50, 50, 0)
    for way in (stats.a_to_b, stats.b_to_a):
        assert (way.received, way.forwarded, way.dropped, way.overruns) == (50, 50, 0, 0)
    assert host not in netns.listnetns()


def test_relay_loss_matches_ping_loss_and_is_near_30_percent(impaired_port_factory):
    ip = impaired_port_factory(loss=0.3, seed=2)
    with kernel_host(ip):
        result = ping(ip.netns, 400, interval=0.002)
        stats = ip.stats()
    to_pf, to_peer = stats.a_to_b, stats.b_to_a  # requests, replies
    assert to_pf.received == 400
    assert to_peer.received == to_pf.forwarded == 400 - to_pf.dropped
    assert result.lost == to_pf.dropped + to_peer.dropped
    assert result.received == to_peer.forwarded
    assert near(to_pf.dropped, 0.3, to_pf.received)
    assert near(to_peer.dropped, 0.3, to_peer.received)
    assert near(result.lost, 1 - 0.7 * 0.7, 400)  # a ping survives both ways


def test_relay_duplicates_show_as_ping_dups(impaired_port_factory):
    ip = impaired_port_factory(duplicate=0.5, seed=3)
    with kernel_host(ip):
        result = ping(ip.netns, 100)
        stats = ip.stats()
    assert "DUP!" in result.output
    assert result.received == 100
    # ping exits at its 100th answer: late copies of the last echo go unseen.
    assert 0 <= stats.b_to_a.forwarded - (result.received + result.duplicates) <= 3
    # Each request copy is answered; each reply may be copied again.
    assert stats.b_to_a.received == 100 + stats.a_to_b.duplicated
    assert near(stats.a_to_b.duplicated, 0.5, 100)


def test_relay_corrupted_pings_reach_the_host_and_fail_its_checksums(impaired_port_factory):
    ip = impaired_port_factory(corrupt=1.0, direction="a_to_b", seed=4)
    with kernel_host(ip):
        result = ping(ip.netns, 20, interval=0.01)
        stats = ip.stats()
    assert result.received == 0
    assert stats.a_to_b.forwarded == stats.a_to_b.corrupted == 20
    assert stats.b_to_a.received == 0  # the host's kernel dropped every one


def test_relay_delay_adds_to_the_round_trip(impaired_port_factory):
    ip = impaired_port_factory(delay_us=20_000, seed=5)
    with kernel_host(ip):
        result = ping(ip.netns, 5, interval=0.05)
    assert result.received == 5
    assert result.rtt_min_ms >= 40.0


def test_relay_reimpair_restarts_with_new_settings(impaired_port_factory):
    ip = impaired_port_factory(loss=1.0)
    with kernel_host(ip):
        assert ping(ip.netns, 5, interval=0.01, wait=0.2).received == 0
        old = ip.reimpair()
        assert old.a_to_b.dropped == 5
        assert ping(ip.netns, 5, interval=0.01).received == 5


def test_impaired_port_removed_even_when_the_body_fails():
    with pytest.raises(RuntimeError, match="boom"), impaired_port(vfs=1) as ip:
        relay_pid = ip.relay.proc.pid
        raise RuntimeError("boom")
    assert not [n for n in netns.listnetns() if n.startswith(ip.prefix)]
    assert not [n for n in _host_links() if n.startswith(ip.prefix)]
    with pytest.raises(ProcessLookupError):
        os.kill(relay_pid, 0)


def test_relay_accounts_for_every_frame_of_a_burst(impaired_port_factory):
    """20 000 frames paced at 20 000/s: each one forwarded once or counted
    as an overrun (dropped by the kernel, the relay's buffer full). How fast
    it keeps up is python -m bench.relay's business."""
    ip = impaired_port_factory(seed=6)
    count = 20_000
    in_netns(ip.netns, sys.executable, "-m", "tests.support.blast", ip.wire, str(count), "20000")
    stats = sample_until(
        lambda: ip.stats().a_to_b, lambda stats: stats.forwarded + stats.overruns >= count
    )
    assert stats.forwarded + stats.overruns == count, stats
    assert stats.received == stats.forwarded, stats  # clean: what it read, it sent once
    assert stats.tx_errors == stats.dropped == stats.duplicated == 0, stats
