"""Fast retransmit and NewReno loss recovery without SACK (RFC 5681 §3.2,
RFC 6582 §3.2)."""

from __future__ import annotations

import pytest

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.settings import TcpSettings
from tests.unit.tcp._rig import MS, Rig
from tests.unit.tcp._states import Conn, brief, established, seq

MSS = 1460


def flight(rig: Rig, segments: int) -> Conn:
    """ESTABLISHED (no SACK) with `segments` full segments in flight, S0 at
    offset 0. The peer's ACKs below name segments by their index."""
    conn = established(rig)
    rig.engine.send(conn.tcb, bytes(segments * MSS), conn.now)
    assert len(conn.flush(conn.now)) == segments
    return conn


def at(conn: Conn, segment: int) -> int:
    """The sequence number of segment `segment`."""
    return seq(conn.ack, segment * MSS)


def test_established_two_duplicate_acks_nothing_resent() -> None:
    """RFC 5681 §3.2: fewer than three duplicate ACKs trigger nothing
    (limited transmit aside: nothing new is buffered)."""
    rig = Rig()
    conn = flight(rig, 5)
    conn.deliver(conn.now + MS, ack=at(conn, 1))
    for _ in range(2):
        conn.deliver(conn.now + MS, ack=at(conn, 1))
    assert conn.flush(conn.now) == []
    assert rig.counted(TcpCounter.FAST_RETRANSMITS) == 0


def test_established_third_duplicate_ack_fast_retransmit() -> None:
    """RFC 5681 §3.2 (2): on the third duplicate ACK, retransmit the segment
    that appears lost (the one at SEG.ACK), at once."""
    rig = Rig()
    conn = flight(rig, 5)
    conn.deliver(conn.now + MS, ack=at(conn, 1))  # S0 arrived, S1 lost
    assert conn.flush(conn.now) == []
    for _ in range(2):
        conn.deliver(conn.now + MS, ack=at(conn, 1))
        assert conn.flush(conn.now) == []
    conn.deliver(conn.now + MS, ack=at(conn, 1))
    assert brief(conn.flush(conn.now)) == [("A", at(conn, 1), conn.seq, MSS)]
    assert conn.tcb.in_recovery
    assert rig.counted(TcpCounter.FAST_RETRANSMITS) == 1


def test_established_duplicate_acks_with_window_change_not_counted() -> None:
    """RFC 5681 §2 DUPLICATE ACKNOWLEDGMENT (e): the advertised window must
    be unchanged; window updates are not duplicate ACKs."""
    rig = Rig()
    conn = flight(rig, 5)
    conn.deliver(conn.now + MS, ack=at(conn, 1))
    for window in (60000, 50000, 40000):
        conn.deliver(conn.now + MS, ack=at(conn, 1), window=window)
    assert conn.flush(conn.now) == []
    assert rig.counted(TcpCounter.FAST_RETRANSMITS) == 0


def test_established_duplicate_acks_newreno_cwnd_ssthresh_plus_three() -> None:
    """RFC 6582 §3.2 step 2 / RFC 5681 §3.2 (2)-(3): ssthresh from the flight
    size, cwnd = ssthresh + 3*SMSS, inflated by one SMSS per further
    duplicate."""
    rig = Rig(TcpSettings(congestion_control="newreno"))
    conn = flight(rig, 8)
    conn.deliver(conn.now + MS, ack=at(conn, 1))
    for _ in range(3):
        conn.deliver(conn.now + MS, ack=at(conn, 1))
    cc = conn.tcb.cc
    assert cc.ssthresh == 7 * MSS // 2  # FlightSize / 2, FlightSize = 7 segments
    assert cc.cwnd == cc.ssthresh + 3 * MSS
    conn.deliver(conn.now + MS, ack=at(conn, 1))
    assert cc.cwnd == cc.ssthresh + 4 * MSS


def test_fast_recovery_partial_ack_resends_next_hole() -> None:
    """RFC 6582 §3.2 step 5: an ACK below the recovery point (partial ACK)
    retransmits the first unacknowledged segment at once, staying in
    recovery."""
    rig = Rig()
    conn = flight(rig, 8)
    conn.deliver(conn.now + MS, ack=at(conn, 1))  # S0; S1 and S4 lost
    for _ in range(3):  # S2, S3, S5
        conn.deliver(conn.now + MS, ack=at(conn, 1))
    assert brief(conn.flush(conn.now)) == [("A", at(conn, 1), conn.seq, MSS)]
    for _ in range(2):  # S6, S7
        conn.deliver(conn.now + MS, ack=at(conn, 1))
    assert conn.flush(conn.now) == []
    conn.deliver(conn.now + MS, ack=at(conn, 4))  # the resent S1 filled up to S4
    assert brief(conn.flush(conn.now)) == [("A", at(conn, 4), conn.seq, MSS)]
    assert conn.tcb.in_recovery
    assert rig.counted(TcpCounter.PARTIAL_ACKS) == 1


def test_fast_recovery_full_ack_exits_recovery() -> None:
    """RFC 6582 §3.2 step 3: an ACK covering the recovery point ends fast
    recovery; cwnd is deflated (to ssthresh or below: never inflated)."""
    rig = Rig(TcpSettings(congestion_control="newreno"))
    conn = flight(rig, 8)
    conn.deliver(conn.now + MS, ack=at(conn, 1))
    for _ in range(5):
        conn.deliver(conn.now + MS, ack=at(conn, 1))
    conn.flush(conn.now)
    conn.deliver(conn.now + MS, ack=at(conn, 8))
    assert conn.flush(conn.now) == []
    tcb = conn.tcb
    assert not tcb.in_recovery
    assert tcb.cc.cwnd <= tcb.cc.ssthresh
    assert rig.engine.poll_at() is None  # everything acknowledged


def test_fast_recovery_duplicate_acks_after_exit_need_three_again() -> None:
    """RFC 6582 §3.2 step 1 / RFC 5681 §3.2: after recovery, a new loss needs
    three fresh duplicate ACKs."""
    rig = Rig()
    conn = flight(rig, 8)
    conn.deliver(conn.now + MS, ack=at(conn, 1))
    for _ in range(3):
        conn.deliver(conn.now + MS, ack=at(conn, 1))
    conn.flush(conn.now)
    conn.deliver(conn.now + MS, ack=at(conn, 8))
    rig.engine.send(conn.tcb, bytes(12 * MSS), conn.now)
    conn.flush(conn.now)
    conn.deliver(conn.now + MS, ack=at(conn, 9))  # S8 arrived, S9 lost
    sent = conn.flush(conn.now)
    for _ in range(2):
        conn.deliver(conn.now + MS, ack=at(conn, 9))
        sent += conn.flush(conn.now)  # at most limited transmit: new data
    assert at(conn, 9) not in [s.seg.seq for s in sent]
    conn.deliver(conn.now + MS, ack=at(conn, 9))
    assert brief(conn.flush(conn.now))[0] == ("A", at(conn, 9), conn.seq, MSS)


def test_established_first_two_duplicate_acks_limited_transmit() -> None:
    """RFC 3042 §2: each of the first two duplicate ACKs lets one new segment
    out (if the peer's window allows), beyond cwnd; the third triggers the
    fast retransmission."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, bytes(20 * MSS), conn.now)
    assert len(conn.flush(conn.now)) == 10  # IW: the rest waits for cwnd
    conn.deliver(conn.now + MS, ack=at(conn, 0))  # S0 lost, S1 arrived
    assert brief(conn.flush(conn.now)) == [("A", at(conn, 10), conn.seq, MSS)]
    conn.deliver(conn.now + MS, ack=at(conn, 0))
    assert brief(conn.flush(conn.now)) == [("A", at(conn, 11), conn.seq, MSS)]
    conn.deliver(conn.now + MS, ack=at(conn, 0))
    assert brief(conn.flush(conn.now))[0] == ("A", at(conn, 0), conn.seq, MSS)


@pytest.mark.parametrize(("outstanding", "dups"), [(3, 2), (2, 1)])
def test_established_few_segments_outstanding_early_retransmit(outstanding: int, dups: int) -> None:
    """RFC 5827 §3.1: with fewer than four segments outstanding and nothing
    new to send, three duplicate ACKs can never arrive: retransmit after
    oseg - 1 of them."""
    rig = Rig()
    conn = flight(rig, outstanding)  # S0 lost, the others arrive
    for _ in range(dups - 1):
        conn.deliver(conn.now + MS, ack=at(conn, 0))
        assert conn.flush(conn.now) == []
    conn.deliver(conn.now + MS, ack=at(conn, 0))
    assert brief(conn.flush(conn.now)) == [("A", at(conn, 0), conn.seq, MSS)]
    assert rig.counted(TcpCounter.FAST_RETRANSMITS) == 1


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_fast_recovery_inflation_sends_new_data(cc: str) -> None:
    """RFC 3042 for the first two duplicate ACKs, then RFC 5681 §3.2 (4) /
    RFC 6582: during recovery, as duplicate ACKs tell segments have left the
    network, new data is sent, in order, after the fast retransmission."""
    rig = Rig(TcpSettings(congestion_control=cc))
    conn = established(rig)
    rig.engine.send(conn.tcb, bytes(30 * MSS), conn.now)
    assert len(conn.flush(conn.now)) == 10
    conn.deliver(conn.now + MS, ack=at(conn, 1))  # 1 acked + 1 of slow start
    assert len(conn.flush(conn.now)) == 2
    sent = []
    for _ in range(10):  # S2..S11 arrive, S1 lost
        conn.deliver(conn.now + MS, ack=at(conn, 1))
        sent += conn.flush(conn.now)
    seqs = [s.seg.seq for s in sent]
    assert seqs.count(at(conn, 1)) == 1
    i = seqs.index(at(conn, 1))
    assert seqs[:i] == [at(conn, 12), at(conn, 13)]  # limited transmit
    after = seqs[i + 1 :]
    assert after and after == [at(conn, 14 + k) for k in range(len(after))]


def test_fast_recovery_partial_ack_resends_only_what_was_sent() -> None:
    """RFC 6582 §3.2 step 5 / RFC 5681 §3.2: a retransmission resends data
    already sent. When the next hole is the short last segment (100 bytes)
    and unsent data waits behind a closed window, the retransmission must
    not carry that unsent data: it would exceed the peer's window, and the
    peer's ACK of it would then acknowledge more than SND.MAX, which we
    drop as "ACK of unsent data" (an ACK war between two such stacks)."""
    rig = Rig()
    conn = established(rig)
    conn.tcb.nodelay = True
    edge = 5 * MSS + 100
    conn.deliver(conn.now + MS, window=edge)
    rig.engine.send(conn.tcb, bytes(edge), conn.now)
    assert [len(s.payload) for s in conn.flush(conn.now)] == [MSS] * 5 + [100]
    rig.engine.send(conn.tcb, bytes(2000), conn.now)  # held: the window is full
    assert conn.flush(conn.now) == []
    conn.deliver(conn.now + MS, ack=at(conn, 1), window=edge - MSS)  # S1, S5 lost
    for _ in range(3):  # S2, S3, S4
        conn.deliver(conn.now + MS, ack=at(conn, 1), window=edge - MSS)
    assert brief(conn.flush(conn.now)) == [("A", at(conn, 1), conn.seq, MSS)]
    conn.deliver(conn.now + MS, ack=at(conn, 5), window=100)  # partial ACK
    sent = conn.flush(conn.now)
    assert [(s.seg.seq, len(s.payload)) for s in sent] == [(at(conn, 5), 100)]
