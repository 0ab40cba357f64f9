"""SipHash-2-4 against the paper's test vectors, and the two-word form the
ISN generator uses against the general one."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.net.siphash import siphash24, siphash24_words
from stackservice.tcp.isn import tuple_hash
from tests.support.checks import CHECK

KEY = bytes(range(16))  # the paper's key: 00 01 ... 0f


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, 0x726FDB47DD0E0E31),  # the reference implementation's vectors.h, first
        (8, 0x93F5F5799A932462),  # a whole word and a length-only last word
        (15, 0xA129CA6149BE45E5),  # the paper's Appendix A example
    ],
)
def test_siphash24_matches_reference_vectors(length: int, expected: int) -> None:
    assert siphash24(KEY, bytes(range(length))) == expected


def test_siphash24_rejects_a_key_not_16_bytes() -> None:
    with pytest.raises(ValueError):
        siphash24(bytes(15), b"")


@CHECK
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=9, max_size=15))
def test_two_words_equal_the_general_hash(key: bytes, data: bytes) -> None:
    k0, k1 = struct.unpack("<QQ", key)
    padded = data + bytes(16 - len(data))
    m0, m1 = struct.unpack("<QQ", padded)
    assert siphash24_words(k0, k1, m0, m1 | len(data) << 56) == siphash24(key, data)


@CHECK
@given(
    st.binary(min_size=16, max_size=16),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFF),
)
def test_tuple_hash_is_siphash_of_the_packed_tuple(
    key: bytes, local_ip: int, local_port: int, remote_ip: int, remote_port: int
) -> None:
    k0, k1 = struct.unpack("<QQ", key)
    packed = struct.pack("<IHIH", local_ip, local_port, remote_ip, remote_port)
    digest = tuple_hash(k0, k1, local_ip, local_port, remote_ip, remote_port)
    assert digest == siphash24(key, packed)
