"""The example apps (`python -m vfstack.examples.*`) on a live instance,
driven by stock clients in the peer namespace: ab, wrk, the kernel echo
client, and the SDK loadgen against a kernel server (the same http_server
with `--kernel`)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.netns import in_netns, kernel_peer, spawn_in_netns
from tests.support.process import stop
from tests.support.stack import running_stack

pytestmark = pytest.mark.root

STACK = "198.18.0.10"
PEER = "198.18.0.1"
ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20


@contextlib.contextmanager
def example(name: str, *args: str, netns: str | None = None):
    """Run `python -m vfstack.examples.NAME ARGS` until it says it listens."""
    argv = [sys.executable, "-m", f"vfstack.examples.{name}", *args]
    if netns:
        proc = spawn_in_netns(netns, *argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    else:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, line
        yield proc
    finally:
        stop(proc)


@pytest.fixture
def instance(emulated_port):
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0") as stack:
        yield f"unix://{stack.run_dir / 'vf0.sock'}", emulated_port


def test_http_server_serves_ab_short_and_keep_alive_without_failures(instance):
    control, port = instance
    with example("http_server", "--control", control, "--port", "8080", "--size", "64") as app:
        for extra in ([], ["-k"]):
            done = in_netns(
                port.netns, "ab", *extra, "-q", "-n", "20000", "-c", "100", "-s", "20",
                f"http://{STACK}:8080/", timeout=240,
            )  # fmt: skip
            out = done.stdout
            assert re.search(r"Complete requests:\s+20000\b", out), out
            assert re.search(r"Failed requests:\s+0\b", out), out
            assert re.search(r"Document Length:\s+64 bytes", out), out
            if extra:
                assert re.search(r"Keep-Alive requests:\s+20000\b", out), out
        app.terminate()
        summary = app.communicate(timeout=10)[0]
    assert "40000 requests" in summary


def test_http_server_serves_wrk_without_errors(instance):
    control, port = instance
    with example("http_server", "--control", control, "--port", "8080"):
        done = in_netns(
            port.netns, "wrk", "-t", "1", "-c", "64", "-d", "3", f"http://{STACK}:8080/",
            timeout=60,
        )  # fmt: skip
    out = done.stdout
    # How many is a speed (python -m bench, fig 7b); here: served, no errors.
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    assert requests > 0, out
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out


def test_echo_server_returns_50mb_byte_exact(instance):
    control, port = instance
    with example("echo_server", "--control", control, "--port", "7007"):
        result = kernel_peer(
            port.netns, "echo", "--host", STACK, "--port", "7007", "--bytes", str(50 * MB),
            "--seed", "5", timeout=120,
        )  # fmt: skip
    assert result["received_sha256"] == result["sent_sha256"]
    assert result["bytes"] == 50 * MB


def test_loadgen_on_the_stack_against_a_kernel_http_server(instance):
    control, port = instance
    with example("http_server", "--kernel", "--port", "8080", "--size", "100", netns=port.netns):
        for mode in ([], ["--keepalive"]):
            done = subprocess.run(
                [
                    sys.executable, "-m", "vfstack.examples.loadgen", "--control", control,
                    "--url", f"http://{PEER}:8080/", "-n", "3000", "-c", "20", "--json", *mode,
                ],
                capture_output=True, text=True, timeout=180, cwd=ROOT,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout.strip().splitlines()[-1])
            assert report["completed"] == 3000, report
            assert report["failed"] == 0, report
            assert report["body_bytes"] == 3000 * 100, report
            assert 0 < report["latency_us"]["p50"] <= report["latency_us"]["p99"]
