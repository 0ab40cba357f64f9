"""SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed hash for short inputs.

The stack keys per-connection secrets with it (tcp/isn.py), as Linux does
(secure_tcp_seq, secure_tcpv6_ts_off): a pseudorandom function of a 128-bit
key, designed for inputs of a few bytes, where it is both secure and cheap.
Compiled (siphash.pxd), hashing a connection's 4-tuple is a few hundred
instructions on C words. The keyed BLAKE2s it replaced cost ~10 000 per
connection through hashlib's Python calls (pack the tuple, copy the keyed
hasher, update, digest, int.from_bytes): 4.7% of the engines' instructions
per short transaction. hashlib offers no SipHash, and a package would
still be a Python call per hash; the algorithm is the paper's, checked
against its vectors (tests/unit/net/test_siphash.py).

Words are little-endian 64-bit integers; the last word carries the message
length in its top byte (the paper, §2).
"""

from __future__ import annotations

__all__ = ["siphash24", "siphash24_words"]

_M64 = 0xFFFFFFFFFFFFFFFF
# The initialisation constants: "somepseudorandomlygeneratedbytes".
_V0 = 0x736F6D6570736575
_V1 = 0x646F72616E646F6D
_V2 = 0x6C7967656E657261
_V3 = 0x7465646279746573

# The state: four 64-bit words (compiled, a C tuple: siphash.pxd).
State = tuple[int, int, int, int]


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def _rounds(v: State, count: int) -> State:
    """`count` SipRounds on the state."""
    v0, v1, v2, v3 = v
    for _ in range(count):
        v0 = (v0 + v1) & _M64
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _M64
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _M64
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _M64
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def _start(k0: int, k1: int) -> State:
    return k0 ^ _V0, k1 ^ _V1, k0 ^ _V2, k1 ^ _V3


def _absorb(v: State, m: int) -> State:
    """One message word: two SipRounds (the "2" of SipHash-2-4)."""
    v0, v1, v2, v3 = _rounds((v[0], v[1], v[2], v[3] ^ m), 2)
    return v0 ^ m, v1, v2, v3


def _finish(v: State) -> int:
    """Four SipRounds (the "4") and the 64-bit result."""
    v0, v1, v2, v3 = _rounds((v[0], v[1], v[2] ^ 0xFF, v[3]), 4)
    return v0 ^ v1 ^ v2 ^ v3


def siphash24_words(k0: int, k1: int, m0: int, m1: int) -> int:
    """The hash of a message of two words (9 to 15 bytes), the second
    already carrying the length byte: a connection's 4-tuple, without
    packing it into bytes first.

    Args:
        k0, k1: the key's two little-endian words.
        m0, m1: the message's two little-endian words.
    """
    return _finish(_absorb(_absorb(_start(k0, k1), m0), m1))


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of any message under a 16-byte key (the paper's
    reference interface; tests check it against the paper's vectors).

    Raises:
        ValueError: the key is not 16 bytes.
    """
    if len(key) != 16:
        raise ValueError("a SipHash key is 16 bytes")
    v = _start(int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little"))
    whole = len(data) - len(data) % 8
    for start in range(0, whole, 8):
        v = _absorb(v, int.from_bytes(data[start : start + 8], "little"))
    return _finish(_absorb(v, int.from_bytes(data[whole:], "little") | (len(data) & 0xFF) << 56))
