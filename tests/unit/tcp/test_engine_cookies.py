"""SYN cookies in the engine: a listener whose SYN queue is full answers
statelessly and rebuilds the connection from the final ACK (RFC 4987 §3.6;
the cookie arithmetic itself is in test_syncookies.py)."""

from __future__ import annotations

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.segment import SYN, TcpOptions
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TcpState
from tests.unit.tcp._rig import LOCAL_PORT, MS, Rig, Sent
from tests.unit.tcp._states import (
    ALL_OPTIONS,
    PEER_ISS,
    PEER_TS,
    PLAIN,
    RTT,
    brief,
    flow,
    listening,
    seq,
    state,
    syn_received,
)

COOKIE_PORT = 40002
TS = (PEER_TS, 0)


def cookie_synack(rig: Rig, options: TcpOptions = PLAIN, backlog: int = 16) -> Sent:
    """A listener with a one-entry SYN queue, filled by port 40001; the SYN
    from COOKIE_PORT then gets a cookie SYN-ACK, which is returned."""
    listening(rig, backlog)
    syn_received(rig, src_port=40001)
    rig.deliver(0, seq=PEER_ISS, flags=SYN, options=options, src_port=COOKIE_PORT)
    sent = rig.flush(0)
    assert len(sent) == 1, sent
    return sent[0]


def cookie_rig() -> Rig:
    return Rig(TcpSettings(syn_queue=1))


def test_listen_syn_queue_full_cookie_synack_no_state() -> None:
    """RFC 4987 §3.6: with the SYN queue full the SYN is answered by a
    SYN-ACK <ACK=SEG.SEQ+1> whose ISN is the cookie; no TCB is kept. Without
    timestamps only the MSS option can be honoured."""
    rig = cookie_rig()
    synack = cookie_synack(rig)
    assert brief([synack]) == [("SA", synack.seg.seq, PEER_ISS + 1, 0)]
    assert synack.seg.options == TcpOptions(mss=1460)
    assert flow(rig, COOKIE_PORT) is None
    assert rig.counted(TcpCounter.SYN_COOKIES_SENT) == 1
    later = rig.flush(10_000 * MS)  # stateless: nothing is retransmitted to it
    assert [s.seg.dst_port for s in later] == [40001]


def test_listen_cookie_final_ack_established_on_accept_queue() -> None:
    """RFC 4987 §3.6: a final ACK whose SEG.ACK - 1 checks as a cookie
    creates the connection directly in ESTABLISHED, ready to accept."""
    rig = cookie_rig()
    synack = cookie_synack(rig)
    listener = rig.engine.listeners[LOCAL_PORT]
    cookie = synack.seg.seq
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(cookie, 1), src_port=COOKIE_PORT)
    assert rig.flush(RTT) == []
    tcb = flow(rig, COOKIE_PORT)
    assert tcb is not None and state(tcb) == TcpState.ESTABLISHED
    assert list(listener.accept_queue) == [tcb]
    assert rig.engine.accept(listener) is tcb
    assert (tcb.iss, tcb.rcv_nxt) == (cookie, PEER_ISS + 1)
    assert rig.counted(TcpCounter.SYN_COOKIES_ACCEPTED) == 1
    rig.engine.send(tcb, b"hello", RTT)
    assert brief(rig.flush(RTT)) == [("PA", seq(cookie, 1), PEER_ISS + 1, 5)]


def test_listen_cookie_final_ack_with_data_delivered() -> None:
    """RFC 9293 §3.10.7.4: text on the completing ACK is processed."""
    rig = cookie_rig()
    synack = cookie_synack(rig)
    rig.deliver(
        RTT, seq=PEER_ISS + 1, ack=seq(synack.seg.seq, 1), payload=b"GET /", src_port=COOKIE_PORT
    )
    sent = rig.flush(RTT)
    assert brief(sent) == [("A", seq(synack.seg.seq, 1), PEER_ISS + 6, 0)]
    tcb = flow(rig, COOKIE_PORT)
    out = bytearray(16)
    assert rig.engine.receive_into(tcb, out, RTT) == 5 and bytes(out[:5]) == b"GET /"


def test_listen_cookie_mss_encoded_from_table() -> None:
    """RFC 4987 §3.6: the cookie carries the peer's MSS, rounded down to
    the table (1400 -> 1300)."""
    rig = cookie_rig()
    synack = cookie_synack(rig, TcpOptions(mss=1400))
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(synack.seg.seq, 1), src_port=COOKIE_PORT)
    tcb = flow(rig, COOKIE_PORT)
    assert tcb is not None and tcb.mss == 1300
    rig.engine.send(tcb, bytes(2600), RTT)
    assert [len(s.payload) for s in rig.flush(RTT)] == [1300, 1300]


def cookie_ts_conn(rig: Rig, options: TcpOptions):
    """A cookie SYN-ACK for a SYN with `options` (timestamps on), and the
    options of a final ACK echoing its TSval."""
    synack = cookie_synack(rig, options)
    echo = TcpOptions(timestamps=(PEER_TS + 1, synack.seg.options.timestamps[0]))
    return synack, echo


def test_listen_cookie_with_timestamps_keeps_sack() -> None:
    """RFC 4987 §3.6 / Linux cookie_init_timestamp: with timestamps, WS and
    SACK-permitted travel in the SYN-ACK's TSval and come back in TSecr;
    the SYN-ACK offers them and the connection has them afterwards."""
    rig = cookie_rig()
    synack, echo = cookie_ts_conn(rig, ALL_OPTIONS)
    options = synack.seg.options
    assert options.window_scale == 5 and options.sack_permitted
    assert options.timestamps is not None and options.timestamps[1] == PEER_TS
    rig.deliver(
        RTT, seq=PEER_ISS + 1, ack=seq(synack.seg.seq, 1), options=echo, src_port=COOKIE_PORT
    )
    assert rig.flush(RTT) == []
    tcb = flow(rig, COOKIE_PORT)
    assert tcb is not None and state(tcb) == TcpState.ESTABLISHED
    assert (tcb.ws_enabled, tcb.sack_enabled, tcb.ts_enabled) == (True, True, True)
    assert tcb.mss == 1448


def test_listen_cookie_connection_tsvals_never_go_back() -> None:
    """RFC 7323 §5.4 / §5.3: TSvals must not decrease, or the peer's PAWS
    drops our segments: the first TSval after a cookie handshake is not
    older than the cookie SYN-ACK's (whose low bits carry options)."""
    rig = cookie_rig()
    synack, echo = cookie_ts_conn(rig, ALL_OPTIONS)
    rig.deliver(
        RTT, seq=PEER_ISS + 1, ack=seq(synack.seg.seq, 1), options=echo, src_port=COOKIE_PORT
    )
    tcb = flow(rig, COOKIE_PORT)
    rig.engine.send(tcb, b"x", RTT)
    (data,) = rig.flush(RTT)
    first = synack.seg.options.timestamps[0]
    assert 0 <= (data.seg.options.timestamps[0] - first) & 0xFFFFFFFF < 1 << 31


def test_listen_cookie_with_timestamps_peer_window_scale_restored() -> None:
    """RFC 7323 §2.3 / RFC 4987 §3.6: the shift applied to the peer's window
    fields is the one its SYN announced (2 here), whatever ours is (5): a
    field of 1000 is 4000 bytes, and no more than that may be sent."""
    rig = cookie_rig()
    synack, echo = cookie_ts_conn(rig, TcpOptions(mss=1460, window_scale=2, timestamps=TS))
    rig.deliver(
        RTT, seq=PEER_ISS + 1, ack=seq(synack.seg.seq, 1), window=1000, options=echo,
        src_port=COOKIE_PORT,
    )  # fmt: skip
    tcb = flow(rig, COOKIE_PORT)
    assert tcb is not None
    rig.engine.send(tcb, bytes(20_000), RTT)
    assert sum(len(s.payload) for s in rig.flush(RTT)) <= 4000
    assert tcb.snd_wscale == 2


def test_listen_forged_cookie_ack_rst_counted_once() -> None:
    """RFC 4987 §3.6: an ACK whose cookie does not check creates nothing; it
    is an ACK in LISTEN, answered by <SEQ=SEG.ACK><CTL=RST> (RFC 9293
    §3.10.7.2). Counted under exactly one drop reason (drops.py)."""
    rig = cookie_rig()
    synack = cookie_synack(rig)
    forged = seq(synack.seg.seq, 1 + 12345)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=forged, src_port=COOKIE_PORT)
    assert brief(rig.flush(RTT)) == [("R", forged, 0, 0)]
    assert flow(rig, COOKIE_PORT) is None
    assert rig.dropped().get("tcp_bad_syn_cookie") == 1
    assert rig.counted(TcpCounter.SYN_COOKIES_ACCEPTED) == 0


def test_listen_forged_cookie_ack_single_drop_reason() -> None:
    """drops.py: "A discarded segment is counted under exactly one reason"."""
    rig = cookie_rig()
    synack = cookie_synack(rig)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(synack.seg.seq, 99), src_port=COOKIE_PORT)
    rig.flush(RTT)
    assert rig.dropped() == {"tcp_bad_syn_cookie": 1}


def test_listen_cookie_ack_for_wrong_peer_isn_rejected() -> None:
    """RFC 4987 §3.6: the cookie is bound to the peer's ISN: the right
    cookie with another SEG.SEQ does not check."""
    rig = cookie_rig()
    synack = cookie_synack(rig)
    rig.deliver(RTT, seq=PEER_ISS + 2, ack=seq(synack.seg.seq, 1), src_port=COOKIE_PORT)
    assert brief(rig.flush(RTT)) == [("R", seq(synack.seg.seq, 1), 0, 0)]
    assert flow(rig, COOKIE_PORT) is None


def test_listen_cookie_ack_accept_queue_full_dropped() -> None:
    """Linux tcp_check_req / cookie_v4_check: a valid cookie ACK that finds
    the accept queue full is dropped (no RST: the peer retries) and counted."""
    rig = Rig(TcpSettings(syn_queue=1))
    listener = listening(rig, backlog=1)
    a, _ = syn_received(rig, src_port=40001)
    rig.deliver(0, seq=PEER_ISS, flags=SYN, src_port=COOKIE_PORT)
    (synack,) = rig.flush(0)
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(a.iss, 1), src_port=40001)  # queue full
    rig.deliver(RTT, seq=PEER_ISS + 1, ack=seq(synack.seg.seq, 1), src_port=COOKIE_PORT)
    assert rig.flush(RTT) == []
    assert flow(rig, COOKIE_PORT) is None
    assert list(listener.accept_queue) == [a]
    assert rig.dropped() == {"tcp_listen_queue_overflow": 1}
    assert rig.counted(TcpCounter.LISTEN_OVERFLOWS) == 1
