"""Two engines back to back through a lossy, reordering, duplicating wire,
driven by hypothesis: random application writes, reads and shutdowns, and
time passing. RFC 9293 §2.6 / §3.4 (reliable, in-order byte stream):

- at every step, the bytes each side has read are a prefix of what the
  other side wrote;
- once every writer has shut down and time has run on until the wire and
  the timers are quiet, each side has read exactly what the other wrote,
  then EOF, and no connection failed.

The wire's fate for each datagram (lost, duplicated, delayed past later
ones) comes from a `random.Random` seeded by hypothesis, together with the
impairment rates, so every run is reproducible. Three configurations: the
defaults (256 KiB, SACK, timestamps, CUBIC), 16 KiB buffers (zero and small
windows), and no SACK / no timestamps / NewReno (Karn, RFC 6582).
Each run is 40 examples of up to 50 steps (about 1.3 s).
"""

from __future__ import annotations

import errno
import heapq
import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from stackservice.net.ipv4 import PROTO_TCP, Ipv4View, write_header
from stackservice.tcp.counters import TCP_COUNTER_COUNT
from stackservice.tcp.drops import TCP_DROP_REASON_COUNT
from stackservice.tcp.engine import SocketError, TcpEngine
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TCP_STATE_COUNT, TcpState
from stackservice.tcp.tcb import SHUT_WR, Tcb
from tests.support.checks import CHECK, ip
from tests.unit.tcp import _rig
from tests.unit.tcp._rig import tcp_segments

MS = 1000
SECOND = 1_000_000
IPS = (ip("198.18.0.1"), ip("198.18.0.10"))  # side 0 connects to side 1
SERVER_PORT = 80
DRAIN_LIMIT = 3 * 3600 * SECOND  # simulated time for the final drain (RTOs reach 120 s)


def pattern(side: int, offset: int, n: int) -> bytes:
    """Stream bytes that depend on their offset: any loss, duplication or
    reordering of bytes breaks the prefix check."""
    return bytes(((offset + k) * 131 + side * 17 + (offset + k) // 251) & 0xFF for k in range(n))


def _route(dst: int) -> int:
    return dst


class Wire:
    """Datagrams in flight, in delivery-time order, with impairments."""

    def __init__(self, rng: random.Random, loss: float, dup: float, reorder: float) -> None:
        self.rng = rng
        self.loss = loss
        self.dup = dup
        self.reorder = reorder
        self.queue: list[tuple[int, int, int, bytes]] = []  # (time, n, dst, datagram)
        self.count = 0
        self.impaired = False

    def put(self, src: int, dst: int, segment: bytearray, now: int) -> bool:
        datagram = bytearray(20 + len(segment))
        datagram[20:] = segment
        write_header(datagram, 0, src, dst, PROTO_TCP, len(segment), self.count & 0xFFFF)
        copies = 1
        if self.impaired:
            if self.rng.random() < self.loss:
                return True
            if self.rng.random() < self.dup:
                copies = 2
        for _ in range(copies):
            delay = 1 * MS
            if self.impaired and self.rng.random() < self.reorder:
                delay += self.rng.randrange(1, 30) * MS
            self.count += 1
            heapq.heappush(self.queue, (now + delay, self.count, dst, bytes(datagram)))
        return True

    def next_time(self) -> int | None:
        return self.queue[0][0] if self.queue else None

    def due(self, now: int) -> list[tuple[int, bytes]]:
        out = []
        while self.queue and self.queue[0][0] <= now:
            _, _, dst, datagram = heapq.heappop(self.queue)
            out.append((dst, datagram))
        return out


class TwoEngines(RuleBasedStateMachine):
    """Side 0 (client) and side 1 (server), one connection between them."""

    settings_for_run = TcpSettings()  # 256 KiB buffers

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.wire = Wire(random.Random(0), 0.0, 0.0, 0.0)
        self.engines: list[TcpEngine] = []
        for side in (0, 1):
            local = IPS[side]

            def send(dst: int, proto: int, frame: bytearray, now: int, _src: int = local) -> bool:
                assert proto == PROTO_TCP
                for segment in tcp_segments(frame, _src, dst):
                    self.wire.put(_src, dst, segment, now)
                return True

            counters = [0] * TCP_COUNTER_COUNT
            drops = [0] * TCP_DROP_REASON_COUNT
            states = [0] * TCP_STATE_COUNT
            secret = bytes([side + 1]) * 32
            engine = TcpEngine(
                local, send, _route, self.settings_for_run, counters, drops, states, secret,
                segmentation_offload=_rig.offload_by_default,
            )  # fmt: skip
            self.engines.append(engine)
        self.tcbs: list[Tcb] = []
        self.written = [bytearray(), bytearray()]
        self.read = [bytearray(), bytearray()]
        self.shut = [False, False]
        self.eof = [False, False]

    # ------------------------------------------------------------ driving

    def _deliver(self, dst: int, datagram: bytes) -> None:
        engine = self.engines[IPS.index(dst)]
        header = Ipv4View.checked(memoryview(datagram), True)
        engine.on_segment(header, self.now, False)

    def _pass(self) -> None:
        """One loop pass at self.now: received datagrams, timers, output."""
        for dst, datagram in self.wire.due(self.now):
            self._deliver(dst, datagram)
        for engine in self.engines:
            deadline = engine.poll_at()
            if deadline is not None and deadline <= self.now:
                engine.on_timer(self.now)
            engine.flush(self.now)
            engine.take_events()

    def _next_event(self) -> int | None:
        candidates = (self.wire.next_time(), *(e.poll_at() for e in self.engines))
        times = [t for t in candidates if t is not None]
        return min(times) if times else None

    def _run_until(self, target: int) -> None:
        self._pass()
        while (t := self._next_event()) is not None and t <= target:
            self.now = max(self.now, t)
            self._pass()
        self.now = max(self.now, target)
        self._pass()

    def _read_side(self, side: int, size: int) -> None:
        out = bytearray(size)
        try:
            n = self.engines[side].receive_into(self.tcbs[side], out, self.now)
        except SocketError as exc:
            assert exc.errno == errno.EAGAIN, errno.errorcode.get(exc.errno)
            return
        if n == 0:
            self.eof[side] = True
        self.read[side] += out[:n]

    def _drain_reads(self, side: int) -> None:
        while not self.eof[side]:
            before = len(self.read[side])
            self._read_side(side, 65536)
            if len(self.read[side]) == before and not self.eof[side]:
                return

    # -------------------------------------------------------------- rules

    @initialize(
        seed=st.integers(0, 2**32 - 1),
        loss=st.sampled_from([0.02, 0.1, 0.25]),
        dup=st.sampled_from([0.0, 0.05, 0.2]),
        reorder=st.sampled_from([0.0, 0.1, 0.3]),
    )
    def connect(self, seed: int, loss: float, dup: float, reorder: float) -> None:
        """A clean handshake, then the wire turns bad."""
        self.wire = Wire(random.Random(seed), loss, dup, reorder)
        listener = self.engines[1].listen(SERVER_PORT, 8)
        client = self.engines[0].connect(IPS[1], SERVER_PORT, self.now)
        self._run_until(self.now + 10 * MS)
        server = self.engines[1].accept(listener)
        assert server is not None
        assert client.state == server.state == TcpState.ESTABLISHED
        self.tcbs = [client, server]
        self.wire.impaired = True

    @rule(side=st.integers(0, 1), size=st.integers(1, 40_000))
    def write(self, side: int, size: int) -> None:
        if self.shut[side]:
            return
        offset = len(self.written[side])
        n = self.engines[side].send(self.tcbs[side], pattern(side, offset, size), self.now)
        assert 0 <= n <= size
        self.written[side] += pattern(side, offset, n)

    @rule(side=st.integers(0, 1), size=st.sampled_from([1, 100, 1460, 4096, 65536]))
    def read_some(self, side: int, size: int) -> None:
        self._read_side(side, size)

    @precondition(lambda self: not all(self.shut))
    @rule(side=st.integers(0, 1))
    def shutdown(self, side: int) -> None:
        if not self.shut[side]:
            self.engines[side].shutdown(self.tcbs[side], SHUT_WR, self.now)
            self.shut[side] = True

    @rule(dt=st.sampled_from([0, 1 * MS, 5 * MS, 40 * MS, 200 * MS, 1 * SECOND, 5 * SECOND]))
    def advance(self, dt: int) -> None:
        self._run_until(self.now + dt)

    # ---------------------------------------------------------- invariants

    @invariant()
    def read_is_prefix_of_written(self) -> None:
        for side in (0, 1):
            got = self.read[side]
            sent = self.written[1 - side]
            assert len(got) <= len(sent), (side, len(got), len(sent))
            assert got == sent[: len(got)], f"side {side}: stream corrupted at read"

    @invariant()
    def no_connection_error(self) -> None:
        for tcb in self.tcbs:
            assert tcb.error == 0, errno.errorcode.get(tcb.error)

    def teardown(self) -> None:
        if len(self.tcbs) != 2:
            return
        for side in (0, 1):
            if not self.shut[side]:
                self.engines[side].shutdown(self.tcbs[side], SHUT_WR, self.now)
                self.shut[side] = True
        deadline = self.now + DRAIN_LIMIT
        self._pass()
        while True:
            for side in (0, 1):
                self._drain_reads(side)
            self._pass()  # what the reads made due (window updates)
            self.read_is_prefix_of_written()
            self.no_connection_error()
            step = self._next_event()
            if (all(self.eof) and not self.wire.queue) or step is None or step > deadline:
                break
            self._run_until(step)
        for side in (0, 1):
            assert self.eof[side], f"side {side}: no EOF after the drain"
            assert self.read[side] == self.written[1 - side], f"side {side}: bytes missing"


class TwoEnginesSmallBuffers(TwoEngines):
    """The same with 16 KiB buffers: zero and small windows are the rule."""

    settings_for_run = TcpSettings(send_buffer=16 * 1024, receive_buffer=16 * 1024)


class TwoEnginesPlain(TwoEngines):
    """No SACK, no timestamps, NewReno, 32 KiB: Karn's rule and RFC 6582."""

    settings_for_run = TcpSettings(
        timestamps=False,
        sack=False,
        congestion_control="newreno",
        send_buffer=32 * 1024,
        receive_buffer=32 * 1024,
    )


RUNS = settings(CHECK, max_examples=40, stateful_step_count=50)


def test_two_engines_lossy_wire_stream_delivered_exactly() -> None:
    """256 KiB buffers, default settings."""
    run_state_machine_as_test(TwoEngines, settings=RUNS)


def test_two_engines_small_buffers_stream_delivered_exactly() -> None:
    run_state_machine_as_test(TwoEnginesSmallBuffers, settings=RUNS)


def test_two_engines_no_sack_no_timestamps_stream_delivered_exactly() -> None:
    run_state_machine_as_test(TwoEnginesPlain, settings=RUNS)
