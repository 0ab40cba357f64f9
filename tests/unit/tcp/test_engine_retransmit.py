"""The retransmission timer: resend the oldest segment at RTO, back off,
Karn's rule, give up (RFC 6298 §5; RFC 5681 §3.1; RFC 9293 §3.8.1, §3.8.3)."""

from __future__ import annotations

import errno

import pytest

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.engine import SocketError
from stackservice.tcp.segment import RST
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TcpState
from stackservice.tcp.tcb import ERROR
from tests.unit.tcp._rig import MS, Rig
from tests.unit.tcp._states import MIN_RTO, RTT, brief, established, seq, state

MSS = 1460


def test_established_rto_resends_oldest_segment() -> None:
    """RFC 6298 (5.4): when the timer expires, retransmit the earliest
    segment not acknowledged; nothing before the RTO."""
    rig = Rig()
    conn = established(rig)
    t0 = conn.now
    rig.engine.send(conn.tcb, b"abc", t0)
    assert brief(conn.flush(t0)) == [("PA", conn.ack, conn.seq, 3)]
    assert conn.flush(t0 + MIN_RTO - 1) == []
    sent = conn.flush(t0 + MIN_RTO)
    assert brief(sent) == [("PA", conn.ack, conn.seq, 3)]
    assert sent[0].payload == b"abc"
    assert rig.counted(TcpCounter.TIMEOUTS) == 1
    assert rig.counted(TcpCounter.RETRANSMITTED_SEGMENTS) == 1


def test_established_rto_doubles_on_each_expiry() -> None:
    """RFC 6298 (5.5), (5.6): RTO = RTO * 2 and the timer restarts: resends at
    +200, +600, +1400, +3000 ms."""
    rig = Rig()
    conn = established(rig)
    t0 = conn.now
    rig.engine.send(conn.tcb, b"abc", t0)
    conn.flush(t0)
    for at in (200, 600, 1400, 3000):
        assert conn.flush(t0 + at * MS - 1) == [], at
        assert brief(conn.flush(t0 + at * MS)) == [("PA", conn.ack, conn.seq, 3)], at


def test_established_rto_resends_only_one_segment_of_many() -> None:
    """RFC 5681 §3.1: after an RTO cwnd is one segment (the loss window):
    only the oldest segment goes, not the whole flight."""
    rig = Rig()
    conn = established(rig)
    t0 = conn.now
    rig.engine.send(conn.tcb, bytes(4 * MSS), t0)
    assert len(conn.flush(t0)) == 4
    assert brief(conn.flush(t0 + MIN_RTO)) == [("A", conn.ack, conn.seq, MSS)]


def test_established_after_rto_ack_resends_the_rest() -> None:
    """RFC 5681 §3.1, RFC 6298 (5.3): the ACK of the resent segment restarts
    the timer and slow start sends the following segments again."""
    rig = Rig()
    conn = established(rig)
    t0 = conn.now
    rig.engine.send(conn.tcb, bytes(3 * MSS), t0)
    conn.flush(t0)
    conn.flush(t0 + MIN_RTO)
    conn.deliver(t0 + MIN_RTO + RTT, ack=seq(conn.ack, MSS))
    sent = conn.flush(conn.now)
    assert brief(sent) == [
        ("A", seq(conn.ack, MSS), conn.seq, MSS),
        ("PA", seq(conn.ack, 2 * MSS), conn.seq, MSS),
    ]


def test_established_new_ack_restarts_timer_for_rest() -> None:
    """RFC 6298 (5.3): an ACK of new data restarts the timer at RTO from
    now for what is still outstanding."""
    rig = Rig()
    conn = established(rig)
    t0 = conn.now
    rig.engine.send(conn.tcb, bytes(2 * MSS), t0)
    conn.flush(t0)
    t1 = t0 + 100 * MS
    conn.deliver(t1, ack=seq(conn.ack, MSS))
    assert conn.flush(t1) == []
    assert conn.flush(t1 + MIN_RTO - 1) == []
    assert brief(conn.flush(t1 + MIN_RTO)) == [("PA", seq(conn.ack, MSS), conn.seq, MSS)]


def test_rto_pushed_later_by_an_ack_fires_early_once_sending_nothing() -> None:
    """TcpEngine.rearm is lazy: an ACK that moves the RTO later leaves the
    timer-wheel entry at the old deadline. There it finds nothing due,
    sends nothing and goes to the real deadline, where the resend happens."""
    rig = Rig()
    conn = established(rig)
    t0 = conn.now
    rig.engine.send(conn.tcb, bytes(2 * MSS), t0)
    conn.flush(t0)
    first_deadline = conn.tcb.wheel_deadline
    assert first_deadline == t0 + MIN_RTO
    t1 = t0 + 100 * MS
    conn.deliver(t1, ack=seq(conn.ack, MSS))
    assert conn.tcb.rto_deadline == t1 + MIN_RTO
    assert conn.tcb.wheel_deadline == first_deadline  # not moved by the ACK
    assert conn.flush(first_deadline) == []
    assert conn.tcb.wheel_deadline == t1 + MIN_RTO  # moved once, by the early firing
    assert rig.counted(TcpCounter.TIMEOUTS) == 0
    assert brief(conn.flush(t1 + MIN_RTO)) == [("PA", seq(conn.ack, MSS), conn.seq, MSS)]


def test_established_ack_after_backoff_keeps_rto_until_valid_sample() -> None:
    """RFC 6298 §5 note and Karn: the ACK of a retransmitted segment gives no
    sample, so the backed-off RTO stays; a sample from new data brings the
    RTO back to the computed 200 ms."""
    rig = Rig()
    conn = established(rig)
    t0 = conn.now
    rig.engine.send(conn.tcb, b"a", t0)
    conn.flush(t0)
    conn.flush(t0 + 200 * MS)  # RTO 200 -> 400
    conn.flush(t0 + 600 * MS)  # 400 -> 800
    t1 = t0 + 601 * MS
    conn.deliver(t1, ack=seq(conn.ack, 1))
    assert conn.flush(t1) == []
    assert rig.engine.poll_at() is None  # all acknowledged: timer off (5.2)
    rig.engine.send(conn.tcb, b"b", t1)
    conn.flush(t1)
    assert conn.flush(t1 + 800 * MS - 1) == []
    assert brief(conn.flush(t1 + 800 * MS)) == [("PA", seq(conn.ack, 1), conn.seq, 1)]
    # Sent once more and not retransmitted since: "c" gets a valid sample.
    t2 = t1 + 801 * MS
    conn.deliver(t2, ack=seq(conn.ack, 2))
    rig.engine.send(conn.tcb, b"c", t2)
    conn.flush(t2)
    conn.deliver(t2 + RTT, ack=seq(conn.ack, 3))
    conn.flush(t2 + RTT)
    t3 = t2 + 2 * RTT
    rig.engine.send(conn.tcb, b"d", t3)
    conn.flush(t3)
    assert conn.flush(t3 + MIN_RTO - 1) == []
    assert brief(conn.flush(t3 + MIN_RTO)) == [("PA", seq(conn.ack, 3), conn.seq, 1)]


def test_established_max_retransmits_aborts_with_etimedout() -> None:
    """RFC 9293 §3.8.3 R2 (Linux tcp_retries2): after max_retransmits
    expiries the connection is closed; the application sees ETIMEDOUT."""
    rig = Rig(TcpSettings(max_retransmits=2))
    conn = established(rig)
    t0 = conn.now
    rig.engine.send(conn.tcb, b"abc", t0)
    conn.flush(t0)
    assert len(conn.flush(t0 + 200 * MS)) == 1
    assert len(conn.flush(t0 + 600 * MS)) == 1
    sent = conn.flush(t0 + 1400 * MS)
    assert all(s.flags & RST for s in sent)  # at most a RST, no more data
    assert state(conn.tcb) == TcpState.CLOSED
    assert rig.engine.readiness(conn.tcb) & ERROR
    with pytest.raises(SocketError) as exc:
        conn.read()
    assert exc.value.errno == errno.ETIMEDOUT
    assert rig.counted(TcpCounter.CONNECTION_TIMEOUTS) == 1
    assert rig.engine.poll_at() is None


def test_established_fin_lost_resent_at_rto() -> None:
    """RFC 9293 §3.10.4, RFC 6298 (5.4): a FIN occupies sequence space and is
    retransmitted like data."""
    rig = Rig()
    conn = established(rig)
    rig.engine.close(conn.tcb, conn.now)
    assert brief(conn.flush(conn.now)) == [("FA", conn.ack, conn.seq, 0)]
    assert brief(conn.flush(conn.now + MIN_RTO)) == [("FA", conn.ack, conn.seq, 0)]


def test_established_data_and_fin_resent_together_at_rto() -> None:
    """RFC 6298 (5.4): the oldest unacknowledged segment carried data and FIN."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, b"bye", conn.now)
    rig.engine.close(conn.tcb, conn.now)
    assert brief(conn.flush(conn.now)) == [("FPA", conn.ack, conn.seq, 3)]
    assert brief(conn.flush(conn.now + MIN_RTO)) == [("FPA", conn.ack, conn.seq, 3)]


def test_established_after_rto_pure_ack_carries_highest_seq_sent() -> None:
    """RFC 9293 §3.10.7.4: an ACK is <SEQ=SND.NXT><ACK=RCV.NXT>, SND.NXT being
    the next new sequence number (the engine's snd_max: its snd_nxt is pulled
    back for go-back-N after an RTO). The peer may hold all three segments
    (only its ACK was lost): an ACK with SEQ below its RCV.NXT is
    unacceptable there and dropped unread, and two such peers ACK each
    other forever (FreeBSD tcp_output: pure ACKs use snd_max)."""
    rig = Rig()
    conn = established(rig)
    t0 = conn.now
    rig.engine.send(conn.tcb, bytes(3 * MSS), t0)
    conn.flush(t0)
    assert len(conn.flush(t0 + MIN_RTO)) == 1  # S0 again; SND.NXT is still S3
    # The peer's data, sent before our segments reached it, arrives now.
    conn.deliver(t0 + MIN_RTO + MS, b"crossing", ack=conn.ack)
    assert brief(conn.flush(conn.now)) == [("A", seq(conn.ack, 3 * MSS), conn.seq, 0)]


def test_established_after_rto_reset_carries_highest_seq_sent() -> None:
    """RFC 9293 §3.10.5 ABORT: <SEQ=SND.NXT><CTL=RST>. With SEQ at the pulled
    back snd_nxt, a peer that received everything sees the RST below
    RCV.NXT: out of window, silently dropped (RFC 5961 §3.2), so the abort
    never reaches it."""
    rig = Rig()
    conn = established(rig)
    t0 = conn.now
    rig.engine.send(conn.tcb, bytes(3 * MSS), t0)
    conn.flush(t0)
    conn.flush(t0 + MIN_RTO)
    conn.deliver(t0 + MIN_RTO + MS, b"unread", ack=conn.ack)
    conn.flush(conn.now)
    rig.engine.close(conn.tcb, conn.now)  # unread data: abort
    assert brief(conn.flush(conn.now)) == [
        ("RA", seq(conn.ack, 3 * MSS), conn.seq, 0),
        ("RA", conn.ack, conn.seq, 0),  # SND.UNA too: in case nothing arrived
    ]
