"""Loss recovery with SACK: RACK-TLP (RFC 8985) deciding what is lost, the
scoreboard's pipe deciding how much may be resent (RFC 6675 §5).

The engine calls in here from three places: an ACK (`on_ack`, after the
scoreboard took it), the RACK reordering timer (`detect_losses`) and the
tail loss probe timer (`send_loss_probe`); `resend_lost` runs in the flush.
Connections without SACK keep NewReno (RFC 6582, in input.py): RACK needs
SACK to see what arrived above a hole, and a probe without it can only
produce a duplicate ACK.

Choices:
- The first retransmission of a recovery goes out at once, whatever the
  pipe says (RFC 6675 §5 (4.2)); the rest only as the pipe leaves room.
  New data in recovery is also limited by the pipe (output.send_data).
- PTO = 2 SRTT, plus the peer's worst-case delayed ACK when one segment is
  out (RFC 8985 §7.2), and at least TLP_MIN_US: our timers tick in
  milliseconds and a Linux peer's delayed ACK fires after 40 ms. It never
  runs past the RTO: a probe due later fires when the RTO would, instead of
  it (one segment resent, cwnd kept), and re-arms the RTO.
- A probe sends one new segment if the peer's window takes it (congestion
  window notwithstanding), else resends the last one sent (§7.3).
- A probe that resent data and was acknowledged without a D-SACK repaired
  a real loss: cwnd is reduced once, as one loss costs (§7.4.2). A recovery
  entered while a probe is out was triggered by the probe's ACK. Both count
  as TLP_RECOVERIES.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stackservice.tcp import output
from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.segment import TcpRepr, seq_ge, seq_le, seq_sub
from stackservice.tcp.state import SENDS_DATA
from stackservice.tcp.tcb import Tcb

if TYPE_CHECKING:
    from stackservice.tcp.engine import TcpEngine

WORST_CASE_DELAYED_ACK_US = 200_000  # RFC 8985 §7.2 WCDelAckT
TLP_MIN_US = 10_000


def on_ack(engine: TcpEngine, tcb: Tcb, seg: TcpRepr, acked: int, now: int) -> None:
    """RACK's view of an ACK the scoreboard just took (RFC 8985 §6.2 steps
    1-5, §7.4.2): update RACK, settle a tail loss probe, detect losses."""
    board, rack = tcb.scoreboard, tcb.rack
    echoed_ms = -1
    timestamps = seg.options.timestamps
    if tcb.ts_enabled and timestamps is not None and timestamps[1]:
        echoed_ms = seq_sub(timestamps[1], tcb.ts_offset)
    rack.on_ack(board, now, echoed_ms)
    if acked:
        rack.on_una(board.base)
    if board.dsack:
        rack.on_dsack(board.base + seq_sub(tcb.snd_nxt, tcb.snd_una))
    if tcb.tlp_end >= 0 and seq_ge(seg.ack, tcb.tlp_end):
        _probe_answered(engine, tcb, board.dsack, now)
    detect_losses(engine, tcb, now)


def detect_losses(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """RFC 8985 §6.2 step 5 (also the RACK reordering timer's action): mark
    what RACK deems lost, start recovery for it, arm the timer for what
    may be deemed lost later."""
    board, rack = tcb.scoreboard, tcb.rack
    deadline = 0
    if rack.may_have_losses(board):
        reo_wnd = rack.reo_wnd(board, tcb.in_recovery, tcb.rtt.srtt_us or 0)
        lost: list = []
        timeout = rack.detect_losses(board, now, reo_wnd, lost)
        if timeout:
            deadline = now + timeout
        if lost:
            counters = engine.counters
            counters[TcpCounter.RACK_LOSSES] += len(lost)
            for segment in lost:
                if board.mark_lost(segment):
                    counters[TcpCounter.LOST_RETRANSMITS] += 1
            if not tcb.in_recovery:
                _enter_recovery(engine, tcb, now)
            engine.queue_data(tcb)
    if deadline != tcb.reorder_deadline:
        tcb.reorder_deadline = deadline
        engine.rearm(tcb)


def _enter_recovery(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """Fast recovery (RFC 6675 §5 (4)): reduce cwnd once, resend the first
    lost segment now."""
    counters = engine.counters
    counters[TcpCounter.FAST_RETRANSMITS] += 1
    counters[TcpCounter.SACK_RECOVERIES] += 1
    if tcb.tlp_end >= 0:
        counters[TcpCounter.TLP_RECOVERIES] += 1
        tcb.tlp_end = -1
    tcb.in_recovery = True
    tcb.recover = tcb.snd_max
    tcb.cc.on_loss(now, tcb.in_flight())
    _cancel_loss_probe(engine, tcb)
    first = tcb.scoreboard.next_lost()
    if first is not None:
        output.retransmit(engine, tcb, now, first[0], first[1])
    engine.arm_rto(tcb, now)


def on_full_ack(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """An ACK at or past the recovery point: recovery is over (RFC 6675 §5,
    RFC 6582 §3.2 step 3)."""
    tcb.in_recovery = False
    tcb.dup_acks = 0
    tcb.cc.on_recovery_exit(now)
    tcb.rack.on_recovery_exit()


def resend_lost(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """RFC 6675 §5 (C) with RACK's marks: while the pipe leaves room for a
    segment, resend the next one deemed lost; new data follows in send_data."""
    board = tcb.scoreboard
    high_data = seq_sub(tcb.snd_max, tcb.snd_una)
    while tcb.cc.cwnd - board.pipe(high_data) >= tcb.mss:
        chosen = board.next_lost()
        if chosen is None or not output.retransmit(engine, tcb, now, chosen[0], chosen[1]):
            break


# ------------------------------------------------------------ tail loss probe


def schedule_loss_probe(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """RFC 8985 §7.2: after new data went out or an ACK took some, arm the
    probe timeout, unless recovery, a probe or the RACK timer is under way."""
    deadline = 0
    if (
        tcb.sack_enabled
        and not tcb.in_recovery
        and tcb.tlp_end < 0
        and not tcb.reorder_deadline
        and tcb.state in SENDS_DATA
        and tcb.snd_una != tcb.snd_max
        and tcb.rtt.srtt_us
    ):
        pto = 2 * tcb.rtt.srtt_us
        if tcb.in_flight() <= tcb.mss:
            pto += WORST_CASE_DELAYED_ACK_US
        deadline = now + max(pto, TLP_MIN_US)
        if tcb.rto_deadline and deadline > tcb.rto_deadline:
            deadline = tcb.rto_deadline  # the probe goes first; it re-arms the RTO
    if deadline != tcb.loss_probe_deadline:
        tcb.loss_probe_deadline = deadline
        engine.rearm(tcb)


def _cancel_loss_probe(engine: TcpEngine, tcb: Tcb) -> None:
    if tcb.loss_probe_deadline:
        tcb.loss_probe_deadline = 0
        engine.rearm(tcb)


def send_loss_probe(engine: TcpEngine, tcb: Tcb, now: int) -> None:
    """The probe timeout fired (RFC 8985 §7.3): one segment to draw an ACK
    (with SACK blocks) out of the peer, so RACK can see a lost tail."""
    if tcb.in_recovery or tcb.state not in SENDS_DATA or tcb.snd_una == tcb.snd_max:
        return
    room = tcb.snd_wnd - tcb.in_flight()
    fin_due = tcb.fin_seq >= 0 and seq_le(tcb.snd_nxt, tcb.fin_seq)
    new_data = min(tcb.sendable(), tcb.mss, room)
    if new_data > 0 or (fin_due and tcb.snd_nxt == tcb.fin_seq and not tcb.sendable()):
        output.send_chunk(engine, tcb, now, max(new_data, 0), fin_due)
        tcb.tlp_retransmitted = False
    else:
        last = tcb.scoreboard.last_sent()
        if last is None:
            return
        output.retransmit(engine, tcb, now, last[0], last[1])
        tcb.tlp_retransmitted = True
    engine.counters[TcpCounter.TLP_PROBES] += 1
    tcb.tlp_end = tcb.snd_max
    engine.arm_rto(tcb, now)


def _probe_answered(engine: TcpEngine, tcb: Tcb, dsack: bool, now: int) -> None:
    """RFC 8985 §7.4.2: the ACK covers the probe. A resent probe answered
    without a D-SACK means the original was lost and the probe repaired it:
    the loss still costs a cwnd reduction."""
    if tcb.tlp_retransmitted and not dsack and not tcb.in_recovery:
        engine.counters[TcpCounter.TLP_RECOVERIES] += 1
        tcb.cc.on_loss(now, tcb.in_flight())
        tcb.cc.on_recovery_exit(now)
    tcb.tlp_end = -1


def on_timeout(tcb: Tcb) -> None:
    """An RTO ends any probe and reordering wait (RFC 8985 §6.3, §7.5); the
    scoreboard starts over (RFC 2018 §5) as everything is resent."""
    tcb.tlp_end = -1
    tcb.reorder_deadline = tcb.loss_probe_deadline = 0
    tcb.scoreboard.reset()
