"""The TCP engine of one stack instance: flows, listeners, timers, output.

Sans-IO: segments come in through `on_segment` (registered with the IPv4
host), the application's calls come in through the socket methods, time is
the `now` every call carries. Segments go out through the injected
`send_frame`, each built in place in its frame (behind FRAME_HEADROOM
bytes the IPv4 host fills in), in three priority lists flushed once per
loop pass — control, ACK, data (mTCP §3.2.4). Readiness changes are
queued for the socket layer (`take_events`), each connection at most once
per pass.
"""

from __future__ import annotations

import errno
import random
from collections import deque
from collections.abc import Callable

from stackservice.net.errors import LocalProtocolError
from stackservice.net.host import FRAME_HEADROOM
from stackservice.net.ipv4 import Ipv4View
from stackservice.net.offload import SuperFrame
from stackservice.tcp import input as tcp_input
from stackservice.tcp import output, recovery
from stackservice.tcp.buffers import BufferMemory, ReceiveBuffer, SendBuffer
from stackservice.tcp.challenge import ChallengeAckBudget
from stackservice.tcp.congestion import make_congestion_control
from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.drops import TcpDropReason
from stackservice.tcp.isn import IsnGenerator, subkey, tuple_hash
from stackservice.tcp.portshare import PortShare
from stackservice.tcp.rack import Rack
from stackservice.tcp.rtt import RttEstimator
from stackservice.tcp.sack import Scoreboard
from stackservice.tcp.segment import (
    ACK,
    MAX_WINDOW_SCALE,
    RST,
    SYN,
    MalformedSegment,
    TcpOptions,
    TcpRepr,
    parse_header,
    seq_add,
    seq_gt,
    write_segment,
)
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import (
    CLOSE_WAIT,
    CLOSED,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    LISTEN,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
)
from stackservice.tcp.syncookies import SynCookies
from stackservice.tcp.tcb import (
    ERROR,
    HANGUP,
    READ_HANGUP,
    READABLE,
    SHUT_RD,
    SHUT_WR,
    WRITABLE,
    Tcb,
    flow_key,
)
from stackservice.tcp.timers import DeadlineList, TimerWheel

PROTO_TCP = 6
# RFC 6056 §3.3.4's table of per-bucket steps, and how many ports one
# connect() may try: a destination whose ports are nearly all in use gets
# EADDRNOTAVAIL after this many instead of holding the loop for a walk of
# the whole range (the chance that this many candidates in a row are taken
# while 1% of the range is free is below 1e-4).
PORT_STEP_BUCKETS = 256
EPHEMERAL_PROBES = 1024
# A destination that a connect found no free port to is refused at once,
# not searched again, for this long (a port to it freed meanwhile waits
# that long at most): an app sending a pass's worth of connects (256
# commands) to a destination whose every port is in use held the loop for
# 256 searches of EPHEMERAL_PROBES candidates, 130 ms a pass.
EXHAUSTED_RETRY_US = 100_000
_TIMER_BATCH = 4096  # timer expiries handled per pass at most (bounded work)
# The two counters bumped per segment, as ints (C globals, engine.pxd):
# reading an IntEnum member costs 120 ns on 3.11, a tenth of a segment's
# parse.
_SEGMENTS_IN = int(TcpCounter.SEGMENTS_IN)
_SEGMENTS_OUT = int(TcpCounter.SEGMENTS_OUT)

# (dst, protocol, frame, now): the IPv4 payload sits at FRAME_HEADROOM in
# `frame`, the headers in front are the sink's to write (Ipv4Host.send_in_frame).
SendFrame = Callable[[int, int, bytearray, int], bool]
Route = Callable[[int], "int | None"]


class SocketError(LocalProtocolError):
    """An application call that fails the way a kernel socket call would."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message or errno.errorcode.get(code, str(code)))
        self.errno = code


class NoHistogram:
    """Where observations go when nobody records them (tests, tools)."""

    __slots__ = ()

    def observe(self, value: int) -> None:
        pass

    def observe_many(self, value: int, count: int) -> None:
        pass


class Listener:
    """A listening port: half-open connections and the accept queue."""

    __slots__ = (
        "accept_queue",
        "backlog",
        "closed",
        "cookies_sent_at",
        "on_event_queue",
        "options",
        "owner",
        "port",
        "sock_id",
        "half_open",
        "syn_limit",
    )

    def __init__(
        self, port: int, backlog: int, syn_limit: int, owner: object, sock_id: int
    ) -> None:
        self.port = port
        self.sock_id = sock_id
        self.backlog = backlog
        self.syn_limit = syn_limit
        self.half_open: set[Tcb] = set()  # SYN-RECEIVED, not yet on the accept queue
        self.accept_queue: deque[Tcb] = deque()
        self.owner = owner
        self.closed = False
        self.on_event_queue = False
        self.cookies_sent_at = -1
        self.options = SocketOptions()

    def accept_full(self) -> bool:
        return len(self.accept_queue) >= self.backlog


class SocketOptions:
    """Options a listener passes on to the connections it accepts."""

    __slots__ = (
        "congestion_control",
        "keepalive",
        "keepalive_count",
        "keepalive_idle",
        "keepalive_interval",
        "nodelay",
        "receive_buffer",
        "send_buffer",
    )

    def __init__(self) -> None:
        self.nodelay = False
        self.keepalive = False
        self.keepalive_idle = self.keepalive_interval = self.keepalive_count = 0
        self.send_buffer = self.receive_buffer = 0
        self.congestion_control = ""


def _earlier(a: int, b: int) -> int:
    """The earlier of two deadlines, where 0 is none."""
    if not a or (b and b < a):
        return b
    return a


class TcpEngine:
    """All TCP state of one instance; driven by the run loop."""

    def __init__(
        self,
        local_ip: int,
        send_frame: SendFrame,
        route: Route,
        settings: TcpSettings,
        counters,
        drops,
        state_counts,
        secret: bytes,
        rtt_histogram=None,
        connect_histogram=None,
        strict: bool = True,
        ports: PortShare | None = None,
        segmentation_offload: bool = False,
    ) -> None:
        self.local_ip = local_ip
        # The port takes super-frames (stackservice.net.offload): runs of
        # full segments leave as one frame each (output.send_run).
        self.segmentation_offload = segmentation_offload
        # Fault containment (docs/architecture.md principle 5): with strict False an
        # unexpected exception while running one connection's timers or
        # output aborts that connection only and is kept in `faults`
        # (site, exception) for the loop to count and log; strict (the
        # default, and every test) re-raises it so no bug hides.
        self.strict = strict
        self.faults: list[tuple[str, Exception]] = []
        # Anything with observe(int µs): shared-memory histograms in a stack.
        self.rtt_histogram = rtt_histogram or NoHistogram()
        self.connect_histogram = connect_histogram or NoHistogram()
        self._send_frame = send_frame
        self._route = route
        self.settings = settings
        self.counters = counters
        self.drops = drops
        self.state_counts = state_counts
        self.flows: dict[int, Tcb] = {}
        self.listeners: dict[int, Listener] = {}
        self.events: list[Tcb | Listener] = []
        self._isn = IsnGenerator(secret)
        self._cookies = SynCookies(secret)
        self._challenges = ChallengeAckBudget(settings.challenge_ack_per_s, random.Random(secret))
        self._wheel = TimerWheel()
        # TIME-WAIT and an orphan's FIN-WAIT-2 timeout: one fixed timeout
        # each, the only list timers. A connection is in at most one of the
        # two states, so it is on this list at most once; everything else
        # (RTO, delayed ACK, persist, keepalive) is folded into its one
        # wheel entry (`_rearm`).
        self._time_wait = DeadlineList()
        # What every shed TIME-WAIT TCB keeps as its receive buffer: always
        # empty (nothing is received there), only its window is read.
        self._time_wait_receive = ReceiveBuffer(settings.receive_buffer)
        # Every connection's rings, against tcp_mem-like marks (tcp/buffers.py).
        self.buffer_memory = BufferMemory(settings.buffer_memory)
        self._control: list[Tcb] = []
        self._acks: list[Tcb] = []
        self._data: list[Tcb] = []
        # Segments no TCB sends (RSTs to unknown flows, SYN-cookie SYN-ACKs):
        # built at once, sent first in the flush.
        self._stateless: list[tuple[int, bytearray]] = []
        self._port_k0, self._port_k1 = subkey(secret, b"vfs-port")
        self.orphans = 0  # closed by their application, not yet CLOSED or TIME-WAIT
        self._port_steps = [0] * PORT_STEP_BUCKETS
        self._exhausted: dict[tuple[int, int], int] = {}  # destination: refused until (µs)
        # One of several workers (stackservice.nic.fanout): active opens
        # take local ports from this worker's share, so replies come back
        # here, and socket ids step by the worker count from the worker's
        # index + 1, so listings merged across workers never repeat an id.
        self.ports = ports or PortShare()
        self._next_sock_id = self.ports.worker + 1
        self._rcv_wscale = _window_scale_for(settings.receive_buffer * 4)

    # ------------------------------------------------------------ input

    def on_segment(self, ip: Ipv4View, now: int, trusted: bool) -> None:
        """The IPv4 host's handler for protocol 6: the segment is the
        datagram's payload. A bad segment is counted and dropped; only a
        bug raises (the loop contains it per frame)."""
        src = ip.src()
        start, end = ip.payload_bounds()
        try:
            # Compiled, a slice of the typed view the host checked the
            # datagram with: no second acquisition of the frame's buffer.
            seg = parse_header(ip.octets[start:end], src, ip.dst(), trusted)
        except MalformedSegment as exc:
            self.drops[exc.reason] += 1
            return
        self.counters[_SEGMENTS_IN] += 1
        data = ip.buf[end - seg.payload_len : end]
        tcb = self.flows.get(flow_key(src, seg.src_port, seg.dst_port))
        if tcb is not None and tcb.state == TIME_WAIT and self._recycles(tcb, seg):
            self.destroy(tcb)
            tcb = None
        if tcb is None:
            listener = self.listeners.get(seg.dst_port)
            if listener is None:
                self._no_socket(src, seg, len(data))
            else:
                tcp_input.listen_input(self, listener, src, seg, data, now)
        elif tcb.state == SYN_SENT:
            tcp_input.syn_sent_input(self, tcb, seg, data, now)
        else:
            tcp_input.synchronized_input(self, tcb, seg, data, now)

    def _recycles(self, tcb: Tcb, seg: TcpRepr) -> bool:
        """RFC 6191 / RFC 9293 §3.10.7.4: a new SYN may reopen a TIME-WAIT
        connection if it cannot be a duplicate of the old one."""
        if seg.flags & (SYN | ACK | RST) != SYN or seg.dst_port not in self.listeners:
            return False
        timestamps = seg.options.timestamps
        if tcb.ts_enabled and timestamps is not None:
            newer = seq_gt(timestamps[0], tcb.ts_recent)
        else:
            newer = seq_gt(seg.seq, tcb.rcv_nxt)
        if newer:
            self.counters[TcpCounter.TIME_WAIT_RECYCLED] += 1
        return newer

    def _no_socket(self, src: int, seg: TcpRepr, data_len: int) -> None:
        """RFC 9293 §3.10.7.1: answer anything but a RST with a RST."""
        if seg.flags & RST:
            self.drop(TcpDropReason.TCP_NO_SOCKET_RST)
            return
        self.reply_reset(src, seg, data_len)
        self.drop(TcpDropReason.TCP_NO_LISTENER)

    def drop(self, reason: TcpDropReason) -> None:
        self.drops[reason] += 1

    # ------------------------------------------------- application calls

    def listen(self, port: int, backlog: int, owner: object = None) -> Listener:
        """Raises SocketError(EADDRINUSE) if the port already listens."""
        if not 0 < port < 65536:
            raise SocketError(errno.EINVAL, "port must be 1..65535")
        if port in self.listeners:
            raise SocketError(errno.EADDRINUSE)
        backlog = max(1, min(backlog, 65535))
        listener = Listener(
            port, backlog, min(backlog, self.settings.syn_queue), owner, self._new_sock_id()
        )
        self.listeners[port] = listener
        self.state_counts[LISTEN] += 1  # a listener has no TCB to count it
        return listener

    def accept(self, listener: Listener) -> Tcb | None:
        """The oldest established connection, or None (EAGAIN)."""
        if not listener.accept_queue:
            return None
        tcb = listener.accept_queue.popleft()
        tcb.listener = None
        return tcb

    def reset_all(self, now: int) -> None:
        """Shutting down: every connection is reset (the peers learn at once
        instead of waiting out their timeouts) and every listener closed."""
        for listener in list(self.listeners.values()):
            self.close_listener(listener, now)
        for tcb in list(self.flows.values()):
            self.abort(tcb, errno.ECONNRESET, True, now)

    def close_listener(self, listener: Listener, now: int) -> None:
        """Stop listening; connections never accepted are reset."""
        if self.listeners.get(listener.port) is listener:
            del self.listeners[listener.port]
        if not listener.closed:
            self.state_counts[LISTEN] -= 1
        listener.closed = True
        while listener.accept_queue:
            self.abort(listener.accept_queue.popleft(), errno.ECONNRESET, True, now)
        for tcb in list(listener.half_open):
            self.destroy(tcb)

    def connect(
        self,
        remote_ip: int,
        remote_port: int,
        now: int,
        owner: object = None,
        options: SocketOptions | None = None,
        local_port: int = 0,
    ) -> Tcb:
        """Start an active open; the SYN goes out with this pass's flush.

        Raises:
            SocketError: ENETUNREACH (no route), EADDRNOTAVAIL (no free
                port), EADDRINUSE (that 4-tuple is taken), EINVAL.
        """
        if not 0 < remote_port < 65536:
            raise SocketError(errno.EINVAL, "port must be 1..65535")
        if self._route(remote_ip) is None:
            raise SocketError(errno.ENETUNREACH)
        if len(self.flows) >= self.settings.max_connections:
            raise SocketError(errno.EAGAIN, "connection table full")
        port = local_port or self._ephemeral_port(remote_ip, remote_port, now)
        if flow_key(remote_ip, remote_port, port) in self.flows:
            raise SocketError(errno.EADDRINUSE)
        tcb = self._new_tcb(port, remote_ip, remote_port, now, options)
        tcb.owner = owner
        tcb.iss = self._isn.isn(now, self.local_ip, port, remote_ip, remote_port)
        tcb.snd_una = tcb.snd_nxt = tcb.snd_max = tcb.iss
        tcb.buf_seq = seq_add(tcb.iss, 1)
        self.flows[tcb.key] = tcb
        self.set_state(tcb, SYN_SENT)
        self.counters[TcpCounter.ACTIVE_OPENS] += 1
        self.queue_control(tcb)
        return tcb

    def send(self, tcb: Tcb, data, now: int) -> int:
        """Queue application bytes. Returns how many fit (0: EAGAIN).

        Raises:
            SocketError: the pending error (ECONNRESET, ...), EPIPE after
                shutdown(SHUT_WR), ENOTCONN before the connection exists.
        """
        self._raise_pending(tcb)
        if tcb.write_closed or tcb.fin_seq >= 0:
            raise SocketError(errno.EPIPE)
        if tcb.state not in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            raise SocketError(errno.ENOTCONN if tcb.state != CLOSED else errno.EPIPE)
        written = tcb.send_buffer.write(data)
        if written:
            self.queue_data(tcb)
        return written

    def receive_into(self, tcb: Tcb, out, now: int) -> int:
        """Copy in-order bytes into `out`. Returns the count; 0 at EOF.

        Raises:
            SocketError: the pending error; EAGAIN when nothing is readable
                yet and the peer has not closed; ENOTCONN if never connected.
        """
        buffer = tcb.receive_buffer
        if buffer is not None and buffer.readable():
            before = buffer.window()
            count = buffer.read_into(out)
            self._window_opened(tcb, before, now)
            return count
        self._raise_pending(tcb)
        if self._at_eof(tcb):
            return 0
        raise SocketError(errno.ENOTCONN if tcb.state in (SYN_SENT, SYN_RECEIVED) else errno.EAGAIN)

    def read_would_block(self, tcb: Tcb) -> bool:
        """True when `receive_into` has nothing to give (no bytes, no EOF,
        no error), so it would raise EAGAIN or ENOTCONN: a caller draining
        the buffer in a loop stops here without the exception's cost."""
        buffer = tcb.receive_buffer
        if buffer is not None and buffer.readable():
            return False
        return not tcb.error and not self._at_eof(tcb)

    def _at_eof(self, tcb: Tcb) -> bool:
        """The read side is over: the peer's FIN (`fin_received`), our
        SHUT_RD, or a reset already reported (EOF then, as Linux)."""
        return tcb.fin_received or tcb.read_closed or (tcb.state == CLOSED and tcb.established_at)

    def shutdown(self, tcb: Tcb, how: int, now: int) -> None:
        """shutdown(2): SHUT_WR queues our FIN after the buffered data."""
        if tcb.state in (CLOSED, SYN_SENT) and not tcb.error:
            raise SocketError(errno.ENOTCONN)
        if how != SHUT_WR:
            tcb.read_closed = True
            self.notify(tcb)
        if how != SHUT_RD and not tcb.write_closed:
            tcb.write_closed = True
            self._queue_fin(tcb)

    def close(self, tcb: Tcb, now: int) -> None:
        """close(2): orderly FIN, or RST if unread data would be lost or
        SO_LINGER is 0 (RFC 9293 §3.10.4, RFC 2525 §2.17)."""
        if tcb.app_closed:
            return
        tcb.app_closed = True
        tcb.write_closed = tcb.read_closed = True
        state = tcb.state
        unread = tcb.receive_buffer is not None and tcb.receive_buffer.readable()
        if state in (CLOSED, TIME_WAIT):
            if state == CLOSED:
                self.destroy(tcb)
            else:
                self._shed(tcb)
            return
        self.orphans += 1  # the engine's alone until destroy() or TIME-WAIT
        if state == SYN_SENT:
            self.destroy(tcb)
            return
        if unread or tcb.linger_zero:
            self.counters[TcpCounter.APP_ABORTS] += 1
            self.abort(tcb, 0, True, now)
            return
        if self.orphans > self.settings.max_orphans:
            self.counters[TcpCounter.ORPHAN_ABORTS] += 1
            self.abort(tcb, 0, True, now)
            return
        if state == FIN_WAIT_2:
            self.arm_fin_wait_2(tcb, now)
        self._queue_fin(tcb)

    def arm_fin_wait_2(self, tcb: Tcb, now: int) -> None:
        """An orphaned FIN-WAIT-2 connection (closed by the application) is
        dropped after fin_wait_2_us even if the peer never sends its FIN,
        as Linux's tcp_fin_timeout: RFC 9293 sets no bound and a silent
        peer would hold the TCB forever. It shares TIME-WAIT's list."""
        self._time_wait.remove(tcb)
        self._time_wait.push(tcb, now + self.settings.fin_wait_2_us)

    def set_keepalive(
        self,
        tcb: Tcb,
        enabled: bool,
        now: int,
        idle_us: int = 0,
        interval_us: int = 0,
        count: int = 0,
    ) -> None:
        """SO_KEEPALIVE with TCP_KEEPIDLE/KEEPINTVL/KEEPCNT (0 keeps the
        current value); takes effect at once on an open connection."""
        tcb.keepalive = enabled
        tcb.keepalive_idle = idle_us or tcb.keepalive_idle
        tcb.keepalive_interval = interval_us or tcb.keepalive_interval
        tcb.keepalive_count = count or tcb.keepalive_count
        if not enabled:
            if tcb.keepalive_deadline:
                tcb.keepalive_deadline = 0
                self.rearm(tcb)
        elif tcb.state in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, FIN_WAIT_2):
            self._arm_keepalive(tcb, now)

    def _queue_fin(self, tcb: Tcb) -> None:
        state = tcb.state
        if tcb.fin_seq >= 0 or state not in (SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            return
        tcb.fin_seq = seq_add(tcb.buf_seq, len(tcb.send_buffer))
        self.set_state(tcb, LAST_ACK if state == CLOSE_WAIT else FIN_WAIT_1)
        self.queue_data(tcb)

    def _raise_pending(self, tcb: Tcb) -> None:
        if tcb.error:
            code, tcb.error = tcb.error, 0
            raise SocketError(code)

    def readiness(self, obj: Tcb | Listener) -> int:
        """epoll-style readiness bits (tcb.READABLE, ...) of a socket now."""
        if isinstance(obj, Listener):
            return READABLE if obj.accept_queue else 0
        tcb = obj
        mask = 0
        buffer = tcb.receive_buffer
        if tcb.error:
            mask |= ERROR | READABLE | WRITABLE
        if buffer is not None and buffer.readable():
            mask |= READABLE
        if tcb.fin_received:  # the peer's FIN, in order
            mask |= READABLE | READ_HANGUP
        state = tcb.state
        if state in (ESTABLISHED, CLOSE_WAIT) and not tcb.write_closed and tcb.send_buffer.free():
            mask |= WRITABLE
        if state == CLOSED:
            mask |= HANGUP | READABLE | WRITABLE
        return mask

    def take_events(self) -> list[Tcb | Listener]:
        """Sockets whose readiness may have changed since the last call."""
        events = self.events
        for obj in events:
            obj.on_event_queue = False
        self.events = []
        return events

    # ------------------------------------------ helpers for input/output

    def notify(self, obj: Tcb | Listener) -> None:
        if not obj.on_event_queue:
            obj.on_event_queue = True
            self.events.append(obj)

    def set_state(self, tcb: Tcb, state: int) -> None:
        counts = self.state_counts
        if tcb.state != CLOSED:
            counts[tcb.state] -= 1
        tcb.state = state
        if state != CLOSED:
            counts[state] += 1

    def establish(self, tcb: Tcb, now: int) -> None:
        """Handshake complete: into ESTABLISHED, onto the accept queue if
        passive, and the connecting application told."""
        passive = tcb.state == SYN_RECEIVED and tcb.listener is not None
        self.set_state(tcb, ESTABLISHED)
        tcb.established_at = now
        self.connect_histogram.observe(now - tcb.opened_at)
        tcb.quickack = self.settings.quickack_segments
        if tcb.rtt.backoffs:
            tcb.rtt.on_syn_timeout_established()  # RFC 6298 (5.7)
        self.cancel_rto(tcb)
        if passive:
            listener = tcb.listener
            listener.half_open.discard(tcb)
            listener.accept_queue.append(tcb)
            self.counters[TcpCounter.PASSIVE_OPENS] += 1
            self.notify(listener)
        else:
            self.notify(tcb)
        if tcb.keepalive:
            self._arm_keepalive(tcb, now)
        if tcb.sendable() or tcb.fin_seq >= 0:
            self.queue_data(tcb)

    def abort(self, tcb: Tcb, error: int, send_rst: bool, now: int) -> None:
        """Close at once (RST if asked); the application sees `error`."""
        if send_rst and tcb.state not in (CLOSED, SYN_SENT, TIME_WAIT):
            output.send_reset(self, tcb, now)
        if error and not tcb.app_closed:
            tcb.error = error
        self.destroy(tcb)

    def destroy(self, tcb: Tcb) -> None:
        """Forget the connection: out of the flow table, timers and queues."""
        if self.flows.get(tcb.key) is tcb:
            del self.flows[tcb.key]
        if tcb.app_closed and tcb.state not in (CLOSED, TIME_WAIT):
            self.orphans -= 1
        if tcb.state == SYN_RECEIVED and tcb.listener is not None:
            tcb.listener.half_open.discard(tcb)
        self.set_state(tcb, CLOSED)
        self._stop_fine_timers(tcb)
        self._time_wait.remove(tcb)
        if tcb.app_closed:
            self._release_buffers(tcb)
            tcb.receive_buffer = None
        else:
            self.notify(tcb)

    def enter_time_wait(self, tcb: Tcb, now: int) -> None:
        if tcb.app_closed:
            self.orphans -= 1  # TIME-WAIT has a bound of its own (max_time_wait)
        self.set_state(tcb, TIME_WAIT)
        self._stop_fine_timers(tcb)
        self.notify(tcb)
        if self.state_counts[TIME_WAIT] > self.settings.max_time_wait:
            self.counters[TcpCounter.TIME_WAIT_OVERFLOWS] += 1
            output.send_ack(self, tcb, now)  # the peer's FIN still gets its ACK
            self.destroy(tcb)
            return
        self.restart_time_wait(tcb, now)  # replaces an orphan's FIN-WAIT-2 timeout
        if tcb.app_closed:
            self._shed(tcb)

    def _shed(self, tcb: Tcb) -> None:
        """A TIME-WAIT TCB nobody holds keeps only its sequence numbers and
        timestamps, as Linux's timewait minisock does: with 60 000 of them
        (1000 connections/s for 60 s) the buffers, RTT and congestion state
        would be ~15 GC-tracked objects each, and every full collection of
        the cyclic GC would walk them all (a 100+ ms pause here)."""
        self._release_buffers(tcb)
        tcb.receive_buffer = self._time_wait_receive
        tcb.rtt = tcb.cc = tcb.scoreboard = tcb.rack = None

    def _release_buffers(self, tcb: Tcb) -> None:
        """Give a closed connection's rings back to the instance's buffer
        memory; the receive buffer is left for the caller to replace."""
        if tcb.send_buffer is not None:
            tcb.send_buffer.release()
            tcb.send_buffer = None
        if tcb.receive_buffer is not None and tcb.receive_buffer is not self._time_wait_receive:
            tcb.receive_buffer.release()

    def restart_time_wait(self, tcb: Tcb, now: int) -> None:
        self._time_wait.remove(tcb)
        self._time_wait.push(tcb, now + self.settings.time_wait_us)

    def ack_now(self, tcb: Tcb) -> None:
        tcb.ack_pending = tcb.ack_now = True
        if not tcb.on_ack_list:
            tcb.on_ack_list = True
            self._acks.append(tcb)

    def schedule_ack(self, tcb: Tcb, now: int, full_segment: bool) -> None:
        """RFC 9293 §3.8.6.3 / RFC 5681 §4.2: ACK every second full segment
        at once, the rest within the delayed-ACK time; quick-ACK the first
        segments of a connection so the peer's slow start is not held back."""
        if full_segment:
            tcb.unacked_segments += 1
        if tcb.quickack > 0:
            tcb.quickack -= 1
            self.ack_now(tcb)
        elif tcb.unacked_segments >= 2:
            # At once, not at this pass's flush: one ACK for a whole batch
            # of frames starved the sender's ACK clock (0.15 ACKs per data
            # segment where Linux sends 0.5).
            output.send_ack(self, tcb, now)
        elif not tcb.ack_pending:
            tcb.ack_pending = True
            tcb.delack_deadline = now + self.settings.delayed_ack_us
            self.rearm(tcb)

    def challenge_ack(self, tcb: Tcb, now: int) -> None:
        """RFC 5961 §3.2/§4.2/§5.2, rate-limited (§7) per connection first,
        then by the instance's random budget (tcp/challenge.py)."""
        if now < tcb.invalid_ack_allowed_at or not self._challenges.take(now):
            self.counters[TcpCounter.CHALLENGE_ACKS_LIMITED] += 1
            return
        tcb.invalid_ack_allowed_at = now + self.settings.invalid_ack_interval_us
        self.counters[TcpCounter.CHALLENGE_ACKS] += 1
        self.ack_now(tcb)

    def queue_control(self, tcb: Tcb) -> None:
        if not tcb.on_control_list:
            tcb.on_control_list = True
            self._control.append(tcb)

    def queue_data(self, tcb: Tcb) -> None:
        if not tcb.on_data_list:
            tcb.on_data_list = True
            self._data.append(tcb)

    def reply_reset(self, dst_ip: int, seg: TcpRepr, data_len: int) -> None:
        """RST answering a segment no connection accepts (RFC 9293 §3.10.7.1)."""
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seg_len = data_len + (1 if seg.flags & SYN else 0) + (seg.flags & 1)
            seq, ack, flags = 0, seq_add(seg.seq, seg_len), RST | ACK
        frame = bytearray(FRAME_HEADROOM + 20)
        write_segment(
            frame,
            FRAME_HEADROOM,
            self.local_ip,
            dst_ip,
            seg.dst_port,
            seg.src_port,
            seq,
            ack,
            flags,
            0,
            _NO_OPTIONS,
            0,
        )
        self._stateless.append((dst_ip, frame))
        self.counters[TcpCounter.RESETS_OUT] += 1

    def send_segment(
        self,
        tcb: Tcb,
        now: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        options: TcpOptions,
        length: int,
        buffer_offset: int = 0,
        segment_size: int = 0,
    ) -> None:
        """Build one segment of `tcb` (payload from its send buffer) and
        hand it to IPv4. With `segment_size`, `length` is a run of segments
        of that size (the last may be shorter), sent as one super-frame
        (stackservice.net.offload)."""
        header_len = 20 + options.buffer_len()
        size = FRAME_HEADROOM + header_len + length
        segments = 1
        if segment_size:
            segments = (length + segment_size - 1) // segment_size
            frame = SuperFrame(size, segment_size, segments)
        else:
            frame = bytearray(size)
        if length:
            tcb.send_buffer.peek_into(buffer_offset, frame, FRAME_HEADROOM + header_len, length)
        write_segment(
            frame,
            FRAME_HEADROOM,
            self.local_ip,
            tcb.remote_ip,
            tcb.local_port,
            tcb.remote_port,
            seq,
            ack,
            flags,
            window,
            options,
            length,
            None,
            0,
            segment_size != 0,
        )
        self.counters[_SEGMENTS_OUT] += segments
        if flags & ACK:
            tcb.last_ack_sent = ack
        self._send_frame(tcb.remote_ip, PROTO_TCP, frame, now)

    # ---------------------------------------------------- passive opens

    def new_passive(self, listener: Listener, src_ip: int, seg: TcpRepr, now: int) -> Tcb | None:
        """A SYN-RECEIVED connection for a listener's SYN (RFC 9293 §3.10.7.2)."""
        if len(self.flows) >= self.settings.max_connections:
            self.drop(TcpDropReason.TCP_SYN_QUEUE_OVERFLOW)
            return None
        tcb = self._new_tcb(listener.port, src_ip, seg.src_port, now, listener.options)
        tcb.listener = listener
        tcb.owner = listener.owner
        tcb.irs = seg.seq
        tcb.rcv_nxt = tcb.rcv_adv = seq_add(seg.seq, 1)
        tcb.iss = self._isn.isn(now, self.local_ip, listener.port, src_ip, seg.src_port)
        tcb.snd_una = tcb.snd_nxt = tcb.snd_max = tcb.iss
        tcb.buf_seq = seq_add(tcb.iss, 1)
        tcb.snd_wnd = tcb.max_snd_wnd = seg.window  # a SYN's window is never scaled
        tcb.snd_wl1 = seg.seq
        self.flows[tcb.key] = tcb
        self.set_state(tcb, SYN_RECEIVED)
        listener.half_open.add(tcb)
        return tcb

    def send_cookie(self, listener: Listener, src_ip: int, seg: TcpRepr, now: int) -> None:
        """A stateless SYN-ACK whose ISN encodes the connection (RFC 4987)."""
        options = seg.options
        cookie = self._cookies.make(
            now,
            self.local_ip,
            listener.port,
            src_ip,
            seg.src_port,
            seg.seq,
            options.mss or tcp_input.DEFAULT_MSS,
        )
        timestamps = None
        if self.settings.timestamps and options.timestamps is not None:
            scale = options.window_scale  # the peer's shift, lost otherwise
            # The connection's later TSvals use the same per-flow offset, so
            # they never look older than this one to the peer's PAWS.
            offset = self._isn.ts_offset(self.local_ip, listener.port, src_ip, seg.src_port)
            tsval = self._cookies.encode_ts_options(
                seq_add(now // 1000, offset),
                scale,
                options.sack_permitted and self.settings.sack,
            )
            timestamps = (tsval, options.timestamps[0])
        reply = TcpOptions(
            mss=self.settings.mss,
            timestamps=timestamps,
            window_scale=self._rcv_wscale
            if timestamps and options.window_scale is not None
            else None,
            sack_permitted=bool(timestamps) and options.sack_permitted,
        )
        frame = bytearray(FRAME_HEADROOM + 20 + reply.buffer_len())
        write_segment(
            frame,
            FRAME_HEADROOM,
            self.local_ip,
            src_ip,
            listener.port,
            seg.src_port,
            cookie,
            seq_add(seg.seq, 1),
            SYN | ACK,
            min(self.settings.receive_buffer, 0xFFFF),
            reply,
            0,
        )
        self._stateless.append((src_ip, frame))
        listener.cookies_sent_at = now
        self.counters[TcpCounter.SYN_COOKIES_SENT] += 1

    def cookie_ack(self, listener: Listener, src_ip: int, seg: TcpRepr, data, now: int) -> bool:
        """The ACK completing a cookie handshake: build the connection it
        encodes. True when handled here (accepted, refused for a full accept
        queue, or a forged cookie counted and reset); False if no cookie was
        sent lately, so the ACK is an ordinary stray one."""
        if listener.cookies_sent_at < 0 or now - listener.cookies_sent_at > 120_000_000:
            return False
        peer_isn = seq_add(seg.seq, -1)
        mss = self._cookies.check(
            now,
            self.local_ip,
            listener.port,
            src_ip,
            seg.src_port,
            peer_isn,
            seq_add(seg.ack, -1),
        )
        if mss is None:
            self.reply_reset(src_ip, seg, len(data))
            self.drop(TcpDropReason.TCP_BAD_SYN_COOKIE)
            return True
        if listener.accept_full():
            self.counters[TcpCounter.LISTEN_OVERFLOWS] += 1
            self.drop(TcpDropReason.TCP_LISTEN_QUEUE_OVERFLOW)
            return True
        tcb = self._new_tcb(listener.port, src_ip, seg.src_port, now, listener.options)
        tcb.listener = listener
        tcb.owner = listener.owner
        tcb.irs = peer_isn
        tcb.rcv_nxt = tcb.rcv_adv = seg.seq
        tcb.iss = seq_add(seg.ack, -1)
        tcb.snd_una = tcb.snd_nxt = tcb.snd_max = tcb.buf_seq = seg.ack
        timestamps = seg.options.timestamps
        carried = self._cookies.decode_ts_options(timestamps[1]) if timestamps else None
        scale, sack = carried if carried is not None else (None, False)
        tcp_input.negotiate(
            self, tcb,
            TcpOptions(mss=mss, window_scale=scale, sack_permitted=sack, timestamps=timestamps),
            now, True,
        )  # fmt: skip
        tcb.snd_wnd = seg.window << tcb.snd_wscale
        tcb.max_snd_wnd = tcb.snd_wnd
        tcb.snd_wl1, tcb.snd_wl2 = seg.seq, seg.ack
        self.flows[tcb.key] = tcb
        self.set_state(tcb, SYN_RECEIVED)
        self.counters[TcpCounter.SYN_COOKIES_ACCEPTED] += 1
        self.establish(tcb, now)
        if data or seg.flags & 1:
            tcp_input.synchronized_input(self, tcb, seg, data, now)
        return True

    def _new_tcb(
        self,
        local_port: int,
        remote_ip: int,
        remote_port: int,
        now: int,
        options: SocketOptions | None,
    ) -> Tcb:
        settings = self.settings
        tcb = Tcb(self.local_ip, local_port, remote_ip, remote_port)
        tcb.sock_id = self._new_sock_id()
        opts = options or _DEFAULT_OPTIONS
        memory = self.buffer_memory
        tcb.send_buffer = SendBuffer(opts.send_buffer or settings.send_buffer, memory)
        tcb.receive_buffer = ReceiveBuffer(
            opts.receive_buffer or settings.receive_buffer, memory=memory
        )
        tcb.rcv_wscale = self._rcv_wscale if settings.window_scaling else 0
        tcb.rtt = RttEstimator(settings.min_rto_us, settings.max_rto_us, settings.initial_rto_us)
        tcb.cc = make_congestion_control(
            opts.congestion_control or settings.congestion_control, settings.mss
        )
        tcb.scoreboard = Scoreboard()
        tcb.rack = Rack()
        tcb.ts_offset = self._isn.ts_offset(self.local_ip, local_port, remote_ip, remote_port)
        tcb.nodelay = opts.nodelay
        tcb.keepalive = opts.keepalive
        tcb.keepalive_idle = opts.keepalive_idle or settings.keepalive_idle_us
        tcb.keepalive_interval = opts.keepalive_interval or settings.keepalive_interval_us
        tcb.keepalive_count = opts.keepalive_count or settings.keepalive_probes
        tcb.opened_at = tcb.last_receive = now
        return tcb

    def _new_sock_id(self) -> int:
        sock_id = self._next_sock_id
        self._next_sock_id = sock_id + self.ports.workers
        return sock_id

    def _ephemeral_port(self, remote_ip: int, remote_port: int, now: int) -> int:
        """RFC 6056 §3.3.4 (double-hash): each destination starts at an
        offset of its own, secret, so a peer learns nothing from our ports
        about the connections we have with others; a step per hash bucket
        moves on past the ports just handed out, so consecutive connects to
        one destination find a free port at the first try instead of
        walking past every port they already use.

        Raises:
            SocketError: EADDRNOTAVAIL (EPHEMERAL_PROBES candidates taken,
                or were less than EXHAUSTED_RETRY_US ago).
        """
        exhausted = self._exhausted
        destination = (remote_ip, remote_port)
        if exhausted and destination in exhausted:
            if now < exhausted[destination]:
                raise SocketError(errno.EADDRNOTAVAIL)
            del exhausted[destination]
        # One keyed hash gives both of the RFC's: its high bits the offset
        # (F), its low ones the step counter's bucket (G).
        digest = tuple_hash(self._port_k0, self._port_k1, self.local_ip, 0, remote_ip, remote_port)
        offset = digest >> 16
        bucket = (digest & 0xFFFF) % PORT_STEP_BUCKETS
        steps = self._port_steps
        share = self.ports
        span = share.count
        for _ in range(EPHEMERAL_PROBES):
            step = steps[bucket]
            steps[bucket] = (step + 1) % span
            port = share.port(offset + step)
            if flow_key(remote_ip, remote_port, port) not in self.flows and (
                port not in self.listeners
            ):
                return port
        if len(exhausted) >= 256:  # each after a whole search: pruning costs less
            for key in [key for key, until in exhausted.items() if until <= now]:
                del exhausted[key]
        exhausted[destination] = now + EXHAUSTED_RETRY_US
        raise SocketError(errno.EADDRNOTAVAIL)

    def _window_opened(self, tcb: Tcb, before: int, now: int) -> None:
        """After the application read: tell the peer if the window grew
        from (nearly) closed by at least an MSS (RFC 9293 §3.8.6.2.2)."""
        if tcb.state not in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2):
            return
        after = tcb.receive_buffer.window()
        if before < tcb.mss <= after or after - before >= tcb.receive_buffer.capacity // 2:
            self.ack_now(tcb)

    # ----------------------------------------------------------- timers

    def arm_rto(self, tcb: Tcb, now: int) -> None:
        tcb.rto_deadline = now + tcb.rtt.rto_us
        self.rearm(tcb)

    def cancel_rto(self, tcb: Tcb) -> None:
        if tcb.rto_deadline:
            tcb.rto_deadline = 0
            self.rearm(tcb)

    def arm_persist(self, tcb: Tcb, now: int) -> None:
        if tcb.persist_deadline:
            return
        interval = min(tcb.rtt.rto_us << tcb.persist_backoff, self.settings.persist_max_us)
        tcb.persist_deadline = now + interval
        self.rearm(tcb)

    def _arm_keepalive(self, tcb: Tcb, now: int) -> None:
        # Armed once per idle period, not per segment: when it fires,
        # `_keepalive_timer` re-arms from last_receive if traffic came since.
        tcb.keepalive_deadline = max(now, tcb.last_receive) + tcb.keepalive_idle
        self.rearm(tcb)

    def rearm(self, tcb: Tcb) -> None:
        """Keep the wheel entry no later than the earliest of the TCB's
        timers (pairwise: a tuple of them cost a tuple and six boxed ints on
        every ACK).

        An entry already due earlier stays where it is (a lazy timer, as
        BSD's and Linux's delayed work): every ACK pushes the RTO later,
        and moving the entry each time cost a third of the wheel's work in
        a bulk transfer. It then fires early, finds nothing due, and
        `_fine_timers` puts it where it belongs, once per RTO at most."""
        deadline = _earlier(tcb.rto_deadline, tcb.delack_deadline)
        deadline = _earlier(deadline, tcb.persist_deadline)
        deadline = _earlier(deadline, tcb.keepalive_deadline)
        deadline = _earlier(deadline, tcb.reorder_deadline)
        deadline = _earlier(deadline, tcb.loss_probe_deadline)
        if not deadline:
            self._wheel.cancel(tcb)
        elif tcb.wheel_owner is not self._wheel or deadline < tcb.wheel_deadline:
            self._wheel.schedule(tcb, deadline)

    def _stop_fine_timers(self, tcb: Tcb) -> None:
        self._wheel.cancel(tcb)
        tcb.rto_deadline = tcb.delack_deadline = tcb.persist_deadline = 0
        tcb.keepalive_deadline = tcb.reorder_deadline = tcb.loss_probe_deadline = 0

    def poll_at(self) -> int | None:
        """When `on_timer` must run next (µs), or None."""
        best = None
        best = self._wheel.next_deadline()
        closing = self._time_wait.next_deadline()
        if closing is not None and (best is None or closing < best):
            best = closing
        return best

    def on_timer(self, now: int) -> None:
        # Expired entries are already off their lists: one connection's
        # fault must not cost the others in the batch their timers.
        for tcb in self._wheel.expire(now, _TIMER_BATCH):
            try:
                self._fine_timers(tcb, now)
            except Exception as exc:
                self.contain("timer", tcb, exc, now)
        for tcb in self._time_wait.expire(now, _TIMER_BATCH):
            self.destroy(tcb)  # TIME-WAIT over, or an orphan's FIN-WAIT-2 timeout

    def contain(self, site: str, tcb: Tcb | None, exc: Exception, now: int) -> None:
        """An unexpected exception (a bug) while handling `tcb`: re-raised
        when strict; else recorded in `faults` and the connection aborted
        (RST, the application sees ECONNABORTED), since its state can no
        longer be trusted and a timer that fails once would fail forever."""
        if self.strict:
            raise exc
        self.faults.append((site, exc))
        if tcb is None:
            return
        try:
            self.abort(tcb, errno.ECONNABORTED, True, now)
        except Exception as again:  # the TCB is too broken to say goodbye
            self.faults.append((site, again))
            if self.flows.get(tcb.key) is tcb:
                del self.flows[tcb.key]
            self._wheel.cancel(tcb)
            self._time_wait.remove(tcb)

    def _fine_timers(self, tcb: Tcb, now: int) -> None:
        if tcb.delack_deadline and tcb.delack_deadline <= now:
            tcb.delack_deadline = 0
            if tcb.ack_pending:
                self.counters[TcpCounter.DELAYED_ACKS] += 1
                self.ack_now(tcb)
        if tcb.persist_deadline and tcb.persist_deadline <= now:
            tcb.persist_deadline = 0
            self._persist_timer(tcb, now)
        if tcb.reorder_deadline and tcb.reorder_deadline <= now:
            tcb.reorder_deadline = 0
            recovery.detect_losses(self, tcb, now)
        if tcb.loss_probe_deadline and tcb.loss_probe_deadline <= now:
            tcb.loss_probe_deadline = 0
            recovery.send_loss_probe(self, tcb, now)  # re-arms the RTO
        if tcb.rto_deadline and tcb.rto_deadline <= now:
            tcb.rto_deadline = 0
            self._retransmission_timer(tcb, now)
        if tcb.keepalive_deadline and tcb.keepalive_deadline <= now:
            tcb.keepalive_deadline = 0
            self._keepalive_timer(tcb, now)
        if tcb.state != CLOSED:
            self.rearm(tcb)

    def _persist_timer(self, tcb: Tcb, now: int) -> None:
        """RFC 9293 §3.8.6.1: probe a zero window, backing off; a small
        window gets what fits instead (RFC 1122 §4.2.3.4 override)."""
        if not tcb.sendable() or tcb.in_flight() or tcb.state == CLOSED:
            tcb.persist_backoff = 0
            return
        if tcb.snd_wnd:
            length = min(tcb.snd_wnd, tcb.sendable(), tcb.mss)
            output.send_chunk(self, tcb, now, length, tcb.fin_seq >= 0)
            tcb.persist_backoff = 0
            return
        if tcb.app_closed and tcb.persist_backoff >= self.settings.orphan_retries:
            # RFC 1122 §4.2.2.17 keeps probing while the peer answers, for
            # an application that still holds the socket. An orphan's peer
            # that keeps its window shut would hold our data for ever.
            self.counters[TcpCounter.ORPHAN_ABORTS] += 1
            self.abort(tcb, 0, True, now)
            return
        self.counters[TcpCounter.ZERO_WINDOW_PROBES] += 1
        output.send_probe(self, tcb, now)
        tcb.persist_backoff = min(tcb.persist_backoff + 1, 16)
        self.arm_persist(tcb, now)

    def _retransmission_timer(self, tcb: Tcb, now: int) -> None:
        """RFC 6298 (5.4)-(5.6): resend the oldest segment, back off; give
        up after the configured number of tries (RFC 9293 §3.8.3 R2)."""
        state = tcb.state
        tcb.retransmits += 1
        settings = self.settings
        if state == SYN_SENT:
            limit = settings.syn_retries
        elif state == SYN_RECEIVED:
            limit = settings.synack_retries
        elif tcb.app_closed:
            limit = settings.orphan_retries  # Linux's tcp_write_timeout for orphans
        else:
            limit = settings.max_retransmits
        if tcb.retransmits > limit:
            self.counters[TcpCounter.CONNECTION_TIMEOUTS] += 1
            if state == SYN_RECEIVED and tcb.listener is not None:
                self.destroy(tcb)
            else:
                self.abort(tcb, errno.ETIMEDOUT, state != SYN_SENT, now)
            return
        self.counters[TcpCounter.TIMEOUTS] += 1
        tcb.rtt.on_timeout()
        tcb.rtt_seq = -1
        if state in (SYN_SENT, SYN_RECEIVED):
            self.counters[TcpCounter.RETRANSMITTED_SEGMENTS] += 1
            tcb.retransmitted += 1
            self.queue_control(tcb)
            self.arm_rto(tcb, now)
            return
        tcb.cc.on_timeout(now, tcb.in_flight())
        tcb.in_recovery = False
        tcb.dup_acks = 0
        recovery.on_timeout(tcb)
        tcb.snd_nxt = tcb.snd_una  # go back: resend from the oldest byte
        self.queue_data(tcb)
        self.arm_rto(tcb, now)

    def _keepalive_timer(self, tcb: Tcb, now: int) -> None:
        """RFC 1122 §4.2.3.6 with Linux's timing: after `idle` without a
        segment, a probe every `interval`; `count` unanswered ones abort.
        Any arriving segment clears keepalive_sent (input)."""
        if not tcb.keepalive or tcb.state not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, FIN_WAIT_2):
            return
        idle_until = tcb.last_receive + tcb.keepalive_idle
        if not tcb.keepalive_sent and idle_until > now:
            tcb.keepalive_deadline = idle_until
            return
        if tcb.keepalive_sent >= tcb.keepalive_count:
            self.counters[TcpCounter.CONNECTION_TIMEOUTS] += 1
            self.abort(tcb, errno.ETIMEDOUT, True, now)
            return
        tcb.keepalive_sent += 1
        self.counters[TcpCounter.KEEPALIVE_PROBES] += 1
        output.send_probe(self, tcb, now)
        tcb.keepalive_deadline = now + tcb.keepalive_interval

    # ------------------------------------------------------------ output

    def flush(self, now: int) -> None:
        """Send everything queued this pass: control, then ACKs, then data."""
        send = self._send_frame
        for dst, frame in self._stateless:
            send(dst, PROTO_TCP, frame, now)
        self._stateless.clear()
        control, self._control = self._control, []
        for tcb in control:
            tcb.on_control_list = False
            if tcb.state in (SYN_SENT, SYN_RECEIVED):
                try:
                    output.send_syn(self, tcb, now)
                    if not tcb.rto_deadline:
                        self.arm_rto(tcb, now)
                except Exception as exc:
                    self.contain("output", tcb, exc, now)
        acks, self._acks = self._acks, []
        for tcb in acks:
            tcb.on_ack_list = False
            # A connection with data queued gets its ACK on that data, or
            # after it if the windows let nothing go.
            if tcb.ack_now and not tcb.on_data_list and tcb.state != CLOSED:
                try:
                    output.send_ack(self, tcb, now)
                except Exception as exc:
                    self.contain("output", tcb, exc, now)
        data, self._data = self._data, []
        for tcb in data:
            tcb.on_data_list = False
            if tcb.state != CLOSED:
                try:
                    self._send_queued(tcb, now)
                except Exception as exc:
                    self.contain("output", tcb, exc, now)

    def _send_queued(self, tcb: Tcb, now: int) -> None:
        if tcb.sack_enabled:
            if tcb.in_recovery:
                recovery.resend_lost(self, tcb, now)
            snd_max = tcb.snd_max
            output.send_data(self, tcb, now)
            if tcb.snd_max != snd_max:  # new data: a lost tail would need a probe
                recovery.schedule_loss_probe(self, tcb, now)
        else:
            output.send_data(self, tcb, now)
        if tcb.ack_now:
            output.send_ack(self, tcb, now)


_NO_OPTIONS = TcpOptions()
# A connection opened without options of its own: read, never written.
_DEFAULT_OPTIONS = SocketOptions()


def _window_scale_for(largest_window: int) -> int:
    """The shift that lets a 16-bit field carry `largest_window` (RFC 7323 §2.3)."""
    shift = 0
    while (largest_window >> shift) > 0xFFFF and shift < MAX_WINDOW_SCALE:
        shift += 1
    return shift
