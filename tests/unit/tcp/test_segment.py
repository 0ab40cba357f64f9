"""TCP header view, checksum, TcpRepr parse/emit (RFC 9293 §3.1)."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.net.errors import LocalProtocolError, RemoteProtocolError
from stackservice.tcp import (
    ACK,
    CWR,
    ECE,
    FIN,
    ILLEGAL_FLAG_MIXES,
    NO_OPTIONS,
    PSH,
    RST,
    SYN,
    URG,
    MalformedSegment,
    TcpDropReason,
    TcpOptions,
    TcpRepr,
    TcpView,
    verify_checksum,
    write_segment,
)

from ._segments import (
    CHECK,
    F_ACK,
    F_CWR,
    F_ECE,
    F_FIN,
    F_PSH,
    F_RST,
    F_SYN,
    F_URG,
    NOP,
    OUR_IP,
    PEER_IP,
    SACK_PERM,
    opt_mss,
    opt_sack,
    opt_ts,
    opt_ws,
    ref_tcp_checksum,
    ref_verifies,
    reprs_and_payloads,
    tcp_segment,
    u32,
)


def parse(segment: bytes, *, trusted: bool = False) -> TcpRepr:
    return TcpRepr.parse(TcpView.checked(memoryview(segment)), PEER_IP, OUR_IP, trusted)


def reason_of(segment: bytes, *, trusted: bool = False) -> TcpDropReason:
    with pytest.raises(MalformedSegment) as info:
        parse(segment, trusted=trusted)
    return info.value.reason


def emitted(rep: TcpRepr, payload: bytes = b"") -> bytes:
    buf = bytearray(rep.buffer_len())
    assert rep.emit(buf, OUR_IP, PEER_IP, payload) == len(buf)
    return bytes(buf)


# Constants.


def test_flag_constants_match_rfc_bit_positions() -> None:
    """RFC 9293 §3.1 control bits; CWR/ECE per RFC 3168 §6.1."""
    assert (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR) == (
        F_FIN, F_SYN, F_RST, F_PSH, F_ACK, F_URG, F_ECE, F_CWR,
    )  # fmt: skip


def test_malformed_segment_is_remote_protocol_error_with_reason() -> None:
    """STYLE.md rule 6: peer faults are RemoteProtocolError."""
    exc = MalformedSegment(TcpDropReason.TCP_BAD_PORT)
    assert isinstance(exc, RemoteProtocolError)
    assert exc.reason is TcpDropReason.TCP_BAD_PORT


# TcpView.


def test_view_getters_known_segment_return_each_field() -> None:
    """RFC 9293 §3.1 header layout."""
    segment = tcp_segment(
        0x1234, 0x5678, 0x9ABCDEF0, 0x0FEDCBA9, F_ACK | F_PSH | F_URG, 0x4321,
        opt_mss(1460), b"data", urgent=0x0102,
    )  # fmt: skip
    view = TcpView.checked(memoryview(segment))
    assert (view.src_port(), view.dst_port()) == (0x1234, 0x5678)
    assert (view.seq(), view.ack()) == (0x9ABCDEF0, 0x0FEDCBA9)
    assert (view.data_offset(), view.header_len()) == (6, 24)
    assert view.flags() == F_ACK | F_PSH | F_URG
    assert (view.window(), view.urgent()) == (0x4321, 0x0102)
    assert view.checksum() == struct.unpack_from("!H", segment, 16)[0]
    assert bytes(view.options()) == opt_mss(1460)
    assert bytes(view.payload()) == b"data"
    assert TcpView.unchecked(memoryview(segment)).seq() == view.seq()


@pytest.mark.parametrize("length", [0, 1, 12, 19])
def test_view_checked_under_20_bytes_raises_too_short(length: int) -> None:
    """RFC 9293 §3.1: the fixed header is 20 bytes."""
    with pytest.raises(MalformedSegment) as info:
        TcpView.checked(memoryview(tcp_segment()[:length]))
    assert info.value.reason is TcpDropReason.TCP_TOO_SHORT


@pytest.mark.parametrize("data_offset", [0, 1, 4])
def test_view_checked_data_offset_under_5_raises_bad_data_offset(data_offset: int) -> None:
    """RFC 9293 §3.1: Data Offset counts 32-bit words, at least 5."""
    segment = tcp_segment(data_offset=data_offset, payload=b"x" * 40)
    with pytest.raises(MalformedSegment) as info:
        TcpView.checked(memoryview(segment))
    assert info.value.reason is TcpDropReason.TCP_BAD_DATA_OFFSET


@pytest.mark.parametrize(("data_offset", "payload"), [(6, b""), (15, b"x" * 39), (8, b"abc")])
def test_view_checked_header_past_segment_raises_bad_data_offset(
    data_offset: int, payload: bytes
) -> None:
    """RFC 9293 §3.1: the options area must lie inside the segment."""
    segment = tcp_segment(data_offset=data_offset, payload=payload)
    with pytest.raises(MalformedSegment) as info:
        TcpView.checked(memoryview(segment))
    assert info.value.reason is TcpDropReason.TCP_BAD_DATA_OFFSET


def test_view_checked_header_exactly_fills_segment_accepted() -> None:
    """A 60-byte header with no payload is legal."""
    segment = tcp_segment(options=NOP * 40)
    view = TcpView.checked(memoryview(segment))
    assert (view.header_len(), bytes(view.payload())) == (60, b"")


# Checksum (RFC 9293 §3.1, pseudo-header of Figure 2).


@CHECK
@given(st.binary(min_size=20, max_size=200), u32, u32)
def test_verify_checksum_random_segment_agrees_with_reference(
    segment: bytes, src_ip: int, dst_ip: int
) -> None:
    """RFC 9293 §3.1: sum over pseudo-header, header and padded payload."""
    view = TcpView(memoryview(segment))
    assert verify_checksum(view, src_ip, dst_ip) == ref_verifies(segment, src_ip, dst_ip)
    fixed = segment[:16] + struct.pack("!H", ref_tcp_checksum(segment, src_ip, dst_ip))
    fixed += segment[18:]
    assert verify_checksum(TcpView(memoryview(fixed)), src_ip, dst_ip)


@CHECK
@given(reprs_and_payloads(), u32, u32)
def test_emit_checksum_equals_reference(
    rep_payload: tuple[TcpRepr, bytes], src_ip: int, dst_ip: int
) -> None:
    """RFC 9293 §3.1: the emitted checksum is the reference one (odd lengths included)."""
    rep, payload = rep_payload
    buf = bytearray(rep.buffer_len())
    rep.emit(buf, src_ip, dst_ip, payload)
    assert struct.unpack_from("!H", buf, 16)[0] == ref_tcp_checksum(bytes(buf), src_ip, dst_ip)


@pytest.mark.parametrize("payload_len", [65_495, 65_494])
def test_emit_max_payload_checksum_verifies(payload_len: int) -> None:
    """RFC 9293 §3.1: a 64 KiB segment (IPv4 maximum), even and odd length."""
    payload = random.Random(payload_len).randbytes(payload_len)
    rep = TcpRepr(
        1, 2, 3, 4, ACK, 5, options=TcpOptions(timestamps=(6, 7)), payload_len=len(payload)
    )
    segment = emitted(rep, payload)
    assert len(segment) == 32 + payload_len
    assert ref_verifies(segment, OUR_IP, PEER_IP)
    view = TcpView.checked(memoryview(segment))
    assert verify_checksum(view, OUR_IP, PEER_IP)
    assert not verify_checksum(view, OUR_IP, PEER_IP + 1)


@pytest.mark.parametrize("offset", [16, 17, 0, 30])
def test_parse_corrupted_byte_raises_bad_checksum(offset: int) -> None:
    """RFC 9293 §3.1: a segment whose checksum fails is discarded."""
    segment = bytearray(tcp_segment(payload=b"hello world"))
    segment[offset] ^= 0x01
    assert reason_of(bytes(segment)) is TcpDropReason.TCP_BAD_CHECKSUM


def test_parse_wrong_pseudo_header_address_raises_bad_checksum() -> None:
    """RFC 9293 §3.1: the pseudo-header binds the segment to its addresses."""
    segment = tcp_segment(src_ip=PEER_IP + 1)
    assert reason_of(segment) is TcpDropReason.TCP_BAD_CHECKSUM


def test_parse_bad_checksum_trusted_accepted() -> None:
    """checksum_trusted: the NIC verified it, the segment is not summed again."""
    segment = tcp_segment(payload=b"x", checksum=0)
    assert parse(segment, trusted=True).payload_len == 1


def test_parse_bad_checksum_reported_before_bad_port() -> None:
    """Checks run checksum first: a corrupted segment is counted as corrupted."""
    segment = tcp_segment(src_port=0, checksum=0x1234)
    assert reason_of(segment) is TcpDropReason.TCP_BAD_CHECKSUM


# TcpRepr round trip.


@CHECK
@given(reprs_and_payloads(), u32, u32)
def test_repr_emit_then_parse_roundtrips(
    rep_payload: tuple[TcpRepr, bytes], src_ip: int, dst_ip: int
) -> None:
    """RFC 9293 §3.1: every field, option and payload byte survives."""
    rep, payload = rep_payload
    buf = bytearray(rep.buffer_len())
    assert rep.emit(buf, src_ip, dst_ip, payload) == rep.buffer_len()
    view = TcpView.checked(memoryview(buf))
    assert TcpRepr.parse(view, src_ip, dst_ip, False) == rep
    assert bytes(view.payload()) == payload
    assert view.header_len() == rep.header_len()


@CHECK
@given(reprs_and_payloads(), st.integers(0, 64))
def test_repr_emit_at_offset_equals_standalone_and_keeps_surroundings(
    rep_payload: tuple[TcpRepr, bytes], offset: int
) -> None:
    """The output path writes behind Ethernet+IPv4 headers, touching nothing else."""
    rep, payload = rep_payload
    frame = bytearray(b"\xaa" * (offset + rep.buffer_len() + 7))
    assert rep.emit(frame, OUR_IP, PEER_IP, payload, offset) == rep.buffer_len()
    assert frame[:offset] == b"\xaa" * offset
    assert frame[offset + rep.buffer_len() :] == b"\xaa" * 7
    assert frame[offset : offset + rep.buffer_len()] == emitted(rep, payload)


@CHECK
@given(reprs_and_payloads())
def test_repr_emit_payload_none_uses_bytes_in_place(rep_payload: tuple[TcpRepr, bytes]) -> None:
    """Zero-copy output: the payload was already copied behind the header."""
    rep, payload = rep_payload
    frame = bytearray(34 + rep.buffer_len())
    frame[34 + rep.header_len() :] = payload
    rep.emit(memoryview(frame), OUR_IP, PEER_IP, None, 34)
    assert frame[34:] == emitted(rep, payload)


def test_write_segment_matches_repr_emit() -> None:
    """The repr-free output primitive writes the same bytes."""
    options = TcpOptions(timestamps=(1, 2), sack_blocks=((3, 4),))
    rep = TcpRepr(1234, 80, 5, 6, ACK | FIN, 700, 0, options, 3)
    buf = bytearray(rep.buffer_len())
    n = write_segment(buf, 0, OUR_IP, PEER_IP, 1234, 80, 5, 6, ACK | FIN, 700, options, 3, b"abc")
    assert (n, bytes(buf)) == (rep.buffer_len(), emitted(rep, b"abc"))


def test_repr_defaults_no_options_no_payload_20_bytes() -> None:
    rep = TcpRepr(1, 2, 3, 4, ACK, 5)
    assert (rep.options, rep.header_len(), rep.buffer_len()) == (NO_OPTIONS, 20, 20)
    assert emitted(rep) == tcp_segment(1, 2, 3, 4, F_ACK, 5, src_ip=OUR_IP, dst_ip=PEER_IP)


@pytest.mark.parametrize(
    ("flags", "payload_len", "expected"),
    [(SYN, 0, 1), (SYN | ACK, 0, 1), (FIN | ACK, 10, 11), (ACK, 10, 10), (RST, 0, 0), (0, 0, 0)],
)
def test_repr_segment_len_counts_syn_and_fin(flags: int, payload_len: int, expected: int) -> None:
    """RFC 9293 §3.4: SEG.LEN includes SYN and FIN."""
    assert TcpRepr(1, 2, 3, 4, flags, 5, payload_len=payload_len).segment_len() == expected


def test_parse_reserved_bits_set_ignored() -> None:
    """RFC 9293 §3.1: reserved bits must be ignored in received segments."""
    rep = parse(tcp_segment(reserved=0x0F, flags=F_ACK | F_ECE | F_CWR))
    assert rep.flags == F_ACK | F_ECE | F_CWR


def test_parse_ack_field_kept_without_ack_flag() -> None:
    """The TCB decides what SEG.ACK means without ACK (RFC 9293 §3.10.7)."""
    assert parse(tcp_segment(flags=F_SYN, ack=77)).ack == 77


# Ports and flags.


@pytest.mark.parametrize(("src_port", "dst_port"), [(0, 80), (40000, 0), (0, 0)])
def test_parse_port_zero_raises_bad_port(src_port: int, dst_port: int) -> None:
    """RFC 6335 §6: port 0 is reserved; smoltcp TcpRepr::parse rejects it."""
    segment = tcp_segment(src_port=src_port, dst_port=dst_port)
    assert reason_of(segment) is TcpDropReason.TCP_BAD_PORT


ILLEGAL = [
    F_SYN | F_FIN,
    F_SYN | F_RST,
    F_FIN | F_RST,
    F_SYN | F_FIN | F_RST,
    F_SYN | F_FIN | F_ACK,
    F_SYN | F_RST | F_ACK,
    F_FIN | F_RST | F_ACK | F_PSH,
    0xFF,
]


@pytest.mark.parametrize("flags", ILLEGAL, ids=lambda f: f"{f:#04x}")
def test_parse_illegal_flag_mix_raises_bad_flags(flags: int) -> None:
    """smoltcp TcpRepr::parse: at most one of SYN, FIN, RST (segment.ILLEGAL_FLAG_MIXES)."""
    assert reason_of(tcp_segment(flags=flags)) is TcpDropReason.TCP_BAD_FLAGS


def test_illegal_flag_mixes_are_the_pairs_of_syn_fin_rst() -> None:
    assert set(ILLEGAL_FLAG_MIXES) == {F_SYN | F_FIN, F_SYN | F_RST, F_FIN | F_RST}


LEGAL = [
    0,  # no flags: the TCB drops it, or answers RST in CLOSED (RFC 9293 §3.10.7.1)
    F_ACK,
    F_SYN,
    F_SYN | F_ACK,
    F_SYN | F_ECE | F_CWR,  # RFC 3168 §6.1.1 ECN-setup SYN
    F_FIN | F_ACK,
    F_FIN | F_PSH | F_URG,  # "Xmas" without ACK: the TCB's call
    F_RST,
    F_RST | F_ACK,
    F_PSH | F_ACK | F_URG,
]


@pytest.mark.parametrize("flags", LEGAL, ids=lambda f: f"{f:#04x}")
def test_parse_legal_flag_mix_accepted_as_sent(flags: int) -> None:
    """RFC 9293 §3.10.7: everything but SYN/FIN/RST pairs reaches the TCB."""
    assert parse(tcp_segment(flags=flags, payload=b"x")).flags == flags


def test_parse_rst_with_data_accepted() -> None:
    """RFC 9293 §3.5.3: a RST may carry diagnostic data."""
    assert parse(tcp_segment(flags=F_RST, payload=b"reason")).payload_len == 6


# Emit layout against hand-built segments.


def test_emit_linux_syn_matches_hand_built_segment() -> None:
    """Linux SYN layout: MSS, SACK-permitted, TS, NOP, WS (RFC 7323 Appendix A)."""
    options = TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamps=(0x01020304, 0))
    rep = TcpRepr(45678, 80, 0xDEADBEEF, 0, SYN, 64240, options=options)
    hand = tcp_segment(
        45678, 80, 0xDEADBEEF, 0, F_SYN, 64240,
        opt_mss(1460) + SACK_PERM + opt_ts(0x01020304, 0) + NOP + opt_ws(7),
        src_ip=OUR_IP, dst_ip=PEER_IP,
    )  # fmt: skip
    assert hand[20:] == bytes.fromhex("020405b4 0402080a 01020304 00000000 01030307")
    assert emitted(rep) == hand
    assert rep.buffer_len() == 40


def test_emit_syn_ack_without_timestamps_pads_sack_permitted_and_ws() -> None:
    """Linux: NOP NOP SACK-permitted and NOP WS when timestamps are off."""
    options = TcpOptions(mss=1460, window_scale=0, sack_permitted=True)
    rep = TcpRepr(80, 45678, 7, 0xDEADBEF0, SYN | ACK, 65535, options=options)
    hand = tcp_segment(
        80, 45678, 7, 0xDEADBEF0, F_SYN | F_ACK, 65535,
        opt_mss(1460) + NOP + NOP + SACK_PERM + NOP + opt_ws(0),
        src_ip=OUR_IP, dst_ip=PEER_IP,
    )  # fmt: skip
    assert emitted(rep) == hand


def test_emit_data_segment_timestamps_and_sack_blocks_matches_hand_built() -> None:
    """RFC 7323 Appendix A and RFC 2018 §3: NOP NOP TS, NOP NOP SACK, then data."""
    blocks = ((100, 200), (300, 400), (500, 600))
    options = TcpOptions(timestamps=(11, 22), sack_blocks=blocks)
    rep = TcpRepr(80, 45678, 1, 2, ACK | PSH, 501, options=options, payload_len=5)
    hand = tcp_segment(
        80, 45678, 1, 2, F_ACK | F_PSH, 501,
        NOP + NOP + opt_ts(11, 22) + NOP + NOP + opt_sack(*blocks), b"hello",
        src_ip=OUR_IP, dst_ip=PEER_IP,
    )  # fmt: skip
    assert emitted(rep, b"hello") == hand
    assert rep.header_len() == 60


def test_emit_timestamps_with_four_sack_blocks_raises_local_protocol_error() -> None:
    """RFC 2018 §3: with timestamps only 3 SACK blocks fit in 40 bytes."""
    blocks = ((1, 2),) * 4
    rep = TcpRepr(1, 2, 3, 4, ACK, 5, options=TcpOptions(timestamps=(1, 2), sack_blocks=blocks))
    with pytest.raises(LocalProtocolError):
        rep.buffer_len()
    with pytest.raises(LocalProtocolError):
        rep.emit(bytearray(80), OUR_IP, PEER_IP)


def test_emit_payload_length_mismatch_raises_local_protocol_error() -> None:
    rep = TcpRepr(1, 2, 3, 4, ACK, 5, payload_len=3)
    with pytest.raises(LocalProtocolError):
        rep.emit(bytearray(23), OUR_IP, PEER_IP, b"ab")


@pytest.mark.parametrize(("size", "offset"), [(22, 0), (23, 1), (100, 78), (23, -1)])
def test_emit_buffer_too_small_raises_and_leaves_buffer_unchanged(size: int, offset: int) -> None:
    rep = TcpRepr(1, 2, 3, 4, ACK, 5, payload_len=3)
    buf = bytearray(size)
    with pytest.raises(LocalProtocolError):
        rep.emit(buf, OUR_IP, PEER_IP, b"abc", offset)
    assert buf == bytearray(size)
