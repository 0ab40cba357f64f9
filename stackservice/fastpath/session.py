"""Sessions: one attached application each, served over its shared-memory
segment (vfstack.shm) from inside the stack loop.

The loop calls `SessionManager.poll(now)` once per pass. For every session
it drains a bounded batch of commands from the command ring, executes them
against the engine's in-process socket API, pumps bytes between the
per-slot TX/RX byte rings and the engine's buffers for the slots marked
dirty, posts the resulting events in one batch and rings the app's doorbell
once, only if the app said it sleeps (need-wakeup, DESIGN.md principle 2).

Each `Session` is the `owner` of the engine sockets it created, so the loop
hands it readiness changes through `on_ready(sock, now)`; that only marks
the slot dirty (a set add, no scanning).

Trust (principle 4): everything read from the segment is hostile. Records
are validated by `decode_command` on a private copy; ring indices by the
rings. A `BadRecord` or `CorruptRing` ends that session only (it is
detached: connections reset, files removed) and is counted; `poll` never
raises. A well-formed command that makes no sense (a FREE slot, a wrong
state) gets an error RESULT, as the kernel would answer a bad fd.

Any other exception while serving a session is a bug (DESIGN.md principle
5): it ends that session only, is counted and logged by the instance's
`Containment` (stackservice.faults, site SESSION), or re-raised when strict.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import secrets
import socket
import threading
from pathlib import Path

from vfstack.shm import (
    EPOLLERR,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDHUP,
    EVENT_ACCEPTED,
    EVENT_READY,
    EVENT_RESULT,
    EVENT_SLOT_FREED,
    LAYOUT_VERSION,
    OP_BIND,
    OP_CLOSE,
    OP_CONNECT,
    OP_GETSOCKOPT,
    OP_LISTEN,
    OP_RX_DONE,
    OP_SETSOCKOPT,
    OP_SHUTDOWN,
    OP_SOCKET,
    OP_TX,
    SLOT_CONNECTED,
    SLOT_CONNECTING,
    SLOT_FREE,
    SLOT_LISTENING,
    SLOT_OPEN,
    BadRecord,
    CorruptRing,
    Doorbell,
    Geometry,
    Segment,
    decode_command,
    encode_event_into,
)

from stackservice.faults import Containment, FaultSite
from stackservice.metrics.apps import DEFAULT_SLOTS, AppField, AppStatsTable, detached_counters
from stackservice.tcp.engine import Listener, SocketError, SocketOptions, TcpEngine
from stackservice.tcp.state import CLOSE_WAIT, CLOSED, ESTABLISHED, SYN_SENT
from stackservice.tcp.tcb import Tcb

log = logging.getLogger(__name__)

DEFAULT_COMMAND_SLOTS = 1024
DEFAULT_EVENT_SLOTS = 4096
DEFAULT_SOCKET_SLOTS = 1024
DEFAULT_SOCKET_RING_BYTES = 64 << 10
COMMAND_BATCH = 256  # commands executed per session per pass at most
MAX_APP_NAME = 128
CHECK_APPS_INTERVAL_US = 400_000  # a dead app's peers see resets well within 1 s
ATTACH_GRACE_US = 10_000_000  # from Attach to the app opening its segment
_SCRATCH_BYTES = 64 << 10
# Ring occupancy for the app table (stackservice.metrics.apps): a sweep over
# every session starts at most this often, and visits at most this many
# socket slots per loop pass, so a stack with many sockets never stalls a
# pass for it (measured: ~0.85 µs per connected slot, ~20 ns per other
# one). Scrapes come every few seconds; a quarter-second-old value is fresh.
# With many connections sweeps start further apart, SAMPLE_US_PER_CONNECTED
# per connected socket of the last sweep, so they stay under ~1% of the loop.
SAMPLE_INTERVAL_US = 250_000
SAMPLE_BUDGET = 256
SAMPLE_US_PER_CONNECTED = 100
_MAX_BUFFER = 64 << 20  # SO_SNDBUF / SO_RCVBUF upper bound
_EPHEMERAL_FIRST, _EPHEMERAL_LAST = 32768, 60999

_FENCE = threading.Lock()  # an uncontended lock round trip is a full fence

# Socket option names as Linux (and Python's socket module) number them.
SOL_SOCKET = socket.SOL_SOCKET
IPPROTO_TCP = socket.IPPROTO_TCP
SO_REUSEADDR = socket.SO_REUSEADDR
SO_KEEPALIVE = socket.SO_KEEPALIVE
SO_SNDBUF = socket.SO_SNDBUF
SO_RCVBUF = socket.SO_RCVBUF
SO_ERROR = socket.SO_ERROR
SO_LINGER = socket.SO_LINGER
TCP_NODELAY = socket.TCP_NODELAY
TCP_KEEPIDLE = socket.TCP_KEEPIDLE
TCP_KEEPINTVL = socket.TCP_KEEPINTVL
TCP_KEEPCNT = socket.TCP_KEEPCNT

_APP_RX_BYTES = int(AppField.RX_BYTES)
_APP_TX_BYTES = int(AppField.TX_BYTES)


class _Slot:
    """The stack's own view of one socket slot (the table in shared memory
    is only ever written from here, never read back)."""

    __slots__ = (
        "state", "sock", "port", "readiness", "error", "eof", "options", "reuseaddr", "linger",
    )  # fmt: skip

    def __init__(self) -> None:
        self.state = SLOT_OPEN
        self.sock: Tcb | Listener | None = None
        self.port = 0  # bound local port, 0 if none
        self.readiness = 0
        self.error = 0  # sticky errno shown in the slot table
        self.eof = False  # the peer's FIN has been handed to the RX ring
        self.options = SocketOptions()  # applied at connect / listen
        self.reuseaddr = 0
        self.linger = -1  # SO_LINGER seconds, -1: off


class Session:
    """One attached application: its segment, doorbells and sockets."""

    __slots__ = (
        "engine",
        "session_id",
        "app",
        "app_name",
        "pid",
        "attached_at",
        "opened",
        "token",
        "segment",
        "segment_path",
        "app_bell",
        "stack_bell",
        "closed",
        "app_index",
        "_app_stats",
        "_scratch",
        "_slots",
        "_generation",
        "_free",
        "_slot_of",
        "_listening",
        "_dirty",
        "_out",
        "_ready_posted",
    )

    def __init__(
        self,
        engine: TcpEngine,
        session_id: int,
        app: str,
        pid: int,
        now: int,
        token: bytes,
        segment: Segment,
        segment_path: Path,
        app_bell: Doorbell,
        stack_bell: Doorbell,
        scratch: memoryview,
        app_index: int = -1,
        app_stats: memoryview | None = None,
    ) -> None:
        self.engine = engine
        self.session_id = session_id
        self.app = app
        self.app_name = app  # what ListConnections shows as the owner
        self.pid = pid
        self.attached_at = now
        self.opened = False  # the app has taken its segment's liveness lock
        self.token = token
        self.segment = segment
        self.segment_path = segment_path
        self.app_bell = app_bell
        self.stack_bell = stack_bell
        self.closed = False
        # The app's slot in the app table (-1: none) and its u64 words, where
        # the pumps add the bytes they move (AppField.RX_BYTES, TX_BYTES).
        self.app_index = app_index
        self._app_stats = app_stats if app_stats is not None else detached_counters()
        self._scratch = scratch
        slots = segment.geometry.socket_slots
        self._slots: list[_Slot | None] = [None] * slots
        self._generation = [0] * slots
        self._free = list(range(slots - 1, -1, -1))  # pop() gives the lowest first
        self._slot_of: dict[int, int] = {}  # engine sock_id -> slot
        self._listening: set[int] = set()
        self._dirty: set[int] = set()
        self._out: list[tuple[int, ...]] = []  # pending events
        self._ready_posted: set[int] = set()

    # ----------------------------------------------------------- engine side

    def on_ready(self, sock: Tcb | Listener, now: int) -> None:
        """The loop's readiness callback: mark the slot, work happens in poll."""
        slot = self._slot_of.get(sock.sock_id)
        if slot is not None:
            self._dirty.add(slot)

    @property
    def sockets(self) -> int:
        return len(self._slots) - len(self._free)

    def busy(self) -> bool:
        """Work is pending that the next pass should do without sleeping:
        dirty slots, or events waiting for room that the app has made."""
        if self._dirty:
            return True
        out = self._out
        return bool(out) and self.segment.events.reserve(len(out)) > 0

    # ----------------------------------------------------------------- pass

    def poll(self, now: int) -> bool:
        """One pass. Raises BadRecord / CorruptRing (the manager ends the session)."""
        work = False
        if not self._out:  # back-pressure: an app not reading events sends no more
            records = self.segment.commands.pop_many(COMMAND_BATCH)
            if records:
                work = True
                slots = self.segment.geometry.socket_slots
                for record in records:
                    self._execute(decode_command(record, slots), now)
        if self._dirty:
            work = True
            dirty, self._dirty = self._dirty, set()
            for slot in sorted(dirty):
                if self._slots[slot] is not None:
                    self._pump(slot, now)
        self._ready_posted.clear()
        if self._out and self._flush_events():
            work = True
        return work

    def _post(
        self, kind: int, slot: int, request: int = 0, result: int = 0, a1: int = 0, a2: int = 0,
        a3: int = 0, a64: int = 0,
    ) -> None:  # fmt: skip
        self._out.append((kind, slot, request, result, a1, a2, a3, a64))

    def _flush_events(self) -> int:
        """Publish what fits of the pending events; ring the app if it sleeps."""
        events = self.segment.events
        out = self._out
        n = events.reserve(len(out))
        if not n:
            return 0  # the app is not reading: retried each pass, no spinning
        data = events.data
        for k in range(n):
            kind, slot, request, result, a1, a2, a3, a64 = out[k]
            encode_event_into(
                data, events.write_offset(k), kind, slot, request, result, a1, a2, a3, a64
            )
        events.publish(n)
        del out[:n]
        if events.needs_wakeup():
            self.app_bell.ring()
        return n

    # ------------------------------------------------------------- commands

    def _execute(self, cmd, now: int) -> None:
        op = cmd.op
        if op == OP_SOCKET:
            self._socket(cmd.request)
            return
        slot = cmd.slot
        s = self._slots[slot]
        if s is None:
            if op in (OP_TX, OP_RX_DONE, OP_CLOSE):
                return  # no reply to give; a stale or confused app, harmless
            self._post(EVENT_RESULT, slot, cmd.request, -errno.EBADF)
            return
        if op in (OP_TX, OP_RX_DONE):
            self._dirty.add(slot)
        elif op == OP_CLOSE:
            self._close(slot, s, now)
        elif op == OP_BIND:
            self._post(EVENT_RESULT, slot, cmd.request, *self._bind(s, cmd.a1, cmd.a2))
        elif op == OP_LISTEN:
            self._post(EVENT_RESULT, slot, cmd.request, *self._listen(slot, s, cmd.a1))
        elif op == OP_CONNECT:
            self._post(
                EVENT_RESULT, slot, cmd.request, *self._connect(slot, s, cmd.a1, cmd.a2, now)
            )
        elif op == OP_SHUTDOWN:
            self._post(EVENT_RESULT, slot, cmd.request, self._shutdown(slot, s, cmd.a1, now))
        elif op == OP_SETSOCKOPT:
            result = self._setsockopt(s, cmd.a1, cmd.a2, cmd.a64, now)
            self._post(EVENT_RESULT, slot, cmd.request, result)
        elif op == OP_GETSOCKOPT:
            result, value = self._getsockopt(slot, s, cmd.a1, cmd.a2)
            self._post(EVENT_RESULT, slot, cmd.request, result, a64=value)

    def _new_slot(self, state: int) -> int:
        """Take a FREE slot (caller checked one exists), set up its rings
        (before any event hands it to the app) and publish its entry."""
        slot = self._free.pop()
        s = _Slot()
        s.state = state
        self._slots[slot] = s
        generation = (self._generation[slot] + 1) & 0xFFFFFFFF
        self._generation[slot] = generation
        self.segment.rx(slot)
        self.segment.tx(slot)
        self.segment.set_slot(slot, state, 0, generation, 0)
        return slot

    def _socket(self, request: int) -> None:
        if not self._free:
            self._post(EVENT_RESULT, 0, request, -errno.EMFILE)
            return
        slot = self._new_slot(SLOT_OPEN)
        self._post(EVENT_RESULT, slot, request, 0, self._generation[slot])

    def _bind(self, s: _Slot, ip: int, port: int) -> tuple[int, int]:
        if s.state != SLOT_OPEN or s.port:
            return -errno.EINVAL, 0
        if ip not in (0, self.engine.local_ip):
            return -errno.EADDRNOTAVAIL, 0
        if port == 0:
            port = self._free_port()
            if not port:
                return -errno.EADDRINUSE, 0
        elif port in self.engine.listeners:
            return -errno.EADDRINUSE, 0
        s.port = port
        return 0, port

    def _free_port(self) -> int:
        listeners = self.engine.listeners
        for _ in range(64):
            port = _EPHEMERAL_FIRST + secrets.randbelow(_EPHEMERAL_LAST - _EPHEMERAL_FIRST + 1)
            if port not in listeners:
                return port
        return 0

    def _listen(self, slot: int, s: _Slot, backlog: int) -> tuple[int, int]:
        if s.state == SLOT_LISTENING:
            s.sock.backlog = backlog  # as Linux: listen() again changes the backlog
            return 0, s.port
        if s.state != SLOT_OPEN:
            return -errno.EINVAL, 0
        port = s.port or self._free_port()
        if not port:
            return -errno.EADDRINUSE, 0
        try:
            listener = self.engine.listen(port, backlog, owner=self)
        except SocketError as exc:
            return -exc.errno, 0
        options = listener.options
        for name in SocketOptions.__slots__:
            setattr(options, name, getattr(s.options, name))
        s.sock, s.port, s.state = listener, port, SLOT_LISTENING
        self._slot_of[listener.sock_id] = slot
        self._listening.add(slot)
        self.segment.set_slot(slot, SLOT_LISTENING, 0, self._generation[slot], 0)
        return 0, port

    def _connect(self, slot: int, s: _Slot, ip: int, port: int, now: int) -> tuple[int, int]:
        if s.state == SLOT_CONNECTING:
            return -errno.EALREADY, 0
        if s.state != SLOT_OPEN:
            return -(errno.EISCONN if s.state == SLOT_CONNECTED else errno.EINVAL), 0
        try:
            tcb = self.engine.connect(
                ip, port, now, owner=self, options=s.options, local_port=s.port
            )
        except SocketError as exc:
            return -exc.errno, 0
        s.sock, s.port, s.state = tcb, tcb.local_port, SLOT_CONNECTING
        s.error, s.eof, s.readiness = 0, False, 0
        self._slot_of[tcb.sock_id] = slot
        self.segment.set_slot(slot, SLOT_CONNECTING, 0, self._generation[slot], 0)
        return 0, tcb.local_port

    def _shutdown(self, slot: int, s: _Slot, how: int, now: int) -> int:
        tcb = s.sock
        if s.state not in (SLOT_CONNECTED, SLOT_CONNECTING) or not isinstance(tcb, Tcb):
            return -errno.ENOTCONN
        if how != 0:  # SHUT_WR / SHUT_RDWR: what the app wrote goes first
            self._drain_tx(slot, tcb, now)
        try:
            self.engine.shutdown(tcb, how, now)
        except SocketError as exc:
            return -exc.errno
        self._dirty.add(slot)
        return 0

    def _close(self, slot: int, s: _Slot, now: int) -> None:
        sock = s.sock
        engine = self.engine
        if isinstance(sock, Listener):
            engine.close_listener(sock, now)
        elif sock is not None:  # (a positive linger does not block: close has no reply)
            if s.linger == 0:  # SO_LINGER {1, 0}: the engine's close resets, as Linux
                sock.linger_zero = True
            elif s.state == SLOT_CONNECTED:
                self._drain_tx(slot, sock, now)
            engine.close(sock, now)
        if sock is not None:
            sock.owner = None
            self._slot_of.pop(sock.sock_id, None)
        tx = self.segment.tx(slot)
        left = tx.readable()
        if left:
            tx.release(left)  # the stack discards what it could not send
        self._release_slot(slot)
        # Bytes the app has not read up to here are the closed connection's:
        # it drops them (Segment.drop_stale_rx) even if the slot is reused.
        self._post(EVENT_SLOT_FREED, slot, a64=self.segment.rx(slot).produced)
        for listening in self._listening:  # a free slot may unblock accepts
            self._dirty.add(listening)

    def _release_slot(self, slot: int) -> None:
        self._slots[slot] = None
        self._listening.discard(slot)
        self._dirty.discard(slot)
        self.segment.set_slot(slot, SLOT_FREE, 0, self._generation[slot], 0)
        self._free.append(slot)

    # ------------------------------------------------------- socket options

    def _setsockopt(self, s: _Slot, level: int, name: int, value: int, now: int) -> int:
        sock = s.sock
        tcb = sock if isinstance(sock, Tcb) and sock.state != CLOSED else None
        options = sock.options if isinstance(sock, Listener) else s.options
        engine = self.engine
        if level == SOL_SOCKET:
            if name == SO_REUSEADDR:  # ports are never held after close here
                s.reuseaddr = 1 if value else 0
            elif name == SO_KEEPALIVE:
                options.keepalive = bool(value)
                if tcb is not None:
                    engine.set_keepalive(tcb, bool(value), now)
            elif name in (SO_SNDBUF, SO_RCVBUF):
                if not 0 < value <= _MAX_BUFFER:
                    return -errno.EINVAL
                if name == SO_SNDBUF:
                    options.send_buffer = value
                    if tcb is not None and tcb.send_buffer is not None:
                        tcb.send_buffer.set_capacity(value)
                else:
                    options.receive_buffer = value
                    if tcb is not None and tcb.receive_buffer is not None:
                        tcb.receive_buffer.set_capacity(value)
            elif name == SO_LINGER:  # a64 = l_onoff | l_linger << 32 (vfstack.shm.OP_SETSOCKOPT)
                seconds = value >> 32
                if seconds >= 1 << 31:
                    return -errno.EINVAL
                s.linger = seconds if value & 0xFFFFFFFF else -1
            else:
                return -errno.ENOPROTOOPT
            return 0
        if level == IPPROTO_TCP:
            if name == TCP_NODELAY:
                options.nodelay = bool(value)
                if tcb is not None:
                    tcb.nodelay = bool(value)
                    if value:
                        engine.queue_data(tcb)  # Linux pushes what is pending
            elif name in (TCP_KEEPIDLE, TCP_KEEPINTVL):
                if not 0 < value <= 32767:
                    return -errno.EINVAL
                if name == TCP_KEEPIDLE:
                    options.keepalive_idle = value * 1_000_000
                else:
                    options.keepalive_interval = value * 1_000_000
                if tcb is not None:
                    engine.set_keepalive(
                        tcb, tcb.keepalive, now, options.keepalive_idle,
                        options.keepalive_interval,
                    )  # fmt: skip
            elif name == TCP_KEEPCNT:
                if not 0 < value <= 127:
                    return -errno.EINVAL
                options.keepalive_count = value
                if tcb is not None:
                    engine.set_keepalive(tcb, tcb.keepalive, now, count=value)
            else:
                return -errno.ENOPROTOOPT
            return 0
        return -errno.ENOPROTOOPT

    def _getsockopt(self, slot: int, s: _Slot, level: int, name: int) -> tuple[int, int]:
        sock = s.sock
        tcb = sock if isinstance(sock, Tcb) else None
        options = sock.options if isinstance(sock, Listener) else s.options
        settings = self.engine.settings
        if level == SOL_SOCKET:
            if name == SO_REUSEADDR:
                return 0, s.reuseaddr
            if name == SO_KEEPALIVE:
                return 0, int(tcb.keepalive if tcb is not None else options.keepalive)
            if name == SO_SNDBUF:
                if tcb is not None and tcb.send_buffer is not None:
                    return 0, tcb.send_buffer.capacity
                return 0, options.send_buffer or settings.send_buffer
            if name == SO_RCVBUF:
                if tcb is not None and tcb.receive_buffer is not None:
                    return 0, tcb.receive_buffer.capacity
                return 0, options.receive_buffer or settings.receive_buffer
            if name == SO_LINGER:
                return 0, 0 if s.linger < 0 else 1 | s.linger << 32
            if name == SO_ERROR:  # read and clear, as the kernel does
                code, s.error = s.error, 0
                self.segment.set_slot(slot, s.state, s.readiness, self._generation[slot], 0)
                return 0, code
            return -errno.ENOPROTOOPT, 0
        if level == IPPROTO_TCP:
            if name == TCP_NODELAY:
                return 0, int(tcb.nodelay if tcb is not None else options.nodelay)
            if name == TCP_KEEPIDLE:
                us = tcb.keepalive_idle if tcb is not None else options.keepalive_idle
                return 0, (us or settings.keepalive_idle_us) // 1_000_000
            if name == TCP_KEEPINTVL:
                us = tcb.keepalive_interval if tcb is not None else options.keepalive_interval
                return 0, (us or settings.keepalive_interval_us) // 1_000_000
            if name == TCP_KEEPCNT:
                count = tcb.keepalive_count if tcb is not None else options.keepalive_count
                return 0, count or settings.keepalive_probes
            return -errno.ENOPROTOOPT, 0
        return -errno.ENOPROTOOPT, 0

    # ----------------------------------------------------------------- data

    def _pump(self, slot: int, now: int) -> None:
        s = self._slots[slot]
        sock = s.sock
        if isinstance(sock, Listener):
            self._accept(slot, s, sock, now)
            return
        if sock is None:
            return
        tcb = sock
        seg = self.segment
        generation = self._generation[slot]
        if tcb.error:  # take the engine's pending error into the slot table
            code, tcb.error = tcb.error, 0
            self._set_error(slot, s, code)
        if s.state == SLOT_CONNECTING:
            if tcb.state == CLOSED:  # refused, unreachable, timed out
                s.error = s.error or errno.ECONNREFUSED
                tcb.owner = None
                self._slot_of.pop(tcb.sock_id, None)
                s.sock, s.state, s.port = None, SLOT_OPEN, 0
                s.readiness = EPOLLERR | EPOLLHUP
                seg.set_slot(slot, SLOT_OPEN, s.readiness, generation, s.error)
                self._ready(slot, s.readiness)
                return
            if tcb.state == SYN_SENT:
                return
            s.state = SLOT_CONNECTED
            seg.set_slot(slot, SLOT_CONNECTED, s.readiness, generation, s.error)
        tx_moved = self._pump_tx(s, slot, tcb, now) if tcb.state != CLOSED else 0
        rx_moved = self._pump_rx(s, slot, tcb, now)
        tx_ring = seg.tx(slot)
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
        if (
            state in (ESTABLISHED, CLOSE_WAIT)
            and not tcb.write_closed
            and tx_ring.readable() < tx_ring.capacity
        ):
            mask |= EPOLLOUT
        if mask != s.readiness or rx_moved or (tx_moved and mask & EPOLLOUT):
            s.readiness = mask
            seg.set_readiness(slot, mask)
            self._ready(slot, mask)

    def _set_error(self, slot: int, s: _Slot, code: int) -> None:
        s.error = code
        self.segment.set_slot(slot, s.state, s.readiness, self._generation[slot], code)

    def _ready(self, slot: int, mask: int) -> None:
        if slot in self._ready_posted:  # once per pass per slot: update in place
            for k in range(len(self._out) - 1, -1, -1):
                event = self._out[k]
                if event[0] == EVENT_READY and event[1] == slot:
                    self._out[k] = (EVENT_READY, slot, 0, 0, mask, 0, 0, 0)
                    return
        self._ready_posted.add(slot)
        self._post(EVENT_READY, slot, 0, 0, mask)

    def _pump_tx(self, s: _Slot, slot: int, tcb: Tcb, now: int) -> int:
        """TX ring -> engine send buffer, as far as the buffer takes it."""
        if s.state != SLOT_CONNECTED or tcb.send_buffer is None:
            return 0
        ring = self.segment.tx(slot)
        scratch = self._scratch
        moved = 0
        while True:
            room = tcb.send_buffer.free()
            if room <= 0:
                break  # the engine notifies when ACKs free space: on_ready again
            n = ring.peek_into(scratch, 0, min(room, len(scratch)))
            if n == 0:
                break
            try:
                sent = self.engine.send(tcb, scratch[:n], now)
            except SocketError as exc:
                if exc.errno not in (errno.EPIPE, errno.ENOTCONN):
                    self._set_error(slot, s, exc.errno)
                ring.release(ring.readable())  # nobody will ever send them
                break
            ring.release(sent)
            moved += sent
            if sent < n:
                break
        if moved:
            self._app_stats[_APP_TX_BYTES] += moved
        return moved

    def _drain_tx(self, slot: int, tcb: Tcb, now: int) -> None:
        """Before close/shutdown: everything in the TX ring goes into the
        engine, growing the send buffer by at most one ring's worth."""
        buffer = tcb.send_buffer
        if buffer is None or tcb.write_closed or tcb.state == CLOSED:
            return
        ring = self.segment.tx(slot)
        left = ring.readable()
        if left > buffer.free():
            buffer.set_capacity(len(buffer) + left)
        s = self._slots[slot]
        self._pump_tx(s, slot, tcb, now)

    def _pump_rx(self, s: _Slot, slot: int, tcb: Tcb, now: int) -> int:
        """Engine receive buffer -> RX ring, while the ring has room."""
        if s.eof or s.state != SLOT_CONNECTED or tcb.receive_buffer is None:
            return 0
        ring = self.segment.rx(slot)
        scratch = self._scratch
        moved = 0
        while True:
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
                n = self.engine.receive_into(tcb, scratch[: min(room, len(scratch))], now)
            except SocketError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOTCONN):
                    self._set_error(slot, s, exc.errno)
                break
            if n == 0:
                s.eof = True
                break
            ring.write(scratch[:n])
            moved += n
        if moved:
            self._app_stats[_APP_RX_BYTES] += moved
        return moved

    def _accept(self, slot: int, s: _Slot, listener: Listener, now: int) -> None:
        engine = self.engine
        while self._free:
            tcb = engine.accept(listener)
            if tcb is None:
                break
            new = self._new_slot(SLOT_CONNECTED)
            c = self._slots[new]
            c.sock, c.port = tcb, tcb.local_port
            c.linger = s.linger  # inherited, as on Linux
            tcb.owner = self
            self._slot_of[tcb.sock_id] = new
            self._post(EVENT_ACCEPTED, slot, 0, 0, new, tcb.remote_ip, tcb.remote_port)
            self._pump(new, now)  # data may have come with the handshake
        mask = EPOLLIN if listener.accept_queue else 0
        if mask != s.readiness:
            s.readiness = mask
            self.segment.set_readiness(slot, mask)
            self._ready(slot, mask)

    # ------------------------------------------------------------ occupancy

    @property
    def socket_slots(self) -> int:
        return len(self._slots)

    def sample_queues(self) -> tuple[int, int, int, int]:
        """(command records waiting, command ring slots, event records
        waiting, event ring slots), from indices the rings validate.
        Raises CorruptRing."""
        commands = self.segment.commands
        events = self.segment.events
        command_used = commands.available()
        # As the events' producer: the room left, after loading and checking
        # the app's tail. The reservation this makes is replaced by the next
        # flush's own before anything is written.
        event_used = events.capacity - events.reserve(events.capacity)
        return command_used, commands.capacity, event_used, events.capacity

    def sample_rings(self, start: int, budget: int, totals: list[int]) -> int:
        """Add the bytes waiting in, and the size of, the RX and TX rings of
        the connected slots in start .. start + budget - 1 to
        totals[4:8] (rx used, rx capacity, tx used, tx capacity), and
        their number to totals[8].

        Returns the next slot to visit (`socket_slots` when done).
        Raises CorruptRing.
        """
        seg = self.segment
        slots = self._slots
        end = min(len(slots), start + budget)
        capacity = seg.geometry.socket_ring_bytes
        rx_used = tx_used = connected = 0
        for slot in range(start, end):
            s = slots[slot]
            if s is None or s.state != SLOT_CONNECTED:
                continue  # no bytes flow through the rings of other slots
            rx_used += capacity - seg.rx(slot).free()
            tx_used += seg.tx(slot).readable()
            connected += 1
        totals[4] += rx_used
        totals[5] += connected * capacity
        totals[6] += tx_used
        totals[7] += connected * capacity
        totals[8] += connected
        return end

    # ------------------------------------------------------------- teardown

    def close(self, now: int) -> None:
        """Reset every connection, close every listener, tell the app (the
        segment's `ended`, then the hang-up of its doorbell when ours
        closes: vfstack.shm "Liveness"), remove the files."""
        if self.closed:
            return
        self.closed = True
        self.segment.end()
        try:
            self._close_sockets(now)
        finally:  # even if that fails, the app hears of it and the files go
            for bell in (self.app_bell, self.stack_bell):
                bell.close()
                bell.unlink()
            with contextlib.suppress(BufferError):
                self.segment.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.segment_path)

    def _close_sockets(self, now: int) -> None:
        engine = self.engine
        for s in self._slots:
            if s is None or s.sock is None:
                continue
            sock = s.sock
            sock.owner = None
            if isinstance(sock, Listener):
                engine.close_listener(sock, now)
            elif sock.state != CLOSED:
                sock.linger_zero = True  # close() with SO_LINGER 0: a RST
                engine.close(sock, now)
            else:
                engine.close(sock, now)
        self._slot_of.clear()
        self._dirty.clear()
        self._out.clear()


class SessionManager:
    """All sessions of one instance; driven by the run loop."""

    def __init__(
        self,
        engine: TcpEngine,
        run_dir: Path,
        instance: str,
        max_sessions: int = 64,
        app_stats: AppStatsTable | None = None,
        app_group: int | None = None,
        contain: Containment | None = None,
    ) -> None:
        """`app_stats`: the app table the exporter reads (the instance's
        file); by default one in private memory. `app_group`: the gid that
        gets read-write access to each session's files (else root only).
        `contain`: the instance's fault policy; by default a strict one."""
        self.engine = engine
        self.run_dir = Path(run_dir)
        self.instance = instance
        self.app_group = app_group
        self._contain = contain or Containment()
        self._unlink_files("[0-9]*")  # from a crashed run
        self.max_sessions = max_sessions
        self._sessions: dict[int, Session] = {}
        self._by_fd: dict[int, Session] = {}
        self._next_id = 1
        self._scratch = memoryview(bytearray(_SCRATCH_BYTES))
        self._now = 0
        self._apps_checked_at: int | None = None
        if app_stats is None:
            app_stats = AppStatsTable(max(DEFAULT_SLOTS, max_sessions))
        self.app_stats = app_stats
        # Ring occupancy sweep (_sample): sessions left to visit (the last
        # one next), its next slot, per-app totals so far.
        self._sampled_at: int | None = None
        self._sample_interval = SAMPLE_INTERVAL_US
        self._sweep: list[Session] = []
        self._sweep_slot = 0
        self._sweep_totals: dict[int, list[int]] = {}
        # Counters (the lead may export them).
        self.violations = 0  # sessions ended for a bad record / corrupt ring
        self.failures = 0  # sessions ended for an unexpected error (a bug)
        self.dead_apps = 0  # sessions ended because the app's process is gone

    # ------------------------------------------------------------ control

    def attach(
        self,
        app: str,
        pid: int,
        command_slots: int = 0,
        event_slots: int = 0,
        socket_slots: int = 0,
        socket_ring_bytes: int = 0,
        now: int = 0,
    ) -> dict:
        """Create a session; the reply mirrors AttachResponse (token in base64).
        A bug met on the way fails this attach only (error "internal"), and
        what it had made of the session goes."""
        self._now = max(self._now, now)
        session_id = self._next_id
        sizes = (command_slots, event_slots, socket_slots, socket_ring_bytes)
        try:
            return self._attach(app, pid, sizes, now)
        except Exception as exc:
            self._contain.fault(FaultSite.SESSION, exc, f"attaching {app!r} fails")
            self.failures += 1
            session = self._sessions.get(session_id)
            if session is not None:
                self._end(session, now)
            else:
                self._unlink_files(f"{session_id}.*")
            return _error("internal", f"attach failed: {type(exc).__name__}")

    def _attach(self, app: str, pid: int, sizes: tuple[int, int, int, int], now: int) -> dict:
        if not isinstance(app, str) or not 0 < len(app) <= MAX_APP_NAME:
            return _error("invalid_argument", f"app must be 1..{MAX_APP_NAME} characters")
        if not isinstance(pid, int) or pid < 0 or not all(isinstance(v, int) for v in sizes):
            return _error("invalid_argument", "pid and ring sizes must be non-negative integers")
        if len(self._sessions) >= self.max_sessions:
            return _error("resource_exhausted", f"{self.max_sessions} sessions attached already")
        try:
            geometry = Geometry(
                sizes[0] or DEFAULT_COMMAND_SLOTS,
                sizes[1] or DEFAULT_EVENT_SLOTS,
                sizes[2] or DEFAULT_SOCKET_SLOTS,
                sizes[3] or DEFAULT_SOCKET_RING_BYTES,
            )
        except ValueError as exc:
            return _error("invalid_argument", str(exc))
        session_id = self._next_id
        self._next_id += 1
        # Unguessable names: with --app-group the run directory lets the
        # group reach a file by name but not list it, so only the app that
        # got the path in its AttachResponse can open its files.
        base = self.run_dir / f"{self.instance}.s{session_id}.{secrets.token_hex(16)}"
        segment_path = Path(f"{base}.shm")
        app_path, stack_path = f"{base}.app.bell", f"{base}.stack.bell"
        token = secrets.token_bytes(32)
        made: list = []
        group = self.app_group
        try:
            segment = Segment.create(str(segment_path), geometry, session_id, token, pid, group)
            made.append(segment)
            app_bell = Doorbell.create(app_path, group=group)
            made.append(app_bell)
            stack_bell = Doorbell.create(stack_path, group=group)
        except OSError as exc:
            for thing in made:
                thing.close()
            for path in (segment_path, app_path, stack_path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            return _error("resource_exhausted", f"cannot create the session's files: {exc}")
        app_index = self.app_stats.attach(app)
        counters = None
        if app_index < 0:
            log.warning("session %d (%s): app table full, its bytes are not exported",
                        session_id, app)  # fmt: skip
        else:
            counters = self.app_stats.counters(app_index)
            if self.app_stats.sessions(app_index) == 1:  # a sweep's totals may be another name's
                self._sweep_totals.pop(app_index, None)
        session = Session(
            self.engine, session_id, app, pid, now, token, segment, segment_path,
            app_bell, stack_bell, self._scratch, app_index, counters,
        )  # fmt: skip
        self._sessions[session_id] = session
        self._by_fd[stack_bell.fileno()] = session
        return {
            "session_id": session_id,
            "segment_path": str(segment_path),
            "segment_bytes": geometry.file_bytes,
            "layout_version": LAYOUT_VERSION,
            "app_doorbell": app_path,
            "stack_doorbell": stack_path,
            "token": base64.b64encode(token).decode("ascii"),
        }

    def detach(self, session_id: int, token: bytes, now: int) -> dict:
        self._now = max(self._now, now)
        session = self._sessions.get(session_id) if isinstance(session_id, int) else None
        if session is None:
            return _error("not_found", f"no session {session_id}")
        if not secrets.compare_digest(token, session.token):
            return _error("permission_denied", f"wrong token for session {session_id}")
        self._end(session, now)
        return {}

    def sessions(self, now: int | None = None) -> list[dict]:
        """Rows with the proto's Session field names."""
        now = self._now if now is None else now
        return [
            {
                "session_id": s.session_id,
                "app": s.app,
                "pid": s.pid,
                "attached_ms": max(0, now - s.attached_at) // 1000,
                "sockets": s.sockets,
            }
            for s in self._sessions.values()
        ]

    def close(self, now: int) -> None:
        """Shutting down: every session ends (connections reset, files removed)."""
        for session in list(self._sessions.values()):
            self._end(session, now)

    def _end(self, session: Session, now: int) -> None:
        if self._sessions.pop(session.session_id, None) is not None and session.app_index >= 0:
            self.app_stats.detach(session.app_index, now)
        self._by_fd.pop(session.stack_bell.fileno(), None)
        try:
            session.close(now)
        except Exception as exc:  # never let one session's teardown stop the loop
            where = f"session {session.session_id} ({session.app}): teardown is cut short"
            self._contain.fault(FaultSite.SESSION, exc, where)

    def _violation(self, session: Session, exc: BadRecord | CorruptRing, now: int) -> None:
        """The app broke the segment's contract: its session ends."""
        self.violations += 1
        log.warning("session %d (%s): ended: %s", session.session_id, session.app, exc.reason)
        self._end(session, now)

    def _fail(self, session: Session, exc: Exception, now: int) -> None:
        """A bug met while serving `session`: it ends, the others go on."""
        where = f"session {session.session_id} ({session.app}) ends"
        self._contain.fault(FaultSite.SESSION, exc, where)
        self.failures += 1
        self._end(session, now)

    def _unlink_files(self, pattern: str) -> None:
        """Remove this instance's session files `NAME.s<pattern>`."""
        for path in self.run_dir.glob(f"{self.instance}.s{pattern}"):
            with contextlib.suppress(OSError):
                path.unlink()

    # --------------------------------------------------------------- loop

    def fds(self) -> list[int]:
        """The stack doorbells to poll (they change on attach/detach)."""
        return list(self._by_fd)

    def on_doorbell(self, fd: int) -> None:
        """A stack doorbell was readable: consume its rings."""
        session = self._by_fd.get(fd)
        if session is not None:
            try:
                session.stack_bell.drain()
            except Exception as exc:
                self._fail(session, exc, self._now)

    def poll(self, now: int) -> bool:
        """One pass over every session. Returns True if any work was done.
        Never raises: a misbehaving session is ended, the others go on."""
        self._now = now
        work = False
        for session in list(self._sessions.values()):
            try:
                if session.poll(now):
                    work = True
            except (BadRecord, CorruptRing) as exc:
                self._violation(session, exc, now)
                work = True
            except Exception as exc:
                self._fail(session, exc, now)
                work = True
        if (
            self._sweep
            or self._sampled_at is None
            or now - self._sampled_at >= self._sample_interval
        ):
            self._sample(now)
        return work

    def _sample(self, now: int) -> None:
        """Ring occupancy into the app table. A sweep starts at most every
        SAMPLE_INTERVAL_US and visits at most SAMPLE_BUDGET socket slots a
        pass, session after session; when every session is done, each app
        gets its sample: the fullest command and event ring of its sessions,
        and rx/tx as the bytes waiting in all its connected sockets' rings
        over their total size. One connection whose peer stopped reading is
        TCP flow control doing its job and fills only its own ring; the sum
        crosses 90% (VfstackRingFull) when the app as a whole falls behind.
        Never raises: a corrupt ring (or a bug) ends its session, as in `poll`."""
        if not self._sweep:
            self._sampled_at = now
            self._sweep = list(self._sessions.values())
            self._sweep_slot = 0
            self._sweep_totals = {}
        sweep = self._sweep
        budget = SAMPLE_BUDGET
        while sweep and budget > 0:
            session = sweep[-1]
            start = self._sweep_slot
            if session.closed or session.app_index < 0:
                sweep.pop()
                self._sweep_slot = 0
                continue
            totals = self._sweep_totals.get(session.app_index)
            if totals is None:
                totals = self._sweep_totals[session.app_index] = [0] * 9
            try:
                if start == 0:
                    _keep_fullest(totals, session.sample_queues())
                end = session.sample_rings(start, budget, totals)
            except CorruptRing as exc:
                self._violation(session, exc, now)
                end = session.socket_slots
            except Exception as exc:
                self._fail(session, exc, now)
                end = session.socket_slots
            budget -= max(1, end - start)
            if end >= session.socket_slots:
                sweep.pop()
                self._sweep_slot = 0
            else:
                self._sweep_slot = end
        if not sweep:
            table = self.app_stats
            connected = 0
            for index, totals in self._sweep_totals.items():
                if table.sessions(index):
                    table.publish(index, *totals[:8])
                connected += totals[8]
            self._sweep_totals = {}
            self._sample_interval = max(SAMPLE_INTERVAL_US, connected * SAMPLE_US_PER_CONNECTED)

    def busy(self) -> bool:
        """Some session has work for the next pass (do not sleep)."""
        return bool(self._sweep) or any(s.busy() for s in self._sessions.values())

    def prepare_sleep(self) -> bool:
        """Before the loop sleeps: set every command ring's need-wakeup flag.
        False (flags cleared again) if a command arrived or work is pending."""
        if self._sweep:
            return False  # an occupancy sweep is half done: finish it first
        prepared: list[Session] = []
        for session in list(self._sessions.values()):
            try:
                ok = not session.busy() and session.segment.commands.prepare_sleep()
            except CorruptRing as exc:
                self._violation(session, exc, self._now)
                continue
            except Exception as exc:
                self._fail(session, exc, self._now)
                continue
            if not ok:
                for other in prepared:
                    other.segment.commands.sleep_done()
                return False
            prepared.append(session)
        return True

    def sleep_done(self) -> None:
        for session in self._sessions.values():
            session.segment.commands.sleep_done()

    def check_apps(self, now: int) -> None:
        """At most every CHECK_APPS_INTERVAL_US: end sessions whose app is gone, i.e. no
        longer holds its segment's liveness lock (vfstack.shm), or
        never took it within ATTACH_GRACE_US of attaching."""
        if self._apps_checked_at is not None and now - self._apps_checked_at < (
            CHECK_APPS_INTERVAL_US
        ):
            return
        self._apps_checked_at = now
        for session in list(self._sessions.values()):
            try:
                alive = session.segment.app_alive()
            except Exception as exc:
                self._fail(session, exc, now)
                continue
            if alive:
                session.opened = True
            elif session.opened or now - session.attached_at >= ATTACH_GRACE_US:
                self.dead_apps += 1
                log.info("session %d (%s, pid %d): the app is gone", session.session_id,
                         session.app, session.pid)  # fmt: skip
                self._end(session, now)


def _keep_fullest(totals: list[int], queues: tuple[int, int, int, int]) -> None:
    """totals[0:4] := the fuller (by ratio) of each of its command and event
    (used, capacity) pairs and the session's."""
    command_used, command_capacity, event_used, event_capacity = queues
    if command_used * (totals[1] or 1) >= totals[0] * command_capacity:
        totals[0], totals[1] = command_used, command_capacity
    if event_used * (totals[3] or 1) >= totals[2] * event_capacity:
        totals[2], totals[3] = event_used, event_capacity


def _error(code: str, message: str) -> dict:
    return {"error": code, "message": message}


__all__ = ["Session", "SessionManager"]
