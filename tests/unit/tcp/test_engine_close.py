"""Closing: active, passive, simultaneous and half close, TIME-WAIT, and
the aborts close() turns into (RFC 9293 §3.6, §3.10.4, §3.10.7.4; RFC 6191;
RFC 2525 §2.17)."""

from __future__ import annotations

import errno

import pytest

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.engine import SocketError
from stackservice.tcp.segment import ACK, FIN, RST, SYN, TcpOptions
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TcpState
from stackservice.tcp.tcb import READ_HANGUP, READABLE, SHUT_WR
from tests.unit.tcp._rig import LOCAL_PORT, MS, PEER_IP, PEER_PORT, Rig
from tests.unit.tcp._states import (
    ALL_OPTIONS,
    MIN_RTO,
    PLAIN,
    brief,
    close_wait,
    established,
    fin_wait_1,
    fin_wait_2,
    flow,
    last_ack,
    seq,
    state,
    time_wait,
)

TIME_WAIT_US = TcpSettings().time_wait_us
SECOND = 1_000_000


# ------------------------------------------------------------ active close


def test_established_close_sends_fin_fin_wait_1() -> None:
    """RFC 9293 §3.10.4 CLOSE (ESTABLISHED): queue a FIN after the data,
    enter FIN-WAIT-1; the FIN is <SEQ=SND.NXT><CTL=FIN,ACK>."""
    rig = Rig()
    conn = established(rig)
    rig.engine.close(conn.tcb, conn.now)
    assert state(conn.tcb) == TcpState.FIN_WAIT_1
    assert brief(conn.flush(conn.now)) == [("FA", conn.ack, conn.seq, 0)]
    assert conn.flush(conn.now) == []


def test_fin_wait_1_ack_of_fin_fin_wait_2() -> None:
    """RFC 9293 §3.10.7.4 fifth step FIN-WAIT-1: once our FIN is
    acknowledged, enter FIN-WAIT-2; nothing is sent."""
    rig = Rig()
    conn = fin_wait_1(rig)
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 1))
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.FIN_WAIT_2
    # Nothing outstanding: only the orphan's FIN-WAIT-2 timeout is left.
    assert rig.engine.poll_at() == conn.now + rig.settings.fin_wait_2_us


def test_fin_wait_2_fin_acked_time_wait() -> None:
    """RFC 9293 §3.10.7.4 eighth step FIN-WAIT-2: the peer's FIN is ACKed,
    enter TIME-WAIT and start the 2 MSL timer."""
    rig = Rig()
    conn = fin_wait_2(rig)
    conn.deliver(conn.now + MS, flags=FIN | ACK)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.TIME_WAIT


def test_time_wait_timer_expires_closed() -> None:
    """RFC 9293 §3.10.8 (time-wait timeout): after 2 MSL (time_wait_us) the
    TCB is deleted, silently."""
    rig = Rig()
    conn = time_wait(rig)
    t = conn.now
    assert rig.flush(t + TIME_WAIT_US - 1) == []
    assert state(conn.tcb) == TcpState.TIME_WAIT and flow(rig) is conn.tcb
    assert rig.flush(t + TIME_WAIT_US) == []
    assert state(conn.tcb) == TcpState.CLOSED and flow(rig) is None
    assert rig.engine.poll_at() is None


def test_time_wait_retransmitted_fin_reacked_and_timer_restarted() -> None:
    """RFC 9293 §3.10.7.4 eighth step TIME-WAIT: "the only thing that can
    arrive in this state is a retransmission of the remote FIN. Acknowledge
    it, and restart the 2 MSL timeout"."""
    rig = Rig()
    conn = time_wait(rig)
    t = conn.now
    t1 = t + 30 * SECOND
    conn.deliver(t1, flags=FIN | ACK, seq=seq(conn.seq, -1))
    assert brief(conn.flush(t1)) == [("A", conn.ack, conn.seq, 0)]
    assert rig.flush(t + TIME_WAIT_US) == []
    assert state(conn.tcb) == TcpState.TIME_WAIT
    assert rig.flush(t1 + TIME_WAIT_US) == []
    assert state(conn.tcb) == TcpState.CLOSED


def test_time_wait_after_close_keeps_no_buffers_or_congestion_state() -> None:
    """A closed TIME-WAIT TCB keeps only sequence numbers and timestamps, as
    Linux's timewait minisock: tens of thousands of them must stay cheap for
    the cyclic GC. Its ACKs still advertise a window."""
    rig = Rig()
    conn = time_wait(rig)
    tcb = conn.tcb
    assert tcb.app_closed
    assert (tcb.send_buffer, tcb.rtt, tcb.cc, tcb.scoreboard) == (None, None, None, None)
    assert tcb.receive_buffer.readable() == 0 and tcb.receive_window() > 0
    conn.deliver(conn.now + MS, flags=FIN | ACK, seq=seq(conn.seq, -1))
    (ack,) = conn.flush(conn.now)
    assert ack.seg.window > 0


def test_time_wait_acceptable_ack_changes_nothing() -> None:
    """RFC 9293 §3.10.7.4: in TIME-WAIT all is acknowledged both ways; an
    acceptable ACK (Linux: TCP_TW_SUCCESS) sends nothing, keeps the timer."""
    rig = Rig()
    conn = time_wait(rig)
    t = conn.now
    conn.deliver(t + SECOND, flags=ACK)
    assert conn.flush(t + SECOND) == []
    assert state(conn.tcb) == TcpState.TIME_WAIT
    assert rig.flush(t + TIME_WAIT_US) == []
    assert state(conn.tcb) == TcpState.CLOSED


def test_time_wait_expired_segment_answered_by_rst() -> None:
    """RFC 9293 §3.10.7.1: once the TCB is gone, a late segment meets
    CLOSED: <SEQ=SEG.ACK><CTL=RST>."""
    rig = Rig()
    conn = time_wait(rig)
    rig.flush(conn.now + TIME_WAIT_US)
    rig.engine.close_listener(rig.engine.listeners[LOCAL_PORT], conn.now + TIME_WAIT_US)
    conn.deliver(conn.now + TIME_WAIT_US + MS, b"late")
    assert brief(conn.flush(conn.now)) == [("R", conn.ack, 0, 0)]


def test_fin_wait_2_time_wait_table_full_closes_at_once() -> None:
    """Linux tcp_max_tw_buckets: with the TIME-WAIT table full, a connection
    that would enter TIME-WAIT is closed at once (still ACKing the FIN), and
    the overflow counted (Linux tcp_fin sends the ACK before tcp_time_wait;
    unACKed, the peer sits in LAST-ACK resending its FIN until a RST)."""
    rig = Rig(TcpSettings(max_time_wait=0))
    conn = fin_wait_2(rig)
    conn.deliver(conn.now + MS, flags=FIN | ACK)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.CLOSED and flow(rig) is None
    assert rig.counted(TcpCounter.TIME_WAIT_OVERFLOWS) == 1
    assert rig.engine.poll_at() is None


# ---------------------------------------------------- TIME-WAIT recycling


def test_time_wait_syn_with_higher_seq_recycles() -> None:
    """RFC 6191 §2 (no timestamps) / RFC 9293 §3.10.7.4: a SYN whose sequence
    number is above RCV.NXT may reopen the connection: the TIME-WAIT TCB
    goes, the listener answers with a SYN-ACK."""
    rig = Rig()
    conn = time_wait(rig)
    old = conn.tcb
    new_iss = seq(conn.seq, 100_000)
    rig.deliver(conn.now + SECOND, seq=new_iss, flags=SYN, options=PLAIN)
    sent = rig.flush(conn.now + SECOND)
    tcb = flow(rig)
    assert tcb is not None and tcb is not old
    assert brief(sent) == [("SA", tcb.iss, seq(new_iss, 1), 0)]
    assert state(tcb) == TcpState.SYN_RECEIVED
    assert state(old) == TcpState.CLOSED
    assert rig.counted(TcpCounter.TIME_WAIT_RECYCLED) == 1


def test_time_wait_syn_with_lower_seq_acked_not_recycled() -> None:
    """RFC 6191 §2: a SYN at or below RCV.NXT (no timestamps) could be an
    old duplicate: TIME-WAIT stays and answers with an ACK."""
    rig = Rig()
    conn = time_wait(rig)
    rig.deliver(conn.now + SECOND, seq=seq(conn.seq, -10), flags=SYN, options=PLAIN)
    assert brief(rig.flush(conn.now + SECOND)) == [("A", conn.ack, conn.seq, 0)]
    assert flow(rig) is conn.tcb and state(conn.tcb) == TcpState.TIME_WAIT


def test_time_wait_syn_with_newer_timestamp_recycles_despite_lower_seq() -> None:
    """RFC 6191 §2: with timestamps, the SYN is accepted if its TSval is
    newer than TS.Recent, whatever its sequence number."""
    rig = Rig()
    conn = time_wait(rig, options=ALL_OPTIONS)
    t = conn.now + SECOND
    options = TcpOptions(mss=1460, sack_permitted=True, timestamps=(conn.tsval(t), 0))
    rig.deliver(t, seq=seq(conn.seq, -10), flags=SYN, options=options)
    sent = rig.flush(t)
    assert [s.flags for s in sent] == [SYN | ACK]
    assert flow(rig) is not conn.tcb
    assert rig.counted(TcpCounter.TIME_WAIT_RECYCLED) == 1


def test_time_wait_syn_with_older_timestamp_not_recycled() -> None:
    """RFC 6191 §2: with timestamps, a SYN whose TSval is not newer is not
    accepted, even with a higher sequence number."""
    rig = Rig()
    conn = time_wait(rig, options=ALL_OPTIONS)
    t = conn.now + SECOND
    old_ts = conn.tsval(conn.now) - 5
    options = TcpOptions(mss=1460, timestamps=(old_ts, 0))
    rig.deliver(t, seq=seq(conn.seq, 100_000), flags=SYN, options=options)
    sent = rig.flush(t)
    assert [s.flags for s in sent] == [ACK]
    assert flow(rig) is conn.tcb and state(conn.tcb) == TcpState.TIME_WAIT
    assert rig.counted(TcpCounter.TIME_WAIT_RECYCLED) == 0


# ----------------------------------------------------------- passive close


def test_established_fin_acked_close_wait_eof() -> None:
    """RFC 9293 §3.10.7.4 eighth step: a FIN advances RCV.NXT, is ACKed and
    enters CLOSE-WAIT; the application reads EOF (0), sees READ_HANGUP."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, flags=FIN | ACK)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.CLOSE_WAIT
    assert rig.engine.readiness(conn.tcb) & (READABLE | READ_HANGUP) == READABLE | READ_HANGUP
    assert conn.read() == b""


def test_established_data_with_fin_delivered_then_eof() -> None:
    """RFC 9293 §3.10.7.4 seventh and eighth steps: text then FIN in one
    segment, one ACK covering both."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, b"last", flags=FIN | ACK)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert conn.read() == b"last"
    assert conn.read() == b""


def test_established_fin_after_hole_consumed_when_hole_filled() -> None:
    """RFC 9293 §3.10.7.4: a FIN beyond a gap is not processed until the
    text before it has arrived."""
    rig = Rig()
    conn = established(rig)
    start = conn.seq
    conn.deliver(conn.now + MS, b"world", flags=FIN | ACK, seq=seq(start, 5))
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, start, 0)]
    assert state(conn.tcb) == TcpState.ESTABLISHED
    conn.deliver(conn.now + MS, b"hello", seq=start)
    conn.seq = seq(start, 11)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.CLOSE_WAIT
    assert conn.read() == b"helloworld"


def test_close_wait_retransmitted_fin_reacked() -> None:
    """RFC 9293 §3.10.7.4 first step: the peer's FIN again (our ACK was lost)
    is old: ACK it again; the state does not change."""
    rig = Rig()
    conn = close_wait(rig)
    conn.deliver(conn.now + 200 * MS, flags=FIN | ACK, seq=seq(conn.seq, -1))
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.CLOSE_WAIT
    assert conn.read() == b""


def test_last_ack_no_ack_fin_resent_at_rto() -> None:
    """RFC 6298 (5.4): in LAST-ACK our FIN is retransmitted until ACKed."""
    rig = Rig()
    conn = last_ack(rig)
    assert brief(conn.flush(conn.now + MIN_RTO)) == [("FA", conn.ack, conn.seq, 0)]


def test_close_wait_close_sends_fin_last_ack() -> None:
    """RFC 9293 §3.10.4 CLOSE (CLOSE-WAIT): send FIN, enter LAST-ACK."""
    rig = Rig()
    conn = close_wait(rig)
    rig.engine.close(conn.tcb, conn.now)
    assert state(conn.tcb) == TcpState.LAST_ACK
    assert brief(conn.flush(conn.now)) == [("FA", conn.ack, conn.seq, 0)]


def test_last_ack_ack_of_fin_closed() -> None:
    """RFC 9293 §3.10.7.4 fifth step LAST-ACK: the ACK of our FIN deletes
    the TCB; nothing is sent and no timer stays."""
    rig = Rig()
    conn = last_ack(rig)
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 1))
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.CLOSED and flow(rig) is None
    assert rig.engine.poll_at() is None


def test_close_wait_send_still_allowed() -> None:
    """RFC 9293 §3.10.2 SEND (CLOSE-WAIT): the peer closed its side only."""
    rig = Rig()
    conn = close_wait(rig)
    assert rig.engine.send(conn.tcb, b"reply", conn.now) == 5
    assert brief(conn.flush(conn.now)) == [("PA", conn.ack, conn.seq, 5)]


# ------------------------------------------------------- simultaneous close


def test_fin_wait_1_fin_without_ack_of_ours_closing() -> None:
    """RFC 9293 §3.6 figure 13, §3.10.7.4 eighth step FIN-WAIT-1: the peer's
    FIN before the ACK of ours: ACK it, enter CLOSING."""
    rig = Rig()
    conn = fin_wait_1(rig)
    conn.deliver(conn.now + MS, flags=FIN | ACK)  # acks up to our FIN, not it
    assert brief(conn.flush(conn.now)) == [("A", seq(conn.ack, 1), conn.seq, 0)]
    assert state(conn.tcb) == TcpState.CLOSING


def test_closing_ack_of_fin_time_wait() -> None:
    """RFC 9293 §3.10.7.4 fifth step CLOSING: the ACK of our FIN enters
    TIME-WAIT."""
    rig = Rig()
    conn = fin_wait_1(rig)
    conn.deliver(conn.now + MS, flags=FIN | ACK)
    conn.flush(conn.now)
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 1))
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.TIME_WAIT
    assert rig.flush(conn.now + TIME_WAIT_US) == []
    assert state(conn.tcb) == TcpState.CLOSED


def test_fin_wait_1_fin_acking_ours_time_wait() -> None:
    """RFC 9293 §3.10.7.4 eighth step FIN-WAIT-1: "If our FIN has been ACKed
    (perhaps in this segment), then enter TIME-WAIT"."""
    rig = Rig()
    conn = fin_wait_1(rig)
    conn.deliver(conn.now + MS, flags=FIN | ACK, ack=seq(conn.ack, 1))
    assert brief(conn.flush(conn.now)) == [("A", seq(conn.ack, 1), conn.seq, 0)]
    assert state(conn.tcb) == TcpState.TIME_WAIT


# ------------------------------------------------------------- half close


def test_established_shutdown_wr_sends_fin_still_receives() -> None:
    """RFC 9293 §3.6 / §3.10.4 (half-close): after shutdown(SHUT_WR) and the
    ACK of our FIN, FIN-WAIT-2 still delivers the peer's data (RFC 9293
    §3.10.7.4 seventh step)."""
    rig = Rig()
    conn = fin_wait_2(rig, half_close=True)
    conn.deliver(conn.now + MS, b"still talking")
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert conn.read() == b"still talking"
    assert state(conn.tcb) == TcpState.FIN_WAIT_2


def test_established_shutdown_wr_then_send_epipe() -> None:
    """shutdown(2) SHUT_WR: later sends fail with EPIPE."""
    rig = Rig()
    conn = established(rig)
    rig.engine.shutdown(conn.tcb, SHUT_WR, conn.now)
    with pytest.raises(SocketError) as exc:
        rig.engine.send(conn.tcb, b"x", conn.now)
    assert exc.value.errno == errno.EPIPE


def test_established_shutdown_wr_fin_after_buffered_data() -> None:
    """RFC 9293 §3.10.4: the FIN follows all data already queued."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, b"tail", conn.now)
    rig.engine.shutdown(conn.tcb, SHUT_WR, conn.now)
    assert brief(conn.flush(conn.now)) == [("FPA", conn.ack, conn.seq, 4)]


def test_fin_wait_2_half_closed_peer_fin_time_wait_eof() -> None:
    """RFC 9293 §3.10.7.4: the half-closed side ends in TIME-WAIT when the
    peer's FIN arrives; the application reads EOF."""
    rig = Rig()
    conn = fin_wait_2(rig, half_close=True)
    conn.deliver(conn.now + MS, b"bye", flags=FIN | ACK)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.TIME_WAIT
    assert conn.read() == b"bye"
    assert conn.read() == b""


# ------------------------------------------------------------------ aborts


def test_established_close_with_unread_data_resets() -> None:
    """RFC 2525 §2.17 / RFC 9293 §3.10.4 (as Linux): close() with unread
    received data sends <SEQ=SND.NXT><CTL=RST,ACK> instead of a FIN and
    deletes the TCB."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, b"unread")
    conn.flush(conn.now)
    rig.engine.close(conn.tcb, conn.now)
    assert brief(conn.flush(conn.now)) == [("RA", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.CLOSED and flow(rig) is None
    assert rig.counted(TcpCounter.APP_ABORTS) == 1
    assert rig.engine.poll_at() is None


def test_close_wait_close_with_unread_data_resets() -> None:
    """RFC 2525 §2.17: the same in CLOSE-WAIT (data, then FIN, unread)."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, b"unread", flags=FIN | ACK)
    conn.flush(conn.now)
    rig.engine.close(conn.tcb, conn.now)
    assert brief(conn.flush(conn.now)) == [("RA", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.CLOSED


def test_fin_wait_2_data_after_close_resets() -> None:
    """RFC 9293 §3.10.4 / RFC 2525 §2.17 (Linux): text arriving after close()
    cannot be delivered to anyone: answer with a RST and drop the TCB."""
    rig = Rig()
    conn = fin_wait_2(rig)
    conn.deliver(conn.now + MS, b"anyone?")
    assert brief(conn.flush(conn.now)) == [("RA", conn.ack, seq(conn.seq, -7), 0)]
    assert state(conn.tcb) == TcpState.CLOSED and flow(rig) is None
    assert rig.dropped() == {"tcp_data_after_close": 1}


def test_fin_wait_1_data_after_close_resets() -> None:
    """As above, before the peer ACKed our FIN: the RST goes at SND.MAX (the
    peer got the FIN) and at SND.UNA (it did not), since only one at its
    RCV.NXT is sure to be taken (output.send_reset)."""
    rig = Rig()
    conn = fin_wait_1(rig)
    conn.deliver(conn.now + MS, b"anyone?")
    sent = conn.flush(conn.now)
    rcv_nxt = seq(conn.seq, -7)  # the data was refused, not taken
    assert brief(sent) == [("RA", seq(conn.ack, 1), rcv_nxt, 0), ("RA", conn.ack, rcv_nxt, 0)]
    assert state(conn.tcb) == TcpState.CLOSED


def test_established_linger_zero_close_resets() -> None:
    """SO_LINGER {on, 0} (RFC 9293 §3.10.5 ABORT): close() sends a RST."""
    rig = Rig()
    conn = established(rig)
    conn.tcb.linger_zero = True
    rig.engine.close(conn.tcb, conn.now)
    assert brief(conn.flush(conn.now)) == [("RA", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.CLOSED


def test_syn_sent_close_deletes_silently() -> None:
    """RFC 9293 §3.10.4 CLOSE (SYN-SENT): delete the TCB; nothing is sent and
    no SYN retransmission follows."""
    rig = Rig()
    tcb = rig.engine.connect(PEER_IP, PEER_PORT, 0, local_port=LOCAL_PORT)
    rig.flush(0)
    rig.engine.close(tcb, 0)
    assert rig.flush(10 * SECOND) == []
    assert state(tcb) == TcpState.CLOSED
    assert rig.engine.poll_at() is None


def test_fin_wait_2_orphan_without_peer_fin_dropped_after_timeout() -> None:
    """Linux tcp_fin_timeout (RFC 9293 sets no bound): after close() and the
    ACK of our FIN, a peer that never sends its FIN does not hold the TCB
    forever."""
    rig = Rig(TcpSettings(fin_wait_2_us=30_000 * MS))
    conn = fin_wait_2(rig)
    assert rig.flush(conn.now + 29_000 * MS) == []
    assert state(conn.tcb) == TcpState.FIN_WAIT_2
    assert rig.flush(conn.now + 30_000 * MS) == []
    assert state(conn.tcb) == TcpState.CLOSED
    assert rig.engine.flows == {}


def test_fin_wait_2_half_closed_kept_beyond_timeout() -> None:
    """shutdown(SHUT_WR) leaves the application reading: no timeout."""
    rig = Rig(TcpSettings(fin_wait_2_us=30_000 * MS))
    conn = fin_wait_2(rig, half_close=True)
    assert rig.flush(conn.now + 60_000 * MS) == []
    assert state(conn.tcb) == TcpState.FIN_WAIT_2


# ------------------------------------------------------------- orphans


def test_orphans_counted_from_close_until_closed_or_time_wait() -> None:
    """`orphans` (what max_orphans bounds) counts the connections closed by
    their application that still hold a FIN or data: each close order
    takes its orphan back exactly once, whichever way the TCB ends."""
    rig = Rig(TcpSettings(fin_wait_2_us=30_000 * MS))
    conn = fin_wait_2(rig)  # close(): FIN-WAIT-1, then 2
    assert rig.engine.orphans == 1
    conn.deliver(conn.now + MS, flags=FIN | ACK)
    conn.flush(conn.now)
    assert state(conn.tcb) == TcpState.TIME_WAIT and rig.engine.orphans == 0
    rig.flush(conn.now + 120 * SECOND)  # TIME-WAIT over
    assert rig.engine.orphans == 0 and not rig.engine.flows

    for end in ("ack of FIN", "rst", "fin-wait-2 timeout", "linger 0", "syn-sent"):
        rig = Rig(TcpSettings(fin_wait_2_us=30_000 * MS))
        if end == "ack of FIN":
            conn = last_ack(rig)
            conn.deliver(conn.now + MS, ack=seq(conn.ack, 1))
        elif end == "rst":
            conn = last_ack(rig)
            conn.deliver(conn.now + MS, flags=RST)
        elif end == "fin-wait-2 timeout":
            conn = fin_wait_2(rig)
            rig.flush(conn.now + 30_000 * MS)
        elif end == "linger 0":
            conn = established(rig)
            conn.tcb.linger_zero = True
            rig.engine.close(conn.tcb, conn.now)
        else:
            tcb = rig.engine.connect(PEER_IP, PEER_PORT, 0, local_port=LOCAL_PORT)
            rig.engine.close(tcb, 0)
        rig.flush(200 * SECOND)
        assert rig.engine.orphans == 0, end
        assert not rig.engine.flows, end
