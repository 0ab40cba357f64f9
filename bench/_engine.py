"""The TCP engine alone, no kernel and no NIC: two `TcpEngine`s back to
back in this process (each one's `send_ipv4` wraps the segment in an IPv4
header and queues it for the other, which parses it as the IPv4 host
would). A bulk transfer A -> B (segments/s both directions, MB/s,
µs/segment and where it goes: input, the applications' calls, output)
and short transactions (connect, 64 B request, 64 B response, close).

Measured by `bench.tcp` and by the evaluation's `cost` workload
(`bench.evaluation`).
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable

from stackservice.diag import PATTERN
from stackservice.net.ethernet import HEADER_LEN as ETH_HEADER_LEN
from stackservice.net.host import FRAME_HEADROOM
from stackservice.net.ipv4 import PROTO_TCP, Ipv4View, write_header
from stackservice.net.offload import SuperFrame
from stackservice.nic.gso import segment
from stackservice.tcp.counters import TCP_COUNTER_COUNT, TcpCounter
from stackservice.tcp.drops import TCP_DROP_REASON_COUNT
from stackservice.tcp.engine import SocketError, TcpEngine
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TCP_STATE_COUNT
from stackservice.tcp.tcb import ERROR, HANGUP, WRITABLE, Tcb

A_ADDRESS, B_ADDRESS = "198.18.0.1", "198.18.0.10"  # client side, server side
HTTP_PORT = 80


def _ip(text: str) -> int:
    return int.from_bytes(socket.inet_aton(text), "big")


def _now_us() -> int:
    return time.monotonic_ns() // 1000


# ----------------------------------------------------------------- engine only


class _Side:
    """One engine and the segments queued for it by the other side. With
    `offload` the engine sends runs as super-frames (stackservice.net.
    offload), which this side cuts as the kernel would (`cut_seconds`:
    the time that takes, the NIC's share, not the engine's)."""

    def __init__(self, ip: int, peer_ip: int, secret: bytes, offload: bool = False) -> None:
        self.ip = ip
        self.peer_ip = peer_ip
        self.peer: _Side = self
        self.inbox: list[memoryview] = []
        self.ident = 0
        self.cut_seconds = 0.0
        # Seconds spent in each phase of run_pass (timed per pass, not per
        # segment, so the clock reads cost little).
        self.phases = [0.0, 0.0, 0.0]  # input, application, output
        self.counters = [0] * TCP_COUNTER_COUNT
        self.drops = [0] * TCP_DROP_REASON_COUNT
        self.engine = TcpEngine(
            ip, self._send, self._route, TcpSettings(), self.counters, self.drops,
            [0] * TCP_STATE_COUNT, secret, segmentation_offload=offload,
        )  # fmt: skip

    def _route(self, dst: int) -> int | None:
        return dst if dst == self.peer_ip else None

    def _send(self, dst: int, protocol: int, frame: bytearray, now: int) -> bool:
        # What Ipv4Host.send_in_frame does, less the Ethernet header and ARP.
        length = len(frame) - FRAME_HEADROOM
        write_header(frame, ETH_HEADER_LEN, self.ip, dst, protocol, length, self.ident)
        if type(frame) is SuperFrame:
            started = time.perf_counter()
            self.peer.inbox += [memoryview(piece)[ETH_HEADER_LEN:] for piece in segment(frame)]
            self.cut_seconds += time.perf_counter() - started
            self.ident = (self.ident + frame.segments) & 0xFFFF
            return True
        self.ident = (self.ident + 1) & 0xFFFF
        self.peer.inbox.append(memoryview(frame)[ETH_HEADER_LEN:])
        return True

    def run_pass(self, now: int, serve: Callable[[int], None] | None = None) -> None:
        """One loop pass: input, timers, readiness to owners, `serve(now)`
        (the stack loop's sessions step, if the side has one), flush."""
        engine = self.engine
        clock = time.perf_counter
        phases = self.phases
        t0 = clock()
        inbox, self.inbox = self.inbox, []
        for datagram in inbox:
            header = Ipv4View.checked(datagram, False)
            engine.on_segment(header, now, False)
        deadline = engine.poll_at()
        if deadline is not None and deadline <= now:
            engine.on_timer(now)
        t1 = clock()
        for sock in engine.take_events():
            owner = sock.owner
            if owner is not None:
                owner.on_ready(sock, now)
        if serve is not None:
            serve(now)
        t2 = clock()
        engine.flush(now)
        t3 = clock()
        phases[0] += t1 - t0
        phases[1] += t2 - t1
        phases[2] += t3 - t2


def _pair(offload: bool = False) -> tuple[_Side, _Side]:
    a_ip, b_ip = _ip(A_ADDRESS), _ip(B_ADDRESS)
    a = _Side(a_ip, b_ip, bytes(32), offload)
    b = _Side(b_ip, a_ip, bytes(range(32)), offload)
    a.peer, b.peer = b, a
    return a, b


def _segments(a: _Side, b: _Side) -> int:
    return a.counters[TcpCounter.SEGMENTS_IN] + b.counters[TcpCounter.SEGMENTS_IN]


def _phases(a: _Side, b: _Side, segments: int) -> dict[str, float]:
    """µs per segment spent in input (incl. timers), in the applications'
    calls (send/receive copies, connect/close) and in output."""
    names = ("input", "app", "output")
    return {name: 1e6 * (a.phases[i] + b.phases[i]) / segments for i, name in enumerate(names)}


def _read(engine: TcpEngine, tcb: Tcb, out: memoryview, now: int) -> int:
    """Bytes read (0 at EOF), -1 if none are ready."""
    try:
        return engine.receive_into(tcb, out, now)
    except SocketError as exc:
        if exc.errno == errno.EAGAIN:
            return -1
        raise


class _BulkSender:
    __slots__ = ("chunk", "engine", "left")

    def __init__(self, engine: TcpEngine, total: int) -> None:
        self.engine = engine
        self.left = total
        self.chunk = memoryview(PATTERN * (65536 // len(PATTERN) + 1))[:65536]

    def on_ready(self, tcb: Tcb, now: int) -> None:
        engine = self.engine
        if not self.left or not engine.readiness(tcb) & WRITABLE:
            return
        while self.left:
            written = engine.send(tcb, self.chunk[: min(self.left, 65536)], now)
            self.left -= written
            if not written:
                return
        engine.close(tcb, now)


class _Sink:
    """Server side of the bulk transfer: accept, read everything."""

    __slots__ = ("engine", "eof", "received", "scratch")

    def __init__(self, engine: TcpEngine) -> None:
        self.engine = engine
        self.scratch = memoryview(bytearray(65536))
        self.received = 0
        self.eof = False

    def on_ready(self, sock, now: int) -> None:
        engine = self.engine
        if not isinstance(sock, Tcb):
            while (tcb := engine.accept(sock)) is not None:
                tcb.owner = self
                self.on_ready(tcb, now)
            return
        while (count := _read(engine, sock, self.scratch, now)) > 0:
            self.received += count
        if count == 0:
            self.eof = True
            engine.close(sock, now)


def engine_bulk(megabytes: int, offload: bool = False) -> dict[str, float]:
    """A -> B, `megabytes` MB. With `offload`, A's runs leave as
    super-frames that the wiring cuts (`cut_us_per_segment`: its cost, in
    the figures like the rest of the wiring)."""
    a, b = _pair(offload)
    total = megabytes * 1_000_000
    sink = _Sink(b.engine)
    b.engine.listen(5001, 16, owner=sink)
    started = time.perf_counter()
    a.engine.connect(b.ip, 5001, _now_us(), owner=_BulkSender(a.engine, total))
    while not sink.eof:
        now = _now_us()
        a.run_pass(now)
        b.run_pass(now)
    elapsed = time.perf_counter() - started
    if sink.received != total:
        raise RuntimeError(f"bulk: {sink.received} of {total} bytes arrived")
    segments = _segments(a, b)
    return {
        "bytes": total,
        "segments": segments,
        "seconds": elapsed,
        "segments_per_s": segments / elapsed,
        "mb_per_s": total / elapsed / 1e6,
        "us_per_segment": 1e6 * elapsed / segments,
        "phase_us_per_segment": _phases(a, b, segments),
        "cut_us_per_segment": 1e6 * (a.cut_seconds + b.cut_seconds) / segments,
    }


_REQUEST = b"GET / HTTP/1.0\r\nX-Pad: " + b"x" * 37 + b"\r\n\r\n"
_RESPONSE = bytes(PATTERN[:64])
assert len(_REQUEST) == 64


class _TxClient:
    """One client connection: send the request, read the response to EOF."""

    __slots__ = ("got", "loop", "sent")

    def __init__(self, loop: _TxLoop) -> None:
        self.loop = loop
        self.sent = False
        self.got = 0

    def on_ready(self, tcb: Tcb, now: int) -> None:
        engine = self.loop.engine
        if engine.readiness(tcb) & (ERROR | HANGUP):
            raise RuntimeError("engine transaction failed")
        if not self.sent:
            if not engine.readiness(tcb) & WRITABLE:
                return
            engine.send(tcb, _REQUEST, now)
            self.sent = True
        while (count := _read(engine, tcb, self.loop.scratch, now)) > 0:
            self.got += count
        if count == 0:
            if self.got != len(_RESPONSE):
                raise RuntimeError(f"engine transaction: {self.got} bytes of response")
            engine.close(tcb, now)
            self.loop.finished(now)


class _TxLoop:
    """Keeps `concurrency` transactions in flight until `count` are done."""

    __slots__ = ("count", "done", "engine", "remote", "scratch", "started")

    def __init__(self, engine: TcpEngine, remote: int, count: int) -> None:
        self.engine = engine
        self.remote = remote
        self.count = count
        self.started = self.done = 0
        self.scratch = memoryview(bytearray(4096))

    def start(self, now: int) -> None:
        if self.started < self.count:
            self.started += 1
            self.engine.connect(self.remote, HTTP_PORT, now, owner=_TxClient(self))

    def finished(self, now: int) -> None:
        self.done += 1
        self.start(now)


class _TxServer:
    """Accept, read the 64 B request, answer 64 B and close."""

    __slots__ = ("engine", "scratch")

    def __init__(self, engine: TcpEngine) -> None:
        self.engine = engine
        self.scratch = memoryview(bytearray(4096))

    def on_ready(self, sock, now: int) -> None:
        engine = self.engine
        if not isinstance(sock, Tcb):
            while (tcb := engine.accept(sock)) is not None:
                tcb.owner = _TxServerConn(self)
                tcb.owner.on_ready(tcb, now)


class _TxServerConn:
    __slots__ = ("got", "server")

    def __init__(self, server: _TxServer) -> None:
        self.server = server
        self.got = 0

    def on_ready(self, tcb: Tcb, now: int) -> None:
        engine = self.server.engine
        if self.got >= len(_REQUEST):
            return
        while (count := _read(engine, tcb, self.server.scratch, now)) > 0:
            self.got += count
        if self.got >= len(_REQUEST):
            engine.send(tcb, _RESPONSE, now)
            engine.close(tcb, now)
        elif count == 0:
            engine.close(tcb, now)


def drive_transactions(
    a: _Side, b: _Side, count: int, concurrency: int, serve: Callable[[int], None] | None = None
) -> dict[str, float]:
    """`count` transactions from A's clients to B's port 80, `concurrency`
    at a time, B's passes running `serve` (its sessions, if any)."""
    loop = _TxLoop(a.engine, b.ip, count)
    started = time.perf_counter()
    now = _now_us()
    for _ in range(concurrency):
        loop.start(now)
    while loop.done < count:
        now = _now_us()
        a.run_pass(now)
        b.run_pass(now, serve)
    elapsed = time.perf_counter() - started
    return {
        "transactions": count,
        "concurrency": concurrency,
        "seconds": elapsed,
        "transactions_per_s": count / elapsed,
        "segments_per_transaction": _segments(a, b) / count,
    }


def engine_transactions(count: int, concurrency: int) -> dict[str, float]:
    a, b = _pair()
    b.engine.listen(HTTP_PORT, 4096, owner=_TxServer(b.engine))
    done = drive_transactions(a, b, count, concurrency)
    segments = _segments(a, b)
    done["us_per_segment"] = 1e6 * done["seconds"] / segments
    done["phase_us_per_segment"] = _phases(a, b, segments)
    return done


def harness_us_per_segment(rounds: int = 20000) -> float:
    """What the back-to-back wiring itself costs per segment (IPv4 header,
    view), for a full-sized data segment and a bare ACK in turn: included
    in the engine figures, so they slightly overstate the engine."""
    a, b = _pair()
    full, ack = bytearray(FRAME_HEADROOM + 1460 + 32), bytearray(FRAME_HEADROOM + 32)
    started = time.perf_counter()
    for _ in range(rounds):
        a._send(b.ip, PROTO_TCP, full, 0)
        a._send(b.ip, PROTO_TCP, ack, 0)
        for datagram in b.inbox:
            header = Ipv4View.checked(datagram, False)
            header.src()
            header.payload()
        b.inbox.clear()
    return 1e6 * (time.perf_counter() - started) / (2 * rounds)
