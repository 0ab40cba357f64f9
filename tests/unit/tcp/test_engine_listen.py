"""LISTEN and CLOSED: what a listener and an unowned port do with each
kind of segment, and the SYN / accept queue limits (RFC 9293 §3.10.7.1,
§3.10.7.2; RFC 4987 §3 for the queues)."""

from __future__ import annotations

import errno

import pytest

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.engine import SocketError
from stackservice.tcp.segment import ACK, FIN, PSH, RST, SYN
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TcpState
from tests.unit.tcp._rig import LOCAL_PORT, MS, Rig
from tests.unit.tcp._states import (
    PEER_ISS,
    RTT,
    brief,
    established,
    flow,
    listening,
    seq,
    state,
    syn_received,
)

# ----------------------------------------------------- CLOSED (no socket)


def test_closed_syn_answered_rst_ack() -> None:
    """RFC 9293 §3.10.7.1: a segment without ACK gets
    <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> (SYN counts one)."""
    rig = Rig()
    rig.deliver(0, seq=PEER_ISS, flags=SYN)
    assert brief(rig.flush(0)) == [("RA", 0, PEER_ISS + 1, 0)]
    assert rig.dropped() == {"tcp_no_listener": 1}
    assert rig.counted(TcpCounter.RESETS_OUT) == 1


def test_closed_data_without_ack_answered_rst_ack_covering_text_and_fin() -> None:
    """RFC 9293 §3.10.7.1: SEG.LEN counts the text and the FIN."""
    rig = Rig()
    rig.deliver(0, seq=PEER_ISS, flags=PSH | FIN, payload=b"abcd")
    assert brief(rig.flush(0)) == [("RA", 0, PEER_ISS + 5, 0)]


def test_closed_ack_answered_rst_with_seg_ack() -> None:
    """RFC 9293 §3.10.7.1: a segment with ACK gets <SEQ=SEG.ACK><CTL=RST>."""
    rig = Rig()
    rig.deliver(0, seq=PEER_ISS, ack=123456, flags=ACK, payload=b"data")
    sent = rig.flush(0)
    assert brief(sent) == [("R", 123456, 0, 0)]
    assert (sent[0].seg.src_port, sent[0].seg.dst_port) == (LOCAL_PORT, 40000)


@pytest.mark.parametrize("flags", [RST, RST | ACK], ids=["rst", "rst-ack"])
def test_closed_rst_not_answered(flags: int) -> None:
    """RFC 9293 §3.10.7.1: "An incoming segment containing a RST is
    discarded" (smoltcp: never RST a RST)."""
    rig = Rig()
    rig.deliver(0, seq=PEER_ISS, ack=5, flags=flags)
    assert rig.flush(0) == []
    assert rig.dropped() == {"tcp_no_socket_rst": 1}
    assert rig.counted(TcpCounter.RESETS_OUT) == 0


def test_closed_other_port_of_listener_host_answered_rst() -> None:
    """RFC 9293 §3.10.7.1: a listener on one port owns nothing on another."""
    rig = Rig()
    listening(rig)
    rig.deliver(0, seq=PEER_ISS, flags=SYN, dst_port=81)
    sent = rig.flush(0)
    assert brief(sent) == [("RA", 0, PEER_ISS + 1, 0)]
    assert sent[0].seg.src_port == 81


# ------------------------------------------------------------------ LISTEN


def test_listen_rst_ignored() -> None:
    """RFC 9293 §3.10.7.2 first: "An incoming RST segment could not be
    valid ... it should be ignored"."""
    rig = Rig()
    listening(rig)
    rig.deliver(0, seq=PEER_ISS, flags=RST)
    assert rig.flush(0) == []
    assert rig.dropped() == {"tcp_listen_not_syn": 1}


@pytest.mark.parametrize("flags", [ACK, SYN | ACK], ids=["ack", "syn-ack"])
def test_listen_ack_answered_rst(flags: int) -> None:
    """RFC 9293 §3.10.7.2 second: any ACK in LISTEN is bad:
    <SEQ=SEG.ACK><CTL=RST>."""
    rig = Rig()
    listening(rig)
    rig.deliver(0, seq=PEER_ISS, ack=777, flags=flags)
    assert brief(rig.flush(0)) == [("R", 777, 0, 0)]
    assert flow(rig) is None


def test_listen_segment_without_syn_rst_or_ack_dropped() -> None:
    """RFC 9293 §3.10.7.2 fourth: other text or control: drop, no reply."""
    rig = Rig()
    listening(rig)
    rig.deliver(0, seq=PEER_ISS, flags=FIN, payload=b"x")
    assert rig.flush(0) == []
    assert rig.dropped() == {"tcp_listen_not_syn": 1}


def test_listen_same_port_twice_eaddrinuse() -> None:
    """bind(2)/listen(2): EADDRINUSE for a port that listens already."""
    rig = Rig()
    listening(rig)
    with pytest.raises(SocketError) as exc:
        rig.engine.listen(LOCAL_PORT, 8)
    assert exc.value.errno == errno.EADDRINUSE


def test_listen_accept_queue_full_syn_dropped() -> None:
    """RFC 4987 §3 / Linux: while the accept queue is full a new SYN is
    dropped silently (the client's retransmission retries); counted."""
    rig = Rig()
    listener = listening(rig, backlog=1)
    syn_received(rig, src_port=40001)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(flow(rig, 40001).iss, 1), src_port=40001)
    rig.flush(RTT)
    assert len(listener.accept_queue) == 1
    rig.deliver(2 * RTT, seq=PEER_ISS, flags=SYN, src_port=40002)
    assert rig.flush(2 * RTT) == []
    assert flow(rig, 40002) is None
    assert rig.dropped() == {"tcp_listen_queue_overflow": 1}
    assert rig.counted(TcpCounter.LISTEN_OVERFLOWS) == 1


def test_listen_accept_queue_full_then_accepted_syn_succeeds() -> None:
    """Once the application accepted, the retransmitted SYN gets through."""
    rig = Rig()
    listener = listening(rig, backlog=1)
    syn_received(rig, src_port=40001)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(flow(rig, 40001).iss, 1), src_port=40001)
    rig.deliver(2 * RTT, seq=PEER_ISS, flags=SYN, src_port=40002)
    rig.flush(2 * RTT)
    assert rig.engine.accept(listener) is not None
    syn_received(rig, 1_000 * MS, src_port=40002)


def test_syn_received_final_ack_accept_queue_full_stays_half_open() -> None:
    """Linux: a final ACK finding the accept queue full is dropped; the
    connection stays SYN-RECEIVED and completes when the peer repeats it."""
    rig = Rig()
    listener = listening(rig, backlog=2)
    a, _ = syn_received(rig, src_port=40001)
    b, _ = syn_received(rig, src_port=40002)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(a.iss, 1), src_port=40001)
    c, _ = syn_received(rig, RTT, src_port=40003)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(b.iss, 1), src_port=40002)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(c.iss, 1), src_port=40003)
    assert rig.flush(RTT) == []
    assert state(c) == TcpState.SYN_RECEIVED
    assert rig.dropped() == {"tcp_listen_queue_overflow": 1}
    assert rig.engine.accept(listener) is a
    rig.deliver(2 * RTT, seq=PEER_ISS + 1, ack=seq(c.iss, 1), src_port=40003)
    assert rig.flush(2 * RTT) == []
    assert state(c) == TcpState.ESTABLISHED
    assert list(listener.accept_queue) == [b, c]


def test_listen_syn_queue_full_without_cookies_syn_dropped() -> None:
    """RFC 4987 §3.1: with the half-open (SYN) queue full and no SYN cookies,
    further SYNs are dropped and counted."""
    rig = Rig(TcpSettings(syn_queue=2, syn_cookies=False))
    listening(rig)
    syn_received(rig, src_port=40001)
    syn_received(rig, src_port=40002)
    rig.deliver(0, seq=PEER_ISS, flags=SYN, src_port=40003)
    assert rig.flush(0) == []
    assert flow(rig, 40003) is None
    assert rig.dropped() == {"tcp_syn_queue_overflow": 1}


def test_listen_close_listener_resets_unaccepted() -> None:
    """close(2) of a listener (Linux inet_csk_listen_stop): connections
    never accepted are reset, half-open ones forgotten."""
    rig = Rig()
    listener = listening(rig)
    done, _ = syn_received(rig, src_port=40001)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(done.iss, 1), src_port=40001)
    half, _ = syn_received(rig, RTT, src_port=40002)
    rig.flush(RTT)
    rig.engine.close_listener(listener, 2 * RTT)
    sent = rig.flush(2 * RTT)
    assert brief(sent) == [("RA", seq(done.iss, 1), PEER_ISS + 1, 0)]
    assert sent[0].seg.dst_port == 40001
    assert state(done) == TcpState.CLOSED and state(half) == TcpState.CLOSED
    assert rig.engine.flows == {}
    assert rig.engine.poll_at() is None


def test_established_accepted_survives_listener_close() -> None:
    """An accepted connection is independent of its listener."""
    rig = Rig()
    conn = established(rig)
    rig.engine.close_listener(rig.engine.listeners[LOCAL_PORT], conn.now)
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.ESTABLISHED


def test_listeners_are_counted_in_listen_state_until_closed() -> None:
    """`vfstack_tcp_connections{state="listen"}` and `vfstack stats` count
    listeners, which have no TCB: one per listen(), gone at close, once."""
    rig = Rig()
    first = rig.engine.listen(LOCAL_PORT, 8)
    rig.engine.listen(LOCAL_PORT + 1, 8)
    assert rig.states[TcpState.LISTEN] == 2
    rig.engine.close_listener(first, 0)
    rig.engine.close_listener(first, 0)
    assert rig.states[TcpState.LISTEN] == 1
