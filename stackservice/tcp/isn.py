"""Initial sequence numbers (RFC 6528) and timestamp offsets (RFC 7323).

ISN = M + F(localip, localport, remoteip, remoteport, secretkey) mod 2**32
(RFC 6528 §3), where M is a clock ticking every 4 µs (RFC 9293 §3.4.1: the
"fictitious 32-bit clock" whose low bit increments roughly every 4 µs, a
250 kHz clock that wraps every ~4.55 hours) and F a keyed hash. F is the
upper half of the 4-tuple's SipHash-2-4 under a 128-bit key derived from
the secret (RFC 6528 §3 asks for a pseudorandom function keyed with a
secret; MD5 was its example; Linux uses SipHash, as here: net/siphash.py
says why). So two connections on one 4-tuple get sequence numbers that
advance with the clock, while an off-path attacker cannot predict the ISN
of any other 4-tuple (RFC 6528 §2).

The TSval offset (RFC 7323 §5.4 timestamp clock, §7 security
considerations: a random per-connection offset, so TSvals reveal neither
uptime nor a host-wide clock) is the lower half of the same hash: the
halves of a pseudorandom function's output are independent, so knowing
one gives nothing of the other. TSval = (now_ms + offset) mod 2**32. It
is keyed on the 4-tuple, so connections to one peer on different ports
cannot be correlated through their TSvals. Linux since 4.13 keys it on the
address pair only, which keeps the TSvals of successive connections
between two hosts ordered (what reusing a TIME-WAIT 4-tuple early relies
on); a caller wanting that passes ports 0.

The secret is the caller's (os.urandom in the loop): this module draws no
randomness and reads no clock. RFC 6528 §3 asks for at least 128 bits; a
secret of other than 16 bytes is hashed (BLAKE2s, once) to the 16-byte
SipHash key.
"""

from __future__ import annotations

import hashlib

from stackservice.net.siphash import siphash24_words

__all__ = ["ISN_CLOCK_US", "MIN_SECRET_LEN", "IsnGenerator", "derive_key", "subkey", "tuple_hash"]

MIN_SECRET_LEN = 16  # RFC 6528 §3: secretkey of at least 128 bits
ISN_CLOCK_US = 4  # RFC 9293 §3.4.1 / RFC 6528 §3: M ticks every 4 µs
SIPHASH_KEY_LEN = 16
_MASK32 = 0xFFFFFFFF
_PERSON = b"vfs-flow"  # BLAKE2s personalisation of the key derivation (<= 8 bytes)
_TUPLE_LEN = 12  # the packed 4-tuple: local ip, local port, remote ip, remote port


def derive_key(secret: bytes) -> bytes:
    """A BLAKE2s key from a caller's secret.

    Returns:
        `secret` itself if it fits a BLAKE2s key (<= 32 bytes), else its
        32-byte BLAKE2s digest.

    Raises:
        ValueError: the secret is shorter than MIN_SECRET_LEN bytes.
    """
    if len(secret) < MIN_SECRET_LEN:
        raise ValueError("secret must be at least 16 bytes (RFC 6528 §3)")
    if len(secret) > hashlib.blake2s.MAX_KEY_SIZE:
        return hashlib.blake2s(secret).digest()
    return bytes(secret)


def subkey(secret: bytes, purpose: bytes) -> tuple[int, int]:
    """A SipHash key (k0, k1) for another hash of 4-tuples than the ISN's
    (RFC 6056 §3.3.4's port offsets: TcpEngine._ephemeral_port): BLAKE2s
    keyed with the secret and personalised with `purpose` (<= 8 bytes), so
    neither hash's output tells anything about the other's.

    Raises:
        ValueError: the secret is shorter than MIN_SECRET_LEN bytes.
    """
    key = hashlib.blake2s(
        key=derive_key(secret), digest_size=SIPHASH_KEY_LEN, person=purpose
    ).digest()
    return _key_words(key)


def _key_words(key: bytes) -> tuple[int, int]:
    """A 16-byte SipHash key as its two little-endian words (k0, k1)."""
    return int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")


def tuple_hash(
    k0: int, k1: int, local_ip: int, local_port: int, remote_ip: int, remote_port: int
) -> int:
    """SipHash-2-4 of the 4-tuple packed little-endian ("<IHIH", 12 bytes),
    built as the hash's two message words directly."""
    m0 = local_ip | local_port << 32 | (remote_ip & 0xFFFF) << 48
    m1 = remote_ip >> 16 | remote_port << 16 | _TUPLE_LEN << 56
    return siphash24_words(k0, k1, m0, m1)


class IsnGenerator:
    """RFC 6528 initial sequence numbers and RFC 7323 timestamp offsets."""

    __slots__ = ("_k0", "_k1")

    def __init__(self, secret: bytes) -> None:
        """Raises:
        ValueError: the secret is shorter than 16 bytes.
        """
        key = derive_key(secret)
        if len(key) != SIPHASH_KEY_LEN:
            key = hashlib.blake2s(key, digest_size=SIPHASH_KEY_LEN, person=_PERSON).digest()
        self._k0, self._k1 = _key_words(key)

    def isn(
        self, now: int, local_ip: int, local_port: int, remote_ip: int, remote_port: int
    ) -> int:
        """The ISN for a connection opened at `now` (µs) on this 4-tuple.

        Returns:
            (now // 4 + F(4-tuple, secret)) mod 2**32 (RFC 6528 §3).
        """
        f = tuple_hash(self._k0, self._k1, local_ip, local_port, remote_ip, remote_port) >> 32
        return (now // ISN_CLOCK_US + f) & _MASK32

    def ts_offset(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> int:
        """The connection's TSval offset (RFC 7323 §5.4, §7.1).

        Returns:
            A 32-bit value, fixed for the 4-tuple and secret; the TCB sends
            TSval = (now_ms + offset) mod 2**32.
        """
        digest = tuple_hash(self._k0, self._k1, local_ip, local_port, remote_ip, remote_port)
        return digest & _MASK32
