"""What each connection of the soak does, sans-IO: plans and endpoints.

A *plan* says what both ends of one connection do: how many bytes each
sends and how (chunk sizes, idle first), how each reads (normally, slowly,
stalling into a zero window), which socket options each sets, who closes
first and how (shutdown modes, SO_LINGER), and whether one end resets the
connection mid-transfer. `make_plan(seed)` draws it from one 63-bit seed.
The end that connects (the *initiator*) sends that seed in a 12-byte
header, so the end that accepts rebuilds the same plan: both know what the
other will do, hence which errors are legitimate.

An `Endpoint` runs one end of a plan without doing any I/O itself: a
driver (tests/support/soak_drivers.py: epoll, selectors, threads,
asyncio, kernel sockets) asks it what to send and how much to read, when
to wake it, and which socket calls to make (options, shutdown, close), and
tells it what happened. It checks every byte it receives against the
seeded payload as it arrives, so a stream that completes is exact and even
the prefix of a reset one is checked.

Errors, as Linux gives them:
- A plan without a reset produces no error at all, on either end.
- If one end resets (SO_LINGER {1, 0}, or close with unread data, which
  sends a RST per RFC 2525), the *other* end may see ECONNRESET or EPIPE
  on any call, ENOTCONN on shutdown, or EOF before its bytes are all in;
  it may also complete, if it had everything before the RST.
- A "refused" plan connects where nothing listens: ECONNREFUSED, nothing else.
Anything else (an error no one caused, extra or wrong bytes, no progress
for HANG_SECONDS) fails the endpoint; its last operations say where.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
from collections import deque
from dataclasses import dataclass, field, replace

MAGIC = b"SOAK"
HEADER = struct.Struct("!4sQ")  # magic, plan seed: the initiator's first 12 bytes
HANG_SECONDS = 60.0  # no progress for this long while waiting for I/O is a failure
LOG_LENGTH = 16  # operations an endpoint remembers for its failure report
LINGER_ZERO = struct.pack("ii", 1, 0)

INITIATOR, ACCEPTOR = "initiator", "acceptor"
COMPLETE, RESET, ABORTED, REFUSED = "complete", "reset", "aborted", "refused"

# Kinds of plan and how often each is drawn: mostly ordinary exchanges,
# with every misbehaviour the issue lists well represented.
KINDS = {
    "short": 6,  # a few hundred bytes each way: many short connections
    "bulk": 3,  # up to 2 MiB one or both ways
    "half_close": 2,  # request, SHUT_WR, the answer after EOF
    "idle": 1,  # both ends idle 1-3 s first (keepalive probes meanwhile)
    "slow_reader": 1,  # one end reads a little at a time
    "zero_window": 1,  # one end stops reading with a small buffer
    "reset": 2,  # one end resets mid-transfer
    "refused": 1,  # connect to a port where nothing listens
}
_BUFFER_SIZES = (4096, 16384, 65536, 262144)


@dataclass(frozen=True, slots=True)
class Options:
    """Socket options one end sets (Linux's names and units)."""

    nodelay: bool = False
    keepalive: tuple[int, int, int] | None = None  # TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT
    rcvbuf: int = 0  # SO_RCVBUF; 0 leaves the default
    sndbuf: int = 0  # SO_SNDBUF
    linger: int = 0  # SO_LINGER {1, linger}: a graceful close all the same

    def calls(self) -> list[tuple[int, int, object]]:
        """The setsockopt calls, as (level, name, value)."""
        calls: list[tuple[int, int, object]] = []
        if self.nodelay:
            calls.append((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1))
        if self.keepalive:
            idle, interval, count = self.keepalive
            calls += [
                (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
                (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle),
                (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval),
                (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count),
            ]
        if self.rcvbuf:
            calls.append((socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf))
        if self.sndbuf:
            calls.append((socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf))
        if self.linger:
            calls.append((socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, self.linger)))
        return calls


@dataclass(frozen=True, slots=True)
class Side:
    """What one end of a connection does."""

    send_bytes: int = 0
    send_chunk: int = 65536  # at most this much per send call
    read_chunk: int = 65536  # at most this much per recv call
    read_pause: float = 0.0  # slow reader: seconds between reads
    stall_at: int = -1  # zero window: stop reading once this many bytes are in ...
    stall_seconds: float = 0.0  # ... for this long
    idle_before: float = 0.0  # seconds before the first byte is sent
    options: Options = field(default_factory=Options)
    options_before_connect: bool = False  # initiator: set them before connect()
    shut_wr_after_send: bool = True
    closes_first: bool = False  # close once all bytes are in, without waiting for EOF
    close_delay: float = 0.0  # the other closer: seconds from EOF to close
    shut_before_close: int = -1  # SHUT_RD / SHUT_RDWR just before close; -1: none
    abort_at: int = -1  # reset after this many payload bytes (received, or sent)
    abort_counts_sent: bool = False
    abort_linger_zero: bool = True  # reset by SO_LINGER {1, 0}; else close with unread data


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    kind: str
    initiator: Side
    acceptor: Side
    respond_after_eof: bool = False  # the acceptor sends only after the initiator's EOF

    def side(self, role: str) -> Side:
        return self.initiator if role == INITIATOR else self.acceptor

    def other(self, role: str) -> Side:
        return self.acceptor if role == INITIATOR else self.initiator


def make_plan(seed: int) -> Plan:
    """The plan that `seed` names: the same on every machine and Python."""
    rng = random.Random(seed)
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    initiator, acceptor = _random_side(rng), _random_side(rng)
    plan = Plan(seed, kind, initiator, acceptor)
    plan = _KIND_SHAPERS[kind](rng, plan)
    return _closers(rng, plan)


def _log_size(rng: random.Random, low: int, high: int) -> int:
    """A size spread evenly over orders of magnitude from low to high."""
    return int(low * (high / low) ** rng.random())


def _random_side(rng: random.Random) -> Side:
    """Options and habits any plan may have."""
    keepalive = None
    if rng.random() < 0.3:  # short enough that an idle plan sees probes
        keepalive = (rng.randint(1, 3), rng.randint(1, 2), rng.randint(3, 6))
    options = Options(
        nodelay=rng.random() < 0.5,
        keepalive=keepalive,
        rcvbuf=rng.choice(_BUFFER_SIZES) if rng.random() < 0.25 else 0,
        sndbuf=rng.choice(_BUFFER_SIZES) if rng.random() < 0.25 else 0,
        linger=rng.randint(1, 5) if rng.random() < 0.15 else 0,
    )
    return Side(
        send_chunk=rng.choice((512, 4096, 65536, 1 << 20)),
        read_chunk=rng.choice((1000, 4096, 65536, 262144)),
        options=options,
        options_before_connect=rng.random() < 0.5,
        shut_wr_after_send=rng.random() < 0.6,
        shut_before_close=rng.choice((-1, -1, -1, socket.SHUT_RD, socket.SHUT_RDWR)),
        close_delay=rng.choice((0.0, 0.0, rng.uniform(0.0, 0.2))),
    )


def _short(rng: random.Random, plan: Plan) -> Plan:
    """A few hundred bytes, sometimes sent and read a byte at a time."""
    sides = [
        replace(
            side,
            send_bytes=rng.randint(0, 512),
            send_chunk=rng.choice((1, side.send_chunk)),
            read_chunk=rng.choice((1, side.read_chunk)),
        )
        for side in (plan.initiator, plan.acceptor)
    ]
    return replace(plan, initiator=sides[0], acceptor=sides[1])


def _bulk(rng: random.Random, plan: Plan) -> Plan:
    both = rng.random() < 0.4
    big = _log_size(rng, 1024, 2 << 20)
    other = _log_size(rng, 1024, 2 << 20) if both else rng.randint(0, 64)
    sizes = (big, other) if rng.random() < 0.5 else (other, big)
    return replace(
        plan,
        initiator=replace(plan.initiator, send_bytes=sizes[0]),
        acceptor=replace(plan.acceptor, send_bytes=sizes[1]),
    )


def _half_close(rng: random.Random, plan: Plan) -> Plan:
    """An HTTP/1.0-like exchange: the request, SHUT_WR, then the answer."""
    return replace(
        plan,
        respond_after_eof=True,
        initiator=replace(
            plan.initiator, send_bytes=_log_size(rng, 16, 65536), shut_wr_after_send=True
        ),
        acceptor=replace(plan.acceptor, send_bytes=_log_size(rng, 16, 256 << 10)),
    )


def _idle(rng: random.Random, plan: Plan) -> Plan:
    keepalive = Options(keepalive=(1, 1, rng.randint(3, 6)))
    sides = []
    for side in (plan.initiator, plan.acceptor):
        options = side.options
        if rng.random() < 0.7:
            options = replace(options, keepalive=keepalive.keepalive)
        sides.append(
            replace(
                side,
                send_bytes=rng.randint(0, 4096),
                idle_before=rng.uniform(1.0, 3.0),
                options=options,
            )
        )
    return replace(plan, initiator=sides[0], acceptor=sides[1])


def _one_end_reads(rng: random.Random, plan: Plan, size: int, reading) -> Plan:
    """Either end, at random, is sent `size` bytes and reads them its way
    (`reading(side)` returns that end's Side)."""
    if rng.random() < 0.5:
        reader, writer = reading(plan.initiator), plan.acceptor
        return replace(plan, initiator=reader, acceptor=replace(writer, send_bytes=size))
    reader, writer = reading(plan.acceptor), plan.initiator
    return replace(plan, initiator=replace(writer, send_bytes=size), acceptor=reader)


def _slow_reader(rng: random.Random, plan: Plan) -> Plan:
    size = _log_size(rng, 4096, 96 << 10)
    chunk, pause = rng.choice((512, 1024, 4096)), rng.uniform(0.002, 0.02)
    return _one_end_reads(
        rng, plan, size, lambda side: replace(side, read_chunk=chunk, read_pause=pause)
    )


def _zero_window(rng: random.Random, plan: Plan) -> Plan:
    """More than both ends buffer, to a reader that stops for a while with
    a small receive buffer: the window closes and the sender must probe."""
    size = _log_size(rng, 512 << 10, 1536 << 10)
    rcvbuf = rng.choice((4096, 8192, 16384))
    stall_at, stall_seconds = rng.randint(0, size // 4), rng.uniform(0.3, 1.5)
    return _one_end_reads(
        rng,
        plan,
        size,
        lambda side: replace(
            side,
            options=replace(side.options, rcvbuf=rcvbuf),
            stall_at=stall_at,
            stall_seconds=stall_seconds,
        ),
    )


def _reset(rng: random.Random, plan: Plan) -> Plan:
    """One end (sometimes both) resets after some of the payload.

    The initiator counts received bytes only: the acceptor sends nothing
    before it has read the header, so a reset cannot overtake the header
    (the acceptor would not know the plan that allows it)."""
    plan = _bulk(rng, plan)
    who = rng.choice((INITIATOR, ACCEPTOR, ACCEPTOR, "both"))
    if who in (INITIATOR, "both") and plan.acceptor.send_bytes < 2:
        plan = replace(plan, acceptor=replace(plan.acceptor, send_bytes=rng.randint(2, 65536)))
    sides = {INITIATOR: plan.initiator, ACCEPTOR: plan.acceptor}
    for role in (INITIATOR, ACCEPTOR):
        if who not in (role, "both"):
            continue
        side, incoming = sides[role], plan.other(role).send_bytes
        counts_sent = role == ACCEPTOR and (incoming < 2 or rng.random() < 0.3)
        if counts_sent and side.send_bytes < 2:
            side = replace(side, send_bytes=rng.randint(2, 65536))
        total = side.send_bytes if counts_sent else incoming
        sides[role] = replace(
            side,
            abort_at=rng.randint(1, total - 1),
            abort_counts_sent=counts_sent,
            abort_linger_zero=rng.random() < 0.6,
        )
    return replace(plan, initiator=sides[INITIATOR], acceptor=sides[ACCEPTOR])


def _refused(rng: random.Random, plan: Plan) -> Plan:
    return plan  # the driver connects to a closed port; nothing else happens


_KIND_SHAPERS = {
    "short": _short,
    "bulk": _bulk,
    "half_close": _half_close,
    "idle": _idle,
    "slow_reader": _slow_reader,
    "zero_window": _zero_window,
    "reset": _reset,
    "refused": _refused,
}


def _closers(rng: random.Random, plan: Plan) -> Plan:
    """Who closes first: the initiator, the acceptor, or both at once (a
    simultaneous close). At least one end closes without waiting for EOF,
    so no plan waits on itself; after a request and SHUT_WR the acceptor
    must read EOF before answering, so it cannot be first."""
    first = rng.choice((INITIATOR, ACCEPTOR, "both"))
    if plan.respond_after_eof:
        first = INITIATOR
    return replace(
        plan,
        initiator=replace(plan.initiator, closes_first=first in (INITIATOR, "both")),
        acceptor=replace(plan.acceptor, closes_first=first in (ACCEPTOR, "both")),
    )


def payload(seed: int, role: str, size: int) -> bytes:
    """The bytes `role` sends in plan `seed`."""
    return random.Random(seed * 2 + (role == ACCEPTOR)).randbytes(size)


def _is_reset(exc: BaseException, op: str) -> bool:
    """Is `exc` what a call `op` gives on a connection the peer reset?
    ("transport": an asyncio transport's own call, say its shutdown for
    write_eof, surfacing on a read or a drain.)"""
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return True
    not_connected = isinstance(exc, OSError) and exc.errno == errno.ENOTCONN
    return not_connected and op in ("shutdown", "transport")


class Endpoint:
    """One end of one connection, driven by a driver (see the module doc).

    The driver loop: `at = ep.poll(now)`; make every call `ep.take_calls()`
    returns (report failures with `on_error`); then, until `at`, wait to
    send `ep.want_send()` and to read up to `ep.want_recv()` bytes, and
    report with `on_sent`, `on_received` (b"" at EOF) or `on_error`. Once
    `ep.done` and the calls are made, the socket is closed.

    Calls are tuples: ("setsockopt", level, name, value), ("shutdown", how),
    ("close", abortive). An abortive close drops what is still buffered
    (asyncio's `transport.abort()`); for a socket both are `close()`.
    """

    def __init__(self, role: str, plan: Plan | None, now: float) -> None:
        self.role = role
        self.address = ""  # where the other end is, for reports (the driver sets it)
        self.plan: Plan | None = None
        self.outcome: str | None = None  # COMPLETE, RESET, ABORTED, REFUSED
        self.failure = ""
        self.log: deque = deque(maxlen=LOG_LENGTH)
        self.started = self.last_progress = now
        self.ops = 0
        self.sent = 0  # payload bytes (the header aside)
        self.received = 0  # payload bytes, each checked
        self._header = bytearray()
        self._side = self._other = Side()  # this end's part of the plan, and the peer's
        self._calls: list[tuple] = []
        self._connected = role == ACCEPTOR
        self._out = memoryview(b"")
        self._out_offset = 0
        self._header_bytes = 0  # of _out: the header, for the initiator
        self._expected = b""
        self._send_from = now
        self._sending = self._send_done = False
        self._read_after = now  # slow reader, zero window: no recv before this
        self._may_read = True
        self._pausing = False
        self._stalled = self._eof = self._recv_done = False
        self._close_at = -1.0
        self._closed = False
        if plan is not None:
            self._begin(plan, now)

    # ---------------------------------------------------------------- state

    @property
    def done(self) -> bool:
        return self.outcome is not None or bool(self.failure)

    @property
    def kind(self) -> str:
        return self.plan.kind if self.plan else "unknown"

    def _begin(self, plan: Plan, now: float) -> None:
        self.plan = plan
        side = plan.side(self.role)
        self._side = side
        self._other = plan.other(self.role)
        data = payload(plan.seed, self.role, side.send_bytes)
        if self.role == INITIATOR:
            data = HEADER.pack(MAGIC, plan.seed) + data
            self._header_bytes = HEADER.size
        self._out = memoryview(data)
        peer = ACCEPTOR if self.role == INITIATOR else INITIATOR
        self._expected = payload(plan.seed, peer, self._other.send_bytes)
        self._send_from = now + side.idle_before
        if self.role == ACCEPTOR:
            self._calls += self._option_calls()

    def _option_calls(self) -> list[tuple]:
        return [("setsockopt", *call) for call in self._side.options.calls()]

    def connect_calls(self) -> list[tuple]:
        """Initiator: the setsockopt calls to make before connect() (the
        others follow `on_connected`)."""
        return self._option_calls() if self._side.options_before_connect else []

    def _note(self, now: float, *what) -> None:
        self.ops += 1
        log = self.log
        if log and tuple(log[-1][2:]) == what:  # the same again: count it, keep the log telling
            log[-1][0] = now - self.started
            log[-1][1] += 1
        else:
            log.append([now - self.started, 1, *what])

    def _progress(self, now: float) -> None:
        self.last_progress = now

    def _fail(self, text: str) -> None:
        if not self.done:
            self.failure = text
            self._close(abortive=False)

    def _finish(self, outcome: str) -> None:
        if not self.done:
            self.outcome = outcome
            self._close(abortive=False)

    def _close(self, abortive: bool) -> None:
        if not self._closed:
            self._closed = True
            self._calls.append(("close", abortive))

    def _reset_allowed(self) -> bool:
        """May the peer reset this connection? Only if its plan says so."""
        return self.plan is not None and self._other.abort_at >= 0

    # ------------------------------------------------------ driver's calls

    def poll(self, now: float) -> float:
        """Advance by the clock; returns when to call again at the latest."""
        if self.done:
            return now
        wake = self.last_progress + HANG_SECONDS
        if now >= wake:
            self._fail(f"no progress for {HANG_SECONDS:.0f} s: {self._waiting_for()}")
            return now
        if self.plan is None or not self._connected:
            return wake
        if not self._sending:
            if now < self._send_from:
                wake = min(wake, self._send_from)
            elif self.role == INITIATOR or not self.plan.respond_after_eof or self._eof:
                self._sending = True
                self._progress(now)
        if self._sending and not self._send_done and self._out_offset == len(self._out):
            self._sent_all()
        if self._side.closes_first and self.received == len(self._expected):
            self._recv_done = True  # all in: no need to wait for the FIN
        self._may_read = now >= self._read_after
        if not self._may_read:
            wake = min(wake, self._read_after)
        elif self._pausing:
            self._pausing = False
            self._progress(now)  # a planned pause is over: waiting counts from here
        if self._send_done and self._recv_done and not self.done:
            if self._close_at < 0:
                delay = 0.0 if self._side.closes_first else self._side.close_delay
                self._close_at = now + delay
            if now >= self._close_at:
                self._close_gracefully()
            else:
                wake = min(wake, self._close_at)
        return wake

    def take_calls(self) -> list[tuple]:
        calls, self._calls = self._calls, []
        return calls

    def want_send(self) -> memoryview | None:
        if self.done or not self._sending or self._send_done:
            return None
        end = self._out_offset + self._side.send_chunk
        return self._out[self._out_offset : end]

    def want_recv(self) -> int:
        if self.done or self._recv_done or not self._connected:
            return 0
        if self.plan is None:
            return HEADER.size - len(self._header)
        return self._side.read_chunk if self._may_read else 0

    def on_connected(self, now: float) -> None:
        self._note(now, "connected")
        if self.plan.kind == "refused":
            self._fail("connected to a port where nothing listens")
            return
        self._connected = True
        self._progress(now)
        if not self._side.options_before_connect:
            self._calls += self._option_calls()

    def on_sent(self, count: int, now: float) -> None:
        self._note(now, "send", count)
        self._progress(now)
        self._out_offset += count
        self.sent = max(0, self._out_offset - self._header_bytes)
        side = self._side
        if side.abort_at >= 0 and side.abort_counts_sent and self.sent >= side.abort_at:
            self._abort()

    def on_received(self, data: bytes, now: float) -> None:
        self._note(now, "recv", len(data))
        self._progress(now)
        if self.plan is None:
            self._header_received(data, now)
        elif not data:
            self._eof_received()
        else:
            self._payload_received(data, now)

    def on_error(self, exc: BaseException, op: str, now: float) -> None:
        self._note(now, op, f"{type(exc).__name__}: {exc}")
        if self.done:
            return
        if op == "connect" and self.plan.kind == "refused":
            if isinstance(exc, ConnectionRefusedError):
                self._finish(REFUSED)
            else:
                self._fail(f"connect to a closed port: {exc!r}, not ECONNREFUSED")
        elif _is_reset(exc, op) and self._reset_allowed():
            self._finish(RESET)
        else:
            why = "" if self._reset_allowed() else " (no one reset this connection)"
            self._fail(f"{op}: {type(exc).__name__}: {exc}{why}")

    def on_call_done(self, call: tuple, now: float) -> None:
        """The driver made `call` (from take_calls) without error."""
        self._note(now, *call)

    # ------------------------------------------------------------- internals

    def _header_received(self, data: bytes, now: float) -> None:
        if not data:
            self._fail(f"EOF after {len(self._header)} of {HEADER.size} header bytes")
            return
        self._header += data
        if len(self._header) < HEADER.size:
            return
        magic, seed = HEADER.unpack(self._header)
        if magic != MAGIC:
            self._fail(f"bad header {bytes(self._header)!r}")
            return
        self._begin(make_plan(seed), now)

    def _eof_received(self) -> None:
        self._eof = True
        if self.received < len(self._expected):
            if self._reset_allowed():
                self._finish(RESET)
            else:
                self._fail(f"EOF after {self.received} of {len(self._expected)} bytes")
            return
        self._recv_done = True

    def _payload_received(self, data: bytes, now: float) -> None:
        start, end = self.received, self.received + len(data)
        if end > len(self._expected) or data != self._expected[start:end]:
            self._fail(_mismatch(data, self._expected, start))
            return
        self.received = end
        side = self._side
        pause = side.read_pause
        if side.stall_at >= 0 and not self._stalled and end >= side.stall_at:
            self._stalled = True
            pause = side.stall_seconds
        if pause:
            self._read_after = now + pause
            self._may_read = False
            self._pausing = True
        if side.abort_at >= 0 and not side.abort_counts_sent and end >= side.abort_at:
            self._abort()

    def _sent_all(self) -> None:
        self._send_done = True
        if self._side.shut_wr_after_send and not self.done:
            self._calls.append(("shutdown", socket.SHUT_WR))

    def _abort(self) -> None:
        """Reset the connection, as the plan says."""
        if self.done:
            return
        self.outcome = ABORTED
        if self._side.abort_linger_zero:
            self._calls.append(("setsockopt", socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO))
        self._close(abortive=True)

    def _close_gracefully(self) -> None:
        how = self._side.shut_before_close
        if how >= 0:
            self._calls.append(("shutdown", how))
        self._finish(COMPLETE)

    def _waiting_for(self) -> str:
        if not self._connected:
            return "connect"
        if self.plan is None:
            return f"the header ({len(self._header)} of {HEADER.size} bytes in)"
        parts = []
        if not self._send_done:
            parts.append(f"to send ({self.sent} of {self._side.send_bytes} bytes out)")
        if not self._recv_done:
            parts.append(f"to receive ({self.received} of {len(self._expected)} bytes in)")
        return " and ".join(parts) or "nothing"

    def describe(self) -> str:
        """The failure report: the plan and the last operations."""
        ops = "\n".join(
            f"    {t:8.3f}s {' '.join(str(x) for x in what)}" + (f" (x{n})" if n > 1 else "")
            for t, n, *what in self.log
        )
        return (
            f"{self.role} of plan {self.plan.seed if self.plan else '?'} "
            f"({self.kind}, {self.address}): {self.failure}\n  plan: {self.plan}\n"
            f"  sent {self.sent}, received {self.received}; last operations:\n{ops}"
        )


def _mismatch(data: bytes, expected: bytes, start: int) -> str:
    end = start + len(data)
    if end > len(expected):
        return f"{end - len(expected)} bytes more than the {len(expected)} expected"
    for i, (got, want) in enumerate(zip(data, expected[start:end], strict=True)):
        if got != want:
            return f"byte {start + i} is {got:#04x}, not {want:#04x}"
    return "data differ"  # not reached
