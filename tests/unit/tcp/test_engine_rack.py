"""RACK-TLP loss detection on the sending side (RFC 8985), with SACK.

Every flight here leaves at one instant, so "sent after" is decided by
sequence (RFC 8985 §6.2 RACK_sent_after); the peer's ACKs come 1 ms apart.
"""

from __future__ import annotations

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.rack import Rack
from stackservice.tcp.sack import Scoreboard
from tests.unit.tcp._rig import MS, Rig
from tests.unit.tcp._states import MIN_RTO, SACK_ONLY, Conn, established, seq

MSS = 1460


def sack_flight(rig: Rig, segments: int) -> Conn:
    """ESTABLISHED with SACK (no timestamps), `segments` full segments S0..
    sent at conn.now."""
    conn = established(rig, options=SACK_ONLY)
    rig.engine.send(conn.tcb, bytes(segments * MSS), conn.now)
    assert len(conn.flush(conn.now)) == segments
    return conn


def at(conn: Conn, segment: int) -> int:
    return seq(conn.ack, segment * MSS)


def blocks(conn: Conn, *runs: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """SACK blocks for runs of segments [first, last), most recent first."""
    return tuple((at(conn, first), at(conn, last)) for first, last in runs)


def resent(sent) -> list[tuple[int, int]]:
    return [(s.seg.seq, len(s.payload)) for s in sent]


def test_rack_marks_hole_lost_after_reordering_window() -> None:
    """RFC 8985 §6.2: one SACK above a hole is not yet a loss (it may be
    reordering); once RACK.rtt + reo_wnd (min_RTT / 4) has passed since the
    hole was sent, it is, and it is resent at once: no RTO, no three
    duplicate ACKs."""
    rig = Rig()
    conn = sack_flight(rig, 6)
    t0 = conn.now
    conn.deliver(t0 + MS, ack=at(conn, 1))  # S0 (RACK.min_RTT = 1 ms)
    conn.deliver(t0 + 2 * MS, ack=at(conn, 1), sack=blocks(conn, (2, 3)))
    assert conn.flush(conn.now) == []
    reo_wnd = MS // 4
    assert conn.flush(t0 + 2 * MS + reo_wnd - 1) == []
    assert resent(conn.flush(t0 + 2 * MS + reo_wnd)) == [(at(conn, 1), MSS)]
    assert conn.tcb.in_recovery
    assert rig.counted(TcpCounter.RACK_LOSSES) == 1
    assert rig.counted(TcpCounter.TIMEOUTS) == 0


def test_rack_reordering_seen_waits_window_despite_three_sacked() -> None:
    """RFC 8985 §6.2 steps 3-4: once the path reordered (a segment arrived
    below the highest SACKed one without being resent), three SACKed
    segments above a hole no longer make it lost at once: RACK waits the
    reordering window."""
    rig = Rig()
    conn = sack_flight(rig, 10)
    t0 = conn.now
    conn.deliver(t0 + MS, ack=at(conn, 1))
    conn.deliver(t0 + 2 * MS, ack=at(conn, 1), sack=blocks(conn, (2, 3)))
    conn.deliver(t0 + 2 * MS + 100, ack=at(conn, 3))  # S1 was only late
    assert conn.flush(conn.now) == []
    assert conn.tcb.rack.reordering_seen
    t = conn.now
    for last in (5, 6, 7):  # S3 missing, three segments SACKed above it
        conn.deliver(t, ack=at(conn, 3), sack=blocks(conn, (4, last)))
    assert conn.flush(t) == []
    assert conn.tcb.reorder_deadline > t
    sent = conn.flush(conn.tcb.reorder_deadline)
    assert resent(sent) == [(at(conn, 3), MSS)]
    assert rig.counted(TcpCounter.TIMEOUTS) == 0


def test_rack_lost_retransmission_detected_without_rto() -> None:
    """RFC 8985 §6 (lost retransmissions): S1's retransmission is lost too.
    When a segment sent after that retransmission is SACKed, S1 is deemed
    lost again and resent a third time, long before any RTO."""
    rig = Rig()
    conn = sack_flight(rig, 10)
    t0 = conn.now
    conn.deliver(t0 + MS, ack=at(conn, 1))
    for last in (3, 4, 5):
        conn.deliver(t0 + 2 * MS, ack=at(conn, 1), sack=blocks(conn, (2, last)))
    t1 = conn.now
    assert resent(conn.flush(t1)) == [(at(conn, 1), MSS)]  # first retransmission
    for last in range(6, 11):
        conn.deliver(t1 + MS, ack=at(conn, 1), sack=blocks(conn, (2, last)))
    rig.engine.send(conn.tcb, bytes(MSS), conn.now)  # new data, sent after the resend
    sent = conn.flush(conn.now)
    assert resent(sent) == [(at(conn, 10), MSS)]
    t2 = conn.now
    conn.deliver(t2 + MS, ack=at(conn, 1), sack=blocks(conn, (10, 11), (2, 10)))
    assert resent(conn.flush(conn.now)) == [(at(conn, 1), MSS)]  # resent again
    assert conn.now < t0 + MIN_RTO
    assert rig.counted(TcpCounter.LOST_RETRANSMITS) == 1
    assert rig.counted(TcpCounter.TIMEOUTS) == 0
    conn.deliver(conn.now + MS, ack=at(conn, 11))
    assert conn.flush(conn.now) == []
    assert not conn.tcb.in_recovery


def _raise_srtt(conn: Conn, rig: Rig, rtt: int) -> None:
    """Exchanges with a `rtt` round trip until SRTT is at least 2/3 of it."""
    while conn.tcb.rtt.srtt_us < rtt * 2 // 3:
        rig.engine.send(conn.tcb, b"x", conn.now)
        conn.flush(conn.now)
        conn.ack = seq(conn.ack, 1)
        conn.deliver(conn.now + rtt)
        conn.flush(conn.now)


def test_tlp_fires_after_two_srtt_and_resends_the_last_segment() -> None:
    """RFC 8985 §7.2-7.3: the whole tail is lost, no ACK comes back. After
    PTO = 2 SRTT a probe resends the last segment (nothing new to send);
    the RTO is pushed back behind it."""
    rig = Rig()
    conn = established(rig, options=SACK_ONLY)
    _raise_srtt(conn, rig, 30 * MS)
    srtt = conn.tcb.rtt.srtt_us
    rig.engine.send(conn.tcb, bytes(4 * MSS), conn.now)
    t0 = conn.now
    assert len(conn.flush(t0)) == 4
    assert conn.flush(t0 + 2 * srtt - 1) == []
    assert resent(conn.flush(t0 + 2 * srtt)) == [(at(conn, 3), MSS)]
    assert rig.counted(TcpCounter.TLP_PROBES) == 1
    assert conn.tcb.rto_deadline > t0 + 2 * srtt + MIN_RTO - MS
    assert rig.counted(TcpCounter.TIMEOUTS) == 0


def test_tlp_sends_new_data_when_the_window_allows() -> None:
    """RFC 8985 §7.3: with unsent data the peer's window takes, the probe is
    the next new segment (cwnd notwithstanding), not a retransmission."""
    rig = Rig()
    conn = sack_flight(rig, 10)  # the initial window: 10 of 12 segments
    rig.engine.send(conn.tcb, bytes(2 * MSS), conn.now)
    assert conn.flush(conn.now) == []
    pto = conn.tcb.loss_probe_deadline
    assert pto
    sent = conn.flush(pto)
    assert resent(sent) == [(at(conn, 10), MSS)]
    assert not conn.tcb.tlp_retransmitted


def test_tlp_repairs_tail_loss_and_the_loss_costs_cwnd() -> None:
    """RFC 8985 §7.4.2: S3, the tail, is lost. The probe (due with the RTO,
    one segment out) resends it instead of an RTO; its ACK carries no
    D-SACK, so it repaired a real loss: cwnd is reduced once, and nothing
    goes back to slow start."""
    rig = Rig()
    conn = sack_flight(rig, 4)
    conn.deliver(conn.now + MS, ack=at(conn, 3))
    assert conn.flush(conn.now) == []
    cwnd = conn.tcb.cc.cwnd
    probe_at = conn.tcb.loss_probe_deadline
    assert probe_at == conn.tcb.rto_deadline
    assert resent(conn.flush(probe_at)) == [(at(conn, 3), MSS)]
    conn.deliver(conn.now + MS, ack=at(conn, 4))
    assert conn.flush(conn.now) == []
    assert rig.counted(TcpCounter.TLP_RECOVERIES) == 1
    assert rig.counted(TcpCounter.TIMEOUTS) == 0
    assert MSS < conn.tcb.cc.cwnd < cwnd


def test_tlp_answered_with_dsack_was_spurious_cwnd_kept() -> None:
    """RFC 8985 §7.4.2: a D-SACK for the probe means the original arrived
    (only its ACK was slow): no loss, no cwnd reduction."""
    rig = Rig()
    conn = sack_flight(rig, 4)
    conn.deliver(conn.now + MS, ack=at(conn, 3))
    conn.flush(conn.now)
    cwnd = conn.tcb.cc.cwnd
    conn.flush(conn.tcb.loss_probe_deadline)
    conn.deliver(conn.now + MS, ack=at(conn, 4), sack=blocks(conn, (3, 4)))
    conn.flush(conn.now)
    assert rig.counted(TcpCounter.TLP_RECOVERIES) == 0
    assert conn.tcb.cc.cwnd == cwnd


def test_rack_dsack_grows_reordering_window_once_per_round() -> None:
    """RFC 8985 §6.2 step 4: each round trip that brings D-SACKs widens the
    reordering window by min_RTT / 4, for 16 recoveries."""
    rack, board = Rack(), Scoreboard()
    rack.min_rtt_us = 4 * MS
    rack.reordering_seen = True
    assert rack.reo_wnd(board, False, 100 * MS) == MS
    rack.on_dsack(snd_nxt_pos=5000)
    rack.on_dsack(snd_nxt_pos=6000)  # the same round
    assert rack.reo_wnd(board, False, 100 * MS) == 2 * MS
    rack.on_una(5000)
    rack.on_dsack(snd_nxt_pos=9000)
    assert rack.reo_wnd(board, False, 100 * MS) == 3 * MS
    assert rack.reo_wnd(board, False, 2 * MS) == 2 * MS  # never above SRTT
    for _ in range(16):
        rack.on_recovery_exit()
    assert rack.reo_wnd(board, False, 100 * MS) == MS
