"""Flow control: the peer's window (zero-window probing, window updates),
ours (receiver silly-window avoidance), and Nagle (RFC 9293 §3.7.4, §3.8.6;
RFC 1122 §4.2.2.17, §4.2.3.3, §4.2.3.4)."""

from __future__ import annotations

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.segment import ACK, FIN, RST
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TcpState
from tests.unit.tcp._rig import MS, PEER_PORT, Rig
from tests.unit.tcp._states import MIN_RTO, accepted_from, brief, established, seq, state

MSS = 1460
SECOND = 1_000_000


# ------------------------------------------------------- zero window, persist


def test_established_zero_window_holds_data() -> None:
    """RFC 9293 §3.8.6.1: nothing is sent into a zero window (until probed)."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, window=0)
    rig.engine.send(conn.tcb, b"waiting", conn.now)
    assert conn.flush(conn.now) == []


def test_established_zero_window_probes_with_backoff() -> None:
    """RFC 9293 §3.8.6.1, RFC 1122 §4.2.2.17: the first probe after one RTO
    of zero window, the interval doubling after each. A probe is
    <SEQ=SND.UNA-1><ACK=RCV.NXT><CTL=ACK>, which the peer must ACK."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, window=0)
    t = conn.now
    rig.engine.send(conn.tcb, b"waiting", t)
    conn.flush(t)
    probe = ("A", seq(conn.ack, -1), conn.seq, 0)
    for at in (200, 600, 1400, 3000):
        assert conn.flush(t + at * MS - 1) == [], at
        assert brief(conn.flush(t + at * MS)) == [probe], at
        conn.deliver(t + at * MS + MS, window=0)  # the peer's answer: still zero
        assert conn.flush(conn.now) == []
    assert rig.counted(TcpCounter.ZERO_WINDOW_PROBES) == 4
    assert state(conn.tcb) == TcpState.ESTABLISHED


def test_established_zero_window_probes_never_abort() -> None:
    """RFC 1122 §4.2.2.17 / RFC 9293 §3.8.6.1: the connection MUST NOT be
    closed while the receiver keeps answering the probes (here for longer
    than max_retransmits RTOs would last); the interval is capped."""
    rig = Rig(TcpSettings(max_retransmits=3, persist_max_us=2 * SECOND))
    conn = established(rig)
    conn.deliver(conn.now + MS, window=0)
    rig.engine.send(conn.tcb, b"waiting", conn.now)
    conn.flush(conn.now)
    probes = 0
    t = conn.now
    end = t + 60 * SECOND
    while t < end:
        t += 100 * MS
        for s in conn.flush(t):
            assert not s.payload and s.seg.seq == seq(conn.ack, -1)
            probes += 1
            conn.deliver(t, window=0)
            conn.flush(t)
    assert state(conn.tcb) == TcpState.ESTABLISHED
    assert probes >= 25  # 2 s apart once capped


def test_orphan_facing_a_shut_window_is_reset_after_orphan_retries() -> None:
    """An orphan (closed by its application, data still queued) whose peer
    answers every probe with a zero window: reset after orphan_retries
    probes, as Linux's tcp_orphan_retries, instead of holding its data and
    a flow-table slot for ever (what a flood of such peers would do)."""
    rig = Rig(TcpSettings(orphan_retries=3, persist_max_us=2 * SECOND))
    conn = established(rig)
    conn.deliver(conn.now + MS, window=0)
    rig.engine.send(conn.tcb, b"waiting", conn.now)
    rig.engine.close(conn.tcb, conn.now)
    assert rig.engine.orphans == 1
    sent, t = [], conn.now
    while t < conn.now + 60 * SECOND and state(conn.tcb) != TcpState.CLOSED:
        t += 100 * MS
        for s in conn.flush(t):
            sent.append(s)
            conn.deliver(t, window=0)
    assert [s.flags for s in sent] == [ACK] * 3 + [RST | ACK]
    assert rig.counted(TcpCounter.ORPHAN_ABORTS) == 1
    assert rig.engine.orphans == 0 and not rig.engine.flows


def test_closes_beyond_max_orphans_reset() -> None:
    """tcp_max_orphans: a close() that would make one orphan too many
    resets the connection; the ones before it close in order."""
    rig = Rig(TcpSettings(max_orphans=1))
    first = established(rig)
    second = accepted_from(rig, PEER_PORT + 1)
    rig.engine.send(first.tcb, b"a", first.now)
    rig.engine.send(second, b"b", first.now)
    first.flush(first.now)
    rig.engine.close(first.tcb, first.now)
    rig.engine.close(second, first.now)
    flags = [(s.seg.dst_port, s.seg.flags) for s in rig.flush(first.now)]
    assert (PEER_PORT, ACK | FIN) in flags and (PEER_PORT + 1, RST | ACK) in flags
    assert rig.counted(TcpCounter.ORPHAN_ABORTS) == 1
    assert rig.engine.orphans == 1


def test_established_window_closed_by_ack_of_flight_starts_probing() -> None:
    """RFC 9293 §3.8.6.1: the ACK of everything in flight closes the window
    while data waits: with no RTO left, the persist timer takes over."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, bytes(10 * MSS + 500), conn.now)
    assert len(conn.flush(conn.now)) == 10
    t = conn.now + MS
    conn.deliver(t, ack=seq(conn.ack, 10 * MSS), window=0)
    assert conn.flush(t) == []
    assert brief(conn.flush(t + MIN_RTO)) == [("A", seq(conn.ack, 10 * MSS - 1), conn.seq, 0)]


def test_established_zero_window_reopened_sends_data() -> None:
    """RFC 9293 §3.8.6.1: a window update lets the held data go at once; the
    probing stops."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, window=0)
    t = conn.now
    rig.engine.send(conn.tcb, b"waiting", t)
    conn.flush(t)
    conn.flush(t + 200 * MS)  # one probe
    conn.deliver(t + 300 * MS, window=65535)
    assert brief(conn.flush(conn.now)) == [("PA", conn.ack, conn.seq, 7)]
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 7))
    assert conn.flush(conn.now) == []
    assert conn.flush(conn.now + 10 * SECOND) == []


def test_established_window_update_from_older_ack_ignored() -> None:
    """RFC 9293 §3.10.7.4 fifth step: the send window is taken only from a
    segment newer than the last update (SND.WL1 < SEG.SEQ, or SND.WL1 =
    SEG.SEQ and SND.WL2 =< SEG.ACK): a reordered older ACK cannot reopen it."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, b"abcd", conn.now)
    conn.flush(conn.now)
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 4), window=0)
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 2), window=65535)  # reordered
    rig.engine.send(conn.tcb, b"more", conn.now)
    assert conn.flush(conn.now) == []
    assert conn.tcb.snd_wnd == 0


def test_established_small_window_slice_held_at_first() -> None:
    """RFC 9293 §3.8.6.2.1: with more data queued than a small window (1000,
    under half the largest window ever offered, 65535), nothing is sent at
    once (sender SWS avoidance)."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, window=1000)
    rig.engine.send(conn.tcb, bytes(3000), conn.now)
    assert conn.flush(conn.now) == []


def test_established_small_window_override_timeout_sends_what_fits() -> None:
    """RFC 1122 §4.2.3.4 (4) / RFC 9293 §3.8.6.2.1: the SWS override timeout
    (0.1 to 1 s) sends what the window allows when nothing is in flight, else
    the connection deadlocks: no ACK will ever come to reopen the window
    (Linux fills the window from its probe timer, tcp_write_wakeup)."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, window=1000)
    t = conn.now
    rig.engine.send(conn.tcb, bytes(3000), t)
    sent = []
    for step in range(1, 11):
        sent += conn.flush(t + step * 100 * MS)
    assert brief(sent[:1]) == [("A", conn.ack, conn.seq, 1000)]


def test_established_sender_sws_small_window_slice_held() -> None:
    """RFC 9293 §3.8.6.2.1 (sender SWS avoidance): with more data than the
    usable window, a piece smaller than both the MSS and half the largest
    window ever offered is not sent."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, bytes(MSS), conn.now)
    conn.flush(conn.now)
    # The peer's window shrinks to 1560: 100 bytes usable beyond what's in flight.
    conn.deliver(conn.now + MS, ack=conn.ack, window=MSS + 100)
    rig.engine.send(conn.tcb, bytes(1000), conn.now)
    assert conn.flush(conn.now) == []


# -------------------------------------------------- our window (receiver SWS)


def test_established_receive_buffer_full_window_zero() -> None:
    """RFC 9293 §3.8.6.2.2: the window shrinks as the buffer fills; text
    beyond a zero window is not kept, but the ACK is sent."""
    rig = Rig(TcpSettings(receive_buffer=4096))
    conn = established(rig)
    windows = []
    for size in (1460, 1460, 1176):
        conn.deliver(conn.now + MS, bytes(size))
        windows += [s.seg.window for s in conn.flush(conn.now)]
    assert windows == [2636, 1176, 0]
    conn.deliver(conn.now + MS, b"x", seq=conn.seq)
    sent = conn.flush(conn.now)
    assert brief(sent) == [("A", conn.ack, conn.seq, 0)] and sent[0].seg.window == 0
    assert rig.dropped() == {"tcp_rcv_buffer_full": 1}


def test_established_small_read_no_window_update() -> None:
    """RFC 9293 §3.8.6.2.2 (receiver SWS avoidance), RFC 1122 §4.2.3.3: the
    window is not reopened by less than min(buffer/2, MSS): no update after a
    small read, and the next ACK still says 0."""
    rig = Rig(TcpSettings(receive_buffer=4096))
    conn = established(rig)
    for size in (1460, 1460, 1176):
        conn.deliver(conn.now + MS, bytes(size))
    conn.flush(conn.now)
    assert len(conn.read(100)) == 100
    assert conn.flush(conn.now) == []
    conn.deliver(conn.now + MS, seq=seq(conn.seq, -1))  # the peer's window probe
    sent = conn.flush(conn.now)
    assert brief(sent) == [("A", conn.ack, conn.seq, 0)] and sent[0].seg.window == 0


def test_established_read_reopening_window_by_mss_sends_update() -> None:
    """RFC 9293 §3.8.6.2.2, RFC 1122 §4.2.3.3: once the window can move by an
    MSS, a window update is sent without waiting for data."""
    rig = Rig(TcpSettings(receive_buffer=4096))
    conn = established(rig)
    for size in (1460, 1460, 1176):
        conn.deliver(conn.now + MS, bytes(size))
    conn.flush(conn.now)
    conn.read(100)
    conn.read(1400)
    sent = conn.flush(conn.now)
    assert brief(sent) == [("A", conn.ack, conn.seq, 0)] and sent[0].seg.window == 1500


def test_established_window_never_shrinks() -> None:
    """RFC 9293 §3.8.6.2.2 / RFC 1122 §4.2.2.16: the right edge advertised
    (RCV.NXT + RCV.WND) never moves left."""
    rig = Rig(TcpSettings(receive_buffer=4096))
    conn = established(rig)
    edges = []
    for size in (1000, 10, 1000, 10, 2000):
        conn.deliver(conn.now + MS, bytes(size))
        for s in conn.flush(conn.now):
            edges.append(seq(s.seg.ack, s.seg.window))
        conn.read(5)
    assert edges == sorted(edges)


# ------------------------------------------------------------------- Nagle


def test_established_nagle_holds_small_segment_until_ack() -> None:
    """RFC 9293 §3.7.4 / RFC 1122 §4.2.3.4 (Nagle): a short segment waits
    while data is unacknowledged; the ACK releases it."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, b"a" * 100, conn.now)
    assert brief(conn.flush(conn.now)) == [("PA", conn.ack, conn.seq, 100)]
    rig.engine.send(conn.tcb, b"b" * 100, conn.now)
    assert conn.flush(conn.now) == []
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 100))
    sent = conn.flush(conn.now)
    assert brief(sent) == [("PA", seq(conn.ack, 100), conn.seq, 100)]
    assert sent[0].payload == b"b" * 100


def test_established_nagle_full_segments_not_held() -> None:
    """RFC 1122 §4.2.3.4: only the short tail waits; full segments go."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, b"a" * 100, conn.now)
    conn.flush(conn.now)
    rig.engine.send(conn.tcb, bytes(2 * MSS + 80), conn.now)
    assert [len(s.payload) for s in conn.flush(conn.now)] == [MSS, MSS]


def test_established_nagle_tail_of_a_write_goes_when_no_short_segment_is_in_flight() -> None:
    """Minshall's Nagle, as Linux (tcp_minshall_check): what is held is a
    second short segment while the first is unacknowledged, not the tail
    of a write behind its full segments. That tail, once in flight, holds
    the next short one."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, bytes(2 * MSS + 80), conn.now)
    assert [len(s.payload) for s in conn.flush(conn.now)] == [MSS, MSS, 80]
    rig.engine.send(conn.tcb, b"b" * 100, conn.now)
    assert conn.flush(conn.now) == []
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 2 * MSS))  # not the tail yet
    assert conn.flush(conn.now) == []
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 2 * MSS + 80))
    assert brief(conn.flush(conn.now)) == [("PA", seq(conn.ack, 2 * MSS + 80), conn.seq, 100)]


def test_established_nodelay_small_segments_not_held() -> None:
    """TCP_NODELAY (RFC 1122 §4.2.3.4: the application can disable Nagle)."""
    rig = Rig()
    conn = established(rig)
    conn.tcb.nodelay = True
    rig.engine.send(conn.tcb, b"a" * 100, conn.now)
    assert len(conn.flush(conn.now)) == 1
    rig.engine.send(conn.tcb, b"b" * 100, conn.now)
    assert brief(conn.flush(conn.now)) == [("PA", seq(conn.ack, 100), conn.seq, 100)]


def test_established_nagle_tail_goes_with_fin() -> None:
    """RFC 9293 §3.10.4: close() flushes: the held tail goes with the FIN."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, b"a" * 100, conn.now)
    conn.flush(conn.now)
    rig.engine.send(conn.tcb, b"b" * 100, conn.now)
    rig.engine.close(conn.tcb, conn.now)
    assert brief(conn.flush(conn.now)) == [("FPA", seq(conn.ack, 100), conn.seq, 100)]
