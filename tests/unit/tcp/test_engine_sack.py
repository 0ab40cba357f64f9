"""SACK-based loss recovery on the sending side (RFC 6675 §5, RFC 2018 §5),
losses decided by RACK (RFC 8985; its own behaviours in test_engine_rack.py).

The receiving side (SACK blocks in our ACKs) is in test_engine_data.py.
"""

from __future__ import annotations

from stackservice.tcp.counters import TcpCounter
from tests.unit.tcp._rig import MS, Rig
from tests.unit.tcp._states import MIN_RTO, SACK_ONLY, Conn, established, seq

MSS = 1460


def sack_flight(rig: Rig, segments: int) -> Conn:
    """ESTABLISHED with SACK (no timestamps) and `segments` full segments
    S0.. in flight."""
    conn = established(rig, options=SACK_ONLY)
    rig.engine.send(conn.tcb, bytes(segments * MSS), conn.now)
    assert len(conn.flush(conn.now)) == segments
    return conn


def at(conn: Conn, segment: int) -> int:
    return seq(conn.ack, segment * MSS)


def blocks(conn: Conn, *runs: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """SACK blocks for runs of segments [first, last), most recent first."""
    return tuple((at(conn, first), at(conn, last)) for first, last in runs)


def test_established_sack_for_three_segments_fast_retransmit() -> None:
    """RFC 8985 §6.2 step 4: with no reordering seen, DupThresh (three)
    SACKed segments above the first hole leave no reordering window: it is
    resent at once, as fast as RFC 6675's IsLost would."""
    rig = Rig()
    conn = sack_flight(rig, 6)
    conn.deliver(conn.now + MS, ack=at(conn, 1))  # S0; S1 lost
    conn.deliver(conn.now + MS, ack=at(conn, 1), sack=blocks(conn, (2, 3)))
    conn.deliver(conn.now + MS, ack=at(conn, 1), sack=blocks(conn, (2, 4)))
    assert conn.flush(conn.now) == []
    conn.deliver(conn.now + MS, ack=at(conn, 1), sack=blocks(conn, (2, 5)))
    sent = conn.flush(conn.now)
    assert [(s.seg.seq, len(s.payload)) for s in sent] == [(at(conn, 1), MSS)]
    assert rig.counted(TcpCounter.SACK_RECOVERIES) == 1


def test_established_sack_repairs_two_holes_in_one_round_trip() -> None:
    """RFC 6675 §5 (C) with RACK's marks: while in recovery, a SACK above
    another hole makes it lost (no reordering window in recovery) and it
    is resent before the first retransmission is acknowledged: both holes
    are repaired in one RTT (NewReno would need one RTT per hole). Nothing
    SACKed is resent."""
    rig = Rig()
    conn = sack_flight(rig, 10)
    t = conn.now
    conn.deliver(t + MS, ack=at(conn, 1))  # S0 arrived; S1 and S4 lost
    resent = conn.flush(conn.now)
    arrivals = [(2, 3), (2, 4), (5, 6), (5, 7), (5, 8), (5, 9), (5, 10)]
    ranges = {(2, 3): [(2, 3)], (2, 4): [(2, 4)]}
    for first, last in arrivals:
        runs = ranges.get((first, last)) or [(first, last), (2, 4)]
        conn.deliver(conn.now + MS, ack=at(conn, 1), sack=blocks(conn, *runs))
        resent += conn.flush(conn.now)
    assert conn.now < t + MIN_RTO  # all within one RTO: no timer involved
    assert [(s.seg.seq, len(s.payload)) for s in resent] == [(at(conn, 1), MSS), (at(conn, 4), MSS)]
    # The resent S1 arrives: cumulative ACK up to the second hole.
    conn.deliver(conn.now + MS, ack=at(conn, 4), sack=blocks(conn, (5, 10)))
    assert conn.flush(conn.now) == []  # S4 already resent: nothing more
    conn.deliver(conn.now + MS, ack=at(conn, 10))
    assert conn.flush(conn.now) == []
    assert not conn.tcb.in_recovery
    assert rig.engine.poll_at() is None
    assert rig.counted(TcpCounter.RETRANSMITTED_SEGMENTS) == 2


def test_established_sack_blocks_below_snd_una_ignored() -> None:
    """RFC 2883 §4 / RFC 6675 §5: a block at or below SND.UNA (D-SACK) SACKs
    nothing and does not count towards loss."""
    rig = Rig()
    conn = sack_flight(rig, 6)
    conn.deliver(conn.now + MS, ack=at(conn, 1))
    for _ in range(2):
        conn.deliver(conn.now + MS, ack=at(conn, 1), sack=((conn.ack, at(conn, 1)),))
    assert conn.flush(conn.now) == []
    assert conn.tcb.scoreboard.sacked_bytes() == 0


def test_established_sack_after_rto_scoreboard_cleared() -> None:
    """RFC 2018 §5 / RFC 6675 §5.1: the fast retransmission is lost too and
    no ACK comes to tell; after the RTO the SACKed bits are cleared and
    everything unacknowledged is resent from SND.UNA."""
    rig = Rig()
    conn = sack_flight(rig, 4)
    conn.deliver(conn.now + MS, ack=at(conn, 0), sack=blocks(conn, (2, 3)))
    assert conn.flush(conn.now) == []
    sent = conn.flush(conn.tcb.reorder_deadline)  # RACK: S0 and S1 are lost
    assert [(s.seg.seq, len(s.payload)) for s in sent] == [(at(conn, 0), MSS)]
    sent = conn.flush(conn.tcb.rto_deadline)
    assert [(s.seg.seq, len(s.payload)) for s in sent] == [(at(conn, 0), MSS)]
    assert conn.tcb.scoreboard.sacked_bytes() == 0
    assert rig.counted(TcpCounter.TIMEOUTS) == 1
