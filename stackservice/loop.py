"""The run loop: the one place that blocks, reads the clock and does I/O.

One pass: wait (packet fd, stop fd, next timer) -> read every ready frame ->
process -> run due timers -> hand readiness events to their owners (the
in-process applications) -> flush TCP's control, ACK and data lists ->
transmit the batch once. After a pass that did work the loop keeps polling
for `spin_us` before it sleeps, since the next frame of an exchange usually
comes sooner than a wake-up would take (docs/architecture.md, measured costs).

The cyclic GC's full collections walk every live connection (tens of ms
with tens of thousands of TCBs) and, left to their thresholds, come every
second or so under load, which is what a p99 sees. Connections are freed
by reference counting; the loop runs the full collection itself, when it
is about to sleep after IDLE_US without traffic, or every FULL_GC_MAX_US
under unbroken load.

Never down (docs/architecture.md principle 5): an unexpected exception while handling
one frame drops that frame (Ipv4Host.faults); in a socket owner's readiness
callback, or in one connection's timers or output (TcpEngine.faults), it
aborts that connection; a session's or a control request's is contained where they are
served (SessionManager, LinkServer). `stackservice.faults.Containment`
counts and logs each, or re-raises it when strict.
"""

from __future__ import annotations

import gc
import select

from stackservice.clock import monotonic_us
from stackservice.control.link import LinkServer
from stackservice.fastpath import SessionManager
from stackservice.faults import Containment, FaultSite
from stackservice.metrics.layout import LoopCounter
from stackservice.net.host import Ipv4Host
from stackservice.nic.packet_io import PacketPort
from stackservice.tcp.engine import NoHistogram, TcpEngine
from stackservice.tcp.state import CLOSED
from stackservice.tcp.tcb import Tcb

# Upper bound on one sleep, so a lost wake-up can never park the loop.
_MAX_SLEEP_MS = 1000
FULL_GC_IDLE_US = 10_000_000  # at most this often when the loop idles
FULL_GC_MAX_US = 300_000_000  # and at least this often, idle or not
IDLE_US = 200_000  # no frame nor app work for this long: nobody waits on us
_NO_AUTOMATIC_FULL_GC = 1 << 30  # gen1 collections before an automatic full one


class StackLoop:
    """Drives one Ipv4Host and its TcpEngine over one PacketPort until the
    stop fd is readable."""

    __slots__ = (
        "_batch_sizes",
        "_busy_times",
        "_contain",
        "_engine",
        "_fastpath",
        "_sessions_gauge",
        "_host",
        "_link",
        "_loop_counters",
        "_port",
        "_spin_us",
        "_stop_fd",
    )

    def __init__(
        self,
        port: PacketPort,
        host: Ipv4Host,
        engine: TcpEngine,
        loop_counters,
        stop_fd: int,
        spin_us: int,
        link: LinkServer | None = None,
        batch_sizes=None,
        busy_times=None,
        fastpath: SessionManager | None = None,
        sessions_gauge=None,
        contain: Containment | None = None,
    ) -> None:
        self._port = port
        self._contain = contain or Containment()  # strict unless told
        self._fastpath = fastpath
        self._sessions_gauge = sessions_gauge
        # Histograms (observe(int)): frames per non-empty batch, µs per
        # pass that did work.
        self._batch_sizes = batch_sizes or NoHistogram()
        self._busy_times = busy_times or NoHistogram()
        self._link = link
        self._host = host
        self._engine = engine
        self._loop_counters = loop_counters
        self._stop_fd = stop_fd
        self._spin_us = spin_us

    def run(self) -> None:
        port, host, engine = self._port, self._host, self._engine
        counters = self._loop_counters
        poller = select.poll()
        poller.register(port.fileno(), select.POLLIN)
        if port.arp_fileno() >= 0:  # a worker's copies of ARP: receive_batch reads them
            poller.register(port.arp_fileno(), select.POLLIN)
        poller.register(self._stop_fd, select.POLLIN)
        link = self._link
        link_fd = link.fileno() if link is not None else -1
        if link is not None:
            poller.register(link_fd, select.POLLIN)
        deliver = host.receive
        spin_us = self._spin_us
        batch_sizes, busy_times = self._batch_sizes, self._busy_times
        fastpath = self._fastpath
        contain = self._contain
        bells: dict[int, int] = {}  # the sessions' descriptors being polled, with their events
        now = monotonic_us()
        host.announce(now)
        spin_until = now + spin_us
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, _NO_AUTOMATIC_FULL_GC)
        full_gc_at = now
        while True:
            counters[LoopCounter.ITERATIONS] += 1
            if fastpath is not None:
                bells = self._sync_bells(poller, bells)
            prepared = False
            if now < spin_until or host.outbox or port.tx_pending or engine.events:
                timeout = 0
            elif link is not None and link.busy:
                timeout = 0  # a control request is half answered
            elif fastpath is not None and not fastpath.prepare_sleep():
                timeout = 0  # a command arrived or a session has work
            else:
                prepared = fastpath is not None
                # Before sleeping: drops the kernel counted while we emptied
                # the ring show up only in its statistics, not in a frame.
                port.collect_drops()
                timeout = self._sleep_ms(monotonic_us())
                counters[LoopCounter.SLEEPS] += 1
                # spin_until - spin_us: when the loop last had work
                idle = now - spin_until + spin_us >= IDLE_US
                if idle and now - full_gc_at >= FULL_GC_IDLE_US:
                    gc.collect()
                    full_gc_at = now
            for fd, revents in poller.poll(timeout):
                if fd == self._stop_fd:
                    self._reset_all(monotonic_us())
                    return
                if fd == link_fd and not link.on_readable():
                    # The control process is gone; the data path goes on.
                    poller.unregister(link_fd)
                    link_fd = -1
                elif fd in bells:
                    fastpath.on_fd(fd, revents)
            if prepared:
                fastpath.sleep_done()
            now = monotonic_us()
            if now - full_gc_at >= FULL_GC_MAX_US:
                gc.collect()
                full_gc_at = now
            received = port.receive_batch(deliver, now)
            if host.faults:  # frames the host dropped for a bug
                contain.drain(host.faults, "the frame is dropped")
            if received:
                counters[LoopCounter.RX_BATCHES] += 1
                batch_sizes.observe(received)
                spin_until = now + spin_us
            self._run_timers(now)
            self._dispatch(now)
            if fastpath is not None and fastpath.poll(now):
                spin_until = now + spin_us  # applications are active
            if link is not None and link.busy:
                link.work()  # one bounded step of a long control request
            self._flush(now)
            if engine.faults:  # connections the engine aborted for a bug
                contain.drain(engine.faults, "the connection is aborted")
            if now >= contain.report_at:
                contain.report(now)
            if received or timeout:
                # Time of a pass that did (or may have done) work; idle
                # busy-poll passes would only drown the distribution.
                busy_times.observe(monotonic_us() - now)

    def _sync_bells(self, poller: select.poll, bells: dict[int, int]) -> dict[int, int]:
        """Poll exactly the descriptors of the sessions attached now."""
        fastpath = self._fastpath
        current = fastpath.watched()
        if current != bells:
            for fd in bells.keys() - current.keys():
                poller.unregister(fd)
            for fd, events in current.items():
                if bells.get(fd) != events:
                    poller.register(fd, events)
            if self._sessions_gauge is not None:
                self._sessions_gauge[0] = len(fastpath.sessions())
        return current

    def _reset_all(self, now: int) -> None:
        """docs/architecture.md: on SIGTERM connections are reset, so peers know."""
        if self._fastpath is not None:
            self._fastpath.close(now)  # sessions end, their files go
        self._engine.reset_all(now)
        self._engine.flush(now)
        self._port.transmit(self._host.outbox)
        self._host.outbox.clear()

    def _run_timers(self, now: int) -> None:
        """Due timers. A connection's fault is the engine's to contain (it
        aborts that one); one escaping the engine or the host costs the
        timers due in this pass."""
        host, engine = self._host, self._engine
        try:
            deadline = host.poll_at()
            if deadline is not None and deadline <= now:
                host.on_timer(now)
            deadline = engine.poll_at()
            if deadline is not None and deadline <= now:
                engine.on_timer(now)
        except Exception as exc:
            self._contain.fault(FaultSite.TIMER, exc, "this pass's due timers are skipped")

    def _dispatch(self, now: int) -> None:
        """Readiness changes go to whoever owns each socket, once per pass.
        An owner that fails on one costs that connection only: the engine
        aborts it (engine.contain), since what its owner made of it is
        unknown. A listener or a connection closed already is left as it
        is: aborting it would only call the owner again, every pass."""
        engine = self._engine
        for sock in engine.take_events():
            owner = sock.owner
            if owner is not None:
                try:
                    owner.on_ready(sock, now)
                except Exception as exc:
                    live = isinstance(sock, Tcb) and sock.state != CLOSED
                    engine.contain("event", sock if live else None, exc, now)

    def _flush(self, now: int) -> None:
        """TCP's queued output, then the batch to the NIC. A fault in one
        connection's output is the engine's to contain; one escaping the
        engine cuts this pass's TCP output short, one in the port costs
        this batch of frames."""
        port, outbox = self._port, self._host.outbox
        try:
            self._engine.flush(now)
        except Exception as exc:
            self._contain.fault(FaultSite.OUTPUT, exc, "this pass's TCP output is cut short")
        if outbox or port.tx_pending:
            # Frames the kernel pushes back stay in the port's backlog and
            # go first next pass, so the outbox can always be cleared.
            try:
                port.transmit(outbox)
            except Exception as exc:
                self._contain.fault(FaultSite.OUTPUT, exc, "this batch of frames is dropped")
            outbox.clear()
            # A device that refused a super-frame has GSO off for good
            # (PacketPort._send_gso): runs built from now on would only be
            # cut up again in software, so the engine stops building them.
            self._engine.segmentation_offload = port.segmentation_offload
            self._loop_counters[LoopCounter.TX_BATCHES] += 1

    def _sleep_ms(self, now: int) -> int:
        deadline = self._host.poll_at()
        fastpath = self._fastpath
        # A muted doorbell (stackservice.fastpath.backoff) is looked at when
        # its mute ends, whether it rang or not.
        for other in (
            self._engine.poll_at(),
            fastpath.poll_at() if fastpath is not None else None,
        ):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        if deadline is None:
            return _MAX_SLEEP_MS
        if deadline <= now:
            return 0
        # Round up: waking before the deadline would only spin.
        return min(_MAX_SLEEP_MS, (deadline - now + 999) // 1000)
