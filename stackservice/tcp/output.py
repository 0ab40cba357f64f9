"""What a connection sends: segments built from the TCB (mTCP's tcp_out.c).

Every function takes the engine (context: clock-free settings, counters,
the IP layer's send) and a TCB, builds segments in a fresh buffer and hands
them to `engine.send_segment`. Nothing here decides state transitions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stackservice.net.offload import MAX_RUN_PAYLOAD
from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.segment import (
    ACK,
    FIN,
    MAX_SACK_BLOCKS_WITH_TIMESTAMPS,
    PSH,
    RST,
    SYN,
    TcpOptions,
    seq_add,
    seq_gt,
    seq_le,
    seq_lt,
    seq_sub,
)
from stackservice.tcp.state import SENDS_DATA, SYN_RECEIVED
from stackservice.tcp.tcb import Tcb

if TYPE_CHECKING:
    from stackservice.tcp.engine import TcpEngine

_NO_OPTIONS = TcpOptions()
_RETRANSMITTED = int(TcpCounter.RETRANSMITTED_SEGMENTS)


def timestamp_value(tcb: Tcb, now: int) -> int:
    """TSval: a 1 ms clock plus the connection's offset (RFC 7323 §5.4)."""
    return seq_add(now // 1000, tcb.ts_offset)


def advertise_window(tcb: Tcb) -> int:
    """The window field for a non-SYN segment; records the right edge.

    Receiver silly-window avoidance (RFC 9293 §3.8.6.2.2): the right edge
    moves only by at least min(buffer/2, MSS), and is never moved left.
    """
    available = tcb.receive_window()
    edge = seq_add(tcb.rcv_nxt, available)
    step = seq_sub(edge, tcb.rcv_adv) if seq_gt(edge, tcb.rcv_adv) else 0
    threshold = min(tcb.receive_buffer.capacity // 2, tcb.mss)
    if seq_lt(edge, tcb.rcv_adv) or (0 < step < threshold):
        edge = tcb.rcv_adv
    window = seq_sub(edge, tcb.rcv_nxt) if seq_gt(edge, tcb.rcv_nxt) else 0
    field = min(window >> tcb.rcv_wscale, 0xFFFF)
    tcb.rcv_adv = seq_add(tcb.rcv_nxt, field << tcb.rcv_wscale)
    return field


def _options(tcb: Tcb, now: int, with_sack: bool) -> TcpOptions:
    sack = ()
    if with_sack and tcb.sack_enabled:
        sack = _sack_blocks(tcb)
    # Positional: compiled, keywords would cost a dictionary per segment.
    if tcb.ts_enabled:
        return TcpOptions(None, None, False, (timestamp_value(tcb, now), tcb.ts_recent), sack)
    if sack:
        return TcpOptions(None, None, False, None, sack)
    return _NO_OPTIONS


def _sack_blocks(tcb: Tcb) -> tuple[tuple[int, int], ...]:
    """RFC 2018 §4 blocks, most recent arrival first, after a D-SACK of the
    duplicate that arrived since our last segment (RFC 2883 §4: the first
    block; sent once)."""
    limit = MAX_SACK_BLOCKS_WITH_TIMESTAMPS if tcb.ts_enabled else 4
    blocks: tuple[tuple[int, int], ...] = ()
    if tcb.dsack is not None:
        blocks = (tcb.dsack,)
        tcb.dsack = None
        limit -= 1
    if tcb.receive_buffer.has_out_of_order():
        rcv_nxt = tcb.rcv_nxt
        edges = [
            (seq_add(rcv_nxt, left), seq_add(rcv_nxt, right))
            for left, right in tcb.receive_buffer.sack_blocks(limit)
        ]
        blocks += tuple(edges)
    return blocks


def syn_options(engine: TcpEngine, tcb: Tcb, now: int, answering: bool) -> TcpOptions:
    """Options of our SYN or SYN-ACK: on a SYN-ACK only those the peer
    offered (RFC 7323 §1.3, RFC 2018 §2)."""
    settings = engine.settings
    if answering:
        timestamps = (timestamp_value(tcb, now), tcb.ts_recent) if tcb.ts_enabled else None
        scale = tcb.rcv_wscale if tcb.ws_enabled else None
        sack = tcb.sack_enabled
    else:
        timestamps = (timestamp_value(tcb, now), 0) if settings.timestamps else None
        scale = tcb.rcv_wscale if settings.window_scaling else None
        sack = settings.sack
    return TcpOptions(
        mss=settings.mss, window_scale=scale, sack_permitted=sack, timestamps=timestamps
    )


def send_syn(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED), first or again."""
    answering = tcb.state == SYN_RECEIVED
    flags = SYN | ACK if answering else SYN
    # A SYN's window is never scaled (RFC 7323 §2.2).
    window = min(tcb.receive_window(), 0xFFFF)
    tcb.rcv_adv = seq_add(tcb.rcv_nxt, window)
    options = syn_options(engine, tcb, now, answering)
    engine.send_segment(
        tcb, now, tcb.iss, tcb.rcv_nxt if answering else 0, flags, window, options, 0
    )
    tcb.snd_nxt = tcb.snd_max = seq_add(tcb.iss, 1)
    if tcb.retransmits == 0:
        tcb.rtt_seq = tcb.iss  # time the handshake; Karn skips a resent SYN
        tcb.rtt_start = now


def send_ack(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """A pure ACK carrying the current window (and SACK blocks).

    SEQ is SND.MAX, not SND.NXT: after a timeout pulls SND.NXT back the peer
    may hold everything up to SND.MAX and would drop an older SEQ unread,
    answering with an ACK of its own — an ACK war (BSD tcp_output does the
    same)."""
    window = advertise_window(tcb)
    options = _options(tcb, now, True)
    engine.send_segment(tcb, now, tcb.snd_max, tcb.rcv_nxt, ACK, window, options, 0)
    clear_ack(tcb)


def send_probe(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """Zero-window or keepalive probe: SEG.SEQ = SND.UNA - 1, no data; the
    peer must answer with an ACK (RFC 9293 §3.8.4, as Linux does)."""
    window = advertise_window(tcb)
    options = _options(tcb, now, False)
    seq = seq_add(tcb.snd_una, -1)
    engine.send_segment(tcb, now, seq, tcb.rcv_nxt, ACK, window, options, 0)


def send_reset(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """RST for an established connection being aborted (RFC 9293 §3.10.4).

    The peer takes a RST only at exactly its RCV.NXT; one elsewhere in its
    window draws a challenge ACK (RFC 5961 §3.2), which Linux rate-limits
    per socket (tcp_invalid_ratelimit, 500 ms) and skips if it just sent a
    duplicate ACK, as it does while its window is closed. A RST it neither
    takes nor challenges leaves it waiting for ever. So the RST goes at
    SND.MAX (the peer's RCV.NXT if everything sent arrived; SND.MAX, not
    SND.NXT, for the same reason as send_ack), but no further than the
    right edge of the peer's window, which it would drop unseen (Linux's
    tcp_acceptable_seq); and, when that is not SND.UNA, once more at
    SND.UNA: the peer's RCV.NXT if nothing beyond its last ACK arrived (a
    peer pruning its receive queue under memory pressure, or a window
    shrunk to zero). At most one of the two is taken; the other is out of
    its window, or challenged."""
    options = _options(tcb, now, False)
    seq = tcb.snd_max
    edge = seq_add(tcb.snd_una, tcb.snd_wnd)
    if seq_gt(seq, edge):
        seq = edge
    engine.send_segment(tcb, now, seq, tcb.rcv_nxt, RST | ACK, 0, options, 0)
    engine.counters[TcpCounter.RESETS_OUT] += 1
    if seq != tcb.snd_una:
        engine.send_segment(tcb, now, tcb.snd_una, tcb.rcv_nxt, RST | ACK, 0, options, 0)
        engine.counters[TcpCounter.RESETS_OUT] += 1


def clear_ack(tcb: Tcb) -> None:
    tcb.ack_pending = tcb.ack_now = False
    tcb.unacked_segments = 0
    tcb.delack_deadline = 0


def send_data(engine: TcpEngine, tcb: Tcb, now: int) -> int:
    """Send what the windows allow, FIN included. Returns segments sent.

    Applies Nagle (RFC 9293 §3.7.4) unless TCP_NODELAY, and sender-side
    silly-window avoidance (§3.8.6.2.1).
    """
    if tcb.state not in SENDS_DATA:
        return 0
    cwnd = tcb.cc.cwnd
    if tcb.dup_acks and not tcb.in_recovery:
        # Limited transmit (RFC 3042): a new segment for each of the first
        # two duplicate ACKs, so a small window still gets three of them.
        cwnd += min(tcb.dup_acks, 2) * tcb.mss
    sent = 0
    while True:
        in_flight = _flight(tcb)
        usable = min(tcb.snd_wnd, cwnd) - in_flight
        available = tcb.sendable()
        fin_due = tcb.fin_seq >= 0 and seq_le(tcb.snd_nxt, tcb.fin_seq)
        if available == 0:
            if fin_due and tcb.snd_nxt == tcb.fin_seq:
                send_chunk(engine, tcb, now, 0, True)
                sent += 1
            break
        length = min(available, tcb.mss, usable)
        if length <= 0:
            break
        last = length == available
        if length < tcb.mss and not _may_send_small(tcb, length, last, in_flight, fin_due):
            break
        if (
            engine.segmentation_offload
            and available > tcb.mss
            and usable > tcb.mss
            and tcb.snd_nxt == tcb.snd_max
        ):
            sent += send_run(engine, tcb, now, available, usable, fin_due)
            continue
        send_chunk(engine, tcb, now, length, fin_due)
        sent += 1
    if sent == 0 and tcb.sendable() and tcb.in_flight() == 0:
        # Nothing in flight means no ACK will come to restart us: a zero
        # window needs probes, a small one the SWS override (RFC 1122
        # §4.2.3.4 (4)). One timer serves both.
        engine.arm_persist(tcb, now)
    return sent


def _flight(tcb: Tcb) -> int:
    """What counts against cwnd: in SACK recovery the pipe (RFC 6675 §5
    (C)), which leaves out what arrived above the holes and what is lost;
    otherwise every byte sent and not acknowledged."""
    if tcb.in_recovery and tcb.sack_enabled:
        return tcb.scoreboard.pipe(seq_sub(tcb.snd_max, tcb.snd_una))
    return tcb.in_flight()


def _may_send_small(tcb: Tcb, length: int, last: bool, in_flight: int, fin_due: bool) -> bool:
    if not last:
        # Window-limited: only a chunk worth at least half the largest
        # window the peer offered (SWS avoidance).
        return length >= tcb.max_snd_wnd // 2
    # Nagle, as Linux has it (Minshall's variant): a short tail waits while
    # an earlier short segment is unacknowledged, so at most one is in
    # flight; a write's tail behind full segments goes at once.
    return tcb.nodelay or in_flight == 0 or fin_due or not _short_in_flight(tcb)


def _short_in_flight(tcb: Tcb) -> bool:
    small_end = tcb.small_end
    return small_end >= 0 and seq_gt(small_end, tcb.snd_una) and seq_le(small_end, tcb.snd_nxt)


def send_chunk(engine: TcpEngine, tcb: Tcb, now: int, length: int, fin_due: bool) -> None:
    """One segment at SND.NXT: up to `length` bytes, the FIN too if due and
    the data runs out with this segment."""
    seq = tcb.snd_nxt
    retransmission = seq_lt(seq, tcb.snd_max)
    options = _options(tcb, now, True)
    # RFC 6691: data plus options within the peer's MSS (SACK blocks cost).
    length = min(length, tcb.peer_mss - options.buffer_len())
    flags = ACK
    if length and length == tcb.sendable():
        flags |= PSH | (FIN if fin_due else 0)
    elif not length and fin_due:
        flags |= FIN
    window = advertise_window(tcb)
    engine.send_segment(
        tcb, now, seq, tcb.rcv_nxt, flags, window, options, length, seq_sub(seq, tcb.buf_seq)
    )
    clear_ack(tcb)
    occupied = length + (1 if flags & FIN else 0)
    if tcb.sack_enabled:
        tcb.scoreboard.on_send(seq_sub(seq, tcb.snd_una), occupied, now, retransmission)
    if retransmission:
        engine.counters[_RETRANSMITTED] += 1
        tcb.retransmitted += 1
        tcb.rtt_seq = -1  # Karn: never time a retransmitted segment
    elif 0 < length < tcb.mss:
        tcb.small_end = seq_add(seq, length)
    _advance(engine, tcb, now, seq, occupied, not retransmission and length > 0)


def send_run(
    engine: TcpEngine, tcb: Tcb, now: int, available: int, usable: int, fin_due: bool
) -> int:
    """New data at SND.NXT in full-sized segments, as many as the windows
    allow, as one super-frame the port cuts up (stackservice.net.offload).
    The data's last segment joins the run when it may go now (a full MSS,
    or Nagle lets a shorter one go) and carries no FIN: its PSH stays on it
    alone when the run is cut. The caller makes sure a full segment and
    more fit; one segment alone leaves as a plain frame. Returns the
    number of segments."""
    seq = tcb.snd_nxt
    options = _options(tcb, now, True)
    option_len = options.buffer_len()
    size = min(tcb.mss, tcb.peer_mss - option_len)
    room = MAX_RUN_PAYLOAD - option_len
    length = size * min((available - 1) // size, usable // size, room // size)
    rest = available - length
    flags = ACK
    if (
        not fin_due
        and rest <= size
        and length + rest <= min(usable, room)
        and (rest == tcb.mss or tcb.nodelay or not _short_in_flight(tcb))
    ):
        length = available
        flags = ACK | PSH
        if rest < tcb.mss:
            tcb.small_end = seq_add(seq, length)
    count = (length + size - 1) // size
    window = advertise_window(tcb)
    engine.send_segment(
        tcb, now, seq, tcb.rcv_nxt, flags, window, options, length, seq_sub(seq, tcb.buf_seq),
        size if count > 1 else 0,
    )  # fmt: skip
    clear_ack(tcb)
    if tcb.sack_enabled:
        # One record a segment, as sent one by one: SACK, RACK and
        # retransmission work per segment whatever left as one frame.
        offset = seq_sub(seq, tcb.snd_una)
        scoreboard = tcb.scoreboard
        for index in range(count):
            start = index * size
            scoreboard.on_send(offset + start, min(size, length - start), now, False)
    _advance(engine, tcb, now, seq, length, True)
    return count


def _advance(engine: TcpEngine, tcb: Tcb, now: int, seq: int, occupied: int, timed: bool) -> None:
    """SND.NXT (and SND.MAX) past what was just sent at `seq`; with `timed`
    (new data: Karn's rule is the caller's) the RTT sample starts there if
    none runs; the RTO runs."""
    end = seq_add(seq, occupied)
    tcb.snd_nxt = end
    if seq_gt(end, tcb.snd_max):
        tcb.snd_max = end
    if timed and tcb.rtt_seq < 0:
        tcb.rtt_seq = seq
        tcb.rtt_start = now
    if not tcb.rto_deadline:
        engine.arm_rto(tcb, now)


def retransmit(engine: TcpEngine, tcb: Tcb, now: int, offset: int, length: int) -> int:
    """Resend `length` bytes at `offset` from SND.UNA without moving SND.NXT
    (fast retransmit, NewReno partial ACK, a segment RACK deems lost, a
    tail loss probe). Returns the sequence space resent (a FIN counts one)."""
    seq = seq_add(tcb.snd_una, offset)
    options = _options(tcb, now, True)
    # Only what was sent before: never new data beyond SND.MAX, which the
    # peer's window may not allow and whose ACK we would refuse.
    fin_sent = tcb.fin_seq >= 0 and seq_lt(tcb.fin_seq, tcb.snd_max)
    sent_left = seq_sub(tcb.snd_max, seq) - (1 if fin_sent else 0)
    length = max(0, min(length, sent_left, tcb.mss, tcb.peer_mss - options.buffer_len()))
    with_fin = fin_sent and seq_add(seq, length) == tcb.fin_seq
    flags = ACK | (FIN if with_fin else 0)
    window = advertise_window(tcb)
    engine.send_segment(
        tcb, now, seq, tcb.rcv_nxt, flags, window, options, length, seq_sub(seq, tcb.buf_seq)
    )
    clear_ack(tcb)
    engine.counters[_RETRANSMITTED] += 1
    tcb.retransmitted += 1
    tcb.rtt_seq = -1
    occupied = length + (1 if with_fin else 0)
    if tcb.sack_enabled:
        tcb.scoreboard.on_send(offset, occupied, now, True)
    return occupied
