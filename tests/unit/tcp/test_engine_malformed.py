"""Malformed segments at the engine: each counted under its one drop reason,
nothing sent, no connection touched (RFC 9293 §3.1, §3.10.7; house rule 6:
a bad frame never escapes the loop). Plus the h11-style fuzz invariant for
`on_segment`: any bytes are absorbed without an exception."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.net.ipv4 import PROTO_TCP, Ipv4View, write_header
from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.state import TcpState
from tests.support.checks import CHECK
from tests.unit.tcp._rig import LOCAL_IP, LOCAL_PORT, PEER_IP, PEER_PORT, Rig
from tests.unit.tcp._segments import (
    F_ACK,
    F_FIN,
    F_RST,
    F_SYN,
    opt_mss,
    reprs_and_payloads,
    tcp_segment,
)
from tests.unit.tcp._states import established, listening, state


def assert_state_counts(rig: Rig) -> None:
    """The per-state gauges match the flow table (every live TCB is in it)
    and the listeners."""
    expected = [0] * len(rig.states)
    expected[TcpState.LISTEN] = len(rig.engine.listeners)
    for tcb in rig.engine.flows.values():
        assert tcb.state != TcpState.CLOSED
        expected[tcb.state] += 1
    assert rig.states[1:] == expected[1:]


def deliver_raw(rig: Rig, segment: bytes, now: int = 0) -> None:
    """Hand the engine the TCP bytes as they are, in a valid IPv4 datagram."""
    datagram = bytearray(20 + len(segment))
    datagram[20:] = segment
    write_header(datagram, 0, PEER_IP, LOCAL_IP, PROTO_TCP, len(segment), 1)
    header = Ipv4View.checked(memoryview(datagram), True)
    rig.engine.on_segment(header, now, False)


MALFORMED = {
    "tcp_too_short": tcp_segment(dst_port=80, flags=F_SYN)[:19],
    "tcp_bad_data_offset": tcp_segment(dst_port=80, flags=F_SYN, data_offset=4),
    "tcp_bad_data_offset_past_end": tcp_segment(dst_port=80, flags=F_SYN, data_offset=15),
    "tcp_bad_checksum": tcp_segment(dst_port=80, flags=F_SYN, checksum=0x1234),
    "tcp_bad_options": tcp_segment(dst_port=80, flags=F_SYN, options=b"\x02\x01\x00\x00"),
    "tcp_bad_port_src": tcp_segment(src_port=0, dst_port=80, flags=F_SYN),
    "tcp_bad_port_dst": tcp_segment(dst_port=0, flags=F_SYN),
    "tcp_bad_flags_syn_fin": tcp_segment(dst_port=80, flags=F_SYN | F_FIN),
    "tcp_bad_flags_syn_rst": tcp_segment(dst_port=80, flags=F_SYN | F_RST),
    "tcp_bad_flags_fin_rst": tcp_segment(dst_port=80, flags=F_FIN | F_RST | F_ACK),
}


def reason_of(case: str) -> str:
    for reason in (
        "tcp_too_short",
        "tcp_bad_data_offset",
        "tcp_bad_checksum",
        "tcp_bad_options",
        "tcp_bad_port",
        "tcp_bad_flags",
    ):
        if case.startswith(reason):
            return reason
    raise AssertionError(case)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_listen_malformed_segment_counted_by_reason_nothing_sent(case: str) -> None:
    """RFC 9293 §3.1 (checksum, data offset) and the parser's checks: the
    segment is discarded before demultiplexing, counted under exactly one
    reason, never answered (not even with a RST), and creates no TCB."""
    rig = Rig()
    listening(rig)
    deliver_raw(rig, MALFORMED[case])
    assert rig.flush(0) == []
    assert rig.dropped() == {reason_of(case): 1}
    assert rig.engine.flows == {}
    assert rig.counted(TcpCounter.SEGMENTS_IN) == 0


def test_established_rst_with_bad_checksum_ignored() -> None:
    """RFC 9293 §3.1: a segment failing the checksum is discarded: even a RST
    exactly at RCV.NXT does not reset the connection."""
    rig = Rig()
    conn = established(rig)
    bad = tcp_segment(seq=conn.seq, ack=conn.ack, flags=F_RST | F_ACK, checksum=1)
    deliver_raw(rig, bad, conn.now)
    assert rig.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.ESTABLISHED
    assert rig.dropped() == {"tcp_bad_checksum": 1}


def test_established_valid_raw_segment_accepted() -> None:
    """Control for the raw path: the same segment with a good checksum and
    an MSS option parses and resets the connection (RFC 5961 §3.2)."""
    rig = Rig()
    conn = established(rig)
    good = tcp_segment(seq=conn.seq, ack=conn.ack, flags=F_RST | F_ACK, options=opt_mss(1460))
    deliver_raw(rig, good, conn.now)
    assert state(conn.tcb) == TcpState.CLOSED


@CHECK
@given(st.binary(max_size=80))
def test_established_any_bytes_absorbed_without_exception(data: bytes) -> None:
    """h11 fuzz invariant: on_segment never raises; garbage is either a
    counted drop or parsed (and then counted as a segment in)."""
    rig = Rig()
    conn = established(rig)
    deliver_raw(rig, data, conn.now)
    rig.flush(conn.now)
    parsed = rig.counted(TcpCounter.SEGMENTS_IN)
    assert parsed >= 2  # the handshake's two
    if parsed == 2:
        assert sum(rig.drops) == 1
    assert_state_counts(rig)


@CHECK
@given(reprs_and_payloads(), st.booleans(), st.integers(0, 3))
def test_established_any_valid_segment_absorbed_without_exception(
    rep_payload, to_flow, when
) -> None:
    """Any well-formed segment (any flags, options, numbers), aimed at a live
    connection, a listener or nothing, leaves the engine consistent: no
    exception, and it still answers the next flush and timer."""
    rep, payload = rep_payload
    rig = Rig()
    conn = established(rig)
    if to_flow:
        rep = dataclasses.replace(rep, src_port=PEER_PORT, dst_port=LOCAL_PORT)
    datagram = bytearray(20 + rep.buffer_len())
    rep.emit(datagram, PEER_IP, LOCAL_IP, payload, offset=20)
    deliver_raw(rig, bytes(datagram[20:]), conn.now + when * 1000)
    rig.flush(conn.now + when * 1000)
    rig.flush(conn.now + 10_000_000)
    assert_state_counts(rig)
