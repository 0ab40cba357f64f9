"""The control API of a live instance, through the real `vfstack` CLI and
grpc clients, while the Linux peer drives traffic."""

import json
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from vfstack.v1 import stack_pb2, stack_pb2_grpc

from stackservice.diag import PATTERN
from tests.support.netns import in_netns, spawn_in_netns
from tests.support.stack import running_stack

pytestmark = pytest.mark.root

STACK = "198.18.0.10"


@pytest.fixture
def control(emulated_port):
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0", "--diag-services") as stack:
        yield emulated_port, stack, f"unix://{stack.run_dir / 'vf0.sock'}"


def vfstack(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["vfstack", *args, "--control", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def test_health_serving_and_reflection_lists_services(control):
    _, _, url = control
    with grpc.insecure_channel(url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"vfstack.v1.StackControl", "grpc.health.v1.Health"} <= services


def test_status_names_the_instance(control):
    port, _, url = control
    info = json.loads(vfstack(url, "status", "--json").stdout)
    assert info["name"] == "vf0" and info["iface"] == port.vf(0)
    assert info["mode"] == "emulated" and info["ip"] == f"{STACK}/24"
    assert info["pf"] == port.pf and info["vf_index"] == 0


def test_conns_lists_held_connections_established(control):
    """Acceptance: connections held open from the peer are listed with
    their state, next to the diag listeners."""
    port, _, url = control
    holder = spawn_in_netns(
        port.netns,
        sys.executable,
        "-m",
        "tests.support.kernel_peer",
        "hold",
        "--host",
        STACK,
        "--port",
        "80",
        "--count",
        "20",
        "--linger",
        "30",
        "--timeout",
        "60",
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert json.loads(holder.stdout.readline())["served"] == 20
        listing = json.loads(vfstack(url, "conns", "--json").stdout)
        table = vfstack(url, "conns").stdout
    finally:
        holder.kill()
    rows = listing["connections"]
    established = [r for r in rows if r["state"] == "ESTABLISHED"]
    assert len(established) == 20
    assert {r["remote_ip"] for r in established} == {"198.18.0.1"}
    assert all(r["local_port"] == 80 and r["owner"] == "diag" for r in established)
    assert {r["local_port"] for r in rows if r["state"] == "LISTEN"} == {7, 9, 80}
    assert table.count("ESTABLISHED") == 20


def test_stats_after_ab_1000_shows_passive_opens(control):
    """Acceptance: after ab -n 1000, at least 1000 passive opens."""
    port, _, url = control
    in_netns(port.netns, "ab", "-q", "-n", "1000", "-c", "10", f"http://{STACK}/", timeout=120)
    stats = json.loads(vfstack(url, "stats", "--json").stdout)
    groups = {
        g["name"]: {c["name"]: int(c["value"]) for c in g["counters"]} for g in stats["groups"]
    }
    assert groups["tcp"]["passive_opens"] >= 1000
    assert "passive_opens" in vfstack(url, "stats").stdout


def test_conns_after_ab_lists_time_wait_rows_and_the_instance_keeps_serving(control):
    """Regression: TIME-WAIT TCBs have shed their congestion controller,
    and `vfstack conns` used to crash the loop reading its name."""
    port, stack, url = control
    in_netns(port.netns, "ab", "-q", "-n", "500", "-c", "10", f"http://{STACK}/64", timeout=120)
    listing = json.loads(vfstack(url, "conns", "--json").stdout)
    waiting = json.loads(vfstack(url, "conns", "--state", "TIME_WAIT", "--json").stdout)
    table = vfstack(url, "conns", "--state", "time-wait").stdout.splitlines()

    rows = [r for r in listing["connections"] if r["state"] == "TIME_WAIT"]
    assert len(rows) >= 490  # the stack closes each HTTP/1.0 connection first
    assert waiting["total"] == len(waiting["connections"]) >= len(rows)
    assert {r["state"] for r in waiting["connections"]} == {"TIME_WAIT"}
    for row in waiting["connections"]:
        assert row["local_ip"] == STACK and row["local_port"] == 80
        assert row["remote_ip"] == "198.18.0.1" and 1024 <= row["remote_port"] < 65536
        # Shed state reads as none, as ss shows no tcp_info for TIME-WAIT.
        assert row["send_queue"] == row["receive_queue"] == 0
        assert row["cwnd"] == row["srtt_us"] == row["rto_us"] == 0
        assert row["congestion_control"] == "" and row["mss"] > 0
    assert table[0].split()[:3] == ["State", "Recv-Q", "Send-Q"]
    assert len(table) == 1 + waiting["total"]
    assert all(line.startswith("TIME_WAIT ") and f"{STACK}:80 " in line for line in table[1:])

    assert stack.proc.poll() is None, "the instance died"
    body = in_netns(port.netns, "curl", "-s", "--max-time", "10", f"http://{STACK}/10").stdout
    assert body == PATTERN[:10].decode()
    assert json.loads(vfstack(url, "status", "--json").stdout)["name"] == "vf0"


def test_unknown_connection_id_is_not_found(control):
    _, _, url = control
    with grpc.insecure_channel(url) as channel:
        stub = stack_pb2_grpc.StackControlStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.ListConnections(stack_pb2.ListConnectionsRequest(connection_id=10**9), timeout=10)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert stub.GetInfo(stack_pb2.GetInfoRequest(), timeout=10).name == "vf0"
    cli = vfstack(url, "conns", "--id", str(10**9), check=False)
    assert cli.returncode == 1 and cli.stderr.count("\n") == 1


def test_watch_client_vanishing_mid_stream_leaves_server_up(control):
    _, _, url = control
    with grpc.insecure_channel(url) as channel:
        stream = stack_pb2_grpc.StackControlStub(channel).WatchStats(
            stack_pb2.WatchStatsRequest(interval_ms=10)
        )
        assert not next(stream).delta
        assert next(stream).delta
        stream.cancel()
    assert json.loads(vfstack(url, "status", "--json").stdout)["name"] == "vf0"


def test_malformed_control_url_is_one_line_error(control):
    cli = subprocess.run(
        ["vfstack", "status", "--control", "unix:relative.sock"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode != 0
    assert cli.stderr.count("\n") == 1 and "Traceback" not in cli.stderr


def test_unreachable_instance_is_one_line_error(tmp_path):
    cli = subprocess.run(
        ["vfstack", "stats", "--control", f"unix://{tmp_path}/none.sock"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode == 1
    assert cli.stderr.count("\n") == 1 and "Traceback" not in cli.stderr
