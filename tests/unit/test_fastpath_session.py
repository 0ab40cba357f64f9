"""The stack side of the fast path: a real TcpEngine on the fake wire of
tests/unit/tcp/_rig.py, and the application played through a second real
mapping of the session's segment (Segment.open + the record encoders)."""

from __future__ import annotations

import base64
import errno
import gc
import os
import select
import socket
import stat
import subprocess
import sys

import pytest
from vfstack.shm import (
    APP_BELL,
    EPOLLERR,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDHUP,
    LAYOUT_VERSION,
    SEGMENT,
    STACK_BELL,
    Doorbell,
    EventKind,
    Geometry,
    Op,
    Segment,
    SlotState,
    decode_event,
    encode_command_into,
)

from stackservice.fastpath import Session, SessionManager, commands, occupancy
from stackservice.fastpath import sockets as sockets_module
from stackservice.fastpath.session import COMMAND_BATCH
from stackservice.faults import Containment, FaultSite
from stackservice.limits import MIB, Limits, MemoryPool, Refusal
from stackservice.tcp.segment import ACK, FIN, RST, SYN
from tests.support.faults import InjectedFault, inject
from tests.unit.tcp._rig import LOCAL_IP, LOCAL_PORT, PEER_IP, PEER_PORT, Rig

NOW = 1_000_000  # µs; not 0, the engine stores times as "set" flags
PEER_ISS = 5000
SLOTS = 4
UID = 1000  # the apps' uid, as the control socket's peer credentials give it
SMALL = {"command_slots": 64, "event_slots": 64, "socket_slots": SLOTS, "socket_ring_bytes": 4096}


class App:
    """The application's side of one session, over the descriptors its
    attach reply carries (what the handoff gives the SDK)."""

    def __init__(self, reply: dict) -> None:
        self.reply = reply
        fds = reply["fds"]
        self.seg = Segment.open(fds[SEGMENT])
        self.bell = Doorbell.adopt(fds[APP_BELL])  # the read end, as the SDK has it
        self.stack_bell = Doorbell.adopt(fds[STACK_BELL])
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
        """What the kernel does for an app's process that ends."""
        self.bell.close()
        self.stack_bell.close()
        self.seg.close()


def app_limits(**limits) -> Limits:
    """Limits whose apps (UID) may listen on the rig's port 80."""
    return Limits(privileged_port_uids=frozenset({UID}), **limits)


class Stack:
    """An engine on the fake wire plus a SessionManager, run pass by pass as the loop does."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("limits", app_limits())
        self.rig = Rig()
        self.engine = self.rig.engine
        # The counters file's memory and refusal sections, as plain arrays.
        self.counters = {
            name: [0] * len(enum)
            for name, enum in (
                ("memory", MemoryPool), ("memory_limits", MemoryPool), ("refusals", Refusal)
            )
        }  # fmt: skip
        self.manager = SessionManager(self.engine, "vf0", counters=self.counters, **kwargs)
        self.now = NOW

    def attach(self, app: str = "web", pid: int = 0, uid: int = UID, **sizes) -> App:
        reply = self.manager.attach(app, uid, pid or os.getpid(), **(sizes or SMALL), now=self.now)
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

    def watch(self) -> None:
        """What the loop's poll() of the watched descriptors hands the manager now."""
        poller = select.poll()
        for fd, events in self.manager.watched().items():
            poller.register(fd, events)
        for fd, revents in poller.poll(0):
            self.manager.on_fd(fd, revents)


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
def stack():
    return Stack()


# -- attach / detach / sessions ----------------------------------------------


def test_attach_makes_the_sessions_memory_and_doorbells_and_answers_every_field(stack):
    reply = stack.manager.attach("web", UID, os.getpid(), **SMALL, now=stack.now)
    assert sorted(reply) == ["fds", "layout_version", "segment_bytes", "session_id", "token"]
    assert reply["session_id"] == 1
    assert reply["layout_version"] == LAYOUT_VERSION
    segment, app_bell, stack_bell = reply["fds"]
    assert os.fstat(segment).st_size == reply["segment_bytes"]
    assert os.readlink(f"/proc/self/fd/{segment}").startswith("/memfd:vfstack:vf0:s1")
    assert stat.S_ISFIFO(os.fstat(app_bell).st_mode)
    assert os.readlink(f"/proc/self/fd/{stack_bell}") == "anon_inode:[eventfd]"
    token = base64.b64decode(reply["token"])
    assert len(token) == 32
    app = App(reply)
    assert (app.seg.session_id, app.seg.token, app.seg.app_pid) == (1, token, os.getpid())
    assert app.seg.geometry.socket_slots == SLOTS
    assert len(stack.manager.watched()) == 2  # its stack doorbell, its app doorbell
    (row,) = stack.manager.sessions(stack.now + 5_000_000)
    assert row == {"session_id": 1, "app": "web", "uid": UID, "pid": os.getpid(),
                   "attached_ms": 5000, "sockets": 0}  # fmt: skip
    other = stack.manager.attach("web", UID, os.getpid(), **SMALL, now=stack.now)
    assert base64.b64decode(other["token"]) != token  # a fresh secret per session
    App(other).close()
    app.close()


def test_the_app_alone_holds_the_read_end_of_its_doorbell(stack):
    """Once its reply is sent (which closes the reply's descriptors), the
    stack keeps the write end only: the app's end closing is the app gone."""
    app = stack.attach()
    stack.watch()
    assert len(stack.manager.sessions()) == 1
    app.bell.close()
    stack.watch()
    assert stack.manager.sessions() == [] and stack.manager.dead_apps == 1
    app.close()


def test_attach_defaults_and_errors():
    stack = Stack(limits=app_limits(sessions=1, app_sessions=1))
    reply = stack.manager.attach("web", UID, os.getpid(), now=NOW)
    app = App(reply)
    g = app.seg.geometry
    assert (g.command_slots, g.event_slots, g.socket_slots, g.socket_ring_bytes) == (
        1024, 4096, 1024, 65536,
    )  # fmt: skip
    assert stack.manager.attach("web", UID, 1, now=NOW)["error"] == "resource_exhausted"
    assert stack.manager.detach(reply["session_id"], b"x" * 32, NOW)["error"] == (
        "permission_denied"
    )
    assert len(stack.manager.sessions()) == 1
    stack.manager.detach(reply["session_id"], base64.b64decode(reply["token"]), NOW)
    bad = stack.manager.attach("web", UID, 1, command_slots=100, now=NOW)
    assert bad["error"] == "invalid_argument"
    assert stack.manager.attach("", UID, 1, now=NOW)["error"] == "invalid_argument"
    assert stack.manager.attach("x", UID, -1, now=NOW)["error"] == "invalid_argument"
    assert stack.manager.detach(99, b"", NOW)["error"] == "not_found"
    assert stack.manager.watched() == {}
    app.close()


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


def test_an_app_that_never_reads_its_events_has_one_ready_per_slot_waiting(stack):
    """Issue 13, finding 10: READY events were merged within a pass only, so
    an app that left its event ring full grew the stack's heap by one event
    per segment received. It reads its bytes, never its events."""
    app = stack.attach()
    _, conn, iss = accepted(app, stack)
    backlog = stack.manager._sessions[1].sockets.out
    for n in range(1000):
        stack.deliver(seq=PEER_ISS + 1 + n, ack=iss + 1, payload=b"x")
        stack.step()
        assert app.read(conn) == b"x"  # room again: the next byte moves, a READY each pass
    assert app.seg.events.available() == 64  # the ring is full, since long
    assert [(kind, slot) for kind, slot, *_ in backlog] == [(EventKind.READY, conn)]
    memory, limits = stack.counters["memory"], stack.counters["memory_limits"]
    assert memory[MemoryPool.EVENT_BACKLOG] == 64  # one record's worth
    assert limits[MemoryPool.EVENT_BACKLOG] == 64 * (2 * SLOTS + COMMAND_BATCH)
    app.seg.events.release(64)  # the app reads its events at last
    stack.step()
    assert backlog == []
    (ready,) = app.events()
    assert (ready.kind, ready.slot) == (EventKind.READY, conn) and ready.a1 & EPOLLOUT


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


# -- shared memory: preallocated, and held to the limits (issue 13, finding 2) -------

GEOMETRY = Geometry(**SMALL)
BASE, STRIDE = GEOMETRY.socket_offset, GEOMETRY.socket_stride  # what Attach, a slot commit


def limited(instance: int, app: int) -> Stack:
    """A stack whose shared memory is capped at `instance` bytes, `app` per uid."""
    return Stack(limits=app_limits(shm_bytes=instance, app_shm_bytes=app))


def test_a_segment_is_preallocated_up_to_its_socket_rings_then_slot_by_slot(stack):
    app = stack.attach()
    segment = stack.manager._sessions[1].segment
    pages = os.fstat(segment.fd).st_blocks * 512
    assert BASE <= pages < BASE + 4096  # nothing beyond: a slot is committed when used
    open_socket(app, stack)
    assert os.fstat(segment.fd).st_blocks * 512 >= BASE + STRIDE
    assert stack.manager.memory.total == BASE + STRIDE


def test_sockets_beyond_an_apps_shared_memory_get_enobufs_and_freed_slots_are_reused():
    stack = limited(instance=MIB, app=BASE + 2 * STRIDE)
    app = stack.attach()
    first, second = open_socket(app, stack), open_socket(app, stack)
    request = app.command(Op.SOCKET)
    stack.step()
    assert result(app.events(), request).result == -errno.ENOBUFS
    assert stack.manager.memory.total == BASE + 2 * STRIDE
    refusals = stack.counters["refusals"]
    assert refusals[Refusal.SHM_APP] == 1 and refusals[Refusal.SHM_INSTANCE] == 0
    app.command(Op.CLOSE, first)
    stack.step()
    app.events()
    assert open_socket(app, stack) == first  # its rings committed already: no new charge
    assert stack.manager.memory.total == BASE + 2 * STRIDE
    assert stack.counters["memory"][MemoryPool.SEGMENTS] == BASE + 2 * STRIDE
    stack.manager.close(stack.now)
    assert stack.counters["memory"][MemoryPool.SEGMENTS] == 0
    assert second != first


def test_attach_past_the_limits_is_refused_and_root_is_held_to_the_instances_only():
    stack = limited(instance=3 * BASE, app=BASE)
    stack.attach(uid=UID)
    refused = stack.manager.attach("web", UID, 1, **SMALL, now=stack.now)
    assert refused["error"] == "resource_exhausted" and "uid 1000" in refused["message"]
    stack.attach(uid=UID + 1)  # another app has its own share
    stack.attach(uid=0)  # root: past any app's limit
    refused = stack.manager.attach("web", 0, 1, **SMALL, now=stack.now)
    assert refused["error"] == "resource_exhausted" and "instance" in refused["message"]
    refusals = stack.counters["refusals"]
    assert (refusals[Refusal.SHM_APP], refusals[Refusal.SHM_INSTANCE]) == (1, 1)
    assert stack.counters["memory_limits"][MemoryPool.SEGMENTS] == 3 * BASE
    assert len(stack.manager.sessions()) == 3


# -- sessions: held per app, and the ones nobody came for (issue 13, finding 9) ------


def test_an_app_is_held_to_its_sessions_the_others_and_root_are_not():
    stack = Stack(limits=app_limits(sessions=5, app_sessions=2))
    squatter = [stack.attach("squat", uid=UID) for _ in range(2)]
    refused = stack.manager.attach("squat", UID, 1, **SMALL, now=stack.now)
    assert refused["error"] == "resource_exhausted" and "uid 1000" in refused["message"]
    stack.attach("honest", uid=UID + 1)  # another app attaches as before
    stack.attach("root", uid=0)
    stack.attach("root", uid=0)  # root: beyond any app's share
    refused = stack.manager.attach("root", 0, 1, **SMALL, now=stack.now)
    assert refused["error"] == "resource_exhausted" and "5 sessions" in refused["message"]
    refusals = stack.counters["refusals"]
    assert (refusals[Refusal.SESSIONS_APP], refusals[Refusal.SESSIONS_INSTANCE]) == (1, 1)
    squatter[0].close()
    stack.watch()
    stack.attach("squat", uid=UID)  # its share is back once one of its own ended


def test_a_session_whose_app_never_came_is_ended_and_counted(stack):
    app = stack.attach()
    assert stack.manager.expire(1, stack.now) == {}
    assert stack.manager.sessions() == []
    assert stack.counters["refusals"][Refusal.ATTACH_TIMEOUT] == 1
    assert app.bell.hung_up()
    assert stack.manager.expire(1, stack.now) == {}  # already gone (its doorbell closed first)
    assert stack.counters["refusals"][Refusal.ATTACH_TIMEOUT] == 2


def test_a_listener_without_room_for_a_connection_leaves_it_in_the_accept_queue():
    stack = limited(instance=MIB, app=BASE + 2 * STRIDE)
    app = stack.attach()
    _, conn, _ = accepted(app, stack)  # two slots: all the app may have
    stack.deliver(seq=PEER_ISS, flags=SYN, src_port=PEER_PORT + 1)
    (synack,) = stack.step()
    stack.deliver(seq=PEER_ISS + 1, ack=synack.seg.seq + 1, flags=ACK, src_port=PEER_PORT + 1)
    stack.step()
    assert by_kind(app.events(), EventKind.ACCEPTED) == []
    assert len(stack.engine.listeners[LOCAL_PORT].accept_queue) == 1
    app.command(Op.CLOSE, conn)  # room again: the waiting connection is accepted
    stack.step()
    stack.step()
    (accepted_event,) = by_kind(app.events(), EventKind.ACCEPTED)
    assert accepted_event.a1 == conn and accepted_event.a3 == PEER_PORT + 1


# -- ports: who may listen where (issue 13, finding 12) -----------------------------


def bind(app: App, stack: Stack, port: int) -> int:
    """BIND then LISTEN on `port`: 0, or the first -errno."""
    slot = open_socket(app, stack)
    bound = app.command(Op.BIND, slot, 0, port)
    listen = app.command(Op.LISTEN, slot, 16)
    stack.step()
    events = app.events()
    return result(events, bound).result or result(events, listen).result


def test_ports_below_1024_are_roots_and_the_configured_uids():
    stack = Stack(limits=Limits(privileged_port_uids=frozenset({UID + 1})))
    assert bind(stack.attach(uid=UID), stack, 80) == -errno.EACCES
    assert bind(stack.attach(uid=UID + 1), stack, 81) == 0
    assert bind(stack.attach(uid=0), stack, 82) == 0
    assert bind(stack.attach(uid=UID), stack, 8080) == 0
    assert stack.counters["refusals"][Refusal.PRIVILEGED_PORT] == 1


def test_a_port_stays_its_apps_for_a_while_after_its_session_ends():
    """An app restarting finds its port; another app cannot take it meanwhile."""
    stack = Stack(limits=Limits(port_reserve_ms=10_000))
    owner = stack.attach("web", uid=UID)
    assert bind(owner, stack, 8080) == 0
    owner.close()
    stack.watch()  # its session ends
    squatter = stack.attach("squat", uid=UID + 1)
    assert bind(squatter, stack, 8080) == -errno.EADDRINUSE
    assert stack.counters["refusals"][Refusal.RESERVED_PORT] == 1
    assert bind(stack.attach("root", uid=0), stack, 8081) == 0  # root is not held to it
    restarted = stack.attach("web", uid=UID)
    assert bind(restarted, stack, 8080) == 0  # the owner, back
    restarted.close()
    stack.watch()
    stack.now += 10_000_000  # the reservation lapses
    assert bind(squatter, stack, 8080) == 0


def test_a_listener_its_app_closes_reserves_nothing():
    stack = Stack()
    app = stack.attach(uid=UID)
    listener = listening(app, stack, 8080)
    app.command(Op.CLOSE, listener)
    stack.step()
    assert bind(stack.attach(uid=UID + 1), stack, 8080) == 0


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


def test_buffer_sizes_above_the_maximum_are_clamped_like_linux(stack):
    """SO_SNDBUF/SO_RCVBUF beyond max_socket_buffer (4 MiB) are clamped,
    as Linux clamps to wmem_max/rmem_max: no error, and getsockopt tells
    what the socket got. 64 MiB per socket was anyone's for the asking."""
    app = stack.attach()
    _, conn, _ = accepted(app, stack)
    tcb = next(iter(stack.engine.flows.values()))
    top = stack.engine.settings.max_socket_buffer
    sets = [
        app.command(Op.SETSOCKOPT, conn, socket.SOL_SOCKET, name, 64 << 20)
        for name in (socket.SO_SNDBUF, socket.SO_RCVBUF)
    ]
    gets = [
        app.command(Op.GETSOCKOPT, conn, socket.SOL_SOCKET, name)
        for name in (socket.SO_SNDBUF, socket.SO_RCVBUF)
    ]
    stack.step()
    events = app.events()
    assert [result(events, r).result for r in sets] == [0, 0]
    assert [result(events, r).a64 for r in gets] == [top, top]
    assert tcb.send_buffer.capacity == tcb.receive_buffer.capacity == top


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
def test_bad_record_ends_only_that_session(stack, record):
    bad = stack.attach("bad")
    good = stack.attach("good")
    bad.raw(record)
    request = good.command(Op.SOCKET)
    stack.step()
    assert [s["app"] for s in stack.manager.sessions()] == ["good"]
    assert stack.manager.violations == 1
    assert result(good.events(), request).result == 0
    assert bad.bell.hung_up()
    assert len(stack.manager.watched()) == 2  # good's two


def test_corrupt_ring_index_ends_the_session(stack):
    bad = stack.attach("bad")
    good = stack.attach("good")
    words = bad.seg._view.cast("Q")
    words[bad.seg.geometry.command_offset // 8] = 1 << 40  # head far past the tail
    words.release()
    stack.step()
    assert [s["app"] for s in stack.manager.sessions()] == ["good"]
    assert stack.manager.violations == 1
    assert bad.bell.hung_up()
    open_socket(good, stack)


def test_detach_resets_connections_and_lets_go_of_the_session(stack):
    app = stack.attach()
    accepted(app, stack)
    session_id = app.reply["session_id"]
    token = base64.b64decode(app.reply["token"])
    assert stack.manager.detach(session_id, token, stack.now) == {}
    sent = stack.rig.flush(stack.now)
    assert [s.flags & RST for s in sent] == [RST]
    assert LOCAL_PORT not in stack.engine.listeners
    assert stack.engine.flows == {}
    assert stack.manager.sessions() == [] and stack.manager.watched() == {}
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


def test_an_app_that_ends_ends_its_session_and_only_its_own(stack):
    alive = stack.attach("alive")
    dead = stack.attach("dead")
    stack.watch()
    assert len(stack.manager.sessions()) == 2
    dead.close()  # what the kernel does for a process that dies
    stack.watch()
    assert [s["app"] for s in stack.manager.sessions()] == ["alive"]
    assert stack.manager.dead_apps == 1
    open_socket(alive, stack)


def test_a_killed_app_process_ends_its_session_at_once(stack):
    reply = stack.manager.attach("child", UID, 1, **SMALL, now=stack.now)
    segment, app_bell, stack_bell = reply["fds"]
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('holding', flush=True); time.sleep(60)"],
        pass_fds=[app_bell], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    for fd in (segment, app_bell, stack_bell):
        os.close(fd)
    try:
        assert child.stdout.readline() == "holding\n"
        stack.watch()
        assert len(stack.manager.sessions()) == 1
        child.kill()
        child.wait()
        stack.watch()
        assert stack.manager.sessions() == []
    finally:
        child.kill()
        child.wait()


def test_a_session_whose_descriptors_nobody_took_ends(stack):
    """The control process drops an app's descriptors when it does not come
    for them in time (stackservice.control.handoff): the session ends."""
    reply = stack.manager.attach("never", UID, 1, **SMALL, now=stack.now)
    stack.watch()
    assert len(stack.manager.sessions()) == 1
    for fd in reply["fds"]:
        os.close(fd)
    stack.watch()
    assert stack.manager.sessions() == [] and stack.manager.dead_apps == 1


def test_a_stack_doorbell_rung_without_pause_costs_one_read_per_pass(stack, monkeypatch):
    app = stack.attach()
    reads = []
    real = Doorbell.drain
    monkeypatch.setattr(Doorbell, "drain", lambda bell: reads.append(1) or real(bell))
    for _ in range(100):
        for _ in range(1000):
            app.stack_bell.ring()
        stack.watch()
    assert len(reads) == 100
    assert len(stack.manager.sessions()) == 1


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
    "doorbell": (Doorbell, "drain", lambda bell: True, "watch"),
}


def run_manager(stack: Stack, call: str, doomed: App) -> None:
    stack.now += occupancy.SAMPLE_INTERVAL_US  # a sampling pass is due
    if call == "poll":
        stack.manager.poll(stack.now)
    elif call == "prepare_sleep":
        stack.manager.prepare_sleep()
    else:
        doomed.stack_bell.ring()  # the only doorbell rung: the only one drained
        stack.watch()


@pytest.mark.parametrize("where", sorted(SESSION_FAULTS))
def test_a_bug_serving_one_session_ends_that_session_only(monkeypatch, caplog, where):
    owner, method, when, call = SESSION_FAULTS[where]
    contain = Containment(strict=False, clock=lambda: NOW)
    stack = Stack(contain=contain)
    doomed = stack.attach("doomed", pid=2)
    good = stack.attach("good", pid=3)
    accepted(good, stack)
    doomed.command(Op.SOCKET)
    inject(owner, method, when, monkeypatch.setattr)
    run_manager(stack, call, doomed)
    assert [s["app"] for s in stack.manager.sessions()] == ["good"]
    assert contain.count(FaultSite.SESSION) == 1 and stack.manager.failures == 1
    assert stack.manager.violations == 0  # a bug, not the app's fault
    assert doomed.bell.hung_up()
    assert "where=session" in caplog.text and "session 1 (doomed) ends" in caplog.text
    open_socket(good, stack)  # the other app is served as before
    assert len(stack.engine.flows) == 1


@pytest.mark.parametrize("where", sorted(SESSION_FAULTS))
def test_strict_a_bug_serving_a_session_is_raised(monkeypatch, where):
    owner, method, when, call = SESSION_FAULTS[where]
    stack = Stack()  # strict unless told
    doomed = stack.attach("doomed", pid=2)
    doomed.command(Op.SOCKET)
    inject(owner, method, when, monkeypatch.setattr)
    with pytest.raises(InjectedFault):
        run_manager(stack, call, doomed)


def test_a_bug_in_attach_fails_that_attach_and_leaves_nothing(monkeypatch):
    contain = Containment(strict=False, clock=lambda: NOW)
    stack = Stack(contain=contain)
    good = stack.attach("good")
    inject(Session, "__init__", lambda s, engine, sid, app, *_: app == "doomed",
           monkeypatch.setattr)  # fmt: skip
    # Earlier tests' garbage first: a collection during the attach would
    # close their descriptors, failing the count (or hiding a leak).
    gc.collect()
    open_fds = len(os.listdir("/proc/self/fd"))
    reply = stack.manager.attach("doomed", UID, os.getpid(), **SMALL, now=stack.now)
    assert reply == {"error": "internal", "message": "attach failed: InjectedFault"}
    assert len(os.listdir("/proc/self/fd")) == open_fds  # its memfd, pipe, eventfd closed
    assert contain.count(FaultSite.SESSION) == 1
    assert len(stack.manager.watched()) == 2  # good's
    assert [s["app"] for s in stack.manager.sessions()] == ["good"]
    open_socket(good, stack)
    assert stack.attach("again").reply["session_id"] == 3


# -- event delivery times ------------------------------------------------------


class Observations(list):
    """A histogram that keeps what it is given."""

    def observe(self, value: int) -> None:
        self.append(value)

    def observe_many(self, value: int, count: int) -> None:
        self.extend([value] * count)


def test_event_delivery_counts_the_passes_an_event_waits_for_room(monkeypatch):
    """vfstack_event_delivery_seconds: each published event is observed
    once, as the time from the pass that posted it to its publishing: no
    time when it goes out in that pass, every pass it waited for the app to
    make room in its event ring otherwise."""
    delivery = Observations()
    stack = Stack(event_delivery=delivery)
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
