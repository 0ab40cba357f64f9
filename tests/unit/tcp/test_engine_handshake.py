"""Opening a connection: passive, active and simultaneous open, the options
each side offers, and the SYN / SYN-ACK retransmission timers
(RFC 9293 §3.5, §3.10.7; RFC 6298 §5; RFC 7323; RFC 2018; RFC 6691)."""

from __future__ import annotations

import errno

import pytest

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.engine import SocketError
from stackservice.tcp.segment import ACK, RST, SYN, TcpOptions
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TcpState
from stackservice.tcp.tcb import ERROR, HANGUP, READABLE, WRITABLE
from tests.unit.tcp._rig import MS, PEER_IP, PEER_PORT, Rig
from tests.unit.tcp._states import (
    ALL_OPTIONS,
    MIN_RTO,
    PEER_ISS,
    PEER_TS,
    PLAIN,
    RTT,
    SACK_ONLY,
    brief,
    established,
    established_active,
    flow,
    listening,
    seq,
    state,
    syn_received,
    syn_sent,
)

SECOND = 1_000_000
OUR_MSS = 1460  # TcpSettings().mss for the default 1500-byte MTU
OUR_WSCALE = 5  # 256 KiB receive buffer, window scale for 4x that (engine's choice)


# ------------------------------------------------------------ passive open


def test_listen_syn_without_options_synack_carries_mss_only() -> None:
    """RFC 9293 §3.10.7.2: SYN -> SYN-ACK <SEQ=ISS><ACK=RCV.NXT>. RFC 7323
    §1.3 / RFC 2018 §2: WS, TS and SACK-permitted only if the SYN had them;
    the MSS option may always be sent (RFC 9293 §3.7.1)."""
    rig = Rig()
    listening(rig)
    rig.deliver(0, seq=PEER_ISS, flags=SYN)
    sent = rig.flush(0)
    tcb = flow(rig)
    assert tcb is not None
    assert brief(sent) == [("SA", tcb.iss, PEER_ISS + 1, 0)]
    assert sent[0].seg.options == TcpOptions(mss=OUR_MSS)
    assert sent[0].seg.window == 65535  # a SYN's window is never scaled (RFC 7323 §2.2)
    assert state(tcb) == TcpState.SYN_RECEIVED
    assert rig.flush(0) == []


def test_listen_syn_with_all_options_synack_offers_all() -> None:
    """RFC 7323 §2.2, §3.2 and RFC 2018 §2: each option offered is answered;
    TSecr echoes the SYN's TSval."""
    rig = Rig()
    listening(rig)
    rig.deliver(0, seq=PEER_ISS, flags=SYN, options=ALL_OPTIONS)
    sent = rig.flush(0)
    assert [s.flags for s in sent] == [SYN | ACK]
    options = sent[0].seg.options
    assert options.mss == OUR_MSS
    assert options.window_scale == OUR_WSCALE
    assert options.sack_permitted
    assert options.timestamps is not None and options.timestamps[1] == PEER_TS
    assert rig.flush(0) == []


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        (SACK_ONLY, TcpOptions(mss=OUR_MSS, sack_permitted=True)),
        (TcpOptions(mss=1000, window_scale=2), TcpOptions(mss=OUR_MSS, window_scale=OUR_WSCALE)),
    ],
    ids=["sack-only", "ws-only"],
)
def test_listen_syn_with_some_options_synack_answers_only_those(
    offered: TcpOptions, answered: TcpOptions
) -> None:
    """RFC 7323 §1.3, §2.2; RFC 2018 §2: never an option the peer did not offer."""
    rig = Rig()
    listening(rig)
    rig.deliver(0, seq=PEER_ISS, flags=SYN, options=offered)
    sent = rig.flush(0)
    assert [s.seg.options for s in sent] == [answered]


def test_syn_received_final_ack_established_and_accepted() -> None:
    """RFC 9293 §3.10.7.4 SYN-RECEIVED: an acceptable ACK enters ESTABLISHED;
    the connection waits on the accept queue, the listener turns readable."""
    rig = Rig()
    listener = listening(rig)
    tcb, synack = syn_received(rig)
    assert rig.engine.accept(listener) is None
    assert rig.engine.readiness(listener) == 0
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(synack.seg.seq, 1))
    assert rig.flush(RTT) == []
    assert state(tcb) == TcpState.ESTABLISHED
    assert listener in rig.engine.take_events()
    assert rig.engine.readiness(listener) & READABLE
    assert rig.engine.accept(listener) is tcb
    assert rig.engine.accept(listener) is None
    assert rig.engine.readiness(tcb) & WRITABLE
    assert rig.counted(TcpCounter.PASSIVE_OPENS) == 1


def test_syn_received_final_ack_with_data_delivers_it() -> None:
    """RFC 9293 §3.10.7.4: the handshake's last ACK may carry text; it is
    processed after the state change."""
    rig = Rig()
    listener = listening(rig)
    tcb, synack = syn_received(rig)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(synack.seg.seq, 1), payload=b"hello")
    assert brief(rig.flush(RTT)) == [("A", seq(tcb.iss, 1), PEER_ISS + 6, 0)]
    assert rig.engine.accept(listener) is tcb
    out = bytearray(16)
    assert rig.engine.receive_into(tcb, out, RTT) == 5
    assert bytes(out[:5]) == b"hello"


def test_syn_received_bad_ack_resets_with_seg_ack() -> None:
    """RFC 9293 §3.10.7.4 SYN-RECEIVED: an unacceptable ACK is answered by
    <SEQ=SEG.ACK><CTL=RST>; the half-open connection stays."""
    rig = Rig()
    listening(rig)
    tcb, synack = syn_received(rig)
    bad = seq(synack.seg.seq, 1000)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=bad)
    assert brief(rig.flush(RTT)) == [("R", bad, 0, 0)]
    assert rig.dropped() == {"tcp_bad_ack": 1}
    assert state(tcb) == TcpState.SYN_RECEIVED


def test_syn_received_retransmitted_syn_resends_synack() -> None:
    """RFC 9293 §3.10.7.4 (as Linux): the peer's SYN again means our SYN-ACK
    was lost; answer with the same SYN-ACK."""
    rig = Rig()
    listening(rig)
    tcb, _ = syn_received(rig)
    rig.deliver(500 * MS, seq=PEER_ISS, flags=SYN)
    sent = rig.flush(500 * MS)
    assert brief(sent) == [("SA", tcb.iss, PEER_ISS + 1, 0)]
    assert rig.flush(500 * MS) == []


def test_syn_received_rst_returns_to_listen() -> None:
    """RFC 9293 §3.10.7.4 SYN-RECEIVED, passive open: a RST returns the
    connection to LISTEN (the listener stays, the TCB goes)."""
    rig = Rig()
    listener = listening(rig)
    tcb, _ = syn_received(rig)
    rig.deliver(RTT, seq=PEER_ISS + 1, flags=RST)
    assert rig.flush(RTT) == []
    assert flow(rig) is None and state(tcb) == TcpState.CLOSED
    assert not listener.half_open
    assert rig.engine.accept(listener) is None
    syn_received(rig, 2 * RTT)  # still listening


# ------------------------------------------------------------- active open


def test_closed_connect_sends_syn_with_our_options() -> None:
    """RFC 9293 §3.10.1 OPEN: <SEQ=ISS><CTL=SYN>, SND.UNA = ISS, SND.NXT =
    ISS + 1; RFC 7323 §2.2 / §3.2, RFC 2018 §2: we offer WS, TS (TSecr 0),
    SACK-permitted, and our MSS (RFC 9293 §3.7.1)."""
    rig = Rig()
    tcb, synack = syn_sent(rig)
    assert brief([synack]) == [("S", tcb.iss, 0, 0)]
    options = synack.seg.options
    assert options.mss == OUR_MSS
    assert options.window_scale == OUR_WSCALE
    assert options.sack_permitted
    assert options.timestamps is not None and options.timestamps[1] == 0
    assert synack.seg.window == 65535
    assert state(tcb) == TcpState.SYN_SENT
    assert (tcb.snd_una, tcb.snd_nxt) == (tcb.iss, seq(tcb.iss, 1))
    assert rig.counted(TcpCounter.ACTIVE_OPENS) == 1
    assert rig.flush(0) == []


def test_syn_sent_synack_acks_and_establishes() -> None:
    """RFC 9293 §3.10.7.3: SYN with an acceptable ACK -> ESTABLISHED and
    <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>; the application sees WRITABLE."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    rig.deliver(RTT, seq=PEER_ISS, ack=seq(tcb.iss, 1), flags=SYN | ACK, options=PLAIN)
    assert brief(rig.flush(RTT)) == [("A", seq(tcb.iss, 1), PEER_ISS + 1, 0)]
    assert state(tcb) == TcpState.ESTABLISHED
    assert tcb in rig.engine.take_events()
    assert rig.engine.readiness(tcb) == WRITABLE
    assert rig.flush(RTT) == []


def test_syn_sent_data_queued_before_synack_goes_with_the_ack() -> None:
    """RFC 9293 §3.10.7.3: data queued in SYN-SENT is sent once ESTABLISHED
    (our ACK rides on it)."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    assert rig.engine.send(tcb, b"early", 0) == 5
    assert rig.flush(0) == []
    rig.deliver(RTT, seq=PEER_ISS, ack=seq(tcb.iss, 1), flags=SYN | ACK, options=PLAIN)
    assert brief(rig.flush(RTT)) == [("PA", seq(tcb.iss, 1), PEER_ISS + 1, 5)]


def test_syn_sent_rst_with_acceptable_ack_refuses_connection() -> None:
    """RFC 9293 §3.10.7.3: RST with an acceptable ACK -> CLOSED, "connection
    reset" (ECONNREFUSED, as the kernel reports it); no reply."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    rig.deliver(RTT, seq=0, ack=seq(tcb.iss, 1), flags=RST | ACK)
    assert rig.flush(RTT) == []
    assert state(tcb) == TcpState.CLOSED
    assert rig.engine.readiness(tcb) & (ERROR | HANGUP) == ERROR | HANGUP
    with pytest.raises(SocketError) as exc:
        rig.engine.send(tcb, b"x", RTT)
    assert exc.value.errno == errno.ECONNREFUSED
    assert rig.counted(TcpCounter.ATTEMPT_FAILS) == 1


def test_syn_sent_rst_without_ack_ignored() -> None:
    """RFC 9293 §3.10.7.3: a RST without ACK is dropped in SYN-SENT."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    rig.deliver(RTT, seq=PEER_ISS, flags=RST)
    assert rig.flush(RTT) == []
    assert state(tcb) == TcpState.SYN_SENT
    assert rig.dropped() == {"tcp_syn_sent_unexpected": 1}


@pytest.mark.parametrize("ack_delta", [0, 2, -5], ids=["ack=iss", "ack>snd.nxt", "ack<iss"])
def test_syn_sent_bad_ack_resets_with_seg_ack(ack_delta: int) -> None:
    """RFC 9293 §3.10.7.3: SEG.ACK =< ISS or > SND.NXT -> <SEQ=SEG.ACK><CTL=RST>
    (unless RST), drop; the connection attempt goes on."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    bad = seq(tcb.iss, ack_delta)
    rig.deliver(RTT, seq=PEER_ISS, ack=bad, flags=SYN | ACK)
    assert brief(rig.flush(RTT)) == [("R", bad, 0, 0)]
    assert state(tcb) == TcpState.SYN_SENT
    assert rig.dropped() == {"tcp_syn_sent_unexpected": 1}


def test_syn_sent_rst_with_bad_ack_ignored() -> None:
    """RFC 9293 §3.10.7.3: an unacceptable ACK on a RST: drop, no reply."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    rig.deliver(RTT, seq=0, ack=seq(tcb.iss, 7), flags=RST | ACK)
    assert rig.flush(RTT) == []
    assert state(tcb) == TcpState.SYN_SENT


def test_syn_sent_synack_window_not_scaled() -> None:
    """RFC 7323 §2.2: "The window field in a SYN (i.e., a <SYN> or <SYN,ACK>)
    segment itself is never scaled." A SYN-ACK window of 1000 with WS 7 lets
    1000 bytes out, not 128000."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    rig.deliver(
        RTT, seq=PEER_ISS, ack=seq(tcb.iss, 1), flags=SYN | ACK, window=1000,
        options=TcpOptions(mss=1460, window_scale=7),
    )  # fmt: skip
    rig.flush(RTT)
    rig.engine.send(tcb, bytes(5000), RTT)
    sent = rig.flush(RTT)
    assert sum(len(s.payload) for s in sent) == 1000


def test_syn_sent_synack_without_ws_disables_scaling_both_ways() -> None:
    """RFC 7323 §2.2: scaling is on only if both SYNs carried WS; else our
    window fields are unscaled (capped at 65535)."""
    rig = Rig()
    conn = established_active(rig, options=TcpOptions(mss=1460, sack_permitted=True))
    assert (conn.tcb.rcv_wscale, conn.tcb.snd_wscale) == (0, 0)
    conn.deliver(conn.now + MS, b"x")
    sent = conn.flush(conn.now)
    assert [s.seg.window for s in sent] == [65535]


def test_established_retransmitted_synack_reacked() -> None:
    """RFC 9293 §3.10.7.4 first step: our ACK of the SYN-ACK was lost and the
    SYN-ACK comes again: it is unacceptable now (old), so it is answered by
    <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> and the connection is unchanged."""
    rig = Rig()
    conn = established_active(rig)
    rig.deliver(SECOND, seq=PEER_ISS, ack=conn.ack, flags=SYN | ACK, options=PLAIN)
    assert brief(conn.flush(SECOND)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.ESTABLISHED


# ---------------------------------------------------------- simultaneous open


def test_syn_sent_syn_simultaneous_open_sends_synack() -> None:
    """RFC 9293 §3.5 figure 8 line 3-5: SYN in SYN-SENT -> SYN-RECEIVED and
    <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    rig.deliver(RTT, seq=PEER_ISS, flags=SYN, options=PLAIN)
    assert brief(rig.flush(RTT)) == [("SA", tcb.iss, PEER_ISS + 1, 0)]
    assert state(tcb) == TcpState.SYN_RECEIVED
    assert rig.flush(RTT) == []


def test_syn_received_simultaneous_open_ack_establishes() -> None:
    """RFC 9293 §3.5 figure 8, RFC 9293 §3.10.7.4: in SYN-RECEIVED an ACK of
    our SYN establishes; the connecting application is told (no accept)."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    rig.deliver(RTT, seq=PEER_ISS, flags=SYN, options=PLAIN)
    rig.flush(RTT)
    rig.engine.take_events()
    rig.deliver(2 * RTT, seq=PEER_ISS + 1, ack=seq(tcb.iss, 1))
    assert rig.flush(2 * RTT) == []
    assert state(tcb) == TcpState.ESTABLISHED
    assert tcb in rig.engine.take_events()
    assert rig.engine.readiness(tcb) & WRITABLE


def test_syn_received_simultaneous_open_synack_establishes() -> None:
    """RFC 9293 §3.5 figure 8 line 6: the peer's <SEQ=300><ACK=101><CTL=SYN,ACK>
    moves SYN-RECEIVED to ESTABLISHED (Linux passes it in
    tcp_validate_incoming). Its SYN is the one already received: it must
    not be challenged or dropped as out of window."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    rig.deliver(RTT, seq=PEER_ISS, flags=SYN, options=PLAIN)
    rig.flush(RTT)
    rig.deliver(2 * RTT, seq=PEER_ISS, ack=seq(tcb.iss, 1), flags=SYN | ACK, options=PLAIN)
    rig.flush(2 * RTT)
    assert state(tcb) == TcpState.ESTABLISHED
    assert rig.dropped() == {}


# -------------------------------------------------- SYN retransmission timer


def test_syn_sent_no_answer_syn_resent_with_exponential_backoff() -> None:
    """RFC 6298 (2.1), (5.5): the SYN's RTO starts at 1 s and doubles on
    every expiry: resends at 1, 3, 7, 15, 31, 63 s."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    resend_at = [1, 3, 7, 15, 31, 63]
    for at in resend_at:
        assert rig.flush(at * SECOND - 1) == []
        sent = rig.flush(at * SECOND)
        assert brief(sent) == [("S", tcb.iss, 0, 0)], at
        assert sent[0].seg.options.mss == OUR_MSS
    assert rig.counted(TcpCounter.RETRANSMITTED_SEGMENTS) == len(resend_at)


def test_syn_sent_syn_retries_exhausted_times_out() -> None:
    """RFC 9293 §3.8.3 R2 (Linux tcp_syn_retries = 6): after the last
    retransmission's RTO the attempt fails with ETIMEDOUT; no RST."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    for at in (1, 3, 7, 15, 31, 63):
        rig.flush(at * SECOND)
    assert rig.flush(127 * SECOND - 1) == []
    assert state(tcb) == TcpState.SYN_SENT
    assert rig.flush(127 * SECOND) == []
    assert state(tcb) == TcpState.CLOSED
    assert rig.engine.readiness(tcb) & ERROR
    with pytest.raises(SocketError) as exc:
        rig.engine.send(tcb, b"x", 127 * SECOND)
    assert exc.value.errno == errno.ETIMEDOUT
    assert rig.engine.poll_at() is None
    assert rig.counted(TcpCounter.CONNECTION_TIMEOUTS) == 1


def test_syn_sent_fewer_syn_retries_setting_honoured() -> None:
    """Setting syn_retries = 2: SYNs at 0, 1, 3 s, ETIMEDOUT at 7 s."""
    rig = Rig(TcpSettings(syn_retries=2))
    tcb, _ = syn_sent(rig)
    assert len(rig.flush(1 * SECOND)) == 1
    assert len(rig.flush(3 * SECOND)) == 1
    assert rig.flush(7 * SECOND) == []
    assert tcb.error == errno.ETIMEDOUT and state(tcb) == TcpState.CLOSED


def test_syn_sent_synack_after_syn_timeout_data_rto_three_seconds() -> None:
    """RFC 6298 (5.7): after the timer expired awaiting the SYN's ACK, an RTO
    below 3 s MUST be re-initialized to 3 s when data transmission begins
    (the resent SYN gives no sample: Karn)."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    rig.flush(1 * SECOND)  # one timeout: RTO backed off to 2 s
    t = 1 * SECOND + RTT
    rig.deliver(t, seq=PEER_ISS, ack=seq(tcb.iss, 1), flags=SYN | ACK, options=PLAIN)
    rig.flush(t)
    rig.engine.send(tcb, b"data", t)
    assert len(rig.flush(t)) == 1
    assert rig.flush(t + 3 * SECOND - 1) == []
    assert brief(rig.flush(t + 3 * SECOND)) == [("PA", seq(tcb.iss, 1), PEER_ISS + 1, 4)]


def test_syn_received_no_ack_synack_resent_with_backoff_then_given_up() -> None:
    """RFC 6298 (5.5) for the SYN-ACK (Linux tcp_synack_retries = 5): resent
    at 1, 3, 7, 15, 31 s; at 63 s the half-open connection is forgotten
    silently and the listener's SYN queue slot freed."""
    rig = Rig()
    listener = listening(rig)
    tcb, _ = syn_received(rig)
    for at in (1, 3, 7, 15, 31):
        assert rig.flush(at * SECOND - 1) == []
        assert brief(rig.flush(at * SECOND)) == [("SA", tcb.iss, PEER_ISS + 1, 0)], at
    assert rig.flush(63 * SECOND - 1) == []
    assert rig.flush(63 * SECOND) == []
    assert flow(rig) is None and state(tcb) == TcpState.CLOSED
    assert not listener.half_open
    assert rig.engine.poll_at() is None


def test_syn_received_rto_from_handshake_rtt_sample() -> None:
    """RFC 6298 (2.2): the handshake gives the first RTT sample (1 ms), so
    the data RTO is the 200 ms floor, not the initial 1 s."""
    rig = Rig()
    conn = established(rig)
    rig.engine.send(conn.tcb, b"x", conn.now)
    assert len(conn.flush(conn.now)) == 1
    assert rig.flush(conn.now + MIN_RTO - 1) == []
    assert len(rig.flush(conn.now + MIN_RTO)) == 1


def test_established_connect_same_four_tuple_eaddrinuse() -> None:
    """connect(2) EADDRINUSE: the 4-tuple is taken."""
    rig = Rig()
    established_active(rig)
    with pytest.raises(SocketError) as exc:
        rig.engine.connect(PEER_IP, PEER_PORT, 0, local_port=80)
    assert exc.value.errno == errno.EADDRINUSE
