"""Fault containment in a real instance (docs/architecture.md principle 5, "Never
down"): `stackservice run --no-strict` with faults injected into real
methods for one recognisable input (tests/support/faults.py), driven by the
kernel peer, SDK example apps, the real `vfstack` CLI and gRPC, and counted
through a real scrape of /metrics. What met the bug is lost, nothing else.
Strict (the suite's default), the same bug ends the instance and fails the
test with its traceback."""

from __future__ import annotations

import contextlib
import json
import subprocess

import grpc
import pytest
from vfstack.v1 import stack_pb2, stack_pb2_grpc

from stackservice.diag import PATTERN
from tests.integration.test_isolation import echo_server, peer_connection, round_trip, session_ids
from tests.integration.test_metrics import _free_port, _scrape
from tests.support.faults import DOOMED_APP, FAULT_ID, MARK_HEX
from tests.support.netns import in_netns
from tests.support.stack import StackCrashed, StackProcess, running_stack, wait_until

pytestmark = pytest.mark.root

STACK = "198.18.0.10"
SITES = ("frame", "event", "timer", "output", "session", "control", "other")


@contextlib.contextmanager
def faulty_stack(emulated_port, *faults: str):
    """(instance, control URL, metrics port): a containing instance with
    diag services and the `faults` injected, whose tracebacks it logs."""
    metrics = _free_port()
    injected = [arg for fault in faults for arg in ("--inject", fault)]
    with running_stack(
        emulated_port.vf(0), f"{STACK}/24", "vf0", "--no-strict", "--diag-services",
        "--metrics-port", str(metrics), *injected, module="tests.support.faults",
        logs_tracebacks=True,  # those of the faults it contains
    ) as stack:  # fmt: skip
        yield stack, f"unix://{stack.run_dir / 'vf0.sock'}", metrics


def internal_errors(metrics_port: int) -> dict[str, float]:
    """vfstack_internal_errors_total by `where`, from a real scrape."""
    samples = _scrape(metrics_port)
    return {site: samples[f"vfstack_internal_errors_total{{where={site}}}"] for site in SITES}


def only(**counts: int) -> dict[str, float]:
    return {site: counts.get(site, 0) for site in SITES}


def ping(netns: str, *args: str) -> str:
    done = in_netns(netns, "ping", "-n", "-c", "5", "-i", "0.05", "-W", "1", *args, STACK,
                    check=False, timeout=60)  # fmt: skip
    return done.stdout


def curl(netns: str, path: str) -> subprocess.CompletedProcess[str]:
    return in_netns(netns, "curl", "-s", "--max-time", "10", f"http://{STACK}{path}",
                    check=False)  # fmt: skip


def vfstack(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["vfstack", *args, "--control", url], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_frames_that_meet_a_bug_are_dropped_and_the_instance_serves_on(emulated_port):
    """Five faulty pings lose their replies; three tracebacks are logged
    (the per-site budget), the count is exact, the next frames are served."""
    netns = emulated_port.netns
    with faulty_stack(emulated_port, "frame") as (stack, url, metrics):
        assert " 0 received" in ping(netns, "-p", MARK_HEX)
        assert " 5 received" in ping(netns)
        assert curl(netns, "/10").stdout == PATTERN[:10].decode()
        assert wait_until(lambda: internal_errors(metrics) == only(frame=5))
        stats = json.loads(vfstack(url, "stats", "--json").stdout)
        (group,) = [g for g in stats["groups"] if g["name"] == "internal_errors"]
        assert {c["name"]: c["value"] for c in group["counters"]}["frame"] == 5
        assert "internal_errors:" in vfstack(url, "stats").stdout
        status, _, err = stack.stop()
    assert status == 0
    assert err.count("Traceback") == 3 and err.count("InjectedFault: injected into") == 3
    assert err.count("internal error (where=frame): the frame is dropped") == 3


def test_a_bug_in_one_connections_handler_resets_that_connection_only(emulated_port):
    netns = emulated_port.netns
    with faulty_stack(emulated_port, "event") as (_, _, metrics):
        failed = curl(netns, "/fault")
        assert failed.returncode in (52, 56) and failed.stdout == ""  # empty reply / reset
        assert curl(netns, "/10").stdout == PATTERN[:10].decode()
        assert wait_until(lambda: internal_errors(metrics) == only(event=1))


def test_a_bug_serving_one_app_ends_that_apps_session_only(emulated_port):
    netns = emulated_port.netns
    with (
        faulty_stack(emulated_port, "session") as (_, url, metrics),
        echo_server(url, 7001, DOOMED_APP),
        echo_server(url, 7002, "healthy"),
    ):
        to_healthy = peer_connection(netns, STACK, 7002)
        to_doomed = peer_connection(netns, STACK, 7001)
        assert round_trip(to_healthy, b"hello") == b"hello"
        before = session_ids(url)
        assert sorted(before) == [DOOMED_APP, "healthy"]
        to_doomed.settimeout(5)
        to_doomed.sendall(b"hello")  # echoing it back is the command that fails
        with pytest.raises(ConnectionResetError):  # the session's connections are reset
            while to_doomed.recv(100):
                pass
        # That session ended (the example app then attaches again, as a new
        # session: examples/_server.py); the healthy app's goes on.
        assert wait_until(lambda: session_ids(url).get(DOOMED_APP) != before[DOOMED_APP])
        assert session_ids(url)["healthy"] == before["healthy"]
        assert round_trip(to_healthy, b"still here" * 1000) == b"still here" * 1000
        assert internal_errors(metrics) == only(session=1)
        to_healthy.close()
        to_doomed.close()


def test_a_bug_answering_one_control_request_fails_it_with_internal(emulated_port):
    with faulty_stack(emulated_port, "control") as (stack, url, metrics):
        with grpc.insecure_channel(url) as channel:
            stub = stack_pb2_grpc.StackControlStub(channel)
            request = stack_pb2.ListConnectionsRequest(connection_id=FAULT_ID)
            with pytest.raises(grpc.RpcError) as failed:
                stub.ListConnections(request, timeout=10)
            assert failed.value.code() == grpc.StatusCode.INTERNAL
            assert "internal error" in failed.value.details()
            listed = stub.ListConnections(stack_pb2.ListConnectionsRequest(), timeout=10)
            assert {c.local_port for c in listed.connections} == {7, 9, 80}
        cli = vfstack(url, "conns", "--id", str(FAULT_ID))
        assert cli.returncode == 1 and cli.stderr.count("\n") == 1 and "Traceback" not in cli.stderr
        assert vfstack(url, "conns").returncode == 0
        assert internal_errors(metrics) == only(control=2)
        assert stack.proc.poll() is None


def test_strict_a_bug_ends_the_instance_and_fails_the_test_with_its_traceback(
    emulated_port, tmp_path
):
    """What every other test gets (tests/conftest.py sets VFSTACK_STRICT=1)."""
    stack = StackProcess(emulated_port.vf(0), f"{STACK}/24", tmp_path, "vf0",
                         "--inject", "frame", module="tests.support.faults")  # fmt: skip
    try:
        ping(emulated_port.netns, "-p", MARK_HEX)
        assert wait_until(lambda: stack.proc.poll() is not None)
    finally:
        with pytest.raises(StackCrashed) as crashed:
            stack.stop()
    message = str(crashed.value)
    assert "exited with status 1" in message
    assert "Traceback" in message and "InjectedFault: injected into echo_reply" in message


def test_a_contained_bug_still_fails_the_test_that_did_not_expect_it(emulated_port, tmp_path):
    """An instance that contains a bug exits 0, but the traceback it logged
    fails the test (tests/support/stack.py) unless the test expects it."""
    stack = StackProcess(emulated_port.vf(0), f"{STACK}/24", tmp_path, "vf0", "--no-strict",
                         "--inject", "frame", module="tests.support.faults")  # fmt: skip
    try:
        assert " 0 received" in ping(emulated_port.netns, "-p", MARK_HEX)
        assert wait_until(lambda: stack.counters()["internal_errors"]["frame"] == 5)
    finally:
        with pytest.raises(StackCrashed) as crashed:
            stack.stop()
    assert stack.proc.returncode == 0
    message = str(crashed.value)
    assert "exited 0 but logged a traceback" in message
    assert "InjectedFault: injected into echo_reply" in message
