"""Keep-alive (RFC 1122 §4.2.3.6, RFC 9293 §3.8.4) and the engine's timer
bookkeeping (poll_at, RFC 6298 / RFC 9293 §3.8.6 timers)."""

from __future__ import annotations

import errno

import pytest

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.engine import SocketError, SocketOptions
from stackservice.tcp.segment import ACK, FIN, PSH, SYN
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TcpState
from stackservice.tcp.tcb import ERROR
from tests.unit.tcp._rig import MS, Rig
from tests.unit.tcp._states import (
    PEER_ISS,
    PLAIN,
    RTT,
    Conn,
    brief,
    established,
    flow,
    seq,
    state,
    syn_sent,
)

SECOND = 1_000_000
IDLE = 10 * SECOND
INTERVAL = 1 * SECOND
COUNT = 3


def keepalive_options() -> SocketOptions:
    options = SocketOptions()
    options.keepalive = True
    options.keepalive_idle = IDLE
    options.keepalive_interval = INTERVAL
    options.keepalive_count = COUNT
    return options


def keepalive_conn(rig: Rig) -> Conn:
    """ESTABLISHED (passive) with SO_KEEPALIVE inherited from the listener;
    the last segment arrived at conn.now."""
    return established(rig, socket_options=keepalive_options())


def probe(conn: Conn) -> tuple[str, int, int, int]:
    """RFC 9293 §3.8.4 (as Linux): <SEQ=SND.UNA-1><ACK=RCV.NXT><CTL=ACK>, no data."""
    return ("A", seq(conn.ack, -1), conn.seq, 0)


def test_established_keepalive_off_idle_nothing_sent() -> None:
    """RFC 1122 §4.2.3.6: keep-alives MUST default to off."""
    rig = Rig()
    conn = established(rig)
    assert conn.flush(conn.now + 3 * 3600 * SECOND) == []
    assert rig.engine.poll_at() is None


def test_established_keepalive_probe_after_idle() -> None:
    """RFC 1122 §4.2.3.6: a probe only after the connection was idle for the
    keep-alive interval (here 10 s), not before."""
    rig = Rig()
    conn = keepalive_conn(rig)
    t = conn.now
    assert conn.flush(t + IDLE - 1) == []
    assert brief(conn.flush(t + IDLE)) == [probe(conn)]
    assert rig.counted(TcpCounter.KEEPALIVE_PROBES) == 1


def test_established_keepalive_unanswered_probes_then_abort() -> None:
    """RFC 1122 §4.2.3.6 (Linux timing): unanswered probes every interval;
    after `count` of them the connection is aborted with a RST, and the
    application sees ETIMEDOUT."""
    rig = Rig()
    conn = keepalive_conn(rig)
    t = conn.now + IDLE
    for i in range(COUNT):
        assert conn.flush(t + i * INTERVAL - 1) == [], i
        assert brief(conn.flush(t + i * INTERVAL)) == [probe(conn)], i
    sent = conn.flush(t + COUNT * INTERVAL)
    assert brief(sent) == [("RA", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.CLOSED
    assert rig.engine.readiness(conn.tcb) & ERROR
    with pytest.raises(SocketError) as exc:
        conn.read()
    assert exc.value.errno == errno.ETIMEDOUT
    assert rig.counted(TcpCounter.CONNECTION_TIMEOUTS) == 1
    assert rig.engine.poll_at() is None


def test_established_keepalive_answered_probe_restarts_idle() -> None:
    """RFC 1122 §4.2.3.6: an answer shows the peer alive: the next probe
    comes a full idle time after it, and the unanswered count restarts."""
    rig = Rig()
    conn = keepalive_conn(rig)
    t = conn.now + IDLE
    conn.flush(t)
    conn.flush(t + INTERVAL)  # two probes
    answer = t + INTERVAL + MS
    conn.deliver(answer)
    assert conn.flush(answer) == []
    assert conn.flush(answer + IDLE - 1) == []
    assert brief(conn.flush(answer + IDLE)) == [probe(conn)]
    for i in range(1, COUNT):
        assert brief(conn.flush(answer + IDLE + i * INTERVAL)) == [probe(conn)]
    assert state(conn.tcb) == TcpState.ESTABLISHED


def test_established_keepalive_traffic_postpones_probe() -> None:
    """RFC 1122 §4.2.3.6: "no data or acknowledgement packets have been
    received ... within an interval": a received segment restarts it."""
    rig = Rig()
    conn = keepalive_conn(rig)
    t = conn.now + 5 * SECOND
    conn.deliver(t, b"hi")
    conn.flush(t)
    assert conn.flush(t + IDLE - 1) == []
    assert brief(conn.flush(t + IDLE)) == [probe(conn)]


def test_syn_sent_keepalive_fields_set_before_establishment_probe() -> None:
    """The TCB's keep-alive fields (SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT)
    set on an active open before it completes take effect."""
    rig = Rig()
    tcb, _ = syn_sent(rig)
    tcb.keepalive = True
    tcb.keepalive_idle, tcb.keepalive_interval, tcb.keepalive_count = IDLE, INTERVAL, COUNT
    rig.deliver(RTT, seq=PEER_ISS, ack=seq(tcb.iss, 1), flags=SYN | ACK, options=PLAIN)
    assert [s.flags for s in rig.flush(RTT)] == [ACK]
    conn = Conn(rig, tcb, seq(PEER_ISS, 1), seq(tcb.iss, 1), RTT)
    assert conn.flush(RTT + IDLE - 1) == []
    assert brief(conn.flush(RTT + IDLE)) == [probe(conn)]


def test_established_keepalive_enabled_later_probes_after_idle() -> None:
    """setsockopt(SO_KEEPALIVE) on an established connection (RFC 1122
    §4.2.3.6: keep-alives are per-connection and application-controlled):
    probing starts after the idle time."""
    rig = Rig()
    conn = established(rig)
    rig.engine.set_keepalive(conn.tcb, True, conn.now, IDLE, INTERVAL, COUNT)
    assert brief(conn.flush(conn.now + IDLE)) == [probe(conn)]


def test_established_poll_at_tracks_earliest_timer() -> None:
    """smoltcp poll_at / RFC 6298 (5.1): with data outstanding poll_at is the
    RTO deadline (never later), and None once everything is acknowledged."""
    rig = Rig()
    conn = established(rig)
    assert rig.engine.poll_at() is None
    rig.engine.send(conn.tcb, b"x", conn.now)
    conn.flush(conn.now)
    deadline = rig.engine.poll_at()
    assert deadline is not None and conn.now < deadline <= conn.now + 200 * MS
    conn.deliver(conn.now + MS, ack=seq(conn.ack, 1))
    conn.flush(conn.now)
    rig.engine.on_timer(conn.now + 200 * MS)  # a stale wakeup does nothing
    assert rig.flush(conn.now + 200 * MS) == []


def test_fin_wait_2_orphan_with_keepalive_both_timers_run() -> None:
    """SO_KEEPALIVE and an orphan's FIN-WAIT-2 timeout (Linux tcp_fin_timeout)
    on one connection: the application closed first, the peer ACKed our FIN.
    Both timers run (the keepalive probes the silent peer, the orphan
    timeout then frees the TCB); neither displaces the other. This used to
    raise out of on_segment ("entry is in another DeadlineList") and end the
    instance: aiohttp sets SO_KEEPALIVE on every accepted connection."""
    settings = TcpSettings(fin_wait_2_us=15 * SECOND)
    rig = Rig(settings)
    conn = keepalive_conn(rig)
    rig.engine.send(conn.tcb, b"hi", conn.now)
    rig.engine.close(conn.tcb, conn.now)
    assert [s.flags for s in conn.flush(conn.now)] == [ACK | PSH | FIN]
    conn.ack = seq(conn.ack, 3)
    conn.deliver(conn.now + MS)  # the peer ACKs "hi" and our FIN
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.FIN_WAIT_2
    t = conn.now
    assert brief(conn.flush(t + IDLE)) == [probe(conn)]
    conn.deliver(t + IDLE + MS)  # answered: the peer is alive, just silent
    assert conn.flush(conn.now) == []
    assert conn.flush(t + 15 * SECOND - 1) == []
    conn.flush(t + 15 * SECOND)
    assert state(conn.tcb) == TcpState.CLOSED
    assert flow(rig) is None and rig.engine.poll_at() is None


def test_time_wait_after_keepalive_close_first_then_peer_fin() -> None:
    """The same connection through TIME-WAIT (the peer's FIN after ours was
    ACKed): the keepalive stops, 2 MSL later the TCB is gone."""
    rig = Rig()
    conn = keepalive_conn(rig)
    rig.engine.close(conn.tcb, conn.now)
    conn.flush(conn.now)
    conn.ack = seq(conn.ack, 1)
    conn.deliver(conn.now + MS)
    conn.deliver(conn.now + MS, flags=FIN | ACK)
    assert brief(conn.flush(conn.now)) == [("A", conn.ack, conn.seq, 0)]
    assert state(conn.tcb) == TcpState.TIME_WAIT
    assert conn.flush(conn.now + IDLE) == []  # no keepalive probe in TIME-WAIT
    conn.flush(conn.now + rig.settings.time_wait_us)
    assert flow(rig) is None and rig.engine.poll_at() is None
