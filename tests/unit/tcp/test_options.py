"""TCP option parsing and encoding (RFC 9293 §3.2, RFC 7323, RFC 2018, RFC 6691).

Robustness rules under test are the module docstring of
stackservice.tcp.segment: unwalkable option lists are malformed
(TCP_BAD_OPTIONS); wrong lengths of known kinds and unknown kinds are skipped.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.tcp import (
    NO_OPTIONS,
    MalformedSegment,
    TcpDropReason,
    TcpOptions,
    TcpRepr,
    TcpView,
)

from ._segments import (
    CHECK,
    EOL,
    F_ACK,
    F_SYN,
    NOP,
    OUR_IP,
    PEER_IP,
    SACK_PERM,
    opt_mss,
    opt_sack,
    opt_ts,
    opt_ws,
    tcp_options,
    tcp_segment,
    u32,
)


def options_of(data: bytes) -> TcpOptions:
    return TcpOptions.parse(memoryview(data))


def segment_options(options: bytes, flags: int = F_SYN) -> TcpOptions:
    segment = tcp_segment(flags=flags, options=options)
    return TcpRepr.parse(TcpView.checked(memoryview(segment)), PEER_IP, OUR_IP, False).options


def bad_options_reason(data: bytes) -> TcpDropReason:
    with pytest.raises(MalformedSegment) as info:
        options_of(data)
    return info.value.reason


def test_parse_no_options_is_no_options() -> None:
    assert options_of(b"") == NO_OPTIONS == TcpOptions()
    assert segment_options(b"") is NO_OPTIONS


def test_parse_linux_syn_options_all_fields() -> None:
    """RFC 7323 Appendix A layout as Linux sends it in a SYN."""
    data = opt_mss(1460) + SACK_PERM + opt_ts(0xAABBCCDD, 0) + NOP + opt_ws(7)
    assert segment_options(data) == TcpOptions(
        mss=1460, window_scale=7, sack_permitted=True, timestamps=(0xAABBCCDD, 0)
    )


def test_parse_nop_padding_anywhere_skipped() -> None:
    """RFC 9293 §3.2: NOP may be used between options, e.g. for alignment."""
    data = NOP + opt_mss(536) + NOP * 3 + opt_ws(2) + NOP + NOP
    assert options_of(data) == TcpOptions(mss=536, window_scale=2)


def test_parse_eol_ends_list_and_ignores_rest() -> None:
    """RFC 9293 §3.2: EOL marks the end of the option list; the rest is padding."""
    data = opt_mss(1000) + EOL + opt_ws(3) + b"\x00\x05"
    assert options_of(data) == TcpOptions(mss=1000)
    assert segment_options(opt_mss(1000) + EOL + b"\xff\x00\x00") == TcpOptions(mss=1000)


@pytest.mark.parametrize(
    "unknown",
    [b"\x1e\x04\x00\x00", b"\x22\x02", b"\xfe\x06\xf9\x89\x00\x00", b"\x13\x12" + bytes(16)],
    ids=["mptcp", "tfo_empty", "exp_rfc6994", "md5_rfc2385"],
)
def test_parse_unknown_kind_skipped_by_length(unknown: bytes) -> None:
    """RFC 9293 §3.1: unknown options are ignored, skipped using their length."""
    assert options_of(opt_mss(1400) + unknown + opt_ws(5)) == TcpOptions(mss=1400, window_scale=5)


@pytest.mark.parametrize(
    "data",
    [
        b"\x02",  # MSS kind with no length byte
        NOP + NOP + NOP + b"\x08",  # TS kind as the last byte
        b"\x02\x04\x05",  # MSS running past the end
        opt_mss(1460) + b"\x08\x0a" + bytes(7),  # TS one byte short
        b"\xfe\x00\x00\x00",  # length 0: would never advance
        b"\xfe\x01\x00\x00",  # length 1: overlaps the next kind byte
        b"\x02\x00",  # known kind, length 0
        b"\x05\x01",  # SACK, length 1
        b"\x05\x22" + bytes(30),  # SACK claiming 4 blocks, 3.75 present
    ],
    ids=["no_len", "last_kind", "mss_past_end", "ts_past_end", "len0", "len1", "mss_len0",
         "sack_len1", "sack_past_end"],
)  # fmt: skip
def test_parse_unwalkable_option_raises_bad_options(data: bytes) -> None:
    """RFC 9293 §3.1: an illegal option length (e.g. zero) must be handled; counted and dropped."""
    assert bad_options_reason(data) is TcpDropReason.TCP_BAD_OPTIONS


@pytest.mark.parametrize(
    "options",
    [NOP * 3 + b"\x02", NOP + b"\x02\x04\x05", NOP + NOP + b"\xfe\x00", b"\xfe\x01\x00\x00"],
)
def test_parse_segment_unwalkable_option_raises_bad_options(options: bytes) -> None:
    """The same through TcpRepr.parse, with the option area a 32-bit multiple."""
    segment = tcp_segment(flags=F_ACK, options=options)
    with pytest.raises(MalformedSegment) as info:
        TcpRepr.parse(TcpView.checked(memoryview(segment)), PEER_IP, OUR_IP, False)
    assert info.value.reason is TcpDropReason.TCP_BAD_OPTIONS


@pytest.mark.parametrize(("shift", "expected"), [(0, 0), (7, 7), (14, 14), (15, 14), (255, 14)])
def test_parse_window_scale_above_14_clamped(shift: int, expected: int) -> None:
    """RFC 7323 §2.3: a shift.cnt above 14 MUST be used as 14."""
    assert options_of(opt_ws(shift)).window_scale == expected


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_parse_sack_blocks_one_to_four(count: int) -> None:
    """RFC 2018 §3: 2 + 8n bytes, n blocks of (left, right) edges, order kept."""
    blocks = tuple((0xFFFFFF00 + i, (i * 1000 + 5) & 0xFFFFFFFF) for i in range(count))
    data = NOP + NOP + opt_sack(*blocks)
    assert options_of(data).sack_blocks == blocks
    if count <= 3:
        both = segment_options(NOP + NOP + opt_ts(1, 2) + data, flags=F_ACK)
        assert (both.timestamps, both.sack_blocks) == ((1, 2), blocks)


@pytest.mark.parametrize(
    "wrong",
    [
        b"\x02\x03\x05",  # MSS length 3
        b"\x02\x06\x05\xb4\x00\x00",  # MSS length 6
        b"\x03\x04\x07\x00",  # WS length 4
        b"\x03\x02",  # WS length 2
        b"\x04\x03\x00",  # SACK-permitted length 3
        b"\x08\x08" + bytes(6),  # TS length 8
        b"\x08\x0c" + bytes(10),  # TS length 12
        b"\x05\x02",  # SACK with no block
        b"\x05\x09" + bytes(7),  # SACK, not 2 + 8n
        b"\x05\x0b" + bytes(9),
    ],
    ids=["mss3", "mss6", "ws4", "ws2", "sackperm3", "ts8", "ts12", "sack2", "sack9", "sack11"],
)
def test_parse_known_kind_wrong_length_ignored_and_skipped(wrong: bytes) -> None:
    """RFC 9293 §3.1 robustness (as Linux): ignore the option, keep parsing after it."""
    assert options_of(wrong + opt_mss(1200)) == TcpOptions(mss=1200)


def test_parse_repeated_option_last_wins() -> None:
    """Linux tcp_parse_options: a later occurrence overwrites an earlier one."""
    data = opt_mss(1000) + opt_mss(1400) + opt_ts(1, 2) + opt_ts(3, 4)
    assert options_of(data) == TcpOptions(mss=1400, timestamps=(3, 4))


def test_parse_mss_zero_kept_for_tcb_to_floor() -> None:
    """RFC 9293 §3.7.1 / RFC 6691: the TCB, not the parser, bounds the MSS."""
    assert options_of(opt_mss(0)).mss == 0


def test_parse_options_on_non_syn_reported_for_tcb() -> None:
    """RFC 7323 §2.2: the TCB ignores WS outside SYN; the parser reports it."""
    assert segment_options(opt_mss(1460) + NOP + opt_ws(3), flags=F_ACK).window_scale == 3


@CHECK
@given(u32, u32)
def test_parse_aligned_timestamps_fast_path_equals_generic(tsval: int, tsecr: int) -> None:
    """RFC 7323 Appendix A: NOP NOP TS, the layout of every Linux data segment."""
    data = NOP + NOP + opt_ts(tsval, tsecr)
    assert segment_options(data, flags=F_ACK) == options_of(data)
    assert options_of(data) == TcpOptions(timestamps=(tsval, tsecr))


@pytest.mark.parametrize(
    "data",
    [
        opt_ts(5, 6) + NOP + NOP,
        opt_mss(1460) + NOP + opt_ws(7) + NOP + NOP + SACK_PERM,
        NOP + NOP + NOP + NOP + opt_mss(1) + opt_mss(2),
        SACK_PERM + opt_ts(5, 6),
    ],
    ids=["ts_then_nops", "mss_ws_sackperm", "nops_mss", "sackperm_ts"],
)
def test_parse_other_12_byte_option_lists_take_generic_path(data: bytes) -> None:
    """A 12-byte list that is not NOP NOP TS is parsed in full."""
    assert segment_options(data, flags=F_ACK) == options_of(data)


@CHECK
@given(tcp_options())
def test_options_emit_then_parse_roundtrips(options: TcpOptions) -> None:
    """RFC 9293 §3.2: emitted lists are 32-bit aligned and parse back equal."""
    length = options.buffer_len()
    buf = bytearray(length + 3)
    assert options.emit(buf, 3) == length
    assert length % 4 == 0 and length <= 40
    assert options_of(bytes(buf[3:])) == options


@CHECK
@given(st.binary(max_size=40))
def test_parse_random_option_bytes_parses_or_raises_bad_options(data: bytes) -> None:
    """h11 fuzz invariant for the option walker; parsed values stay in range."""
    try:
        options = options_of(data)
    except MalformedSegment as exc:
        assert exc.reason is TcpDropReason.TCP_BAD_OPTIONS
        return
    assert options.window_scale is None or 0 <= options.window_scale <= 14
    assert len(options.sack_blocks) <= 4
