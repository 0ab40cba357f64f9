"""TCP against the Linux kernel: the peer namespace's kernel talks to the
stack's --diag-services (echo 7, discard 9, HTTP 80) on an emulated VF."""

import hashlib
import json
import re
import subprocess
import sys

import pytest

from stackservice.diag import PATTERN
from tests.support.netns import in_netns, kernel_peer, spawn_in_netns
from tests.support.stack import running_stack

pytestmark = pytest.mark.root

STACK = "198.18.0.10"


@pytest.fixture
def diag_stack(emulated_port):
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0", "--diag-services") as stack:
        yield emulated_port, stack


def test_curl_get_65536_is_byte_exact(diag_stack):
    port, _ = diag_stack
    done = subprocess.run(
        ["ip", "netns", "exec", port.netns, "curl", "-sS", "-m", "20", f"http://{STACK}/65536"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    expected = (PATTERN * (65536 // len(PATTERN) + 1))[:65536]
    assert hashlib.sha256(done.stdout).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_ab_20000_requests_100_concurrent_none_failed(diag_stack):
    port, stack = diag_stack
    done = in_netns(
        port.netns, "ab", "-q", "-n", "20000", "-c", "100", f"http://{STACK}/", timeout=300
    )
    assert re.search(r"Complete requests:\s+20000", done.stdout), done.stdout
    assert re.search(r"Failed requests:\s+0", done.stdout), done.stdout
    assert "Non-2xx" not in done.stdout
    assert stack.counters()["tcp"]["passive_opens"] >= 20000


def test_echo_50_mb_returns_identical_sha256(diag_stack):
    port, _ = diag_stack
    result = kernel_peer(port.netns, "echo", "--port", "7", "--bytes", str(50_000_000))
    assert result["bytes"] == 50_000_000
    assert result["received_sha256"] == result["sent_sha256"]
    assert result["clean_eof"]


def test_bulk_kernel_to_stack_50_mb_to_discard(diag_stack):
    port, stack = diag_stack
    result = kernel_peer(port.netns, "sink", "--port", "9", "--bytes", str(50_000_000))
    assert result["clean_eof"]
    assert stack.counters()["nic"]["rx_bytes"] > 50_000_000


def test_bulk_stack_to_kernel_50_mb_http_body_exact(diag_stack):
    """The body leaves mostly as GSO super-frames (stackservice.nic.gso),
    which the kernel cuts into the very segments TCP made: exact still."""
    port, stack = diag_stack
    result = kernel_peer(port.netns, "fetch", "--port", "80", "--bytes", str(50_000_000))
    assert result["status"] == "200"
    assert result["bytes"] == 50_000_000
    assert result["body_ok"]
    nic = stack.counters()["nic"]
    assert nic["tx_gso_sends"] > 0 and nic["tx_packets"] > 34_000  # 50 MB of <= 1460 B
    assert stack.counters()["tcp"]["retransmitted_segments"] == 0


def test_closed_port_refuses_with_rst(diag_stack):
    port, stack = diag_stack
    done = in_netns(port.netns, "nc", "-z", "-w", "3", STACK, "8081", check=False)
    assert done.returncode != 0
    assert stack.counters()["tcp_drops"]["tcp_no_listener"] >= 1
    assert stack.counters()["tcp"]["resets_out"] >= 1


def _stack_client(port, server_port: int, *args: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.stack_client",
            "--iface",
            port.vf(0),
            "--connect",
            f"198.18.0.1:{server_port}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["echo", "source"])
def test_active_open_to_kernel_server_streams_exactly(emulated_port, mode):
    """The stack connects out (SYN-SENT path) to a kernel server: 5 MB each
    way through a kernel echo server, or 5 MB from a kernel source."""
    server = spawn_in_netns(
        emulated_port.netns,
        sys.executable,
        "-m",
        "tests.support.kernel_peer",
        "serve",
        "--port",
        "5001",
        "--mode",
        mode,
        "--bytes",
        "5000000",
        "--timeout",
        "120",
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in server.stdout.readline()
        result = _stack_client(emulated_port, 5001, "--bytes", "5000000", "--expect", mode)
        served = json.loads(server.communicate(timeout=120)[0].strip().splitlines()[-1])
    finally:
        server.kill()
    assert result["error"] == ""
    assert result["received"] == 5_000_000
    assert result["received_sha256"] == served["sha256"]
    if mode == "echo":
        assert result["sent_sha256"] == result["received_sha256"]
    assert served["peer"] == STACK


def test_active_open_to_closed_port_is_refused(emulated_port):
    result = _stack_client(emulated_port, 5002, "--bytes", "1000", "--timeout", "20")
    assert result["error"] == "ECONNREFUSED"
    assert result["received"] == 0
