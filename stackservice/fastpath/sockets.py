"""A session's sockets: its slots, the engine sockets behind them, and the
bytes, readiness and events that pass between the two.

`SocketTable` is the stack's own view of one session's slot table
(vfstack.shm): the slot table in shared memory is only ever written from
here, never read back. It is the `owner` of the engine sockets its
session made, so the loop hands it readiness changes through
`on_ready(sock, now)`, which only marks the slot dirty (a set add, no
scanning); the session's pass then `pump`s the dirty slots: bytes from the
TX ring into the engine's send buffer and from its receive buffer into the
RX ring, new connections of a listener into slots of their own, and the
readiness that results. What the app is owed is queued as event tuples
(`post`) for the pass to publish.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterator

from vfstack.shm import (
    EPOLLERR,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDHUP,
    EVENT_ACCEPTED,
    EVENT_READY,
    SLOT_CONNECTED,
    SLOT_CONNECTING,
    SLOT_FREE,
    SLOT_OPEN,
    encode_event_into,
)
from vfstack.shm._segment import Segment  # the defining module: sockets.pxd cimports it

from stackservice.clock import monotonic_us
from stackservice.fastpath.ports import PortPolicy
from stackservice.metrics.apps import AppField
from stackservice.metrics.counters import Histogram
from stackservice.tcp.engine import Listener, SocketError, SocketOptions, TcpEngine
from stackservice.tcp.state import CLOSE_WAIT, CLOSED, ESTABLISHED, SYN_SENT
from stackservice.tcp.tcb import Tcb

__all__ = ["Slot", "SocketTable"]

_APP_RX_BYTES = int(AppField.RX_BYTES)
_APP_TX_BYTES = int(AppField.TX_BYTES)
_FENCE = threading.Lock()  # an uncontended lock round trip is a full fence


class Slot:
    """The stack's view of one socket slot."""

    __slots__ = (
        "state", "sock", "port", "readiness", "error", "eof", "options", "reuseaddr", "linger",
    )  # fmt: skip

    def __init__(self, state: int) -> None:
        self.state = state  # SLOT_*
        self.sock: Tcb | Listener | None = None
        self.port = 0  # bound local port, 0 if none
        self.readiness = 0
        self.error = 0  # sticky errno shown in the slot table
        self.eof = False  # the peer's FIN has been handed to the RX ring
        self.options = SocketOptions()  # applied at connect / listen
        self.reuseaddr = 0
        self.linger = -1  # SO_LINGER seconds, -1: off


class SocketTable:
    """One session's socket slots and the engine sockets they hold."""

    __slots__ = (
        "engine",
        "segment",
        "app_name",
        "uid",
        "slots",
        "generation",
        "free",
        "committed",
        "ports",
        "_commit",
        "slot_of",
        "listening",
        "dirty",
        "out",
        "now",
        "_out_base",
        "_ready_at",
        "_app_stats",
    )

    def __init__(
        self,
        engine: TcpEngine,
        segment: Segment,
        app_name: str,
        uid: int,
        app_stats: memoryview,
        commit: Callable[[int], bool],
        ports: PortPolicy,
    ) -> None:
        """`app_stats`: the app's u64 words in the app table, where the pumps
        add the bytes they move (AppField.RX_BYTES, TX_BYTES). `commit(slot)`
        charges and preallocates a slot's rings (Session.commit_slot):
        False when the shared-memory limits or the kernel refuse. `ports`:
        the instance's bind-time policy (who may bind which port)."""
        self.engine = engine
        self.segment = segment
        self.app_name = app_name  # what ListConnections shows as the owner
        self.uid = uid  # whose the sockets are: ListConnections shows them to it
        slots = segment.geometry.socket_slots
        self.slots: list[Slot | None] = [None] * slots
        self.generation = [0] * slots
        # pop() gives the lowest first; a freed slot goes back on top, so
        # slots whose rings are committed are reused before a new one is.
        self.free = list(range(slots - 1, -1, -1))
        self.committed = bytearray(slots)  # 1: the slot's rings are preallocated
        self._commit = commit
        self.ports = ports
        self.slot_of: dict[int, int] = {}  # engine sock_id -> slot
        self.listening: set[int] = set()
        self.dirty: set[int] = set()
        # Events not yet published, each with the pass time it was posted
        # at (its last field), for the event-delivery histogram.
        self.out: list[tuple[int, ...]] = []
        self.now = 0  # the current pass's time (Session.poll sets it)
        self._out_base = 0  # how many events were ever published: out[0]'s number
        self._ready_at: dict[int, int] = {}  # slot -> number of its last READY posted
        self._app_stats = app_stats

    # ----------------------------------------------------------- engine side

    def on_ready(self, sock: Tcb | Listener, now: int) -> None:
        """The loop's readiness callback: mark the slot, work happens in the pass."""
        slot = self.slot_of.get(sock.sock_id)
        if slot is not None:
            self.dirty.add(slot)

    def adopt(self, slot: int, sock: Tcb | Listener) -> None:
        """`sock` now serves `slot`: its readiness comes here."""
        sock.owner = self
        self.slot_of[sock.sock_id] = slot

    def disown(self, sock: Tcb | Listener) -> None:
        sock.owner = None
        self.slot_of.pop(sock.sock_id, None)

    def engine_sockets(self) -> Iterator[Tcb | Listener]:
        """Every engine socket this table owns: each slot's (`slot_of`) and,
        after a listener, its connections not accepted yet (half-open or
        on the accept queue; the engine made this table their owner too).
        Lazy, from a copy of `slot_of` taken when the walk reaches this
        table: a socket closed since may still come, or be gone (the
        caller checks the engine's tables)."""
        slots = self.slots
        for sock_id, slot in list(self.slot_of.items()):
            s = slots[slot]
            sock = s.sock if s is not None else None
            if sock is None or sock.sock_id != sock_id:
                continue  # its slot was closed or reused meanwhile
            yield sock
            if isinstance(sock, Listener):
                yield from list(sock.half_open)
                yield from list(sock.accept_queue)

    @property
    def in_use(self) -> int:
        return len(self.slots) - len(self.free)

    # ----------------------------------------------------------------- slots

    def has_room(self) -> bool:
        """Is there a free slot with committed rings, or one the limits let
        us commit now? (`new_slot` takes it.)"""
        if not self.free:
            return False
        slot = self.free[-1]
        if not self.committed[slot]:
            if not self._commit(slot):
                return False
            self.committed[slot] = 1
        return True

    def new_slot(self, state: int) -> int:
        """Take the free slot `has_room` said is ready, set up its rings
        (before any event hands it to the app) and publish its entry."""
        slot = self.free.pop()
        self.slots[slot] = Slot(state)
        generation = (self.generation[slot] + 1) & 0xFFFFFFFF
        self.generation[slot] = generation
        self.segment.rx(slot)
        self.segment.tx(slot)
        self.segment.set_slot(slot, state, 0, generation, 0)
        return slot

    def set_error(self, slot: int, s: Slot, code: int) -> None:
        s.error = code
        self.segment.set_slot(slot, s.state, s.readiness, self.generation[slot], code)

    def release_slot(self, slot: int) -> None:
        self._ready_at.pop(slot, None)  # a READY still in `out` is the old socket's
        self.slots[slot] = None
        self.listening.discard(slot)
        self.dirty.discard(slot)
        self.segment.set_slot(slot, SLOT_FREE, 0, self.generation[slot], 0)
        self.free.append(slot)

    # ---------------------------------------------------------------- events

    def post(
        self, kind: int, slot: int, request: int = 0, result: int = 0, a1: int = 0, a2: int = 0,
        a3: int = 0, a64: int = 0,
    ) -> None:  # fmt: skip
        self.out.append((kind, slot, request, result, a1, a2, a3, a64, self.now))

    def ready(self, slot: int, mask: int) -> None:
        """Post the slot's new readiness: while a READY of the slot waits
        unpublished, it is updated in place, across passes too. So an app
        that leaves its event ring full has at most one READY per slot
        waiting here, however many segments arrive (commands, the other
        events' source, are not taken while any event waits: Session.poll).
        READY only wakes waiters (the slot table holds the readiness), so
        its place in the order does not matter."""
        at = self._ready_at.get(slot, -1) - self._out_base
        if at >= 0:
            posted_at = self.out[at][8]  # the first change's pass
            self.out[at] = (EVENT_READY, slot, 0, 0, mask, 0, 0, 0, posted_at)
            return
        self._ready_at[slot] = self._out_base + len(self.out)
        self.post(EVENT_READY, slot, 0, 0, mask)

    def flush_events(self, delivery: Histogram) -> int:
        """Publish what fits of the pending events, each observed in
        `delivery` (µs since the pass that posted it: the pass's own work,
        plus every pass it waited for room). Returns how many (0: the app is
        not reading; retried each pass, no spinning)."""
        events = self.segment.events
        out = self.out
        n = events.reserve(len(out))
        if not n:
            return 0
        data = events.data
        published_at = monotonic_us()
        # Events posted in one pass wait alike: observed as one run each.
        run_posted_at = -1
        run = 0
        for k in range(n):
            kind, slot, request, result, a1, a2, a3, a64, posted_at = out[k]
            encode_event_into(
                data, events.write_offset(k), kind, slot, request, result, a1, a2, a3, a64
            )
            if posted_at != run_posted_at:
                if run:
                    delivery.observe_many(published_at - run_posted_at, run)
                run_posted_at = posted_at
                run = 0
            run += 1
        delivery.observe_many(published_at - run_posted_at, run)
        events.publish(n)
        del out[:n]
        self._out_base += n
        return n

    # ------------------------------------------------------------------ data

    def pump_dirty(self, now: int) -> None:
        """Pump every slot marked since the last pass."""
        dirty, self.dirty = self.dirty, set()
        slots = self.slots
        for slot in sorted(dirty):
            if slots[slot] is not None:
                self.pump(slot, now)

    def pump(self, slot: int, now: int) -> None:
        """Bring one slot up to date with its engine socket."""
        s = self.slots[slot]
        sock = s.sock
        if isinstance(sock, Listener):
            self._accept(slot, s, sock, now)
            return
        if sock is None:
            return
        tcb = sock
        seg = self.segment
        if tcb.error:  # take the engine's pending error into the slot table
            code, tcb.error = tcb.error, 0
            self.set_error(slot, s, code)
        if s.state == SLOT_CONNECTING:
            if tcb.state == CLOSED:  # refused, unreachable, timed out
                s.error = s.error or errno.ECONNREFUSED
                self.disown(tcb)
                s.sock, s.state, s.port = None, SLOT_OPEN, 0
                s.readiness = EPOLLERR | EPOLLHUP
                seg.set_slot(slot, SLOT_OPEN, s.readiness, self.generation[slot], s.error)
                self.ready(slot, s.readiness)
                return
            if tcb.state == SYN_SENT:
                return
            s.state = SLOT_CONNECTED
            seg.set_slot(slot, SLOT_CONNECTED, s.readiness, self.generation[slot], s.error)
        tx_moved = self.pump_tx(slot, s, tcb, now) if tcb.state != CLOSED else 0
        rx_moved = self._pump_rx(slot, s, tcb, now)
        mask = self._readiness(slot, s, tcb)
        if mask != s.readiness or rx_moved or (tx_moved and mask & EPOLLOUT):
            s.readiness = mask
            seg.set_readiness(slot, mask)
            self.ready(slot, mask)

    def _readiness(self, slot: int, s: Slot, tcb: Tcb) -> int:
        """The EPOLL* bits a connection's slot shows now."""
        seg = self.segment
        mask = 0
        rx_ring = seg.rx(slot)
        if rx_ring.free() < rx_ring.capacity:
            mask |= EPOLLIN
        if s.eof:
            mask |= EPOLLIN | EPOLLRDHUP
        if s.error:
            mask |= EPOLLERR
        state = tcb.state
        if state == CLOSED:
            mask |= EPOLLIN | EPOLLOUT
            # Hung up only once nothing is left to read: a connection that
            # closed (our FIN ACKed after the peer's) while the app had not
            # taken everything still has bytes in the engine's buffer, and
            # the SDK reads EPOLLHUP with an empty ring as EOF.
            buffer = tcb.receive_buffer
            if s.eof or s.error or buffer is None or not buffer.readable():
                mask |= EPOLLHUP
        elif s.eof and tcb.write_closed:
            mask |= EPOLLHUP
        tx_ring = seg.tx(slot)
        if (
            state in (ESTABLISHED, CLOSE_WAIT)
            and not tcb.write_closed
            and tx_ring.readable() < tx_ring.capacity
        ):
            mask |= EPOLLOUT
        return mask

    def pump_tx(self, slot: int, s: Slot, tcb: Tcb, now: int) -> int:
        """TX ring -> engine send buffer, as far as the buffer takes it.
        Returns the bytes moved."""
        if s.state != SLOT_CONNECTED or tcb.send_buffer is None:
            return 0
        ring = self.segment.tx(slot)
        moved = 0
        while True:
            room = tcb.send_buffer.free()
            if room <= 0:
                break  # the engine notifies when ACKs free space: on_ready again
            # Straight from the ring into the send buffer: the app's bytes
            # are only payload, so reading them in place is safe.
            data = ring.peek(room)
            n = len(data)
            if n == 0:
                break
            try:
                sent = self.engine.send(tcb, data, now)
            except SocketError as exc:
                if exc.errno not in (errno.EPIPE, errno.ENOTCONN):
                    self.set_error(slot, s, exc.errno)
                ring.release(ring.readable())  # nobody will ever send them
                break
            ring.release(sent)
            moved += sent
            if sent < n:
                break
        if moved:
            self._app_stats[_APP_TX_BYTES] += moved
        return moved

    def drain_tx(self, slot: int, s: Slot, tcb: Tcb, now: int) -> None:
        """Before close/shutdown: everything in the TX ring goes into the
        engine, growing the send buffer by at most one ring's worth."""
        buffer = tcb.send_buffer
        if buffer is None or tcb.write_closed or tcb.state == CLOSED:
            return
        left = self.segment.tx(slot).readable()
        if left > buffer.free():
            buffer.set_capacity(len(buffer) + left)
        self.pump_tx(slot, s, tcb, now)

    def _pump_rx(self, slot: int, s: Slot, tcb: Tcb, now: int) -> int:
        """Engine receive buffer -> RX ring, while the ring has room.
        Returns the bytes moved."""
        if s.eof or s.state != SLOT_CONNECTED or tcb.receive_buffer is None:
            return 0
        ring = self.segment.rx(slot)
        engine = self.engine
        moved = 0
        while not engine.read_would_block(tcb):
            room = ring.free()
            if room == 0:
                # The app sends RX_DONE if, after storing its tail, it loads a
                # head that shows the ring was full. Fence our head store
                # before this last tail load: then one side sees the other
                # (the store-buffer argument of vfstack.shm._doorbell).
                _FENCE.acquire()
                _FENCE.release()
                room = ring.free()
                if room == 0:
                    break
            try:
                # Straight from the receive buffer into the ring, published
                # only once filled.
                n = engine.receive_into(tcb, ring.reserve(room), now)
            except SocketError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOTCONN):
                    self.set_error(slot, s, exc.errno)
                break
            if n == 0:
                s.eof = True
                break
            ring.publish(n)
            moved += n
        if moved:
            self._app_stats[_APP_RX_BYTES] += moved
        return moved

    def _accept(self, slot: int, s: Slot, listener: Listener, now: int) -> None:
        """A listener's new connections into slots of their own (while there
        are free ones), each announced by ACCEPTED."""
        engine = self.engine
        # Without room (no free slot, or no memory for one) the connections
        # wait in the accept queue; a slot freed later pumps the listener.
        while listener.accept_queue and self.has_room():
            tcb = engine.accept(listener)
            if tcb is None:
                break
            new = self.new_slot(SLOT_CONNECTED)
            c = self.slots[new]
            c.sock, c.port = tcb, tcb.local_port
            c.linger = s.linger  # inherited, as on Linux
            self.adopt(new, tcb)
            self.post(EVENT_ACCEPTED, slot, 0, 0, new, tcb.remote_ip, tcb.remote_port, now)
            self.pump(new, now)  # data may have come with the handshake
        mask = EPOLLIN if listener.accept_queue else 0
        if mask != s.readiness:
            s.readiness = mask
            self.segment.set_readiness(slot, mask)
            self.ready(slot, mask)

    # -------------------------------------------------------------- teardown

    def close_all(self, now: int) -> None:
        """The session ends: every connection is reset, every listener closed
        (its port kept for this app a while: PortPolicy)."""
        engine = self.engine
        for s in self.slots:
            if s is None or s.sock is None:
                continue
            sock = s.sock
            sock.owner = None
            if isinstance(sock, Listener):
                self.ports.session_ended(s.port, self.uid, now)
                engine.close_listener(sock, now)
            elif sock.state != CLOSED:
                sock.linger_zero = True  # close() with SO_LINGER 0: a RST
                engine.close(sock, now)
            else:
                engine.close(sock, now)
        self.slot_of.clear()
        self.dirty.clear()
        self.out.clear()
        self._ready_at.clear()
