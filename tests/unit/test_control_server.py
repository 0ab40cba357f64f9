"""The control server in-process, on a unix socket, with a real counters
file and the loop's end of a real link (`LinkServer` over a socketpair)
answered by each test."""

from __future__ import annotations

import base64
import json
import os
import queue
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from vfstack.shm import APP_BELL, redeem
from vfstack.v1 import stack_pb2, stack_pb2_grpc

from stackservice.control import gate
from stackservice.control import server as control
from stackservice.control.link import LinkServer, link_pair
from stackservice.faults import Containment, FaultSite
from stackservice.metrics.counters import CounterBlock, read_counters
from stackservice.metrics.layout import INSTANCE_LAYOUT
from stackservice.nic.packet_io import NicCounter
from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.state import TcpState
from tests.support.faults import InjectedFault

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STARTED_AT = 1_700_000_000.0

INFO = {
    "name": "vf0",
    "iface": "vfs0",
    "mac": "02:00:00:00:00:01",
    "ip": "198.18.0.10/24",
    "gateway": "198.18.0.1",
    "mode": "emulated",
    "pf": "pf0",
    "vf_index": 0,
    "workers": 1,
    "version": "0.1.0",
    "started_at": STARTED_AT,
    "congestion_control": "cubic",
    "diag_services": True,
    "build": "compiled",
}

ROW = {
    "connection_id": 7,
    "state": "ESTABLISHED",
    "local_ip": "198.18.0.10",
    "local_port": 80,
    "remote_ip": "198.18.0.2",
    "remote_port": 40000,
    "send_queue": 3,
    "receive_queue": 0,
    "cwnd": 14600,
    "ssthresh": 2**63 - 1,
    "srtt_us": 120,
    "rttvar_us": 60,
    "rto_us": 200_000,
    "retransmits": 1,
    "mss": 1460,
    "congestion_control": "cubic",
    "owner": "diag",
}


class Responder:
    """The loop's end of the link: `LinkServer` in a thread, replying from
    `replies[op]` (a dict, or a function of the request), its faults
    contained by `contain` (strict by default)."""

    def __init__(self, sock: socket.socket, contain: Containment | None = None) -> None:
        self.requests: list[dict] = []
        self.replies: dict[str, dict | Callable[[dict], dict]] = {}
        self._events: queue.Queue[str] = queue.Queue()
        self._link = LinkServer(sock, self._handle, contain)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _handle(self, request: dict) -> dict:
        self.requests.append(request)
        reply = self.replies.get(request["op"], {"error": "bogus"})
        return reply(request) if callable(reply) else dict(reply)

    def _run(self) -> None:
        while not self._done.is_set():
            while not self._events.empty():
                self._link.send_event(self._events.get())
            readable, _, _ = select.select([self._link], [], [], 0.01)
            if readable and not self._link.on_readable():
                return

    def send_event(self, event: str) -> None:
        self._events.put(event)

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self._link.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def health_status(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


@pytest.fixture
def socket_dir():
    # A short path: sun_path holds 108 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="vfc-") as path:
        yield Path(path)


@pytest.fixture
def started(tmp_path, socket_dir, request):
    """A control server whose loop has not said "ready" yet. The loop's
    end is strict, unless the test parametrizes `started` with "containing"
    (indirect)."""
    counters = CounterBlock(INSTANCE_LAYOUT, tmp_path / "vf0.counters")
    theirs, ours = link_pair()
    strict = getattr(request, "param", "strict") == "strict"
    contain = Containment(strict=strict, clock=time.monotonic_ns)
    responder = Responder(theirs, contain)
    handle = control.serve(
        ours,
        tmp_path / "vf0.counters",
        control.StackIdentity.from_json(json.dumps(INFO)),
        socket_dir / "vf0.sock",
        link_timeout=0.3,
    )
    channel = grpc.insecure_channel(f"unix:{socket_dir / 'vf0.sock'}")
    yield SimpleNamespace(
        handle=handle,
        responder=responder,
        counters=counters,
        channel=channel,
        stub=stack_pb2_grpc.StackControlStub(channel),
        contain=contain,
    )
    channel.close()
    handle.stop(grace=0).wait()
    responder.close()
    ours.close()
    counters.close()


@pytest.fixture
def ready(started):
    """A control server whose loop said "ready"."""
    started.responder.send_event("ready")
    wait_for(lambda: health_status(started.channel) == SERVING)
    return started


def assert_status(code: grpc.StatusCode, call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() == code, raised.value.details()
    return raised.value


def as_dict(stats: stack_pb2.Stats) -> dict[str, dict[str, int]]:
    return {g.name: {c.name: c.value for c in g.counters} for g in stats.groups}


# -- GetInfo / GetStats ----------------------------------------------------------


def test_get_info_returns_identity_and_uptime(started):
    before = time.time()
    info = started.stub.GetInfo(stack_pb2.GetInfoRequest(), timeout=2)
    after = time.time()
    expected = {k: v for k, v in INFO.items() if k != "started_at"}
    assert {k: getattr(info, k) for k in expected} == expected
    # Whole milliseconds since started_at, read during the call.
    assert int((before - STARTED_AT) * 1000) <= info.uptime_ms <= (after - STARTED_AT) * 1000


def test_get_stats_equals_counters_file(started):
    nic, tcp = started.counters.section("nic"), started.counters.section("tcp")
    nic[NicCounter.RX_PACKETS] = 12
    nic[NicCounter.RX_BYTES] = 2**64 - 1
    tcp[TcpCounter.ACTIVE_OPENS] = 3
    before = time.time()
    stats = started.stub.GetStats(stack_pb2.GetStatsRequest(), timeout=2)
    after = time.time()
    assert not stats.delta
    assert int(before * 1000) <= stats.timestamp_ms <= after * 1000  # read during the call
    assert as_dict(stats) == read_counters(started.handle.servicer.counters_path, INSTANCE_LAYOUT)
    assert as_dict(stats)["nic"]["rx_bytes"] == 2**64 - 1


def test_get_stats_counters_file_gone_unavailable(started):
    started.handle.servicer.counters_path.unlink()
    assert_status(
        grpc.StatusCode.UNAVAILABLE,
        lambda: started.stub.GetStats(stack_pb2.GetStatsRequest(), timeout=2),
    )


# -- WatchStats -----------------------------------------------------------------


def test_watch_stats_first_absolute_then_deltas(started):
    nic = started.counters.section("nic")
    nic[NicCounter.TX_PACKETS] = 100
    stream = started.stub.WatchStats(stack_pb2.WatchStatsRequest(interval_ms=20), timeout=5)
    first = next(stream)
    assert not first.delta
    assert as_dict(first)["nic"]["tx_packets"] == 100
    nic[NicCounter.TX_PACKETS] += 5
    nic[NicCounter.TX_BYTES] += 700
    seen = {"tx_packets": 0, "tx_bytes": 0}
    for message in stream:
        assert message.delta
        for name in seen:
            seen[name] += as_dict(message)["nic"][name]
        if seen == {"tx_packets": 5, "tx_bytes": 700}:
            break
    stream.cancel()


def test_watch_stats_gauges_stay_absolute_in_deltas(started):
    states = started.counters.section("tcp_states")
    states[TcpState.ESTABLISHED] = 4
    stream = started.stub.WatchStats(stack_pb2.WatchStatsRequest(interval_ms=20), timeout=5)
    assert as_dict(next(stream))["tcp_states"]["established"] == 4
    states[TcpState.ESTABLISHED] = 2  # a connection closed: no negative change
    wait_for(lambda: as_dict(next(stream))["tcp_states"]["established"] == 2)
    stream.cancel()


@pytest.mark.parametrize("interval_ms", [0, 5, 9, 60_001])
def test_watch_stats_interval_out_of_range_invalid_argument(started, interval_ms):
    stream = started.stub.WatchStats(stack_pb2.WatchStatsRequest(interval_ms=interval_ms))
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: next(stream))


def test_watch_stats_client_cancel_frees_its_thread(started):
    baseline = threading.active_count()
    # More cancelled streams than worker threads and watch slots: each one
    # must have let go of both, or a later one would queue or be refused.
    for _ in range(control.WORKERS + control.MAX_WATCHERS):
        stream = started.stub.WatchStats(stack_pb2.WatchStatsRequest(interval_ms=60_000), timeout=5)
        next(stream)
        stream.cancel()
        wait_for(lambda: started.handle.servicer.active_watches == 0, timeout=1)
    assert started.stub.GetInfo(stack_pb2.GetInfoRequest(), timeout=2).name == "vf0"
    wait_for(lambda: threading.active_count() <= baseline + control.WORKERS)


def test_watch_stats_too_many_streams_resource_exhausted(started):
    request = stack_pb2.WatchStatsRequest(interval_ms=60_000)
    streams = [started.stub.WatchStats(request, timeout=5) for _ in range(control.MAX_WATCHERS)]
    for stream in streams:
        next(stream)
    extra = started.stub.WatchStats(request, timeout=5)
    assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: next(extra))
    assert started.stub.GetInfo(stack_pb2.GetInfoRequest(), timeout=2).name == "vf0"
    for stream in streams:
        stream.cancel()


def test_watch_stats_ends_when_server_stops(started):
    stream = started.stub.WatchStats(stack_pb2.WatchStatsRequest(interval_ms=60_000), timeout=60)
    next(stream)
    stopped = started.handle.stop(grace=30)
    # Ended by the server (OK, no more messages): at the end of the grace
    # period gRPC would cancel the call instead, and iterating it raise.
    assert list(stream) == []
    assert stopped.wait(30)


# -- calls answered by the loop ----------------------------------------------------


def test_list_connections_passes_filters_and_converts_rows(ready):
    ready.responder.replies["connections"] = {"connections": [ROW], "total": 3}
    reply = ready.stub.ListConnections(
        stack_pb2.ListConnectionsRequest(
            connection_id=7, states=["ESTABLISHED"], limit=1, after_id=6
        ),
        timeout=2,
    )
    assert reply.total == 3
    assert [stack_pb2.Connection(**ROW)] == list(reply.connections)
    (request,) = ready.responder.requests
    del request["id"]
    assert request == {
        "op": "connections",
        "connection_id": 7,
        "states": ["ESTABLISHED"],
        "limit": 1,
        "after_id": 6,
        "viewer": os.getuid(),  # whose connections: the caller's uid, from the kernel
    }


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("not_found", grpc.StatusCode.NOT_FOUND),
        ("invalid_argument", grpc.StatusCode.INVALID_ARGUMENT),
        ("resource_exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("failed_precondition", grpc.StatusCode.FAILED_PRECONDITION),
        ("internal", grpc.StatusCode.INTERNAL),
        ("something_new", grpc.StatusCode.UNKNOWN),
    ],
)
def test_list_connections_loop_error_mapped_to_status(ready, error, code):
    ready.responder.replies["connections"] = {"error": error, "message": "no socket with id 9"}
    rejected = assert_status(
        code,
        lambda: ready.stub.ListConnections(
            stack_pb2.ListConnectionsRequest(connection_id=9), timeout=2
        ),
    )
    assert rejected.details() == "no socket with id 9"


def test_list_connections_malformed_loop_reply_internal(ready):
    ready.responder.replies["connections"] = {"connections": [{"colour": "red"}], "total": 1}
    assert_status(
        grpc.StatusCode.INTERNAL,
        lambda: ready.stub.ListConnections(stack_pb2.ListConnectionsRequest(), timeout=2),
    )


@pytest.mark.parametrize("started", ["containing"], indirect=True)
def test_a_bug_answering_one_request_fails_it_with_internal_the_next_is_served(ready):
    def connections(request: dict) -> dict:
        if request["connection_id"] == 9:
            raise InjectedFault("injected into connections")
        return {"connections": [ROW], "total": 1}

    ready.responder.replies["connections"] = connections
    failed = assert_status(
        grpc.StatusCode.INTERNAL,
        lambda: ready.stub.ListConnections(
            stack_pb2.ListConnectionsRequest(connection_id=9), timeout=2
        ),
    )
    assert "internal error" in failed.details() and "'connections'" in failed.details()
    assert ready.contain.count(FaultSite.CONTROL) == 1
    reply = ready.stub.ListConnections(stack_pb2.ListConnectionsRequest(), timeout=2)
    assert [c.connection_id for c in reply.connections] == [7]
    assert ready.contain.count(FaultSite.CONTROL) == 1


def test_list_sessions_converts_rows(ready):
    session = {"session_id": 1, "app": "web", "pid": 42, "attached_ms": 5, "sockets": 2}
    ready.responder.replies["sessions"] = {"sessions": [session]}
    reply = ready.stub.ListSessions(stack_pb2.ListSessionsRequest(), timeout=2)
    assert list(reply.sessions) == [stack_pb2.Session(**session)]


def test_attach_loop_unimplemented_unimplemented(ready):
    ready.responder.replies["attach"] = {"error": "unimplemented", "message": "no fast path"}
    assert_status(
        grpc.StatusCode.UNIMPLEMENTED,
        lambda: ready.stub.Attach(stack_pb2.AttachRequest(app="web", pid=42), timeout=2),
    )
    assert ready.responder.requests[0]["app"] == "web"
    # Who calls is the kernel's word (SO_PEERCRED through the gate), not the request's.
    assert ready.responder.requests[0]["uid"] == os.getuid()
    assert ready.responder.requests[0]["pid"] == os.getpid()


def test_attach_leaves_the_sessions_descriptors_on_the_handoff_socket(ready, socket_dir):
    read_end, write_end = os.pipe()
    token = bytes(range(32))
    ready.responder.replies["attach"] = lambda request: {
        "session_id": 5,
        "segment_bytes": 1 << 20,
        "layout_version": 2,
        "token": base64.b64encode(token).decode(),
        "fds": [os.memfd_create("segment"), read_end, os.eventfd(0)],
    }
    reply = ready.stub.Attach(stack_pb2.AttachRequest(app="web", pid=42), timeout=2)
    assert (reply.session_id, reply.token, reply.segment_bytes) == (5, token, 1 << 20)
    assert reply.handoff_path == str(socket_dir / "vf0.attach")
    assert reply.segment_path == reply.app_doorbell == reply.stack_doorbell == ""
    fds = redeem(reply.handoff_path, 5, token, 5.0)
    os.write(write_end, b"!")
    assert os.read(fds[APP_BELL], 1) == b"!"
    for fd in (*fds, write_end):
        os.close(fd)


def test_descriptors_nobody_came_for_are_reported_to_the_loop(ready):
    ready.handle.servicer.handoff.timeout = 0.05
    ready.responder.replies["expired"] = {}
    ready.responder.replies["attach"] = lambda request: {
        "session_id": 5, "segment_bytes": 1, "layout_version": 2, "token": "AAEC",
        "fds": [os.memfd_create("segment"), os.eventfd(0), os.eventfd(0)],
    }  # fmt: skip
    ready.stub.Attach(stack_pb2.AttachRequest(app="web"), timeout=2)
    wait_for(lambda: len(ready.responder.requests) == 2)
    assert ready.responder.requests[1]["op"] == "expired"
    assert ready.responder.requests[1]["session_id"] == 5


def test_attach_refused_by_the_loop_leaves_nothing_behind(ready):
    read_end, write_end = os.pipe()
    ready.responder.replies["attach"] = lambda request: {
        "error": "resource_exhausted", "message": "full", "fds": [read_end],
    }  # fmt: skip
    assert_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda: ready.stub.Attach(stack_pb2.AttachRequest(app="web", pid=42), timeout=2),
    )
    assert ready.handle.servicer.handoff.waiting == 0

    def no_reader() -> bool:  # the responder's thread closes its own copy after sending
        try:
            os.write(write_end, b"x")
        except BrokenPipeError:
            return True
        return False

    wait_for(no_reader)  # every copy of the read end is closed
    os.close(write_end)


def test_detach_passes_session_id_and_token(ready):
    ready.responder.replies["detach"] = {}
    ready.stub.Detach(stack_pb2.DetachRequest(session_id=5, token=b"\0\1\2"), timeout=2)
    assert ready.responder.requests[0]["session_id"] == 5
    assert ready.responder.requests[0]["token"] == "AAEC"


def test_detach_with_a_wrong_token_is_permission_denied(ready):
    ready.responder.replies["detach"] = {"error": "permission_denied", "message": "wrong token"}
    assert_status(
        grpc.StatusCode.PERMISSION_DENIED,
        lambda: ready.stub.Detach(stack_pb2.DetachRequest(session_id=5), timeout=2),
    )


class WatchedEvent(threading.Event):
    """An Event that says when someone waits on it (`waiting`)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def test_call_while_loop_starts_waits_for_ready(started):
    """The start-up line can beat the loop's "ready" across the link: a
    client attaching at once waits for it instead of failing."""
    started.responder.replies["sessions"] = {"sessions": []}
    started.handle.servicer.started = loop_started = WatchedEvent()
    call = started.stub.ListSessions.future(stack_pb2.ListSessionsRequest(), timeout=10)
    assert loop_started.waiting.wait(5)  # the call waits for the loop ...
    assert not call.done() and started.responder.requests == []
    started.responder.send_event("ready")
    assert call.result().sessions == []  # ... and is answered once it is ready
    assert [r["op"] for r in started.responder.requests] == ["sessions"]


def test_loop_that_never_starts_calls_unavailable(started, monkeypatch):
    monkeypatch.setattr(control, "STARTUP_WAIT_S", 0.2)
    error = assert_status(
        grpc.StatusCode.UNAVAILABLE,
        lambda: started.stub.ListSessions(stack_pb2.ListSessionsRequest(), timeout=2),
    )
    assert "starting" in error.details()
    assert started.responder.requests == []


def held_reply(ready, reply: dict) -> threading.Event:
    """The loop answers the next `sessions` request with `reply` only once
    the returned event is set (a loop stuck in a long pass)."""
    release = threading.Event()

    def held(request: dict) -> dict:
        release.wait(30)
        return reply

    ready.responder.replies["sessions"] = held
    return release


def test_loop_slower_than_short_deadline_deadline_exceeded(ready):
    release = held_reply(ready, {"sessions": []})
    try:
        assert_status(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            lambda: ready.stub.ListSessions(stack_pb2.ListSessionsRequest(), timeout=0.1),
        )
    finally:
        release.set()


def test_loop_slower_than_link_timeout_unavailable(ready):
    late = {"session_id": 1, "app": "late", "pid": 1, "attached_ms": 1, "sockets": 0}
    release = held_reply(ready, {"sessions": [late]})
    try:
        # The link timeout (0.3 s in the fixture) ends the call, not its deadline.
        failed = assert_status(
            grpc.StatusCode.UNAVAILABLE,
            lambda: ready.stub.ListSessions(stack_pb2.ListSessionsRequest(), timeout=60),
        )
        assert failed.details() == "the loop did not answer sessions in 0.3s"
    finally:
        release.set()
    # The late reply, sent before the next call's, is dropped: that call gets its own.
    ready.responder.replies["sessions"] = {"sessions": []}
    assert ready.stub.ListSessions(stack_pb2.ListSessionsRequest(), timeout=2).sessions == []
    assert len(ready.responder.requests) == 2


# -- health and the loop's events ---------------------------------------------------


def test_health_follows_loop_ready_then_stopping(started):
    assert health_status(started.channel) == NOT_SERVING
    assert health_status(started.channel, control.SERVICE_NAME) == NOT_SERVING
    watch = health_pb2_grpc.HealthStub(started.channel).Watch(
        health_pb2.HealthCheckRequest(service=control.SERVICE_NAME), timeout=5
    )
    assert next(watch).status == NOT_SERVING
    started.responder.send_event("ready")
    assert next(watch).status == SERVING
    assert health_status(started.channel) == SERVING
    started.responder.send_event("stopping")
    assert next(watch).status == NOT_SERVING
    assert started.handle.wait(timeout=3)  # stopped gracefully


def test_link_closed_stops_server(ready):
    ready.responder.close()
    assert ready.handle.wait(timeout=3)
    assert ready.handle.servicer.link_state == control.CLOSED


# -- reflection, limits, bad input -----------------------------------------------


def test_reflection_lists_stack_control_and_health(started):
    database = ProtoReflectionDescriptorDatabase(started.channel)
    services = set(database.get_services())
    assert {"vfstack.v1.StackControl", "grpc.health.v1.Health"} <= services
    described = database.FindFileContainingSymbol("vfstack.v1.StackControl")
    assert described.package == "vfstack.v1"


def test_oversized_request_resource_exhausted_server_still_answers(ready):
    huge = stack_pb2.ListConnectionsRequest(states=["ESTABLISHED" * 10] * 1000)
    assert huge.ByteSize() > control.MAX_RECEIVE_BYTES
    assert_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda: ready.stub.ListConnections(huge, timeout=2),
    )
    assert ready.responder.requests == []
    assert ready.stub.GetInfo(stack_pb2.GetInfoRequest(), timeout=2).name == "vf0"


@pytest.mark.parametrize("method", ["GetInfo", "ListConnections", "WatchStats"])
def test_undecodable_request_rejected_server_stays_up(ready, method):
    raw = ready.channel.unary_unary(
        f"/vfstack.v1.StackControl/{method}",
        request_serializer=None,
        response_deserializer=None,
    )
    # Field 1 with wire type 7, which does not exist: no message parses it.
    rejected = assert_status_in(
        {grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT},
        lambda: raw(b"\x0f\xff\xff", timeout=2),
    )
    assert "deserializ" in rejected.details().lower(), rejected.details()
    assert ready.responder.requests == []
    assert ready.stub.GetInfo(stack_pb2.GetInfoRequest(), timeout=2).name == "vf0"


def assert_status_in(codes: set[grpc.StatusCode], call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() in codes, raised.value
    return raised.value


def test_unix_socket_mode_0660_and_the_server_behind_the_gate_root_only(started, socket_dir):
    assert stat.S_IMODE(os.stat(socket_dir / "vf0.sock").st_mode) == 0o660
    assert stat.S_IMODE(os.stat(socket_dir / "vf0.grpc").st_mode) == 0o600


# -- the gate: who calls, from the kernel -------------------------------------------

OTHER_UID, APP_GID = 10002, 10001


def as_other_user(socket_dir: Path, *argv: str) -> dict:
    """tests.support.caller as uid 10002 (group 10001, which may use the socket)."""
    os.chmod(socket_dir, 0o755)
    os.chown(socket_dir / "vf0.sock", -1, APP_GID)
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.as_user", str(OTHER_UID), str(APP_GID),
         "tests.support.caller", "--control", f"unix://{socket_dir / 'vf0.sock'}", *argv],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_attach_by_another_user_carries_that_users_uid(ready, socket_dir):
    ready.responder.replies["attach"] = {"error": "unimplemented", "message": "x"}
    assert as_other_user(socket_dir, "attach") == {"error": "UNIMPLEMENTED"}
    (request,) = ready.responder.requests
    assert request["uid"] == OTHER_UID and request["pid"] > 0


def test_a_listing_asked_by_another_user_is_for_that_users_uid(ready, socket_dir):
    ready.responder.replies["sessions"] = {"sessions": []}
    ready.responder.replies["connections"] = {"connections": [], "total": 0}
    assert as_other_user(socket_dir, "sessions") == {}
    assert as_other_user(socket_dir, "connections") == {}
    assert [r["viewer"] for r in ready.responder.requests] == [OTHER_UID, OTHER_UID]


def test_one_uid_cannot_hold_every_control_connection(ready, socket_dir):
    held = as_other_user(socket_dir, "hold", str(gate.MAX_CONNECTIONS_PER_UID + 4))
    assert held == {"answered": gate.MAX_CONNECTIONS_PER_UID, "closed": 4}
    assert ready.handle.servicer.gate.refusals["control_app_connections"] == 4
    ready.responder.replies["sessions"] = {"sessions": []}
    assert ready.stub.ListSessions(stack_pb2.ListSessionsRequest(), timeout=2).sessions == []
    wait_for(lambda: ready.handle.servicer.gate.connections == 1)  # theirs went with them


def test_attach_and_listings_over_tcp_are_permission_denied(tmp_path, socket_dir):
    counters = CounterBlock(INSTANCE_LAYOUT, tmp_path / "c")
    theirs, ours = link_pair()
    responder = Responder(theirs)
    handle = control.serve(
        ours, tmp_path / "c", control.StackIdentity.from_json(json.dumps(INFO)),
        socket_dir / "s.sock", tcp="127.0.0.1:0",
    )  # fmt: skip
    try:
        responder.send_event("ready")
        with grpc.insecure_channel(f"127.0.0.1:{handle.tcp_port}") as channel:
            wait_for(lambda: health_status(channel) == SERVING)
            stub = stack_pb2_grpc.StackControlStub(channel)
            for call in (
                lambda: stub.Attach(stack_pb2.AttachRequest(app="web"), timeout=2),
                lambda: stub.ListSessions(stack_pb2.ListSessionsRequest(), timeout=2),
                lambda: stub.ListConnections(stack_pb2.ListConnectionsRequest(), timeout=2),
            ):
                assert_status(grpc.StatusCode.PERMISSION_DENIED, call)
            assert stub.GetInfo(stack_pb2.GetInfoRequest(), timeout=2).name == "vf0"
        assert responder.requests == []  # the loop never heard of it
    finally:
        handle.stop(grace=0).wait()
        responder.close()
        ours.close()
        counters.close()


def test_tcp_listener_on_ephemeral_port(tmp_path, socket_dir):
    counters = CounterBlock(INSTANCE_LAYOUT, tmp_path / "c")
    theirs, ours = link_pair()
    handle = control.serve(
        ours,
        tmp_path / "c",
        control.StackIdentity.from_json(json.dumps(INFO)),
        socket_dir / "s.sock",
        tcp="127.0.0.1:0",
    )
    try:
        assert handle.tcp_port
        with grpc.insecure_channel(f"127.0.0.1:{handle.tcp_port}") as channel:
            stub = stack_pb2_grpc.StackControlStub(channel)
            assert stub.GetInfo(stack_pb2.GetInfoRequest(), timeout=2).iface == "vfs0"
    finally:
        handle.stop(grace=0).wait()
        theirs.close()
        ours.close()
        counters.close()


# -- the identity and the command line ------------------------------------------


def test_identity_unknown_optional_values_may_be_null():
    identity = control.StackIdentity.from_json(
        json.dumps({**INFO, "pf": None, "gateway": None, "vf_index": None})
    )
    assert (identity.pf, identity.gateway, identity.vf_index) == ("", "", -1)


@pytest.mark.parametrize(
    ("info", "complaint"),
    [
        ("[1]", "JSON object"),
        ("{", "not JSON"),
        (json.dumps({k: v for k, v in INFO.items() if k != "mac"}), "missing key 'mac'"),
        (json.dumps({**INFO, "colour": "red"}), "unknown key 'colour'"),
        (json.dumps({**INFO, "workers": "1"}), "'workers' must be int"),
        (json.dumps({**INFO, "diag_services": 1}), "'diag_services' must be bool"),
    ],
)
def test_identity_bad_info_rejected(info, complaint):
    with pytest.raises(ValueError, match=complaint):
        control.StackIdentity.from_json(info)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--link-fd", "x"],
        ["--info", "{"],
        ["--tcp", "localhost"],
        ["--counters", "/nonexistent/counters"],
        ["--link-fd", "987"],
    ],
)
def test_main_bad_arguments_one_line_status_2(tmp_path, capsys, argv):
    (tmp_path / "c").touch()
    defaults = {
        "--link-fd": "0",
        "--counters": str(tmp_path / "c"),
        "--info": json.dumps(INFO),
        "--unix": str(tmp_path / "s.sock"),
    }
    if argv:
        defaults.update(dict(zip(argv[::2], argv[1::2], strict=True)))
        argv = [item for pair in defaults.items() for item in pair]
    assert control.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("stackservice.control.server: error: ")
    assert err.count("\n") == 1


def test_main_link_fd_not_a_socket_status_2(tmp_path, capsys):
    (tmp_path / "c").touch()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as file:
        status = control.main(
            [
                "--link-fd", str(file.fileno()),
                "--counters", str(tmp_path / "c"),
                "--info", json.dumps(INFO),
                "--unix", str(tmp_path / "s.sock"),
            ]
        )  # fmt: skip
    assert status == 2
    assert "not an AF_UNIX seqpacket socket" in capsys.readouterr().err


def spawn(tmp_path: Path, socket_dir: Path) -> tuple[subprocess.Popen, Responder, CounterBlock]:
    counters = CounterBlock(INSTANCE_LAYOUT, tmp_path / "c")
    theirs, ours = link_pair()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "stackservice.control.server",
            "--link-fd", str(ours.fileno()),
            "--counters", str(tmp_path / "c"),
            "--info", json.dumps(INFO),
            "--unix", str(socket_dir / "s.sock"),
        ],
        pass_fds=[ours.fileno()],
    )  # fmt: skip
    ours.close()
    return process, Responder(theirs), counters


def wait_serving(channel: grpc.Channel) -> None:
    def serving() -> bool:
        try:
            return health_status(channel) == SERVING
        except grpc.RpcError:
            return False

    wait_for(serving, timeout=20)


def test_process_ready_then_stopping_exits_0(tmp_path, socket_dir):
    process, responder, counters = spawn(tmp_path, socket_dir)
    try:
        responder.replies["sessions"] = {"sessions": []}
        responder.send_event("ready")
        with grpc.insecure_channel(f"unix:{socket_dir / 's.sock'}") as channel:
            wait_serving(channel)
            stub = stack_pb2_grpc.StackControlStub(channel)
            assert stub.ListSessions(stack_pb2.ListSessionsRequest(), timeout=2).sessions == []
        responder.send_event("stopping")
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        responder.close()
        counters.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_process_signal_exits_0(tmp_path, socket_dir, signum):
    process, responder, counters = spawn(tmp_path, socket_dir)
    try:
        responder.send_event("ready")
        with grpc.insecure_channel(f"unix:{socket_dir / 's.sock'}") as channel:
            wait_serving(channel)
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        responder.close()
        counters.close()


def test_a_uids_upload_through_the_gate_is_held_to_its_budget():
    now = [100.0]
    upload = gate.Upload(clock=lambda: now[0])
    assert upload.take(gate.UPLOAD_BURST) == 0  # a burst goes at once
    assert upload.take(gate.UPLOAD_BYTES_PER_S) == pytest.approx(1.0)  # then a second per budget
    now[0] += 1.0  # the wait paid that debt
    assert upload.take(gate.UPLOAD_BYTES_PER_S // 2) == pytest.approx(0.5)
    now[0] += 60.0  # idle: back to a full burst, no more
    assert upload.take(gate.UPLOAD_BURST) == 0
    assert upload.take(1) > 0
