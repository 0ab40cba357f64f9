"""Acceptance: 100 000 malformed frames are counted by reason and dropped;
the instance stays up and answers a ping right after."""

import json
import sys

import pytest

from stackservice.net.drops import ACCEPTED_EVENTS, TX_DROP_REASONS, DropReason
from stackservice.nic.emulate import vf_mac
from tests.support.malformed import kinds
from tests.support.netns import in_netns
from tests.support.stack import running_stack, sample_until

pytestmark = pytest.mark.root

FRAMES = 100_000


def _received_total(counters: dict[str, dict[str, int]]) -> int:
    """Frames the host either dropped (receive-side reasons) or accepted."""
    dropped = sum(counters["drops"][r.name.lower()] for r in DropReason if r not in TX_DROP_REASONS)
    accepted = sum(counters["events"][e.name.lower()] for e in ACCEPTED_EVENTS)
    return dropped + accepted


def test_malformed_flood_counted_by_reason_and_instance_survives(emulated_port):
    with running_stack(emulated_port.vf(0), "198.18.0.10/24") as stack:
        warm = in_netns(emulated_port.netns, "ping", "-c", "1", "-W", "2", "198.18.0.10")
        assert " 1 received" in warm.stdout
        before = stack.counters()
        flood = in_netns(
            emulated_port.netns,
            sys.executable,
            "-m",
            "tests.support.malformed",
            "--iface",
            emulated_port.wire,
            "--dst-mac",
            vf_mac(0),
            "--count",
            str(FRAMES),
            timeout=300,
        )
        sent = json.loads(flood.stdout)
        assert sum(sent.values()) == FRAMES

        def taken(counters: dict[str, dict[str, int]]) -> int:
            """Flood frames the instance counted: by reason, or lost in its ring."""
            ring = counters["nic"]["rx_ring_drops"] - before["nic"]["rx_ring_drops"]
            return _received_total(counters) - _received_total(before) + ring

        # Until the instance has taken the last frames (they may still wait
        # in its ring when the sender returns).
        after = sample_until(stack.counters, lambda counters: taken(counters) >= FRAMES)
        assert stack.proc.poll() is None, "the instance died"
        ping = in_netns(
            emulated_port.netns,
            "ping",
            "-c",
            "3",
            "-i",
            "0.1",
            "-W",
            "2",
            "198.18.0.10",
            check=False,
        )
        assert " 3 received" in ping.stdout

    ring_drops = after["nic"]["rx_ring_drops"] - before["nic"]["rx_ring_drops"]
    accounted = _received_total(after) - _received_total(before)
    assert accounted + ring_drops == FRAMES
    assert after["events"]["icmp_echo_request_in"] == before["events"]["icmp_echo_request_in"]

    expected: dict[DropReason, int] = {}
    for kind, (_, reason, _) in kinds(b"\0" * 4, None).items():
        if reason is not None:
            expected[reason] = expected.get(reason, 0) + sent[kind]
    for reason, count in expected.items():
        got = after["drops"][reason.name.lower()] - before["drops"][reason.name.lower()]
        if ring_drops == 0:
            assert got >= count, reason  # random frames may land here too
        else:
            assert got >= count - ring_drops, reason
