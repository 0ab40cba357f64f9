"""RST, SYN and ACK checks on synchronized connections: RFC 9293 §3.10.7.4
with the RFC 5961 mitigations (challenge ACKs, rate limit)."""

from __future__ import annotations

import errno

import pytest

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.engine import SocketError
from stackservice.tcp.segment import ACK, RST, SYN
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TcpState
from stackservice.tcp.tcb import ERROR, HANGUP, READABLE
from tests.unit.tcp._rig import MS, Rig
from tests.unit.tcp._states import (
    PLAIN,
    brief,
    close_wait,
    established,
    fin_wait_2,
    flow,
    last_ack,
    seq,
    state,
    time_wait,
)

# ---------------------------------------------------------------- RST


def test_established_rst_at_rcv_nxt_resets_connection() -> None:
    """RFC 5961 §3.2 / RFC 9293 §3.10.7.4 second step: a RST whose SEG.SEQ is
    exactly RCV.NXT resets: CLOSED, the application gets ECONNRESET, no reply."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, flags=RST)
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.CLOSED and flow(rig) is None
    assert rig.engine.readiness(conn.tcb) & (ERROR | HANGUP) == ERROR | HANGUP
    assert conn.tcb in rig.engine.take_events()
    with pytest.raises(SocketError) as exc:
        rig.engine.send(conn.tcb, b"x", conn.now)
    assert exc.value.errno == errno.ECONNRESET
    assert rig.counted(TcpCounter.ESTABLISHED_RESETS) == 1


def test_established_rst_at_rcv_nxt_read_reports_econnreset() -> None:
    """RFC 9293 §3.10.7.4: RECEIVE calls get "connection reset"."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, flags=RST | ACK)
    with pytest.raises(SocketError) as exc:
        conn.read()
    assert exc.value.errno == errno.ECONNRESET


def test_established_rst_then_error_reported_later_reads_eof() -> None:
    """recv(2) after a reset (Linux tcp_recvmsg, house rule 10): the first
    call reports ECONNRESET, later calls return 0, since the socket is shut
    down both ways. EAGAIN would never end, while readiness keeps saying
    READABLE | HANGUP: an epoll loop would spin."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, flags=RST)
    with pytest.raises(SocketError):
        conn.read()
    assert rig.engine.readiness(conn.tcb) & READABLE
    assert conn.read() == b""


def test_established_rst_in_window_not_rcv_nxt_challenge_ack() -> None:
    """RFC 5961 §3.2: a RST in the window but not at RCV.NXT draws a challenge
    ACK <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> and is dropped."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, flags=RST, seq=seq(conn.seq, 1000))
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.ESTABLISHED
    assert rig.dropped() == {"tcp_rst_challenged": 1}
    assert rig.counted(TcpCounter.CHALLENGE_ACKS) == 1


def test_established_rst_out_of_window_ignored() -> None:
    """RFC 9293 §3.10.7.4 / RFC 5961 §3.2: a RST outside the window is
    silently discarded (no ACK for a RST)."""
    rig = Rig()
    conn = established(rig)
    for bad in (seq(conn.seq, -1), seq(conn.seq, 70000)):
        conn.deliver(conn.now + MS, flags=RST, seq=bad)
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.ESTABLISHED
    assert rig.dropped() == {"tcp_out_of_window": 2}


def test_established_rst_at_our_last_ack_behind_rcv_nxt_challenge_ack() -> None:
    """RFC 5961 §3.2 with Linux's window (from rcv_wup): bytes arrived since
    our last ACK, and the peer's RST aims at that ACK. It is in the window
    the peer knows: a challenge ACK, not a silent drop (which would leave
    us open for ever); the RST it draws, at RCV.NXT, resets."""
    rig = Rig()
    conn = established(rig)
    old_rcv_nxt = conn.seq
    conn.deliver(conn.now + MS, b"abc")  # taken, not yet acknowledged
    conn.deliver(conn.now, flags=RST, seq=old_rcv_nxt)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.ESTABLISHED
    assert rig.dropped() == {"tcp_rst_challenged": 1}
    conn.deliver(conn.now + MS, flags=RST)
    assert state(conn.tcb) == TcpState.CLOSED


def test_established_rst_at_our_window_edge_challenge_ack() -> None:
    """RFC 5961 §3.2 as Linux applies it: a RST exactly at the right edge we
    advertised (where Linux puts its RST when its SND.NXT lies beyond our
    window) is a challenge ACK, not a silent drop; one further is dropped."""
    rig = Rig()
    conn = established(rig)
    edge = conn.tcb.rcv_adv
    conn.deliver(conn.now + MS, flags=RST, seq=seq(edge, 1))
    assert conn.flush(conn.now) == []
    conn.deliver(conn.now + MS, flags=RST, seq=edge)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert rig.dropped() == {"tcp_out_of_window": 1, "tcp_rst_challenged": 1}


def test_established_abort_into_zero_window_rst_at_window_edge() -> None:
    """RFC 9293 §3.10.4 / RFC 5961 §3.2: the peer shrank its window to zero
    with our bytes beyond SND.UNA unacknowledged (Linux prunes under memory
    pressure). A RST at SND.MAX would lie past its window and be dropped
    unseen; it goes at the window's right edge (Linux tcp_acceptable_seq)."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, bytes(2920), conn.now)
    assert len(conn.flush(conn.now)) == 2
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 1460), window=0)
    conn.tcb.linger_zero = True
    rig.engine.close(conn.tcb, conn.now)
    assert brief(conn.flush(conn.now)) == [("RA", seq(conn.ack, 1460), conn.seq, 0)]


def test_close_wait_rst_resets_connection() -> None:
    """RFC 9293 §3.10.7.4 second step (ESTABLISHED ... CLOSE-WAIT): reset."""
    rig = Rig()
    conn = close_wait(rig)
    conn.deliver(conn.now + MS, flags=RST)
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.CLOSED
    with pytest.raises(SocketError) as exc:
        rig.engine.send(conn.tcb, b"x", conn.now)
    assert exc.value.errno == errno.ECONNRESET


def test_fin_wait_2_rst_resets_connection() -> None:
    """RFC 9293 §3.10.7.4 second step (FIN-WAIT-1/2): enter CLOSED."""
    rig = Rig()
    conn = fin_wait_2(rig, half_close=True)
    conn.deliver(conn.now + MS, flags=RST)
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.CLOSED and flow(rig) is None


@pytest.mark.parametrize("fixture", [last_ack, time_wait], ids=["last-ack", "time-wait"])
def test_closing_states_rst_deletes_tcb(fixture) -> None:
    """RFC 9293 §3.10.7.4 second step (CLOSING, LAST-ACK, TIME-WAIT): a RST
    at RCV.NXT: enter CLOSED, delete the TCB, no reply."""
    rig = Rig()
    conn = fixture(rig)
    conn.deliver(conn.now + MS, flags=RST)
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.CLOSED and flow(rig) is None
    assert rig.engine.poll_at() is None


# ---------------------------------------------------------------- SYN


def test_established_syn_in_window_challenge_ack() -> None:
    """RFC 5961 §4.2 / RFC 9293 §3.10.7.4 fourth step: a SYN in a
    synchronized state, whatever its sequence number, draws a challenge
    ACK; the connection is not reset."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, flags=SYN, seq=seq(conn.seq, 500), options=PLAIN)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.ESTABLISHED
    assert rig.dropped() == {"tcp_syn_challenged": 1}


def test_established_syn_at_rcv_nxt_challenge_ack() -> None:
    """RFC 5961 §4.2: even exactly at RCV.NXT, a SYN only gets an ACK."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, flags=SYN, seq=conn.seq, options=PLAIN)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.ESTABLISHED


def test_established_old_syn_out_of_window_acked() -> None:
    """RFC 9293 §3.10.7.4 first step: an unacceptable segment (a duplicate
    of the peer's SYN) is answered by an ACK and dropped."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, flags=SYN, seq=seq(conn.seq, -1), options=PLAIN)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.ESTABLISHED


def test_established_challenge_acks_limited_per_connection() -> None:
    """RFC 5961 §7, as Linux's tcp_invalid_ratelimit: one challenge ACK per
    500 ms per connection; the rest of a burst is counted, not sent, and
    the next comes once the interval has passed."""
    rig = Rig(TcpSettings(challenge_ack_per_s=0))
    conn = established(rig)
    sent = []
    for i in range(3):
        conn.deliver(conn.now + MS, flags=RST, seq=seq(conn.seq, 100 + i))
        sent += conn.flush(conn.now)
    assert brief(sent) == [("A", conn.ack, conn.seq, 0)]
    assert rig.counted(TcpCounter.CHALLENGE_ACKS_LIMITED) == 2
    conn.deliver(conn.now + 500 * MS, flags=RST, seq=seq(conn.seq, 200))
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert rig.counted(TcpCounter.CHALLENGE_ACKS) == 2


def test_established_challenge_acks_limited_by_the_instance_budget() -> None:
    """The instance-wide budget (here a mean of 2 a second, drawn from
    [1, 3)) stops challenge ACKs the per-connection limit would allow."""
    rig = Rig(TcpSettings(challenge_ack_per_s=2, invalid_ack_interval_us=0))
    conn = established(rig)
    sent = []
    for i in range(4):
        conn.deliver(conn.now + MS, flags=RST, seq=seq(conn.seq, 100 + i))
        sent += conn.flush(conn.now)
    assert 1 <= len(sent) <= 2
    assert rig.counted(TcpCounter.CHALLENGE_ACKS_LIMITED) == 4 - len(sent)


# ---------------------------------------------------------------- ACK


def test_established_ack_of_unsent_data_acked_and_dropped() -> None:
    """RFC 9293 §3.10.7.4 fifth step: SEG.ACK > SND.NXT acks something not
    yet sent: send an ACK, drop the segment (and its text), return."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, b"text", ack=seq(conn.ack, 10), seq=conn.seq)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert rig.dropped() == {"tcp_bad_ack": 1}
    assert conn.tcb.snd_una == conn.ack
    with pytest.raises(SocketError):
        conn.read()


def test_established_ack_too_old_challenge_ack() -> None:
    """RFC 5961 §5.2: SEG.ACK < SND.UNA - MAX.SND.WND is unacceptable: a
    challenge ACK, and the segment is dropped."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, b"text", ack=seq(conn.ack, -70000), seq=conn.seq)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert rig.dropped() == {"tcp_bad_ack": 1}
    assert rig.counted(TcpCounter.CHALLENGE_ACKS) == 1


def test_established_old_ack_within_max_window_accepted() -> None:
    """RFC 5961 §5.2: an old but still acceptable ACK (>= SND.UNA -
    MAX.SND.WND) is processed: its text is delivered."""
    rig = Rig()
    conn = established(rig)
    conn.deliver(conn.now + MS, b"text", ack=seq(conn.ack, -100))
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert conn.read() == b"text"
    assert rig.dropped() == {}


def test_reset_all_resets_connections_and_closes_listeners() -> None:
    """Shutting down (SIGTERM, docs/architecture.md): each connection gets a RST, the
    application sees ECONNRESET, no listener is left."""
    rig = Rig()
    conn = established(rig)
    rig.engine.reset_all(conn.now)
    sent = rig.flush(conn.now)
    assert [s.flags for s in sent] == [RST | ACK]
    assert rig.engine.flows == {} and rig.engine.listeners == {}
    with pytest.raises(SocketError) as error:
        rig.engine.send(conn.tcb, b"x", conn.now)
    assert error.value.errno == errno.ECONNRESET
