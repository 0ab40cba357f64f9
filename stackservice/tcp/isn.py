"""Initial sequence numbers (RFC 6528) and timestamp offsets (RFC 7323).

ISN = M + F(localip, localport, remoteip, remoteport, secretkey) mod 2**32
(RFC 6528 §3), where M is a clock ticking every 4 µs (RFC 9293 §3.4.1: the
"fictitious 32-bit clock" whose low bit increments roughly every 4 µs, a
250 kHz clock that wraps every ~4.55 hours) and F a keyed hash. F is the
first half of an 8-byte BLAKE2s of the 4-tuple keyed with the secret
(RFC 6528 §3 asks for a cryptographic hash; MD5 was its example). So two
connections on one 4-tuple get sequence numbers that advance with the
clock, while an off-path attacker cannot predict the ISN of any other
4-tuple (RFC 6528 §2).

The TSval offset (RFC 7323 §5.4 timestamp clock, §7 security
considerations: a random per-connection offset, so TSvals reveal neither
uptime nor a host-wide clock) is the second half of the same digest: the
halves of a keyed hash's output are independent, so knowing one gives
nothing of the other, and a connection's setup, which asks for both,
hashes its 4-tuple once (the last tuple's halves are kept):
TSval = (now_ms + offset) mod 2**32. It is keyed on the 4-tuple, so
connections to one peer on different ports cannot be correlated through
their TSvals. Linux since 4.13 keys it on the address pair only, which
keeps the TSvals of successive connections between two hosts ordered (what
reusing a TIME-WAIT 4-tuple early relies on); a caller wanting that passes
ports 0.

The secret is the caller's (os.urandom in the loop): this module draws no
randomness and reads no clock. RFC 6528 §3 asks for at least 128 bits; a
secret longer than BLAKE2s's 32-byte key is hashed down to 32 bytes.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["ISN_CLOCK_US", "MIN_SECRET_LEN", "IsnGenerator", "derive_key"]

MIN_SECRET_LEN = 16  # RFC 6528 §3: secretkey of at least 128 bits
ISN_CLOCK_US = 4  # RFC 9293 §3.4.1 / RFC 6528 §3: M ticks every 4 µs
_MASK32 = 0xFFFFFFFF
_TUPLE = struct.Struct("!IHIH")  # local ip, local port, remote ip, remote port
_PERSON = b"vfs-flow"  # BLAKE2s personalisation (at most 8 bytes)


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


class IsnGenerator:
    """RFC 6528 initial sequence numbers and RFC 7323 timestamp offsets."""

    __slots__ = ("_hasher", "_last_flow", "_last_halves")

    def __init__(self, secret: bytes) -> None:
        """Raises:
        ValueError: the secret is shorter than 16 bytes.
        """
        # Copied per 4-tuple: a hasher that has taken its key skips the
        # key's own compression and the keyword parsing (0.5 against 0.86 µs).
        self._hasher = hashlib.blake2s(digest_size=8, key=derive_key(secret), person=_PERSON)
        self._last_flow = b""
        self._last_halves = (0, 0)

    def isn(
        self, now: int, local_ip: int, local_port: int, remote_ip: int, remote_port: int
    ) -> int:
        """The ISN for a connection opened at `now` (µs) on this 4-tuple.

        Returns:
            (now // 4 + F(4-tuple, secret)) mod 2**32 (RFC 6528 §3).
        """
        f = self._halves(local_ip, local_port, remote_ip, remote_port)[0]
        return (now // ISN_CLOCK_US + f) & _MASK32

    def ts_offset(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> int:
        """The connection's TSval offset (RFC 7323 §5.4, §7.1).

        Returns:
            A 32-bit value, fixed for the 4-tuple and secret; the TCB sends
            TSval = (now_ms + offset) mod 2**32.
        """
        return self._halves(local_ip, local_port, remote_ip, remote_port)[1]

    def _halves(
        self, local_ip: int, local_port: int, remote_ip: int, remote_port: int
    ) -> tuple[int, int]:
        """(F, TSval offset) of a 4-tuple: its keyed digest, cut in two."""
        flow = _TUPLE.pack(local_ip, local_port, remote_ip, remote_port)
        if flow != self._last_flow:
            hasher = self._hasher.copy()
            hasher.update(flow)
            digest = int.from_bytes(hasher.digest(), "big")
            self._last_flow = flow
            self._last_halves = (digest >> 32, digest & _MASK32)
        return self._last_halves
