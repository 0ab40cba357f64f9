"""The stack side of the fast path: a real TcpEngine on the fake wire of
tests/unit/tcp/_rig.py, and the application played through a second real
mapping of the session's segment (Segment.open + the record encoders)."""

from __future__ import annotations

import base64
import errno
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from vfstack.shm import (
    EPOLLERR,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDHUP,
    LAYOUT_VERSION,
    Doorbell,
    EventKind,
    Op,
    Segment,
    SlotState,
    decode_event,
    encode_command_into,
)

from stackservice.fastpath import Session, SessionManager, commands, occupancy
from stackservice.fastpath import sockets as sockets_module
from stackservice.fastpath.manager import ATTACH_GRACE_US, CHECK_APPS_INTERVAL_US
from stackservice.faults import Containment, FaultSite
from stackservice.tcp.segment import ACK, FIN, RST, SYN
from tests.support.faults import InjectedFault, inject
from tests.support.shm import mapped
from tests.unit.tcp._rig import LOCAL_IP, LOCAL_PORT, PEER_IP, PEER_PORT, Rig

NOW = 1_000_000  # µs; not 0, the engine stores times as "set" flags
PEER_ISS = 5000
SLOTS = 4
SMALL = {"command_slots": 64, "event_slots": 64, "socket_slots": SLOTS, "socket_ring_bytes": 4096}


class App:
    """The application's side of one session, over its own mapping."""

    def __init__(self, reply: dict) -> None:
        self.reply = reply
        self.seg = Segment.open(reply["segment_path"])
        self.bell = Doorbell.open(reply["app_doorbell"], ring=False)  # as the SDK does
        self.request = 0

    def command(self, op: int, slot: int = 0, a1: int = 0, a2: int = 0, a64: int = 0) -> int:
        self.request += 1
        ring = self.seg.commands
        assert ring.reserve(1) == 1
        encode_command_into(
            ring.data, ring.write_offset(0), op, slot, self.request, a1, a2, 0, 0, a64
        )
        ring.publish(1)
        return self.request

    def raw(self, record: bytes) -> None:
        assert self.seg.commands.push_many([record]) == 1

    def events(self) -> list:
        slots = self.seg.geometry.socket_slots
        return [decode_event(r, slots) for r in self.seg.events.pop_many(1000)]

    def write(self, slot: int, data: bytes) -> None:
        assert self.seg.tx(slot).write(data) == len(data)

    def read(self, slot: int) -> bytes:
        buf = bytearray(65536)
        n = self.seg.rx(slot).read_into(buf)
        return bytes(buf[:n])

    def close(self) -> None:
        self.bell.close()
        self.seg.close()


class Stack:
    """An engine on the fake wire plus a SessionManager, run pass by pass as the loop does."""

    def __init__(self, run_dir: Path, **kwargs) -> None:
        self.rig = Rig()
        self.engine = self.rig.engine
        self.manager = SessionManager(self.engine, run_dir, "vf0", **kwargs)
        self.now = NOW

    def attach(self, app: str = "web", pid: int = 0, **sizes) -> App:
        reply = self.manager.attach(app, pid or os.getpid(), **(sizes or SMALL), now=self.now)
        assert "error" not in reply, reply
        return App(reply)

    def dispatch(self) -> None:
        for sock in self.engine.take_events():
            if sock.owner is not None:
                sock.owner.on_ready(sock, self.now)

    def step(self, advance: int = 1000) -> list:
        """One loop pass: readiness to owners, sessions, output."""
        self.now += advance
        self.dispatch()
        self.manager.poll(self.now)
        self.dispatch()
        self.manager.poll(self.now)
        return self.rig.flush(self.now)

    def deliver(self, **kwargs) -> None:
        self.rig.deliver(self.now, **kwargs)


def by_kind(events: list, kind: EventKind) -> list:
    return [e for e in events if e.kind == kind]


def result(events: list, request: int):
    (found,) = [e for e in events if e.kind == EventKind.RESULT and e.request == request]
    return found


def open_socket(app: App, stack: Stack) -> int:
    request = app.command(Op.SOCKET)
    stack.step()
    event = result(app.events(), request)
    assert event.result == 0
    return event.slot


def listening(app: App, stack: Stack, port: int = LOCAL_PORT) -> int:
    slot = open_socket(app, stack)
    bind = app.command(Op.BIND, slot, 0, port)
    listen = app.command(Op.LISTEN, slot, 16)
    stack.step()
    events = app.events()
    assert result(events, bind).result == 0
    assert result(events, listen).result == 0
    assert app.seg.slot_state(slot) == SlotState.LISTENING
    return slot


def accepted(app: App, stack: Stack) -> tuple[int, int, int]:
    """A peer connects to a listening slot; returns (listener, conn slot, our iss)."""
    listener = listening(app, stack)
    stack.deliver(seq=PEER_ISS, flags=SYN)
    (synack,) = stack.step()
    assert synack.flags == SYN | ACK
    iss = synack.seg.seq
    stack.deliver(seq=PEER_ISS + 1, ack=iss + 1, flags=ACK)
    stack.step()
    events = app.events()
    (event,) = by_kind(events, EventKind.ACCEPTED)
    assert event.slot == listener
    assert (event.a2, event.a3) == (PEER_IP, PEER_PORT)
    conn = event.a1
    assert app.seg.slot_state(conn) == SlotState.CONNECTED
    ready = [e for e in by_kind(events, EventKind.READY) if e.slot == conn]
    assert ready and ready[-1].a1 & EPOLLOUT
    return listener, conn, iss


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


# -- attach / detach / sessions ----------------------------------------------


def test_attach_creates_the_files_and_answers_every_field(stack, tmp_path):
    reply = stack.manager.attach("web", os.getpid(), **SMALL, now=stack.now)
    assert reply["session_id"] == 1
    assert reply["layout_version"] == LAYOUT_VERSION
    base = re.fullmatch(r"(.*/vf0\.s1\.[0-9a-f]{32})\.shm", reply["segment_path"]).group(1)
    assert Path(base).parent == tmp_path
    assert reply["app_doorbell"] == f"{base}.app.bell"
    assert reply["stack_doorbell"] == f"{base}.stack.bell"
    assert stat.S_IMODE(os.stat(reply["segment_path"]).st_mode) == 0o600  # no app group
    assert os.path.getsize(reply["segment_path"]) == reply["segment_bytes"]
    for bell in (reply["app_doorbell"], reply["stack_doorbell"]):
        assert Path(bell).is_fifo()
    token = base64.b64decode(reply["token"])
    assert len(token) == 32
    with Segment.open(reply["segment_path"]) as seg:
        assert (seg.session_id, seg.token, seg.app_pid) == (1, token, os.getpid())
        assert seg.geometry.socket_slots == SLOTS
    assert len(stack.manager.fds()) == 1
    (row,) = stack.manager.sessions(stack.now + 5_000_000)
    assert row == {"session_id": 1, "app": "web", "pid": os.getpid(), "attached_ms": 5000,
                   "sockets": 0}  # fmt: skip
    other = stack.manager.attach("web", os.getpid(), **SMALL, now=stack.now)
    secret = Path(other["segment_path"]).name.split(".")[2]
    assert secret != Path(base).name.split(".")[2]  # a fresh random name per session


def test_with_an_app_group_session_files_are_group_read_write(tmp_path):
    stack = Stack(tmp_path, app_group=4242)
    reply = stack.manager.attach("web", os.getpid(), **SMALL, now=stack.now)
    for path in (reply["segment_path"], reply["app_doorbell"], reply["stack_doorbell"]):
        st = os.stat(path)
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 0o660), path


def test_files_of_a_crashed_run_are_removed_at_start(tmp_path):
    for name in ("vf0.s3.0123.shm", "vf0.s3.0123.app.bell"):
        (tmp_path / name).write_bytes(b"old")
    (tmp_path / "vf0.sock").write_bytes(b"")  # not a session file
    Stack(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["vf0.sock"]


def test_attach_defaults_and_errors(tmp_path):
    stack = Stack(tmp_path, max_sessions=1)
    reply = stack.manager.attach("web", os.getpid(), now=NOW)
    with Segment.open(reply["segment_path"]) as seg:
        g = seg.geometry
        assert (g.command_slots, g.event_slots, g.socket_slots, g.socket_ring_bytes) == (
            1024, 4096, 1024, 65536,
        )  # fmt: skip
    assert stack.manager.attach("web", 1, now=NOW)["error"] == "resource_exhausted"
    assert stack.manager.detach(reply["session_id"], b"x" * 32, NOW)["error"] == (
        "permission_denied"
    )
    assert len(stack.manager.sessions()) == 1
    stack.manager.detach(reply["session_id"], base64.b64decode(reply["token"]), NOW)
    bad = stack.manager.attach("web", 1, command_slots=100, now=NOW)
    assert bad["error"] == "invalid_argument"
    assert stack.manager.attach("", 1, now=NOW)["error"] == "invalid_argument"
    assert stack.manager.attach("x", -1, now=NOW)["error"] == "invalid_argument"
    assert stack.manager.detach(99, b"", NOW)["error"] == "not_found"
    assert sorted(os.listdir(tmp_path)) == []


# -- passive open, RX, TX ------------------------------------------------------


def test_listen_accept_and_receive(stack):
    app = stack.attach()
    _, conn, iss = accepted(app, stack)
    stack.deliver(seq=PEER_ISS + 1, ack=iss + 1, payload=b"hello fast path")
    stack.step()
    (ready,) = [e for e in by_kind(app.events(), EventKind.READY) if e.slot == conn]
    assert ready.a1 & EPOLLIN
    assert app.seg.readiness(conn) & EPOLLIN
    assert app.read(conn) == b"hello fast path"
    # the peer closes: EOF shows as EPOLLIN | EPOLLRDHUP
    stack.deliver(seq=PEER_ISS + 16, ack=iss + 1, flags=FIN | ACK)
    stack.step()
    (ready,) = [e for e in by_kind(app.events(), EventKind.READY) if e.slot == conn]
    assert ready.a1 & (EPOLLIN | EPOLLRDHUP) == EPOLLIN | EPOLLRDHUP
    assert stack.manager.sessions()[0]["sockets"] == 2


def test_full_rx_ring_waits_for_rx_done(stack):
    app = stack.attach()
    _, conn, iss = accepted(app, stack)
    data = bytes(range(256)) * 24  # 6144 bytes > the 4096-byte ring
    stack.deliver(seq=PEER_ISS + 1, ack=iss + 1, payload=data[:1400])
    stack.deliver(seq=PEER_ISS + 1401, ack=iss + 1, payload=data[1400:2800])
    stack.deliver(seq=PEER_ISS + 2801, ack=iss + 1, payload=data[2800:4200])
    stack.deliver(seq=PEER_ISS + 4201, ack=iss + 1, payload=data[4200:5600])
    stack.deliver(seq=PEER_ISS + 5601, ack=iss + 1, payload=data[5600:])
    stack.step()
    first = app.read(conn)
    assert len(first) == 4096
    app.command(Op.RX_DONE, conn)
    stack.step()
    assert first + app.read(conn) == data


def test_tx_ring_bytes_go_out_on_the_wire(stack):
    app = stack.attach()
    _, conn, iss = accepted(app, stack)
    app.write(conn, b"response bytes")
    app.command(Op.TX, conn)
    sent = stack.step()
    assert [s.payload for s in sent if s.payload] == [b"response bytes"]
    assert sent[0].seg.seq == iss + 1
    assert app.seg.tx(conn).free() == 4096  # the stack consumed them


def test_close_flushes_tx_frees_the_slot_and_bumps_the_generation(stack):
    app = stack.attach()
    _, conn, _ = accepted(app, stack)
    generation = app.seg.generation(conn)
    app.write(conn, b"last words")
    app.command(Op.TX, conn)
    app.command(Op.CLOSE, conn)
    sent = stack.step()
    assert b"".join(s.payload for s in sent) == b"last words"
    assert any(s.flags & FIN for s in sent)
    freed = by_kind(app.events(), EventKind.SLOT_FREED)
    assert [e.slot for e in freed] == [conn]
    assert freed[0].a64 == app.seg.rx(conn).consumed  # the app read all there was
    assert app.seg.slot_state(conn) == SlotState.FREE
    again = open_socket(app, stack)
    assert again == conn
    assert app.seg.generation(conn) == generation + 1


def test_slot_freed_says_where_the_closed_connections_rx_bytes_end(stack):
    app = stack.attach()
    _, conn, iss = accepted(app, stack)
    stack.deliver(seq=PEER_ISS + 1, ack=iss + 1, payload=b"never read")
    stack.step()
    app.events()
    app.command(Op.CLOSE, conn)
    stack.step()
    (freed,) = by_kind(app.events(), EventKind.SLOT_FREED)
    rx = app.seg.rx(conn)
    assert freed.a64 == rx.consumed + len(b"never read")
    assert app.seg.drop_stale_rx(conn, freed.a64) == len(b"never read")


def test_a_slot_reused_behind_stale_bytes_fills_after_the_drop_and_rx_done(stack):
    """The race the soak found (seed 21): the app releases a full RX ring
    and sends CLOSE, but the stack fills the ring again before the CLOSE
    arrives; the slot goes to the next accepted connection, whose bytes find
    the ring full of stale ones and wait for RX_DONE. The app's drop of the
    stale bytes is a read from a full ring (`ByteRing.was_full`): it owes
    RX_DONE, and only then do the new connection's bytes arrive."""
    app = stack.attach()
    _, conn, iss = accepted(app, stack)
    for k in range(3):  # 4200 bytes: the 4096-byte ring fills
        stack.deliver(seq=PEER_ISS + 1 + 1400 * k, ack=iss + 1, payload=bytes(1400))
    stack.step()
    app.events()
    rx = app.seg.rx(conn)
    rx.release(rx.readable())  # the app's close: it discards what it did not read ...
    for k in range(3, 6):
        stack.deliver(seq=PEER_ISS + 1 + 1400 * k, ack=iss + 1, payload=bytes(1400))
    stack.step()  # ... and the stack refills the ring before the CLOSE comes
    assert rx.readable() == 4096
    app.command(Op.CLOSE, conn)
    stack.deliver(seq=PEER_ISS, flags=SYN, src_port=PEER_PORT + 1)
    synack = [s for s in stack.step() if s.flags == SYN | ACK]
    (new_iss,) = [s.seg.seq for s in synack]
    stack.deliver(
        seq=PEER_ISS + 1, ack=new_iss + 1, flags=FIN | ACK, payload=b"new", src_port=PEER_PORT + 1
    )
    stack.step()
    events = app.events()
    (freed,) = by_kind(events, EventKind.SLOT_FREED)
    (again,) = by_kind(events, EventKind.ACCEPTED)
    assert (freed.slot, again.a1) == (conn, conn)  # the lowest free slot, reused
    before = rx.readable()
    dropped = app.seg.drop_stale_rx(conn, freed.a64)
    assert dropped == 4096 and rx.was_full(before, dropped)
    stack.step()
    assert app.read(conn) == b""  # without RX_DONE the stack does not look again
    app.command(Op.RX_DONE, conn)
    stack.step()
    assert app.read(conn) == b"new"


def test_socket_slots_run_out_with_emfile(stack):
    app = stack.attach()
    slots = [open_socket(app, stack) for _ in range(SLOTS)]
    assert sorted(slots) == list(range(SLOTS))
    request = app.command(Op.SOCKET)
    stack.step()
    assert result(app.events(), request).result == -errno.EMFILE


# -- active open -------------------------------------------------------------


def test_connect_completes_with_epollout(stack):
    app = stack.attach()
    slot = open_socket(app, stack)
    request = app.command(Op.CONNECT, slot, PEER_IP, PEER_PORT)
    sent = stack.step()
    event = result(app.events(), request)
    assert event.result == 0
    assert app.seg.slot_state(slot) == SlotState.CONNECTING
    (syn,) = sent
    assert syn.flags == SYN and syn.seg.dst_port == PEER_PORT
    stack.deliver(
        seq=PEER_ISS, ack=syn.seg.seq + 1, flags=SYN | ACK, src_port=PEER_PORT,
        dst_port=syn.seg.src_port,
    )  # fmt: skip
    stack.step()
    ready = [e for e in by_kind(app.events(), EventKind.READY) if e.slot == slot]
    assert ready and ready[-1].a1 & EPOLLOUT
    assert app.seg.slot_state(slot) == SlotState.CONNECTED
    app.write(slot, b"GET /")
    app.command(Op.TX, slot)
    assert [s.payload for s in stack.step() if s.payload] == [b"GET /"]


def test_connect_refused_sets_the_error(stack):
    app = stack.attach()
    slot = open_socket(app, stack)
    app.command(Op.CONNECT, slot, PEER_IP, PEER_PORT)
    (syn,) = stack.step()
    stack.deliver(
        seq=0, ack=syn.seg.seq + 1, flags=RST | ACK, src_port=PEER_PORT, dst_port=syn.seg.src_port
    )
    stack.step()
    ready = [e for e in by_kind(app.events(), EventKind.READY) if e.slot == slot]
    assert ready[-1].a1 & (EPOLLERR | EPOLLHUP) == EPOLLERR | EPOLLHUP
    assert app.seg.slot_error(slot) == errno.ECONNREFUSED
    request = app.command(Op.GETSOCKOPT, slot, socket.SOL_SOCKET, socket.SO_ERROR)
    stack.step()
    assert result(app.events(), request).a64 == errno.ECONNREFUSED
    assert app.seg.slot_error(slot) == 0


# -- commands answered with errors -------------------------------------------


def test_bind_to_a_foreign_address_and_options(stack):
    app = stack.attach()
    slot = open_socket(app, stack)
    foreign = app.command(Op.BIND, slot, PEER_IP, 8080)
    own = app.command(Op.BIND, slot, LOCAL_IP, 8080)
    nodelay = app.command(Op.SETSOCKOPT, slot, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    get = app.command(Op.GETSOCKOPT, slot, socket.IPPROTO_TCP, socket.TCP_NODELAY)
    unknown = app.command(Op.SETSOCKOPT, slot, socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    stack.step()
    events = app.events()
    assert result(events, foreign).result == -errno.EADDRNOTAVAIL
    assert (result(events, own).result, result(events, own).a1) == (0, 8080)
    assert result(events, nodelay).result == 0
    assert (result(events, get).result, result(events, get).a64) == (0, 1)
    assert result(events, unknown).result == -errno.ENOPROTOOPT
    listen = app.command(Op.LISTEN, slot, 8)
    stack.step()
    assert result(app.events(), listen).result == 0
    assert stack.engine.listeners[8080].options.nodelay


def test_options_on_a_connection(stack):
    app = stack.attach()
    _, conn, _ = accepted(app, stack)
    tcb = next(iter(stack.engine.flows.values()))
    requests = [
        app.command(Op.SETSOCKOPT, conn, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        app.command(Op.SETSOCKOPT, conn, socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        app.command(Op.SETSOCKOPT, conn, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30),
        app.command(Op.SETSOCKOPT, conn, socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
        app.command(Op.SETSOCKOPT, conn, socket.SOL_SOCKET, socket.SO_SNDBUF, 100_000),
    ]
    bad = app.command(Op.SETSOCKOPT, conn, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 0)
    get = app.command(Op.GETSOCKOPT, conn, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    stack.step()
    events = app.events()
    assert [result(events, r).result for r in requests] == [0] * 5
    assert result(events, bad).result == -errno.EINVAL
    assert result(events, get).a64 == 30
    assert tcb.nodelay and tcb.keepalive
    assert (tcb.keepalive_idle, tcb.keepalive_count) == (30_000_000, 3)
    assert tcb.send_buffer.capacity == 100_000


def test_shutdown_sends_fin_after_the_pending_bytes(stack):
    app = stack.attach()
    _, conn, _ = accepted(app, stack)
    app.write(conn, b"tail")
    request = app.command(Op.SHUTDOWN, conn, socket.SHUT_WR)
    sent = stack.step()
    assert result(app.events(), request).result == 0
    assert b"".join(s.payload for s in sent) == b"tail"
    assert sent[-1].flags & FIN


def test_commands_on_a_free_slot_get_ebadf(stack):
    app = stack.attach()
    request = app.command(Op.LISTEN, 2, 8)
    app.command(Op.TX, 2)
    stack.step()
    assert result(app.events(), request).result == -errno.EBADF
    assert stack.manager.sessions()


# -- misbehaving applications --------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        bytes([99]) + bytes(63),  # unknown op
        bytes([Op.LISTEN, 0, 0, 0])
        + (SLOTS).to_bytes(4, "little")
        + bytes(56),  # slot out of range
    ],
    ids=["unknown-op", "slot-out-of-range"],
)
def test_bad_record_ends_only_that_session(stack, tmp_path, record):
    bad = stack.attach("bad")
    good = stack.attach("good")
    bad.raw(record)
    request = good.command(Op.SOCKET)
    stack.step()
    assert [s["app"] for s in stack.manager.sessions()] == ["good"]
    assert stack.manager.violations == 1
    assert result(good.events(), request).result == 0
    assert not os.path.exists(bad.reply["segment_path"])
    assert not os.path.exists(bad.reply["stack_doorbell"])
    assert len(stack.manager.fds()) == 1


def test_corrupt_ring_index_ends_the_session(stack):
    bad = stack.attach("bad")
    good = stack.attach("good")
    with mapped(bad.reply["segment_path"]) as view:
        words = view.cast("Q")
        words[bad.seg.geometry.command_offset // 8] = 1 << 40  # head far past the tail
        words.release()
    stack.step()
    assert [s["app"] for s in stack.manager.sessions()] == ["good"]
    assert stack.manager.violations == 1
    assert not os.path.exists(bad.reply["segment_path"])
    open_socket(good, stack)


def test_detach_resets_connections_and_removes_files(stack, tmp_path):
    app = stack.attach()
    accepted(app, stack)
    session_id = app.reply["session_id"]
    token = base64.b64decode(app.reply["token"])
    assert stack.manager.detach(session_id, token, stack.now) == {}
    sent = stack.rig.flush(stack.now)
    assert [s.flags & RST for s in sent] == [RST]
    assert LOCAL_PORT not in stack.engine.listeners
    assert stack.engine.flows == {}
    assert os.listdir(tmp_path) == []
    assert stack.manager.sessions() == [] and stack.manager.fds() == []
    app.close()


@pytest.mark.parametrize("end", ["detach", "bad-record", "shutdown"])
def test_a_session_the_stack_ends_says_so_and_hangs_up_the_apps_doorbell(stack, end):
    app = stack.attach()
    assert not app.seg.ended and not app.bell.hung_up()
    if end == "detach":
        token = base64.b64decode(app.reply["token"])
        stack.manager.detach(app.reply["session_id"], token, stack.now)
    elif end == "bad-record":
        app.raw(bytes([99]) + bytes(63))
        stack.step()
    else:
        stack.manager.close(stack.now)
    assert app.seg.ended
    assert app.bell.hung_up() and app.bell.wait(0)
    app.close()


def test_check_apps_ends_sessions_whose_app_closed_its_segment(stack, tmp_path):
    alive = stack.attach("alive")
    dead = stack.attach("dead")
    stack.manager.check_apps(stack.now)
    assert len(stack.manager.sessions()) == 2
    dead.close()  # what the kernel does for a process that dies
    stack.manager.check_apps(stack.now + CHECK_APPS_INTERVAL_US)
    assert [s["app"] for s in stack.manager.sessions()] == ["alive"]
    assert stack.manager.dead_apps == 1
    assert not os.path.exists(dead.reply["segment_path"])
    assert os.path.exists(alive.reply["segment_path"])


def test_check_apps_notices_a_killed_process_holding_the_segment(stack):
    reply = stack.manager.attach("child", 1, **SMALL, now=stack.now)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vfstack.shm import Segment;"
         f"Segment.open({reply['segment_path']!r}); print('open', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline() == "open\n"
        stack.manager.check_apps(stack.now)
        assert len(stack.manager.sessions()) == 1
        child.kill()
        child.wait()
        stack.manager.check_apps(stack.now + CHECK_APPS_INTERVAL_US)
        assert stack.manager.sessions() == []
    finally:
        child.kill()


def test_check_apps_gives_an_app_time_to_open_its_segment(stack):
    stack.manager.attach("slow", 1, **SMALL, now=stack.now)  # nobody opens it
    stack.manager.check_apps(stack.now + ATTACH_GRACE_US - CHECK_APPS_INTERVAL_US)
    assert len(stack.manager.sessions()) == 1
    stack.manager.check_apps(stack.now + ATTACH_GRACE_US)
    assert stack.manager.sessions() == []


def test_check_apps_runs_at_most_every_interval(stack):
    app = stack.attach("dead")
    stack.manager.check_apps(stack.now)
    app.close()
    stack.manager.check_apps(stack.now + CHECK_APPS_INTERVAL_US - 1)
    assert len(stack.manager.sessions()) == 1
    stack.manager.check_apps(stack.now + CHECK_APPS_INTERVAL_US)
    assert stack.manager.sessions() == []


def test_app_doorbell_rings_only_when_the_app_sleeps(stack):
    app = stack.attach()
    app.command(Op.SOCKET)
    stack.step()
    assert app.bell.drain() == 0
    app.events()
    assert app.seg.events.prepare_sleep()
    app.command(Op.SOCKET)
    stack.step()
    assert app.bell.drain() == 1


# -- fault containment (docs/architecture.md principle 5) ---------------------------------

# Where a bug can meet one session, and the manager call that runs into it:
# (owner, function, when(its arguments) picks the doomed session, the call).
SESSION_FAULTS = {
    "command": (commands, "execute", lambda sockets, *_: sockets.app_name == "doomed", "poll"),
    "sampling": (occupancy, "sample_rings", lambda s, *_: s.app == "doomed", "poll"),
    "sleep": (Session, "busy", lambda s: s.app == "doomed", "prepare_sleep"),
    "liveness": (Segment, "app_alive", lambda seg: seg.app_pid == 2, "check_apps"),
}


def run_manager(stack: Stack, call: str) -> None:
    stack.now += CHECK_APPS_INTERVAL_US
    if call == "poll":
        stack.manager.poll(stack.now)
    elif call == "prepare_sleep":
        stack.manager.prepare_sleep()
    else:
        stack.manager.check_apps(stack.now)


@pytest.mark.parametrize("where", sorted(SESSION_FAULTS))
def test_a_bug_serving_one_session_ends_that_session_only(tmp_path, monkeypatch, caplog, where):
    owner, method, when, call = SESSION_FAULTS[where]
    contain = Containment(strict=False, clock=lambda: NOW)
    stack = Stack(tmp_path, contain=contain)
    doomed = stack.attach("doomed", pid=2)
    good = stack.attach("good", pid=3)
    accepted(good, stack)
    doomed.command(Op.SOCKET)
    inject(owner, method, when, monkeypatch.setattr)
    run_manager(stack, call)
    assert [s["app"] for s in stack.manager.sessions()] == ["good"]
    assert contain.count(FaultSite.SESSION) == 1 and stack.manager.failures == 1
    assert stack.manager.violations == 0  # a bug, not the app's fault
    assert not os.path.exists(doomed.reply["segment_path"])
    assert "where=session" in caplog.text and "session 1 (doomed) ends" in caplog.text
    open_socket(good, stack)  # the other app is served as before
    assert len(stack.engine.flows) == 1


@pytest.mark.parametrize("where", sorted(SESSION_FAULTS))
def test_strict_a_bug_serving_a_session_is_raised(tmp_path, monkeypatch, where):
    owner, method, when, call = SESSION_FAULTS[where]
    stack = Stack(tmp_path)  # strict unless told
    stack.attach("doomed", pid=2).command(Op.SOCKET)
    inject(owner, method, when, monkeypatch.setattr)
    with pytest.raises(InjectedFault):
        run_manager(stack, call)


def test_a_bug_in_attach_fails_that_attach_and_leaves_nothing(tmp_path, monkeypatch):
    contain = Containment(strict=False, clock=lambda: NOW)
    stack = Stack(tmp_path, contain=contain)
    good = stack.attach("good")
    inject(Session, "__init__", lambda s, engine, sid, app, *_: app == "doomed",
           monkeypatch.setattr)  # fmt: skip
    reply = stack.manager.attach("doomed", os.getpid(), **SMALL, now=stack.now)
    assert reply == {"error": "internal", "message": "attach failed: InjectedFault"}
    assert contain.count(FaultSite.SESSION) == 1
    assert sorted(p.name.split(".")[1] for p in tmp_path.iterdir()) == ["s1"] * 3  # good's
    assert [s["app"] for s in stack.manager.sessions()] == ["good"]
    open_socket(good, stack)
    assert stack.attach("again").reply["session_id"] == 3


# -- event delivery times ------------------------------------------------------


class Observations(list):
    """A histogram that keeps what it is given."""

    def observe(self, value: int) -> None:
        self.append(value)


def test_event_delivery_counts_the_passes_an_event_waits_for_room(tmp_path, monkeypatch):
    """vfstack_event_delivery_seconds: each published event is observed
    once, as the time from the pass that posted it to its publishing: no
    time when it goes out in that pass, every pass it waited for the app to
    make room in its event ring otherwise."""
    delivery = Observations()
    stack = Stack(tmp_path, event_delivery=delivery)
    monkeypatch.setattr(sockets_module, "monotonic_us", lambda: stack.now)
    app = stack.attach()
    ring = app.seg.geometry.event_slots
    for _ in range(ring):
        app.command(Op.SOCKET)  # EMFILE past the 4 slots: an event each all the same
    stack.step()
    assert delivery == [0] * ring
    app.command(Op.SOCKET)
    stack.step(advance=1000)  # the ring is full: this result waits
    assert len(delivery) == ring
    assert len(app.events()) == ring
    stack.step(advance=50_000)
    assert delivery[ring:] == [50_000]
    assert len(app.events()) == 1
