"""Many connections, and a SYN flood, against one stack instance."""

import json
import subprocess
import sys

import pytest

from stackservice.nic.emulate import vf_mac
from tests.support.netns import kernel_peer, spawn_in_netns
from tests.support.stack import StackProcess, running_stack, wait_until

pytestmark = pytest.mark.root

STACK = "198.18.0.10"


def test_ten_thousand_concurrent_connections_held_and_served(emulated_port):
    """Acceptance: 10 000 connections from the peer, all open at once, then
    a request on each; every one answered. More than the SYN queue holds
    may arrive at once: SYN cookies carry any overflow (how many depends on
    how the peer's SYNs and ACKs interleave in our batches, so the SYN
    flood test below is the one that requires cookies)."""
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0", "--diag-services") as stack:
        result = kernel_peer(emulated_port.netns, "hold", "--port", "80", "--count", "10000")
        counters = stack.counters()
    assert result["established"] == 10_000 and result["failed"] == 0, result
    assert result["served"] == 10_000, result
    assert counters["tcp"]["passive_opens"] == 10_000


def syn_queue_full(stack: StackProcess) -> bool:
    return stack.counters()["tcp"]["syn_cookies_sent"] > 0


def test_syn_flood_does_not_stop_a_legitimate_client(emulated_port):
    """Acceptance: 100 000 SYNs from random sources at the listen port; a
    concurrent kernel client connects and is served, during and after."""
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0", "--diag-services") as stack:
        flood = spawn_in_netns(
            emulated_port.netns,
            sys.executable,
            "-m",
            "tests.support.synflood",
            "--iface",
            emulated_port.wire,
            "--dst-mac",
            vf_mac(0),
            "--count",
            "100000",
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            # Until the flood fills the listener's SYN queue. Its half-open
            # entries never complete (no one owns their sources) and live
            # ~63 s of SYN-ACK retries, so from here on every SYN, the
            # client's too, is answered with a cookie.
            assert wait_until(lambda: flood.poll() is not None or syn_queue_full(stack))
            flooding = flood.poll() is None
            during = kernel_peer(
                emulated_port.netns, "fetch", "--port", "80", "--bytes", "1000", timeout=60
            )
            sent = json.loads(flood.communicate(timeout=120)[0])
        finally:
            flood.kill()
        after = kernel_peer(
            emulated_port.netns, "fetch", "--port", "80", "--bytes", "1000", timeout=60
        )
        counters = stack.counters()
    assert sent["sent"] == 100_000
    assert flooding, "the flood ended before the client tried: not a concurrent test"
    assert during["status"] == "200" and during["body_ok"], during
    assert after["status"] == "200" and after["body_ok"], after
    tcp = counters["tcp"]
    assert tcp["syn_cookies_sent"] > 10_000
    # Both of the client's connections were carried by cookies, and held.
    assert tcp["syn_cookies_accepted"] >= 2
    # Half-open state stayed bounded by the SYN queue: the flood cost no memory.
    assert counters["tcp_states"]["syn_received"] <= 1024
