"""Negotiated options at work: MSS (RFC 9293 §3.7.1, RFC 6691), window
scaling and timestamps with PAWS (RFC 7323)."""

from __future__ import annotations

import errno

import pytest

from stackservice.tcp.engine import SocketError
from stackservice.tcp.segment import RST, TcpOptions
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TcpState
from tests.unit.tcp._rig import MS, Rig
from tests.unit.tcp._states import (
    ALL_OPTIONS,
    PEER_TS,
    brief,
    established,
    established_active,
    seq,
    state,
)

TS = (PEER_TS, 0)


# --------------------------------------------------------------------- MSS


@pytest.mark.parametrize(
    ("offered", "size"),
    [
        (TcpOptions(mss=536), 536),
        (TcpOptions(mss=536, timestamps=TS), 524),
        (TcpOptions(), 536),
        (TcpOptions(mss=9000), 1460),
        (TcpOptions(mss=1460, timestamps=TS), 1448),
    ],
    ids=["536", "536+ts", "no-option", "9000", "1460+ts"],
)
def test_established_segments_clamped_to_peer_mss_less_options(
    offered: TcpOptions, size: int
) -> None:
    """RFC 9293 §3.7.1: never more than the peer's MSS (536 without the
    option); RFC 6691: the options we send (a 12-byte timestamp) come out of
    that; and never beyond our own MTU."""
    rig = Rig()
    conn = established(rig, options=offered)
    rig.engine.send(conn.tcb, bytes(3 * size), conn.now)
    sent = conn.flush(conn.now)
    assert [len(s.payload) for s in sent] == [size] * 3
    assert all(len(s.payload) + s.seg.options.buffer_len() <= min(offered.mss or 536, 1460)
               for s in sent)  # fmt: skip


def test_syn_sent_synack_mss_clamps_active_open_too() -> None:
    """RFC 9293 §3.7.1, active side: the SYN-ACK's MSS option bounds our
    segments."""
    rig = Rig()
    conn = established_active(rig, options=TcpOptions(mss=600))
    rig.engine.send(conn.tcb, bytes(1200), conn.now)
    assert [len(s.payload) for s in conn.flush(conn.now)] == [600, 600]


# ----------------------------------------------------------- window scaling


def test_established_peer_window_field_scaled_by_its_shift() -> None:
    """RFC 7323 §2.3: SND.WND = SEG.WND << Snd.Wind.Shift for every segment
    but a SYN: a field of 40 with shift 7 is 5120 bytes."""
    rig = Rig()
    conn = established(rig, options=TcpOptions(mss=1024, window_scale=7))
    conn.deliver(conn.now + MS, window=40)
    rig.engine.send(conn.tcb, bytes(10 * 1024), conn.now)
    assert [len(s.payload) for s in conn.flush(conn.now)] == [1024] * 5


def test_established_our_window_field_scaled_by_our_shift() -> None:
    """RFC 7323 §2.3: SEG.WND = RCV.WND >> Rcv.Wind.Shift; our shift is the
    one our SYN-ACK announced (5 for a 256 KiB buffer)."""
    rig = Rig()
    conn = established(rig, options=TcpOptions(mss=1460, window_scale=7))
    conn.deliver(conn.now + MS, b"abcde")
    sent = conn.flush(conn.now)
    assert brief(sent) == [("A", conn.ack, conn.seq, 0)]
    assert sent[0].seg.window == (256 * 1024 - 5) >> 5


def test_established_without_scaling_window_field_capped() -> None:
    """RFC 7323 §2.2: no WS from the peer, no scaling: the field is the
    window itself, at most 65535."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, b"abcde")
    assert [s.seg.window for s in conn.flush(conn.now)] == [65535]


def test_established_scaling_disabled_by_setting_not_offered() -> None:
    """RFC 7323 §1.3: a stack that does not scale sends no WS option, and
    then cannot scale either direction."""
    rig = Rig(TcpSettings(window_scaling=False))
    conn = established(rig, options=TcpOptions(mss=1460, window_scale=7))
    assert (conn.tcb.rcv_wscale, conn.tcb.snd_wscale) == (0, 0)
    conn.deliver(conn.now + MS, window=40)
    rig.engine.send(conn.tcb, b"x" * 100, conn.now)
    assert conn.flush(conn.now) == []  # 40 bytes, unscaled: SWS holds 100


# -------------------------------------------------------- timestamps / PAWS


def test_established_timestamps_on_every_segment_echoing_ts_recent() -> None:
    """RFC 7323 §3.2: once negotiated, every segment carries TSopt; TSecr
    echoes TS.Recent, the peer's latest in-order TSval."""
    rig = Rig()
    conn = established(rig, options=ALL_OPTIONS)
    conn.deliver(10 * MS, b"abc")
    sent = conn.flush(10 * MS)
    assert brief(sent) == [("A", conn.ack, conn.seq, 0)]
    assert sent[0].seg.options.timestamps[1] == conn.tsval(10 * MS)
    rig.engine.send(conn.tcb, b"x", 20 * MS)
    sent = conn.flush(20 * MS)
    assert sent[0].seg.options.timestamps[1] == conn.tsval(10 * MS)


def test_established_paws_old_timestamp_acked_and_dropped() -> None:
    """RFC 7323 §5.3 R1: SEG.TSval < TS.Recent: the segment is not acceptable:
    send an ACK, drop it (its text is not delivered)."""
    rig = Rig()
    conn = established(rig, options=ALL_OPTIONS)
    conn.deliver(10 * MS, b"new")
    conn.flush(10 * MS)
    old = TcpOptions(timestamps=(conn.tsval(5 * MS), conn.tsecr))
    conn.deliver(11 * MS, b"old", seq=conn.seq, options=old)
    assert brief(conn.flush(11 * MS)) == [("A", conn.ack, conn.seq, 0)]
    assert rig.dropped() == {"tcp_paws_reject": 1}
    assert conn.read() == b"new"


def test_established_paws_equal_timestamp_accepted() -> None:
    """RFC 7323 §5.3 R1: only a strictly older TSval fails ("<")."""
    rig = Rig()
    conn = established(rig, options=ALL_OPTIONS)
    conn.deliver(10 * MS, b"one")
    conn.deliver(10 * MS, b"two")
    assert conn.read() == b"onetwo"
    assert rig.dropped() == {}


def test_established_paws_does_not_apply_to_rst() -> None:
    """RFC 7323 §5.2: RSTs are acceptable regardless of their timestamps."""
    rig = Rig()
    conn = established(rig, options=ALL_OPTIONS)
    conn.deliver(10 * MS, b"new")
    old = TcpOptions(timestamps=(conn.tsval(0), 0))
    conn.deliver(11 * MS, flags=RST, seq=conn.seq, options=old)
    assert state(conn.tcb) == TcpState.CLOSED
    assert conn.read() == b"new"  # what arrived before the reset is still read
    with pytest.raises(SocketError) as exc:
        conn.read()
    assert exc.value.errno == errno.ECONNRESET


def test_established_out_of_order_timestamp_not_recorded() -> None:
    """RFC 7323 §4.3 (2): TS.Recent is updated only from a segment at or
    before Last.ACK.sent; the ACK of an out-of-order segment echoes the
    older TSval."""
    rig = Rig()
    conn = established(rig, options=ALL_OPTIONS)
    conn.deliver(10 * MS, b"abc")
    conn.flush(10 * MS)
    conn.deliver(20 * MS, b"later", seq=seq(conn.seq, 100))
    sent = conn.flush(20 * MS)
    assert sent[0].seg.options.timestamps[1] == conn.tsval(10 * MS)


def test_established_delayed_ack_echoes_earliest_unacked_timestamp() -> None:
    """RFC 7323 §4.3 (2) and (3)(A): with delayed ACKs, TS.Recent is updated
    only when SEG.SEQ <= Last.ACK.sent, so the ACK covering two segments
    echoes the TSval of the first (the peer's RTT then includes our delay)."""
    rig = Rig(TcpSettings(quickack_segments=0))
    conn = established(rig, options=ALL_OPTIONS)
    mss = conn.tcb.mss
    conn.deliver(10 * MS, bytes(mss))
    assert conn.flush(10 * MS) == []
    conn.deliver(30 * MS, bytes(mss))
    sent = conn.flush(30 * MS)
    assert brief(sent) == [("A", conn.ack, conn.seq, 0)]
    assert sent[0].seg.options.timestamps[1] == conn.tsval(10 * MS)


@pytest.mark.parametrize("forgery", ["beyond-a-window", "impossible-ack"])
def test_established_out_of_window_segment_does_not_set_ts_recent(forgery: str) -> None:
    """RFC 7323 §5.3: a blind, out-of-window segment with a TSval far ahead
    must not move TS.Recent, or every genuine segment after it fails PAWS
    (R1) and the connection is dead. A copy of ACKed bytes is recorded only
    from within one largest window below Last.ACK.sent and with an ACK field
    the peer could send (RFC 5961 §5.2): missing either, it is not."""
    rig = Rig()
    conn = established(rig, options=ALL_OPTIONS)
    future = TcpOptions(timestamps=((conn.tsval(10 * MS) + (1 << 30)) & 0xFFFFFFFF, 0))
    if forgery == "beyond-a-window":
        below, ack = (0xFFFF << conn.tcb.rcv_wscale) + 1000, None
    else:
        below, ack = 1000, seq(conn.ack, 1 << 30)
    conn.deliver(10 * MS, b"forged", seq=seq(conn.seq, -below), ack=ack, options=future)
    assert brief(conn.flush(10 * MS)) == [("A", conn.ack, conn.seq, 0)]
    conn.deliver(20 * MS, b"genuine")
    assert conn.read() == b"genuine"
    assert rig.dropped() == {"tcp_out_of_window": 1}


def test_established_retransmission_reaching_last_ack_sent_sets_ts_recent() -> None:
    """RFC 7323 §5.3 R3: the copy of a segment we already ACKed (our ACK was
    lost) has SEG.SEQ <= Last.ACK.sent <= SEG.SEQ + SEG.LEN: its TSval is
    recorded and echoed, so the sender times this round trip, not the one
    since the first copy (Linux: tcp_sequence against rcv_wup)."""
    rig = Rig()
    conn = established(rig, options=ALL_OPTIONS)
    start = conn.seq
    conn.deliver(10 * MS, b"hello")
    conn.flush(10 * MS)
    conn.deliver(3000 * MS, b"hello", seq=start)  # the peer's RTO copy
    sent = conn.flush(3000 * MS)
    assert brief(sent) == [("A", conn.ack, seq(start, 5), 0)]
    assert sent[0].seg.options.timestamps[1] == conn.tsval(3000 * MS)


def test_established_copy_of_a_filled_hole_sets_ts_recent() -> None:
    """Our ACK of a filled hole is lost; the sender's next timeout resends
    the hole's first segment, which ends below Last.ACK.sent. Its TSval is
    echoed all the same (`_resends_acked`): the older one would hand the
    sender an RTT sample spanning its RTO backoff (a 20% loss capture
    showed a 30 s sample on just this sequence, then a 143 s one)."""
    rig = Rig()
    conn = established(rig, options=ALL_OPTIONS)
    hole = conn.seq
    conn.deliver(10 * MS, b"after", seq=seq(hole, 5))
    conn.flush(10 * MS)
    conn.deliver(2000 * MS, b"hello", seq=hole)  # fills the hole: ACK lost
    conn.flush(2000 * MS)
    conn.deliver(6000 * MS, b"hello", seq=hole)  # the sender's next RTO copy
    sent = conn.flush(6000 * MS)
    assert brief(sent) == [("A", conn.ack, seq(hole, 10), 0)]
    assert sent[0].seg.options.timestamps[1] == conn.tsval(6000 * MS)
