"""RFC 1071 checksum helpers against a word-by-word reference."""

from __future__ import annotations

import random
import struct

from hypothesis import assume, given
from hypothesis import strategies as st

from stackservice.net import checksum as checksum_module
from stackservice.net.checksum import (
    checksum_adjust,
    internet_checksum,
    ones_complement_sum,
    pseudo_header_sum,
)

from ._frames import CHECK, ref_checksum, ref_sum

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
# Biased towards the edge cases: all-zero, all-0xFF, odd lengths.
payloads = st.one_of(
    st.binary(max_size=300),
    st.integers(0, 300).map(bytes),
    st.integers(0, 300).map(lambda n: b"\xff" * n),
)


@CHECK
@given(payloads, u16)
def test_ones_complement_sum_random_data_matches_reference(data: bytes, initial: int) -> None:
    """RFC 1071 §4.1 (reference loop), odd lengths padded with zero."""
    reference = ref_sum(struct.pack("!H", initial) + (data + b"\0" if len(data) % 2 else data))
    assert ones_complement_sum(data, initial) == reference
    assert ones_complement_sum(memoryview(data), initial) == reference


@CHECK
@given(payloads, u16)
def test_ones_complement_sum_both_ways_match_reference(data: bytes, initial: int) -> None:
    """The big-integer sum and the word loop (one per build, see
    checksum.py) agree with RFC 1071 in either build, on every buffer type."""
    reference = ref_sum(struct.pack("!H", initial) + (data + b"\0" if len(data) % 2 else data))
    for buffer in (data, bytearray(data), memoryview(bytearray(data))):
        assert checksum_module._sum_as_integer(buffer, initial) == reference
        assert checksum_module._sum_by_words(buffer, initial) == reference


def test_ones_complement_sum_64k_of_ones_both_ways_is_negative_zero() -> None:
    """The largest sum the word loop holds: 32768 words of 0xFFFF."""
    data = b"\xff" * 65_536
    assert checksum_module._sum_by_words(data, 0xFFFF) == 0xFFFF
    assert checksum_module._sum_as_integer(data, 0xFFFF) == 0xFFFF


@CHECK
@given(st.binary(max_size=200).filter(lambda b: len(b) % 2 == 0), payloads)
def test_ones_complement_sum_chained_buffers_equals_whole(first: bytes, second: bytes) -> None:
    """RFC 1071 §2(B): the sum is associative, partial sums combine."""
    assert ones_complement_sum(second, ones_complement_sum(first)) == ones_complement_sum(
        first + second
    )


def test_ones_complement_sum_64k_payload_matches_reference() -> None:
    """RFC 1071: a maximum-size payload, odd length."""
    data = random.Random(7).randbytes(65_535)
    assert ones_complement_sum(data) == ref_sum(data)


def test_ones_complement_sum_rfc1071_example_is_ddf2() -> None:
    """RFC 1071 §3 numerical example: 0001 f203 f4f5 f6f7 sums to ddf2."""
    assert ones_complement_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_internet_checksum_known_ipv4_header_is_b861() -> None:
    """RFC 791 header with a well-known checksum (192.168.0.1 -> 192.168.0.199)."""
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(header) == 0xB861


def test_internet_checksum_all_zero_data_is_ffff() -> None:
    """RFC 1071: the sum of zeros is +0, whose complement is 0xFFFF."""
    assert ones_complement_sum(bytes(40)) == 0
    assert internet_checksum(bytes(40)) == 0xFFFF


def test_internet_checksum_all_ones_data_is_zero() -> None:
    """RFC 1071: non-zero data summing to a multiple of 0xFFFF gives -0 (0xFFFF)."""
    assert ones_complement_sum(b"\xff" * 40) == 0xFFFF
    assert internet_checksum(b"\xff" * 40) == 0


@CHECK
@given(payloads)
def test_internet_checksum_stored_in_message_verifies(data: bytes) -> None:
    """RFC 1071 §1(3): a message carrying its checksum sums to 0xFFFF."""
    message = b"\0\0" + data
    checksum = internet_checksum(message)
    assert checksum == ref_checksum(message)
    assert ones_complement_sum(struct.pack("!H", checksum) + data) == 0xFFFF


@CHECK
@given(u32, u32, st.integers(0, 255), u16)
def test_pseudo_header_sum_matches_packed_reference(
    src: int, dst: int, protocol: int, length: int
) -> None:
    """RFC 9293 §3.1: src, dst, zero, protocol, TCP length."""
    packed = struct.pack("!IIBBH", src, dst, 0, protocol, length)
    assert pseudo_header_sum(src, dst, protocol, length) == ref_sum(packed)


def test_pseudo_header_sum_multiple_of_ffff_is_negative_zero() -> None:
    """RFC 1071: a non-zero sum never folds to +0."""
    assert pseudo_header_sum(0xFFFF, 0, 0, 0) == 0xFFFF
    assert pseudo_header_sum(0, 0, 0, 0) == 0


@CHECK
@given(st.binary(min_size=4, max_size=100).filter(lambda b: len(b) % 2 == 0), st.data())
def test_checksum_adjust_changed_word_matches_recomputation(
    data: bytes, draw: st.DataObject
) -> None:
    """RFC 1624 eqn. 3 gives what a full recomputation gives (unless all zero)."""
    words = list(struct.unpack(f"!{len(data) // 2}H", data))
    index = draw.draw(st.integers(1, len(words) - 1))
    new_word = draw.draw(u16)
    words[0] = 0  # the checksum field
    before = struct.pack(f"!{len(words)}H", *words)
    words[index] = new_word
    after = struct.pack(f"!{len(words)}H", *words)
    assume(any(after))
    old_word = struct.unpack_from("!H", before, 2 * index)[0]
    adjusted = checksum_adjust(internet_checksum(before), old_word, new_word)
    assert adjusted == internet_checksum(after)


def test_checksum_adjust_to_all_zero_data_gives_ambiguous_zero() -> None:
    """RFC 1624 §3: -0 comes out where only 0xFFFF verifies; callers recompute."""
    assert checksum_adjust(internet_checksum(b"\x08\x00\x00\x00"), 0x0800, 0x0000) == 0
    assert internet_checksum(bytes(4)) == 0xFFFF
