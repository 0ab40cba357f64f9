"""Data transfer in ESTABLISHED: receiving in and out of order, the ACK
policy, and sending through the socket calls (RFC 9293 §3.8.6.3,
§3.10.7.4; RFC 5681 §4.2; RFC 2018 §4; RFC 1122 §4.2.3.2)."""

from __future__ import annotations

import errno

import pytest

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.engine import SocketError
from stackservice.tcp.segment import ACK, FIN, PSH, RST, SYN
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.tcb import READABLE, WRITABLE
from tests.unit.tcp._rig import MS, Rig
from tests.unit.tcp._states import RTT, SACK_ONLY, brief, established, seq, syn_sent

DELACK = TcpSettings().delayed_ack_us
MSS = 1460
NO_QUICKACK = TcpSettings(quickack_segments=0)


# --------------------------------------------------------- receiving in order


def test_established_data_in_order_readable_and_quickacked() -> None:
    """RFC 9293 §3.10.7.4 seventh step: in-order text goes to the receive
    buffer, RCV.NXT advances; the first segments of a connection are ACKed
    at once (quick-ACK, so the peer's slow start is not held back)."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(10 * MS, b"hello")
    assert brief(conn.flush(10 * MS)) == [("A", conn.ack, conn.seq, 0)]
    assert conn.tcb in rig.engine.take_events()
    assert rig.engine.readiness(conn.tcb) == READABLE | WRITABLE
    assert conn.read() == b"hello"
    assert rig.flush(10 * MS) == []


def test_established_nothing_to_read_eagain() -> None:
    """recv(2) on an empty, open connection: EAGAIN."""
    rig = Rig()
    conn = established(rig)
    with pytest.raises(SocketError) as exc:
        conn.read()
    assert exc.value.errno == errno.EAGAIN


def _would_block_agrees_with_receive_into(rig: Rig, tcb) -> bool:
    """`read_would_block` (what the shared-memory pump asks before reading)
    is True exactly when receive_into raises EAGAIN or ENOTCONN."""
    would_block = rig.engine.read_would_block(tcb)
    try:
        rig.engine.receive_into(tcb, bytearray(64), 0)
    except SocketError as exc:
        assert would_block == (exc.errno in (errno.EAGAIN, errno.ENOTCONN)), exc.errno
    else:
        assert not would_block
    return would_block


def test_read_would_block_exactly_when_receive_into_has_nothing_to_give() -> None:
    rig = Rig()
    conn = established(rig)
    assert _would_block_agrees_with_receive_into(rig, conn.tcb)  # empty, open: EAGAIN
    conn.deliver(10 * MS, b"hi")
    assert not _would_block_agrees_with_receive_into(rig, conn.tcb)  # bytes
    assert _would_block_agrees_with_receive_into(rig, conn.tcb)  # read: empty again
    conn.deliver(20 * MS, b"", ACK | FIN)
    assert not _would_block_agrees_with_receive_into(rig, conn.tcb)  # EOF: 0
    reset = established(Rig())
    reset.deliver(10 * MS, b"", RST)
    assert not _would_block_agrees_with_receive_into(reset.rig, reset.tcb)  # ECONNRESET
    connecting = Rig()
    tcb, _ = syn_sent(connecting)
    assert _would_block_agrees_with_receive_into(connecting, tcb)  # ENOTCONN


def test_established_small_segment_after_quickack_acked_after_delay() -> None:
    """RFC 9293 §3.8.6.3, RFC 1122 §4.2.3.2: the ACK of a lone segment may be
    delayed (here delayed_ack_us = 40 ms), never beyond 500 ms."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig)
    conn.deliver(10 * MS, b"hello")
    assert conn.flush(10 * MS) == []
    assert conn.flush(10 * MS + DELACK - 1) == []
    assert brief(conn.flush(10 * MS + DELACK)) == [("A", conn.ack, conn.seq, 0)]
    assert rig.counted(TcpCounter.DELAYED_ACKS) == 1
    assert conn.flush(10 * MS + 10 * DELACK) == []


def test_established_second_full_segment_acked_at_once() -> None:
    """RFC 5681 §4.2, RFC 9293 §3.8.6.3: an ACK SHOULD be generated for at
    least every second full-sized segment."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig)
    conn.deliver(10 * MS, bytes(MSS))
    assert conn.flush(10 * MS) == []
    conn.deliver(11 * MS, bytes(MSS))
    assert brief(conn.flush(11 * MS)) == [("A", conn.ack, conn.seq, 0)]
    conn.deliver(12 * MS, bytes(MSS))
    assert conn.flush(12 * MS) == []
    assert brief(conn.flush(12 * MS + DELACK)) == [("A", conn.ack, conn.seq, 0)]


def test_established_quickack_then_delayed() -> None:
    """quickack_segments = 2: two segments ACKed at once, the third delayed."""
    rig = Rig(TcpSettings(quickack_segments=2))
    conn = established(rig)
    for i in range(2):
        conn.deliver((10 + i) * MS, b"ab")
        assert brief(conn.flush((10 + i) * MS)) == [("A", conn.ack, conn.seq, 0)]
    conn.deliver(20 * MS, b"cd")
    assert conn.flush(20 * MS) == []
    assert len(conn.flush(20 * MS + DELACK)) == 1


def _quickacks_used_up(conn, at: int) -> int:
    """Deliver small segments until one is no longer ACKed at once (its ACK
    then goes out after the delay). When that was."""
    while True:
        conn.deliver(at, b"ab")
        if not conn.flush(at):
            conn.flush(at + DELACK)
            return at
        at += MS


def test_established_duplicate_restarts_quickack() -> None:
    """Linux (tcp_enter_quickack_mode): a duplicate means our ACK was
    probably lost, so the next segments are ACKed at once again, not every
    second one: a lossy return path still carries enough ACKs."""
    rig = Rig(TcpSettings(quickack_segments=2))
    conn = established(rig)
    at = _quickacks_used_up(conn, 10 * MS) + 2 * DELACK
    conn.deliver(at, b"ab", seq=seq(conn.seq, -2))  # the last segment again
    assert brief(conn.flush(at)) == [("A", conn.ack, conn.seq, 0)]
    for i in range(1, 3):
        conn.deliver(at + i * MS, b"cd")
        assert brief(conn.flush(at + i * MS)) == [("A", conn.ack, conn.seq, 0)]
    conn.deliver(at + 3 * MS, b"ef")
    assert conn.flush(at + 3 * MS) == []


def test_established_data_after_a_gap_longer_than_rto_quickacked() -> None:
    """Linux (tcp_event_data_recv): data arriving more than an RTO after the
    last is a sender restarting after a timeout, in slow start, that a
    delayed ACK would hold back a whole round; a shorter gap is not."""
    rig = Rig(TcpSettings(quickack_segments=2))
    conn = established(rig)
    at = _quickacks_used_up(conn, 10 * MS)
    rto = conn.tcb.rtt.rto_us
    at += rto - MS  # within the RTO: delayed
    conn.deliver(at, b"cd")
    assert conn.flush(at) == []
    assert len(conn.flush(at + DELACK)) == 1
    at += rto + MS  # beyond it: at once
    conn.deliver(at, b"ef")
    assert brief(conn.flush(at)) == [("A", conn.ack, conn.seq, 0)]


def test_established_delayed_ack_rides_on_data() -> None:
    """RFC 9293 §3.8.6.3: data we send carries the pending ACK; the delayed
    ACK timer then has nothing left to send."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig)
    conn.deliver(10 * MS, b"ping")
    assert conn.flush(10 * MS) == []
    rig.engine.send(conn.tcb, b"pong", 11 * MS)
    assert brief(conn.flush(11 * MS)) == [("PA", conn.ack, conn.seq, 4)]
    assert conn.flush(10 * MS + DELACK) == []


def test_established_duplicate_segment_acked_and_dropped() -> None:
    """RFC 9293 §3.10.7.4 first step: a segment wholly before RCV.NXT is not
    acceptable: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, drop."""
    rig = Rig()
    conn = established(rig)
    start = conn.seq
    conn.deliver(10 * MS, b"hello")
    conn.flush(10 * MS)
    conn.deliver(20 * MS, b"hello", seq=start)
    assert brief(conn.flush(20 * MS)) == [("A", conn.ack, conn.seq, 0)]
    assert rig.dropped() == {"tcp_out_of_window": 1}
    assert conn.read() == b"hello"


def test_established_segment_overlapping_rcv_nxt_keeps_new_part() -> None:
    """RFC 9293 §3.10.7.4: a segment straddling RCV.NXT is trimmed; only the
    new bytes are delivered."""
    rig = Rig()
    conn = established(rig)
    start = conn.seq
    conn.deliver(10 * MS, b"abc")
    conn.deliver(11 * MS, b"abcdef", seq=start)
    conn.seq = seq(start, 6)
    assert brief(conn.flush(11 * MS)) == [("A", conn.ack, conn.seq, 0)]
    assert conn.read() == b"abcdef"


def test_established_segment_beyond_window_acked_and_dropped() -> None:
    """RFC 9293 §3.10.7.4 first step: text starting at or past RCV.NXT +
    RCV.WND is not acceptable: ACK, drop."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(10 * MS, b"far", seq=seq(conn.seq, 65535))
    assert brief(conn.flush(10 * MS)) == [("A", conn.ack, conn.seq, 0)]
    assert rig.dropped() == {"tcp_out_of_window": 1}


def test_established_out_of_window_bare_acks_answered_twice_a_second() -> None:
    """Linux's tcp_oow_rate_limited: a bare ACK out of the window draws at
    most one ACK per 500 ms (tcp_invalid_ratelimit); the rest are counted,
    not answered, so a peer spraying stale ACKs gets no ACK for each."""
    rig = Rig()
    conn = established(rig)
    sent = []
    for i in range(3):
        conn.deliver(10 * MS + i, seq=seq(conn.seq, 70_000 + i))
        sent += conn.flush(10 * MS + i)
    assert brief(sent) == [("A", conn.ack, conn.seq, 0)]
    assert rig.counted(TcpCounter.OUT_OF_WINDOW_ACKS_LIMITED) == 2
    assert rig.dropped() == {"tcp_out_of_window": 3}
    conn.deliver(510 * MS, seq=seq(conn.seq, -1))  # a stale one, once the interval is over
    assert brief(conn.flush(510 * MS)) == [("A", conn.ack, conn.seq, 0)]


def test_established_out_of_window_ack_limit_shared_with_challenge_acks() -> None:
    """One per-connection allowance for both kinds of answer, as in Linux
    (last_oow_ack_time): a challenge ACK spends it for a stale ACK too."""
    rig = Rig(TcpSettings(challenge_ack_per_s=0))
    conn = established(rig)
    conn.deliver(10 * MS, flags=SYN, seq=conn.seq)  # RFC 5961 §4.2: challenged
    assert brief(conn.flush(10 * MS)) == [("A", conn.ack, conn.seq, 0)]
    conn.deliver(11 * MS, seq=seq(conn.seq, -1))
    assert conn.flush(11 * MS) == []
    assert rig.counted(TcpCounter.OUT_OF_WINDOW_ACKS_LIMITED) == 1


@pytest.mark.parametrize(
    ("payload", "flags"), [(b"abc", ACK), (b"", ACK | FIN)], ids=["data", "fin"]
)
def test_established_duplicates_of_data_or_fin_always_answered(payload: bytes, flags: int) -> None:
    """Retransmitted data or a FIN we already have is answered every time,
    however often: its ACK (with D-SACK) is what repairs our lost one, and
    the rate limit for bare ACKs must not slow a lossy path's recovery."""
    rig = Rig()
    conn = established(rig)
    at = conn.seq
    conn.deliver(10 * MS, payload, seq=at, flags=flags)
    conn.seq = seq(at, len(payload) + (flags & FIN and 1))
    conn.flush(10 * MS)
    sent = []
    for i in range(3):
        conn.deliver(11 * MS + i, payload, seq=at, flags=flags)
        sent += conn.flush(11 * MS + i)
    assert len(sent) == 3
    assert rig.dropped() == {"tcp_out_of_window": 3}
    assert rig.counted(TcpCounter.OUT_OF_WINDOW_ACKS_LIMITED) == 0


def test_established_segment_without_ack_dropped() -> None:
    """RFC 9293 §3.10.7.4 fifth step: "if the ACK bit is off, drop the
    segment and return"."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(10 * MS, b"noack", flags=PSH)
    assert conn.flush(10 * MS) == []
    assert rig.dropped() == {"tcp_no_ack": 1}
    with pytest.raises(SocketError):
        conn.read()


@pytest.mark.parametrize("peer_iss", [0xFFFFFF00, 0xFFFFFFFF, 0x7FFFFF80])
def test_established_data_across_sequence_wrap_delivered(peer_iss: int) -> None:
    """RFC 9293 §3.4: sequence numbers are compared modulo 2**32; a stream
    crossing 2**32 (or 2**31) is delivered in order, ACKs wrap too."""
    rig = Rig()
    conn = established(rig, peer_iss=peer_iss)
    for i in range(4):
        conn.deliver(conn.now + MS, bytes([i]) * 100)
        assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert conn.seq == seq(peer_iss, 401)
    assert conn.read() == b"".join(bytes([i]) * 100 for i in range(4))


def test_established_out_of_order_across_wrap_reassembled() -> None:
    """RFC 9293 §3.4, §3.10.7.4: reassembly and SACK blocks modulo 2**32."""
    rig = Rig()
    conn = established(rig, options=SACK_ONLY, peer_iss=0xFFFFFFF0)
    hole = conn.seq
    conn.deliver(conn.now + MS, b"B" * 50, seq=seq(hole, 50))
    sent = conn.flush(conn.now)
    assert sent[0].seg.options.sack_blocks == ((seq(hole, 50), seq(hole, 100)),)
    conn.deliver(conn.now + MS, b"A" * 50, seq=hole)
    conn.seq = seq(hole, 100)
    assert conn.read() == b"A" * 50 + b"B" * 50
    assert conn.tcb.rcv_nxt == seq(0xFFFFFFF0, 101)


# ------------------------------------------------------ receiving out of order


def test_established_out_of_order_acked_at_once_with_sack_block() -> None:
    """RFC 5681 §4.2: an out-of-order segment is ACKed immediately (a
    duplicate ACK); RFC 2018 §4: the ACK carries a SACK block for it."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig, options=SACK_ONLY)
    hole = conn.seq
    conn.deliver(10 * MS, b"later", seq=seq(hole, 100))
    sent = conn.flush(10 * MS)
    assert brief(sent) == [("A", conn.ack, hole, 0)]
    assert sent[0].seg.options.sack_blocks == ((seq(hole, 100), seq(hole, 105)),)
    with pytest.raises(SocketError):
        conn.read()


def test_established_out_of_order_most_recent_sack_block_first() -> None:
    """RFC 2018 §4: the first block reports the most recent segment; the
    others repeat earlier blocks."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig, options=SACK_ONLY)
    hole = conn.seq
    conn.deliver(10 * MS, b"b", seq=seq(hole, 100))
    conn.flush(10 * MS)
    conn.deliver(11 * MS, b"c", seq=seq(hole, 200))
    sent = conn.flush(11 * MS)
    assert sent[0].seg.options.sack_blocks == (
        (seq(hole, 200), seq(hole, 201)),
        (seq(hole, 100), seq(hole, 101)),
    )


def test_established_out_of_order_without_sack_duplicate_ack() -> None:
    """RFC 5681 §4.2: without SACK the out-of-order segment still draws an
    immediate duplicate ACK, with no SACK option (RFC 2018 §2)."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig)
    hole = conn.seq
    conn.deliver(10 * MS, b"later", seq=seq(hole, 100))
    sent = conn.flush(10 * MS)
    assert brief(sent) == [("A", conn.ack, hole, 0)]
    assert sent[0].seg.options.sack_blocks == ()


def test_established_partial_hole_fill_acked_at_once() -> None:
    """RFC 5681 §4.2: a segment filling part of a gap is ACKed immediately."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig, options=SACK_ONLY)
    hole = conn.seq
    conn.deliver(10 * MS, b"C", seq=seq(hole, 2))
    conn.flush(10 * MS)
    conn.deliver(11 * MS, b"A", seq=hole)
    sent = conn.flush(11 * MS)
    assert brief(sent) == [("A", conn.ack, seq(hole, 1), 0)]
    assert sent[0].seg.options.sack_blocks == ((seq(hole, 2), seq(hole, 3)),)


def test_established_hole_filled_cumulative_ack_at_once() -> None:
    """RFC 5681 §4.2: "an immediate ACK SHOULD be generated when a segment
    fills in all or part of a gap"; the ACK covers everything queued."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig, options=SACK_ONLY)
    hole = conn.seq
    conn.deliver(10 * MS, b"world", seq=seq(hole, 5))
    conn.flush(10 * MS)
    conn.deliver(11 * MS, b"hello", seq=hole)
    sent = conn.flush(11 * MS)
    assert brief(sent) == [("A", conn.ack, seq(hole, 10), 0)]
    assert sent[0].seg.options.sack_blocks == ()


def test_established_hole_filled_data_readable_in_order() -> None:
    """RFC 9293 §3.10.7.4: held segments are delivered once the gap closes."""
    rig = Rig()
    conn = established(rig, options=SACK_ONLY)
    hole = conn.seq
    conn.deliver(10 * MS, b"world", seq=seq(hole, 5))
    conn.deliver(11 * MS, b"hello", seq=hole)
    assert conn.read() == b"helloworld"
    assert conn.tcb.rcv_nxt == seq(hole, 10)


def test_established_batch_of_full_segments_acked_every_second_one() -> None:
    """RFC 5681 §4.2: every second full segment is ACKed even when a whole
    batch of them arrives in one pass; one ACK per batch would starve the
    sender's ACK clock."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig, options=SACK_ONLY)
    start = conn.seq
    for _ in range(4):
        conn.deliver(10 * MS, bytes(MSS))
    assert brief(conn.flush(10 * MS)) == [
        ("A", conn.ack, seq(start, 2 * MSS), 0),
        ("A", conn.ack, seq(start, 4 * MSS), 0),
    ]


def test_established_batch_of_out_of_order_segments_each_acked_with_its_block() -> None:
    """RFC 5681 §4.2 and RFC 2018 §4: each out-of-order segment draws its own
    duplicate ACK whose first block is that segment, even within one batch,
    so the sender's scoreboard and duplicate-ACK count see every arrival."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig, options=SACK_ONLY)
    hole = conn.seq
    for i in (1, 2, 3):
        conn.deliver(10 * MS, bytes(MSS), seq=seq(hole, i * MSS))
    sent = conn.flush(10 * MS)
    assert brief(sent) == [("A", conn.ack, hole, 0)] * 3
    assert [s.seg.options.sack_blocks[0] for s in sent] == [
        (seq(hole, MSS), seq(hole, 2 * MSS)),
        (seq(hole, MSS), seq(hole, 3 * MSS)),
        (seq(hole, MSS), seq(hole, 4 * MSS)),
    ]


def _acked_then_resent(conn, first: bytes, again: bytes) -> list:
    """`first` arrives and is ACKed; then the peer resends from the same
    SEQ with `again` (a copy, or a copy and more). What we answer."""
    conn.deliver(10 * MS, first)
    conn.flush(10 * MS + DELACK)
    conn.deliver(20 * MS, again, seq=seq(conn.seq, -len(first)))
    return conn.flush(20 * MS)


def test_established_duplicate_segment_reported_by_dsack_once() -> None:
    """RFC 2883 §4: a duplicate segment is reported in the first SACK block
    of the next ACK, sent at once, and in no later one."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig, options=SACK_ONLY)
    start = conn.seq
    sent = _acked_then_resent(conn, b"hello", b"hello")
    assert brief(sent) == [("A", conn.ack, seq(start, 5), 0)]
    assert sent[0].seg.options.sack_blocks == ((start, seq(start, 5)),)
    conn.deliver(30 * MS, b"x", seq=seq(start, 10))
    assert conn.flush(30 * MS)[0].seg.options.sack_blocks == ((seq(start, 10), seq(start, 11)),)


def test_established_dsack_comes_before_the_out_of_order_blocks() -> None:
    """RFC 2883 §4: with data held out of order, the D-SACK block leads and
    the ordinary SACK blocks follow."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig, options=SACK_ONLY)
    start = conn.seq
    conn.deliver(10 * MS, b"ab")
    conn.deliver(10 * MS, b"z", seq=seq(start, 10))
    conn.flush(10 * MS + DELACK)
    conn.deliver(20 * MS, b"ab", seq=start)
    sent = conn.flush(20 * MS)
    assert sent[0].seg.options.sack_blocks == (
        (start, seq(start, 2)),
        (seq(start, 10), seq(start, 11)),
    )


def test_established_partial_duplicate_dsack_names_the_old_part() -> None:
    """RFC 2883 §4.1.1: a segment straddling RCV.NXT is D-SACKed for the part
    we already had; its new bytes are delivered and acknowledged at once."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig, options=SACK_ONLY)
    start = conn.seq
    sent = _acked_then_resent(conn, b"abc", b"abcdef")
    assert brief(sent) == [("A", conn.ack, seq(start, 6), 0)]
    assert sent[0].seg.options.sack_blocks == ((start, seq(start, 3)),)
    assert conn.read() == b"abcdef"


def test_established_duplicate_without_sack_no_dsack() -> None:
    """RFC 2883 needs SACK negotiated (RFC 2018 §2): without it the duplicate
    is answered by a plain ACK."""
    rig = Rig(NO_QUICKACK)
    conn = established(rig)
    start = conn.seq
    sent = _acked_then_resent(conn, b"hello", b"hello")
    assert brief(sent) == [("A", conn.ack, seq(start, 5), 0)]
    assert sent[0].seg.options.sack_blocks == ()


# ------------------------------------------------------------------ sending


def test_established_send_segments_at_mss_last_one_pushed() -> None:
    """RFC 9293 §3.7.1: segments carry at most the MSS; PSH on the last
    segment of the data written (RFC 9293 §3.9.1.2)."""
    rig = Rig()
    conn = established(rig)
    assert rig.engine.send(conn.tcb, bytes(3 * MSS), conn.now) == 3 * MSS
    sent = conn.flush(conn.now)
    assert brief(sent) == [
        ("A", conn.ack, conn.seq, MSS),
        ("A", seq(conn.ack, MSS), conn.seq, MSS),
        ("PA", seq(conn.ack, 2 * MSS), conn.seq, MSS),
    ]


def test_established_initial_window_limits_first_flight() -> None:
    """RFC 6928 §2 / RFC 5681 §3.1: the first flight is at most IW =
    min(10*MSS, max(2*MSS, 14600)) bytes: ten full segments."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, bytes(20 * MSS), conn.now)
    sent = conn.flush(conn.now)
    assert [len(s.payload) for s in sent] == [MSS] * 10
    assert conn.flush(conn.now + MS) == []


def test_established_ack_opens_cwnd_more_data_sent() -> None:
    """RFC 5681 §3.1: each ACK of new data grows cwnd in slow start and
    frees room in the window: the sender goes on without the application
    writing again (RFC 9293 §3.8.6.2.1: send when the window allows)."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, bytes(20 * MSS), conn.now)
    conn.flush(conn.now)
    conn.deliver(conn.now + RTT, ack=seq(conn.ack, 2 * MSS))
    sent = conn.flush(conn.now)
    assert [len(s.payload) for s in sent] == [MSS] * 4  # 2 acked + 2 more of cwnd growth
    assert sent[0].seg.seq == seq(conn.ack, 10 * MSS)


def test_established_ack_of_all_data_frees_send_buffer() -> None:
    """RFC 9293 §3.10.7.4 fifth step: SND.UNA < SEG.ACK =< SND.NXT sets
    SND.UNA; acknowledged bytes leave the send buffer; no reply to a pure
    ACK, and the retransmission timer stops (RFC 6298 (5.2))."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, b"abc", conn.now)
    conn.flush(conn.now)
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 3))
    assert conn.flush(conn.now) == []
    assert conn.tcb.snd_una == seq(conn.ack, 3)
    assert len(conn.tcb.send_buffer) == 0
    assert rig.engine.poll_at() is None


def test_established_send_buffer_full_returns_partial_count() -> None:
    """send(2) on a non-blocking socket: as much as fits, then 0 (EAGAIN)."""
    rig = Rig(TcpSettings(send_buffer=4096))
    conn = established(rig)
    assert rig.engine.send(conn.tcb, bytes(5000), conn.now) == 4096
    assert rig.engine.send(conn.tcb, b"more", conn.now) == 0
    assert not rig.engine.readiness(conn.tcb) & WRITABLE


def test_established_send_counts_segments_out() -> None:
    """Counters: every segment sent is counted once (RFC 4022 tcpOutSegs)."""
    rig = Rig()
    conn = established(rig)
    before = rig.counted(TcpCounter.SEGMENTS_OUT)
    rig.engine.send(conn.tcb, b"abc", conn.now)
    assert len(conn.flush(conn.now)) == 1
    assert rig.counted(TcpCounter.SEGMENTS_OUT) == before + 1
