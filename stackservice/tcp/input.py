"""What a connection does with an arriving segment: RFC 9293 §3.10.7, one
handler per state group (mTCP's tcp_in.c). The engine demultiplexes and
calls exactly one of `listen_input`, `syn_sent_input`, `synchronized_input`.
"""

from __future__ import annotations

import dataclasses
import errno
from typing import TYPE_CHECKING

from stackservice.tcp import output, recovery
from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.drops import TcpDropReason
from stackservice.tcp.segment import (
    ACK,
    FIN,
    RST,
    SYN,
    TcpOptions,
    TcpRepr,
    seq_add,
    seq_ge,
    seq_gt,
    seq_le,
    seq_lt,
    seq_sub,
)
from stackservice.tcp.state import (
    CLOSE_WAIT,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    RECEIVES_DATA,
    SYN_RECEIVED,
    TIME_WAIT,
)
from stackservice.tcp.tcb import Tcb

if TYPE_CHECKING:
    from stackservice.tcp.engine import Listener, TcpEngine

# RFC 7323 §5.5: TS.Recent older than 24 days is invalid, so PAWS lets it pass.
PAWS_IDLE_US = 24 * 86400 * 1_000_000
DEFAULT_MSS = 536  # RFC 9293 §3.7.1: assumed when the peer sends no MSS option
MIN_MSS = 88  # Linux's floor: a tiny MSS option must not make us send 1-byte segments


# ---------------------------------------------------------------- handshake


def negotiate(engine: TcpEngine, tcb: Tcb, options: TcpOptions, now: int, offered: bool) -> None:
    """Adopt the peer's SYN options. `offered`: we sent (or will answer
    with) our own, so each option is on only if both sides have it."""
    settings = engine.settings
    tcb.ts_enabled = settings.timestamps and options.timestamps is not None
    if tcb.ts_enabled:
        tcb.ts_recent = options.timestamps[0]
        tcb.ts_recent_age = now
    tcb.sack_enabled = settings.sack and options.sack_permitted
    tcb.ws_enabled = settings.window_scaling and options.window_scale is not None and offered
    if tcb.ws_enabled:
        tcb.snd_wscale = options.window_scale
    else:
        tcb.snd_wscale = tcb.rcv_wscale = 0
    peer_mss = options.mss if options.mss else DEFAULT_MSS
    # RFC 6691: the MSS counts no options; ours ride on every segment.
    overhead = 12 if tcb.ts_enabled else 0
    tcb.peer_mss = max(MIN_MSS, min(peer_mss, settings.mss))
    tcb.mss = tcb.peer_mss - overhead
    tcb.cc.set_mss(tcb.mss)


def listen_input(
    engine: TcpEngine, listener: Listener, src_ip: int, seg: TcpRepr, data: memoryview, now: int
) -> None:
    """RFC 9293 §3.10.7.2, with SYN cookies when the SYN queue is full."""
    flags = seg.flags
    if flags & RST:
        engine.drop(TcpDropReason.TCP_LISTEN_NOT_SYN)
        return
    if flags & ACK:
        if not flags & SYN and engine.cookie_ack(listener, src_ip, seg, data, now):
            return  # accepted, or a forged cookie counted and reset
        engine.reply_reset(src_ip, seg, len(data))
        engine.drop(TcpDropReason.TCP_LISTEN_NOT_SYN)
        return
    if not flags & SYN:
        engine.drop(TcpDropReason.TCP_LISTEN_NOT_SYN)
        return
    if listener.accept_full():
        # Linux drops SYNs while the accept queue is full: the client's
        # retransmission comes back when the application has caught up.
        engine.counters[TcpCounter.LISTEN_OVERFLOWS] += 1
        engine.drop(TcpDropReason.TCP_LISTEN_QUEUE_OVERFLOW)
        return
    if len(listener.half_open) >= listener.syn_limit:
        if engine.settings.syn_cookies:
            engine.send_cookie(listener, src_ip, seg, now)
        else:
            engine.drop(TcpDropReason.TCP_SYN_QUEUE_OVERFLOW)
        return
    tcb = engine.new_passive(listener, src_ip, seg, now)
    if tcb is not None:
        negotiate(engine, tcb, seg.options, now, True)
        engine.queue_control(tcb)


def syn_sent_input(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, data: memoryview, now: int) -> None:
    """RFC 9293 §3.10.7.3."""
    flags = seg.flags
    ack_ok = False
    if flags & ACK:
        if seq_le(seg.ack, tcb.iss) or seq_gt(seg.ack, tcb.snd_nxt):
            if not flags & RST:
                engine.reply_reset(tcb.remote_ip, seg, len(data))
            engine.drop(TcpDropReason.TCP_SYN_SENT_UNEXPECTED)
            return
        ack_ok = True
    if flags & RST:
        if ack_ok:
            engine.counters[TcpCounter.ATTEMPT_FAILS] += 1
            engine.abort(tcb, errno.ECONNREFUSED, False, now)
        else:
            engine.drop(TcpDropReason.TCP_SYN_SENT_UNEXPECTED)
        return
    if not flags & SYN:
        engine.drop(TcpDropReason.TCP_SYN_SENT_UNEXPECTED)
        return
    tcb.irs = seg.seq
    tcb.rcv_nxt = seq_add(seg.seq, 1)
    tcb.rcv_adv = tcb.rcv_nxt
    negotiate(engine, tcb, seg.options, now, True)
    # The window of a SYN is never scaled (RFC 7323 §2.2); it seeds the
    # window-update rule's SND.WL1/WL2 (RFC 9293 §3.10.7.3).
    tcb.snd_wnd = tcb.max_snd_wnd = seg.window
    tcb.snd_wl1 = seg.seq
    tcb.snd_wl2 = seg.ack
    if ack_ok:
        _acknowledge(engine, tcb, seg, now)
        engine.establish(tcb, now)
        engine.ack_now(tcb)
    else:
        # Simultaneous open (RFC 9293 §3.5, figure 8): answer with SYN-ACK.
        engine.set_state(tcb, SYN_RECEIVED)
        engine.queue_control(tcb)


# ------------------------------------------------------------- synchronized


def _acceptable(tcb: Tcb, seq: int, seg_len: int) -> bool:
    """RFC 9293 §3.10.7.4, the four-case acceptability test."""
    rcv_nxt = tcb.rcv_nxt
    window = seq_sub(tcb.rcv_adv, rcv_nxt) if seq_gt(tcb.rcv_adv, rcv_nxt) else 0
    if seq == rcv_nxt:
        # Includes a zero window: ACKs, RSTs and the text are then still
        # examined (RFC 9293 "special allowance"), the text is just not kept.
        return True
    if seg_len == 0:
        return window > 0 and seq_lt(rcv_nxt, seq) and seq_lt(seq, seq_add(rcv_nxt, window))
    if window == 0:
        return False
    end = seq_add(seq, seg_len - 1)
    right = seq_add(rcv_nxt, window)
    first_in = seq_le(rcv_nxt, seq) and seq_lt(seq, right)
    last_in = seq_le(rcv_nxt, end) and seq_lt(end, right)
    return first_in or last_in


def synchronized_input(
    engine: TcpEngine, tcb: Tcb, seg: TcpRepr, data: memoryview, now: int
) -> None:
    """SYN-RECEIVED and every later state (RFC 9293 §3.10.7.4)."""
    flags = seg.flags
    state = tcb.state
    if state == SYN_RECEIVED and flags & SYN and not flags & ACK and seg.seq == tcb.irs:
        # The peer did not see our SYN-ACK: send it again (as Linux does).
        engine.queue_control(tcb)
        return
    if (
        state == SYN_RECEIVED
        and tcb.listener is None
        and seg.seq == tcb.irs
        and (flags & (SYN | ACK) == SYN | ACK)
    ):
        # Simultaneous open (RFC 9293 §3.5 figure 8, line 6): the peer's
        # SYN-ACK repeats the SYN we have; its ACK completes our side.
        seg = dataclasses.replace(seg, seq=tcb.rcv_nxt, flags=flags & ~SYN)
        flags = seg.flags
    if not _passes_paws(engine, tcb, seg, now):
        return
    seg_len = len(data) + (flags & SYN and 1) + (flags & FIN and 1)
    if not _acceptable(tcb, seg.seq, seg_len) and not (
        flags & RST and _rst_in_window(tcb, seg.seq)
    ):
        if flags & SYN:
            engine.challenge_ack(tcb, now)  # RFC 5961 §4.2, in or out of window
        elif not flags & RST:
            _answer_unacceptable(engine, tcb, seg, data, now)
        engine.drop(TcpDropReason.TCP_OUT_OF_WINDOW)
        return
    _record_timestamp(tcb, seg, now)
    if flags & RST:
        _reset_arrives(engine, tcb, seg, now)
        return
    if flags & SYN:
        # RFC 5961 §4.2: any SYN on a synchronized connection is challenged.
        engine.challenge_ack(tcb, now)
        engine.drop(TcpDropReason.TCP_SYN_CHALLENGED)
        return
    if not flags & ACK:
        engine.drop(TcpDropReason.TCP_NO_ACK)
        return
    if state == TIME_WAIT:
        # Everything both ways is acknowledged: an acceptable segment changes
        # nothing (Linux's TCP_TW_SUCCESS) but a FIN, which is re-acknowledged
        # (RFC 9293 §3.10.7.4). No buffer or congestion state is needed here,
        # which is what lets a closed TCB shed them (TcpEngine.enter_time_wait).
        if flags & FIN:
            engine.ack_now(tcb)
            engine.restart_time_wait(tcb, now)
        return
    tcb.last_receive = now
    tcb.keepalive_sent = 0
    if state == SYN_RECEIVED and not _ack_syn_received(engine, tcb, seg, len(data), now):
        return
    if not _process_ack(engine, tcb, seg, len(data), now):
        return
    if _after_ack(engine, tcb, now):
        return  # the connection is gone (LAST-ACK completed)
    if data:
        _receive_text(engine, tcb, seg, data, now)
    if flags & FIN:
        fin_seq = seq_add(seg.seq, len(data))
        if fin_seq == tcb.rcv_nxt:
            _fin_arrives(engine, tcb, now)
        elif seq_gt(fin_seq, tcb.rcv_nxt):
            tcb.peer_fin_seq = fin_seq  # consumed once the hole is filled


def _answer_unacceptable(
    engine: TcpEngine, tcb: Tcb, seg: TcpRepr, data: memoryview, now: int
) -> None:
    """RFC 9293 §3.10.7.4: an unacceptable segment gets an ACK; a FIN in
    TIME-WAIT also restarts 2 MSL. Data we already had is a duplicate, told
    as the first SACK block at once (RFC 2883 §4), so the sender can see
    its retransmission was not needed.

    A copy of bytes we already ACKed sets TS.Recent (`_resends_acked`), so
    our answer echoes the copy's TSval.

    A segment that occupies no sequence space (a bare ACK) is answered at
    most once per `invalid_ack_interval_us`, shared with challenge ACKs, as
    Linux does (tcp_oow_rate_limited): two stacks that disagree about the
    window would otherwise ACK each other's ACKs for ever, and a peer
    spraying stale ACKs would draw one ACK from us for each. Data and FINs
    are always answered: that ACK is what repairs a lost one."""
    if not data and not seg.flags & FIN:
        if now < tcb.invalid_ack_allowed_at:
            engine.counters[TcpCounter.OUT_OF_WINDOW_ACKS_LIMITED] += 1
            return
        tcb.invalid_ack_allowed_at = now + engine.settings.invalid_ack_interval_us
    end = seq_add(seg.seq, len(data))
    if _resends_acked(tcb, seg, end):
        _record_timestamp(tcb, seg, now)
    duplicate = bool(data) and seq_le(end, tcb.rcv_nxt)
    if duplicate:
        # Most likely our ACK was lost: ACK the next segments at once too,
        # as Linux does (tcp_enter_quickack_mode), so a lossy path back to
        # the sender still carries enough ACKs.
        tcb.quickack = engine.settings.quickack_segments
    if duplicate and tcb.sack_enabled:
        tcb.dsack = (seg.seq, end)
        output.send_ack(engine, tcb, now)
    else:
        engine.ack_now(tcb)
    if tcb.state == TIME_WAIT and seg.flags & FIN:
        engine.restart_time_wait(tcb, now)


def _resends_acked(tcb: Tcb, seg: TcpRepr, end: int) -> bool:
    """Whether an unacceptable segment is the sender's copy of bytes (or a
    FIN) we ACKed in an ACK it never got: its TSval is then recorded, so the
    sender times the round trip of this copy, not the one since its first.
    Echoing the older TSval hands a Linux sender (which times an ACK of
    retransmitted data by TSecr alone, Karn's rule) a sample spanning its
    whole RTO backoff: at 20% loss, 30 s and 143 s samples were seen, and
    its RTO balloons with them, so every later loss costs minutes.

    RFC 7323 §5.3 records TS.Recent only for an acceptable segment (R2
    before R3), and Linux only for one whose right edge reaches rcv_wup
    (tcp_sequence), our Last.ACK.sent. That misses the common case at high
    loss: our ACK of a filled hole is lost, and the sender's next timeout
    resends the hole's first segment, which ends below Last.ACK.sent. So a
    copy is taken from up to one largest window below Last.ACK.sent (no
    sender can have more outstanding), with an ACK field the sender could
    send (RFC 5961 §5.2). A blind segment must then guess both the sequence
    and the acknowledgment numbers within a window, as RFC 5961 makes it for
    data, before it can push TS.Recent ahead (and fail PAWS for every
    genuine segment after it)."""
    length = seq_sub(end, seg.seq) + (seg.flags & FIN and 1)
    if not length:
        return False  # a bare ACK is no copy of anything
    if seq_sub(tcb.last_ack_sent, seg.seq) > 0xFFFF << tcb.rcv_wscale:
        return False
    ack = seg.ack
    return seq_le(ack, tcb.snd_max) and seq_ge(ack, seq_add(tcb.snd_una, -tcb.max_snd_wnd))


def _rst_in_window(tcb: Tcb, seq: int) -> bool:
    """RFC 5961 §3.2 judges a RST against "the current receive window"; the
    peer aims it at the window it knows: from our last ACK (bytes we took
    since, it has not heard of) up to and including the right edge we
    advertised (Linux's RSTs go there when their SND.NXT lies beyond it:
    tcp_acceptable_seq). Dropping such a RST silently would leave the
    connection open for ever; it gets a challenge ACK instead, whose answer
    is a RST at exactly RCV.NXT. Linux checks a RST the same way
    (tcp_sequence, from rcv_wup)."""
    return seq_le(tcb.last_ack_sent, seq) and seq_le(seq, tcb.rcv_adv)


def _passes_paws(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, now: int) -> bool:
    """RFC 7323 §5.3 R1: reject a segment whose TSval is older than TS.Recent."""
    timestamps = seg.options.timestamps
    if not tcb.ts_enabled or timestamps is None or seg.flags & RST:
        return True
    tsval = timestamps[0]
    if seq_lt(tsval, tcb.ts_recent) and now - tcb.ts_recent_age < PAWS_IDLE_US:
        engine.ack_now(tcb)
        engine.drop(TcpDropReason.TCP_PAWS_REJECT)
        return False
    return True


def _record_timestamp(tcb: Tcb, seg: TcpRepr, now: int) -> None:
    """RFC 7323 §5.3 R3 / §4.3 (2): only an acceptable segment starting at or
    before Last.ACK.sent sets TS.Recent, so a blind segment cannot poison
    PAWS and a delayed ACK echoes the earliest unacknowledged TSval."""
    timestamps = seg.options.timestamps
    if not tcb.ts_enabled or timestamps is None:
        return
    if seq_le(seg.seq, tcb.last_ack_sent) and seq_ge(timestamps[0], tcb.ts_recent):
        tcb.ts_recent = timestamps[0]
        tcb.ts_recent_age = now


def _reset_arrives(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, now: int) -> None:
    """RFC 5961 §3.2: only a RST exactly at RCV.NXT resets; any other
    in-window RST gets a challenge ACK."""
    if seg.seq != tcb.rcv_nxt:
        engine.challenge_ack(tcb, now)
        engine.drop(TcpDropReason.TCP_RST_CHALLENGED)
        return
    engine.counters[TcpCounter.RESETS_IN] += 1
    state = tcb.state
    if state == SYN_RECEIVED:
        engine.counters[TcpCounter.ATTEMPT_FAILS] += 1
        if tcb.listener is not None:
            engine.destroy(tcb)  # passive open: back to LISTEN (RFC 9293)
            return
        engine.abort(tcb, errno.ECONNREFUSED, False, now)
        return
    if state in (ESTABLISHED, CLOSE_WAIT):
        engine.counters[TcpCounter.ESTABLISHED_RESETS] += 1
    if state in (CLOSING, LAST_ACK, TIME_WAIT):
        engine.destroy(tcb)
        return
    engine.abort(tcb, errno.ECONNRESET, False, now)


def _ack_syn_received(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, data_len: int, now: int) -> bool:
    if not (seq_lt(tcb.snd_una, seg.ack) and seq_le(seg.ack, tcb.snd_nxt)):
        engine.reply_reset(tcb.remote_ip, seg, data_len)
        engine.drop(TcpDropReason.TCP_BAD_ACK)
        return False
    listener = tcb.listener
    if listener is not None and listener.accept_full():
        engine.counters[TcpCounter.LISTEN_OVERFLOWS] += 1
        engine.drop(TcpDropReason.TCP_LISTEN_QUEUE_OVERFLOW)
        return False  # stay half-open; our SYN-ACK retransmission retries
    _update_window(tcb, seg)
    engine.establish(tcb, now)
    return True


def _process_ack(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, data_len: int, now: int) -> bool:
    """RFC 9293 §3.10.7.4 fifth step, with RFC 5961 §5.2 and loss detection:
    RACK-TLP with SACK (RFC 8985), NewReno without (RFC 5681, RFC 6582).
    False: drop the rest of the segment."""
    ack = seg.ack
    if seq_gt(ack, tcb.snd_max):
        engine.ack_now(tcb)
        engine.drop(TcpDropReason.TCP_BAD_ACK)
        return False
    if seq_lt(ack, seq_add(tcb.snd_una, -tcb.max_snd_wnd)):
        engine.challenge_ack(tcb, now)
        engine.drop(TcpDropReason.TCP_BAD_ACK)
        return False
    if tcb.sack_enabled:
        _sack_ack(engine, tcb, seg, data_len, now)
    elif seq_gt(ack, tcb.snd_una):
        _new_ack(engine, tcb, seg, now)
    elif ack == tcb.snd_una and _is_duplicate(tcb, seg, data_len):
        _duplicate_ack(engine, tcb, seg, now)
    _update_window(tcb, seg)
    if (
        tcb.sendable()
        or (tcb.fin_seq >= 0 and seq_le(tcb.snd_nxt, tcb.fin_seq))
        or (tcb.in_recovery)
    ):
        engine.queue_data(tcb)  # the ACK may have opened cwnd or the window
    return True


def _is_duplicate(tcb: Tcb, seg: TcpRepr, data_len: int) -> bool:
    """RFC 5681 §2 DUPLICATE ACKNOWLEDGMENT (window unchanged, no data, no
    SYN/FIN, data outstanding); with SACK, any ACK carrying SACK blocks
    while data is outstanding counts (RFC 6675 §2 DupAck)."""
    if tcb.snd_una == tcb.snd_max or data_len or seg.flags & (SYN | FIN):
        return False
    if tcb.sack_enabled and seg.options.sack_blocks:
        return True
    return (seg.window << tcb.snd_wscale) == tcb.snd_wnd


def _sack_ack(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, data_len: int, now: int) -> None:
    """An ACK on a SACK connection: the scoreboard takes the cumulative ACK
    and the blocks, RACK-TLP decides what is lost (tcp/recovery.py)."""
    acked = seq_sub(seg.ack, tcb.snd_una) if seq_gt(seg.ack, tcb.snd_una) else 0
    in_flight = tcb.in_flight()
    acked_data = _acknowledge(engine, tcb, seg, now) if acked else 0
    tcb.scoreboard.on_ack(acked, _sack_offsets(tcb, seg), seq_sub(tcb.snd_max, tcb.snd_una))
    if acked:
        tcb.dup_acks = 0
    elif _is_duplicate(tcb, seg, data_len):
        tcb.dup_acks += 1  # only for limited transmit (RFC 3042): RACK decides losses
    in_recovery = tcb.in_recovery
    if in_recovery and seq_ge(seg.ack, tcb.recover):
        recovery.on_full_ack(engine, tcb, now)
    elif in_recovery and acked:
        engine.counters[TcpCounter.PARTIAL_ACKS] += 1
    recovery.on_ack(engine, tcb, seg, acked, now)
    if acked and not in_recovery and not tcb.in_recovery:
        if acked_data:
            tcb.cc.on_ack(acked_data, now, tcb.rtt.srtt_us, in_flight)
        recovery.schedule_loss_probe(engine, tcb, now)


def _sack_offsets(tcb: Tcb, seg: TcpRepr) -> list[tuple[int, int]]:
    """The ACK's SACK blocks as offsets from SND.UNA (already moved by the
    ACK), for the scoreboard: blocks within what was sent, and a first
    block at or below SND.UNA as negative offsets, since that is a D-SACK
    (RFC 2883 §4) telling a retransmission was not needed."""
    una = tcb.snd_una
    offsets = []
    for left, right in seg.options.sack_blocks:
        if not seq_lt(left, right):
            continue
        if seq_gt(right, una):
            if seq_le(right, tcb.snd_max):
                offsets.append((seq_sub(left, una), seq_sub(right, una)))
        elif not offsets:
            offsets.append((-seq_sub(una, left), -seq_sub(una, right)))
    return offsets


def _acknowledge(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, now: int) -> int:
    """Move SND.UNA to SEG.ACK: free acknowledged bytes, take an RTT sample,
    keep or stop the retransmission timer (RFC 6298 (5.2), (5.3)). Returns
    the application bytes acknowledged."""
    ack = seg.ack
    if tcb.rtt_seq >= 0 and seq_gt(ack, tcb.rtt_seq):
        measured = now - tcb.rtt_start  # µs-precise, never a resent segment (Karn)
        tcb.rtt.sample(measured)
        engine.rtt_histogram.observe(measured)
        tcb.rtt_seq = -1
    elif tcb.ts_enabled and seg.options.timestamps is not None and seg.options.timestamps[1]:
        # RFC 7323 §4.1: the echoed TSval times even retransmissions, so a
        # backed-off RTO recovers on the first new ACK after a timeout.
        elapsed_ms = seq_sub(output.timestamp_value(tcb, now), seg.options.timestamps[1])
        if elapsed_ms < 0x7FFFFFFF:
            tcb.rtt.sample(max(elapsed_ms, 1) * 1000)
            engine.rtt_histogram.observe(max(elapsed_ms, 1) * 1000)
    tcb.rtt.on_new_ack()
    acked_data = 0
    if seq_gt(ack, tcb.buf_seq):
        acked_data = min(seq_sub(ack, tcb.buf_seq), len(tcb.send_buffer))
        if acked_data:
            tcb.send_buffer.acknowledge(acked_data)
            tcb.buf_seq = seq_add(tcb.buf_seq, acked_data)
    tcb.snd_una = ack
    if seq_lt(tcb.snd_nxt, ack):
        tcb.snd_nxt = ack
    tcb.retransmits = 0
    if tcb.snd_una == tcb.snd_max:
        engine.cancel_rto(tcb)
    else:
        engine.arm_rto(tcb, now)
    if acked_data:
        engine.notify(tcb)
    return acked_data


def _new_ack(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, now: int) -> None:
    """NewReno (no SACK): an ACK of new data."""
    acked = seq_sub(seg.ack, tcb.snd_una)
    in_flight = tcb.in_flight()
    acked_data = _acknowledge(engine, tcb, seg, now)
    cc = tcb.cc
    if not tcb.in_recovery:
        tcb.dup_acks = 0
        if acked_data:
            cc.on_ack(acked_data, now, tcb.rtt.srtt_us, in_flight)
        return
    if seq_ge(seg.ack, tcb.recover):
        # Full acknowledgment: recovery is over (RFC 6582 §3.2 step 3).
        tcb.in_recovery = False
        tcb.dup_acks = 0
        cc.on_recovery_exit(now)
        return
    engine.counters[TcpCounter.PARTIAL_ACKS] += 1
    # RFC 6582 §3.2 step 5: resend the next hole, deflate the window by
    # what was acknowledged, add back one MSS if at least that much.
    output.retransmit(engine, tcb, now, 0, tcb.mss)
    cc.cwnd = max(cc.cwnd - acked + (tcb.mss if acked >= tcb.mss else 0), tcb.mss)


def _duplicate_ack(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, now: int) -> None:
    """NewReno (no SACK): a duplicate ACK."""
    tcb.dup_acks += 1
    if tcb.in_recovery:
        tcb.cc.cwnd += tcb.mss  # RFC 6582 §3.2 step 4: inflation
        return
    if tcb.dup_acks >= _dup_threshold(tcb):
        _enter_recovery(engine, tcb, now)


def _dup_threshold(tcb: Tcb) -> int:
    """Three duplicate ACKs (RFC 5681 §3.2), fewer when so few segments are
    outstanding and no new data waits that three can never arrive: early
    retransmit (RFC 5827 §3.1)."""
    if tcb.sendable():
        return 3
    outstanding = (tcb.in_flight() + tcb.mss - 1) // tcb.mss
    # With one segment out no duplicate ACK can come from our own data.
    return outstanding - 1 if 2 <= outstanding < 4 else 3


def _enter_recovery(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """Fast retransmit without SACK (RFC 5681 §3.2; RFC 6582 §3.2 step 2)."""
    engine.counters[TcpCounter.FAST_RETRANSMITS] += 1
    tcb.in_recovery = True
    tcb.recover = tcb.snd_max
    cc = tcb.cc
    cc.on_loss(now, tcb.in_flight())
    output.retransmit(engine, tcb, now, 0, tcb.mss)
    cc.cwnd = cc.ssthresh + 3 * tcb.mss
    engine.arm_rto(tcb, now)


def _update_window(tcb: Tcb, seg: TcpRepr) -> None:
    """RFC 9293 §3.10.7.4: take the window from the newest segment only."""
    if seq_lt(tcb.snd_wl1, seg.seq) or (tcb.snd_wl1 == seg.seq and seq_le(tcb.snd_wl2, seg.ack)):
        window = seg.window << tcb.snd_wscale
        tcb.snd_wnd = window
        tcb.snd_wl1 = seg.seq
        tcb.snd_wl2 = seg.ack
        if window > tcb.max_snd_wnd:
            tcb.max_snd_wnd = window


def _after_ack(engine: TcpEngine, tcb: Tcb, now: int) -> bool:
    """State changes our FIN's acknowledgment causes. True if the
    connection is gone."""
    if tcb.fin_seq < 0 or not seq_gt(tcb.snd_una, tcb.fin_seq):
        return False
    state = tcb.state
    if state == FIN_WAIT_1:
        engine.set_state(tcb, FIN_WAIT_2)
        engine.notify(tcb)
        if tcb.app_closed:
            engine.arm_fin_wait_2(tcb, now)
    elif state == CLOSING:
        engine.enter_time_wait(tcb, now)
    elif state == LAST_ACK:
        engine.destroy(tcb)
        return True
    return False


def _receive_text(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, data: memoryview, now: int) -> None:
    """RFC 9293 §3.10.7.4 seventh step: keep in-window bytes, ACK policy."""
    if tcb.state not in RECEIVES_DATA:
        return  # the peer's FIN came first: the text is ignored
    if tcb.app_closed:
        # Nobody will read it: tell the peer at once (RFC 9293 §3.10.4, Linux).
        engine.drop(TcpDropReason.TCP_DATA_AFTER_CLOSE)
        engine.abort(tcb, errno.ECONNRESET, True, now)
        return
    offset = 0
    if seq_lt(seg.seq, tcb.rcv_nxt):
        if tcb.sack_enabled:
            tcb.dsack = (seg.seq, tcb.rcv_nxt)  # RFC 2883 §4: the part we had
        data = data[seq_sub(tcb.rcv_nxt, seg.seq) :]
    else:
        offset = seq_sub(seg.seq, tcb.rcv_nxt)
    buffer = tcb.receive_buffer
    room = buffer.capacity - buffer.readable() - offset
    if room < len(data):
        if room <= 0:
            engine.drop(TcpDropReason.TCP_RCV_BUFFER_FULL)
            engine.ack_now(tcb)
            return
        data = data[:room]
    filling = buffer.has_out_of_order()
    advanced = buffer.accept(offset, data) if data else 0
    if data and buffer.refused:
        # Not all of it taken: no out-of-order range slot left, or the
        # instance's buffer memory is short (tcp/buffers.py). The sender
        # sends it again; what was taken stays (nothing SACKed is reneged).
        engine.drop(TcpDropReason.TCP_RCV_BUFFER_FULL)
        engine.ack_now(tcb)
    if advanced:
        if now - tcb.data_received_at > tcb.rtt.rto_us:
            # A gap longer than the sender's RTO: it is restarting from a
            # timeout, in slow start, and a delayed ACK would cost it a
            # whole round (Linux: tcp_event_data_recv).
            tcb.quickack = engine.settings.quickack_segments
        tcb.data_received_at = now
        tcb.rcv_nxt = seq_add(tcb.rcv_nxt, advanced)
        engine.notify(tcb)
        if tcb.peer_fin_seq >= 0 and tcb.rcv_nxt == tcb.peer_fin_seq:
            _fin_arrives(engine, tcb, now)
    if offset or filling or tcb.dsack is not None:
        # RFC 5681 §4.2: out of order, filling a hole, or a duplicate, each
        # ACKed at once with the SACK of its own arrival (RFC 2018 §4) or its
        # D-SACK; sent after RCV.NXT moved, so a filled hole is acknowledged.
        output.send_ack(engine, tcb, now)
    elif advanced:
        engine.schedule_ack(tcb, now, len(data) >= tcb.mss)


def _fin_arrives(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """RFC 9293 §3.10.7.4 eighth step."""
    tcb.rcv_nxt = seq_add(tcb.rcv_nxt, 1)
    tcb.peer_fin_seq = -1
    tcb.fin_received = True
    engine.ack_now(tcb)
    engine.notify(tcb)
    state = tcb.state
    if state in (SYN_RECEIVED, ESTABLISHED):
        engine.set_state(tcb, CLOSE_WAIT)
    elif state == FIN_WAIT_1:
        if tcb.fin_seq >= 0 and seq_gt(tcb.snd_una, tcb.fin_seq):
            engine.enter_time_wait(tcb, now)
        else:
            engine.set_state(tcb, CLOSING)
    elif state == FIN_WAIT_2:
        engine.enter_time_wait(tcb, now)
    elif state == TIME_WAIT:
        engine.restart_time_wait(tcb, now)
