"""h11 fuzz invariant for the segment parser (STYLE.md rule 7).

Any bytes given to TcpView.checked + TcpRepr.parse either parse or raise
MalformedSegment with a segment-level reason; any other exception is a bug.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from stackservice.tcp import SEGMENT_DROP_REASONS, MalformedSegment, TcpRepr, TcpView

from ._segments import (
    FUZZ,
    NOP,
    OUR_IP,
    PEER_IP,
    SACK_PERM,
    opt_mss,
    opt_ts,
    opt_ws,
    reprs_and_payloads,
    tcp_segment,
    u32,
)


def parse_or_reason(data: bytes, src_ip: int, dst_ip: int, trusted: bool) -> TcpRepr | None:
    """Parse `data`; return None after checking a MalformedSegment's reason."""
    try:
        view = TcpView.checked(memoryview(data))
        rep = TcpRepr.parse(view, src_ip, dst_ip, trusted)
    except MalformedSegment as exc:
        assert exc.reason in SEGMENT_DROP_REASONS
        return None
    assert rep.src_port != 0 and rep.dst_port != 0
    assert rep.payload_len == len(data) - view.header_len()
    assert rep.options.window_scale is None or rep.options.window_scale <= 14
    assert len(rep.options.sack_blocks) <= 4
    return rep


@FUZZ
@given(st.binary(max_size=100), u32, u32, st.booleans())
def test_fuzz_random_bytes_parse_or_raise_malformed(
    data: bytes, src_ip: int, dst_ip: int, trusted: bool
) -> None:
    parse_or_reason(data, src_ip, dst_ip, trusted)


@FUZZ
@given(
    st.integers(0, 10).flatmap(lambda words: st.binary(min_size=4 * words, max_size=4 * words)),
    st.binary(max_size=20),
    st.integers(0, 0xFF),
)
def test_fuzz_random_options_in_valid_header_parse_or_raise_malformed(
    options: bytes, payload: bytes, flags: int
) -> None:
    """Checksum valid, so every random option list reaches the option walker."""
    segment = tcp_segment(flags=flags, options=options, payload=payload)
    parse_or_reason(segment, PEER_IP, OUR_IP, False)


@FUZZ
@given(reprs_and_payloads(), st.randoms(use_true_random=False), st.integers(1, 8), st.booleans())
def test_fuzz_mutated_valid_segment_parse_or_raise_malformed(
    rep_payload: tuple[TcpRepr, bytes], rng: random.Random, mutations: int, trusted: bool
) -> None:
    """Flip, overwrite, truncate or extend an emitted segment."""
    rep, payload = rep_payload
    buf = bytearray(rep.buffer_len())
    rep.emit(buf, OUR_IP, PEER_IP, payload)
    for _ in range(mutations):
        choice = rng.randrange(4)
        if choice == 0 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif choice == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.choice((0, 1, 2, 0xFF, rng.randrange(256)))
        elif choice == 2:
            del buf[rng.randrange(len(buf) + 1) :]
        else:
            buf += rng.randbytes(rng.randrange(1, 9))
    parse_or_reason(bytes(buf), OUR_IP, PEER_IP, trusted)


def test_fuzz_every_prefix_of_linux_syn_parse_or_raise_malformed() -> None:
    """h11 fuzz/afl-server.py: input fed piecewise; here every truncation."""
    options = opt_mss(1460) + SACK_PERM + opt_ts(1, 0) + NOP + opt_ws(7)
    segment = tcp_segment(flags=0x02, options=options)
    for end in range(len(segment) + 1):
        for trusted in (False, True):
            rep = parse_or_reason(segment[:end], PEER_IP, OUR_IP, trusted)
            assert (rep is not None) == (end == len(segment))
