"""SYN cookies (RFC 4987 §3.6), with the options Linux carries in TSval.

Under a SYN flood a listener answers a SYN without keeping state: the
SYN-ACK's sequence number (our ISN) is a cookie from which the ACK that
completes the handshake proves the peer saw our SYN-ACK and recovers the
one piece of state needed, the peer's MSS.

Cookie layout (32 bits), before obfuscation:

    bits 31..28  counter mod 16: the time in ticks of lifetime / 8
    bits 27..26  index into MSS_TABLE
    bits 25..0   MAC: BLAKE2s keyed with the secret over the 4-tuple, the
                 peer's ISN, the full counter and the MSS index

cookie = layout + H(4-tuple) + peer ISN  (mod 2**32), H another keyed
BLAKE2s, so every bit of the ISN looks random to an observer and cookies
for one 4-tuple still change with every SYN (Linux secure_tcp_syn_cookie
adds the same two terms).

Decisions:
- Linux hides the MSS index in 24 low bits without a real MAC check (a
  random low part is accepted when it decodes to an index below 4); here
  the MAC is recomputed and compared, so any change of the 4-tuple, peer
  ISN or cookie is caught except with probability 2**-26, and a forger
  must guess 26 bits (RFC 4987 §3.6 asks for a hash an attacker cannot
  invert or forge).
- The MAC covers the full counter, not its 4 stored bits: an old cookie
  whose counter aliases a fresh one (16 ticks later) still fails.
- Lifetime: a tick is lifetime / 8, and a cookie is accepted when
  (age in ticks + 1) * tick <= lifetime. So a cookie is never accepted at
  or after `lifetime_us` and always accepted within 7/8 of it (105 s of the
  default 120 s; Linux accepts cookies up to about 2 minutes old). The
  window covers the peer's retransmissions of the ACK-bearing segment.
- MSS_TABLE is Linux's IPv4 msstab. The largest entry <= the peer's MSS is
  used; a peer MSS below 536 still gets 536 (as Linux): every IPv4 host
  accepts 576-byte datagrams (RFC 1122 §3.3.2, RFC 9293 §3.7.1 default).
- Options a plain cookie loses (window scale, SACK-permitted; RFC 4987
  §3.6) travel, as in Linux cookie_init_timestamp, in the low 6 bits of
  the SYN-ACK's TSval, which the peer echoes in TSecr: bits 3..0 the
  peer's window scale (15 = none), bit 4 SACK-permitted, bit 5 a marker
  that the TSval carries options (Linux puts ECN there; vfstack does not
  negotiate ECN). Without timestamps the connection runs without them.
"""

from __future__ import annotations

import hashlib
import struct

from stackservice.tcp.isn import derive_key

__all__ = [
    "MSS_TABLE",
    "TS_OPT_MASK",
    "SynCookies",
    "mss_index",
]

MSS_TABLE = (536, 1300, 1440, 1460)  # Linux msstab (net/ipv4/syncookies.c)
TICKS_PER_LIFETIME = 8
_COUNTER_BITS = 4
_COUNTER_MASK = (1 << _COUNTER_BITS) - 1
_COUNTER_SHIFT = 28
_MSS_SHIFT = 26
_MSS_MASK = 3
_MAC_MASK = (1 << _MSS_SHIFT) - 1
_MASK32 = 0xFFFFFFFF

# Low TSval bits carrying the options (Linux TSBITS = 6).
TS_OPT_BITS = 6
TS_OPT_MASK = (1 << TS_OPT_BITS) - 1
TS_WSCALE_MASK = 0x0F
TS_NO_WSCALE = 0x0F
TS_SACK = 0x10
TS_MARK = 0x20
MAX_WINDOW_SCALE = 14  # RFC 7323 §2.3

_TUPLE = struct.Struct("!IHIH")
_MAC_INPUT = struct.Struct("!IHIHIQB")  # 4-tuple, peer ISN, counter, MSS index
_PERSON_MAC = b"vfs-ckm"
_PERSON_OFFSET = b"vfs-cko"


def mss_index(peer_mss: int) -> int:
    """Returns: the index of the largest MSS_TABLE entry <= peer_mss, 0 if none."""
    i = len(MSS_TABLE) - 1
    while i > 0 and MSS_TABLE[i] > peer_mss:
        i -= 1
    return i


class SynCookies:
    """Stateless SYN-ACK sequence numbers (RFC 4987 §3.6)."""

    __slots__ = ("_key", "_lifetime", "_max_age", "_tick")

    def __init__(self, secret: bytes, lifetime_us: int = 2 * 60_000_000) -> None:
        """Raises:
        ValueError: the secret is shorter than 16 bytes, or lifetime_us < 8.
        """
        if lifetime_us < TICKS_PER_LIFETIME:
            raise ValueError("lifetime_us must be at least 8")
        self._key = derive_key(secret)
        self._lifetime = lifetime_us
        self._tick = lifetime_us // TICKS_PER_LIFETIME
        # (age + 1) * tick <= lifetime; at most 14, so 4 counter bits suffice.
        self._max_age = lifetime_us // self._tick - 1

    def make(
        self,
        now: int,
        local_ip: int,
        local_port: int,
        remote_ip: int,
        remote_port: int,
        peer_isn: int,
        peer_mss: int,
    ) -> int:
        """The cookie for a SYN received at `now` (µs): our ISN for the SYN-ACK.

        Returns:
            A 32-bit sequence number encoding time and mss_index(peer_mss).
        """
        counter = now // self._tick
        idx = mss_index(peer_mss)
        peer_isn &= _MASK32
        mac = self._mac(local_ip, local_port, remote_ip, remote_port, peer_isn, counter, idx)
        layout = (counter & _COUNTER_MASK) << _COUNTER_SHIFT | idx << _MSS_SHIFT | (mac & _MAC_MASK)
        offset = self._offset(local_ip, local_port, remote_ip, remote_port)
        return (layout + offset + peer_isn) & _MASK32

    def check(
        self,
        now: int,
        local_ip: int,
        local_port: int,
        remote_ip: int,
        remote_port: int,
        peer_isn: int,
        cookie: int,
    ) -> int | None:
        """Validate the ACK completing a cookie handshake.

        `peer_isn` is SEG.SEQ - 1 and `cookie` is SEG.ACK - 1 of that ACK
        (mod 2**32; RFC 9293 §3.10.7.2 for the sequence arithmetic).

        Returns:
            The MSS the cookie encodes, or None if the cookie is forged, for
            another connection, or older than the lifetime.
        """
        peer_isn &= _MASK32
        offset = self._offset(local_ip, local_port, remote_ip, remote_port)
        layout = (cookie - offset - peer_isn) & _MASK32
        current = now // self._tick
        age = (current - (layout >> _COUNTER_SHIFT)) & _COUNTER_MASK
        counter = current - age
        if age > self._max_age or counter < 0:
            return None
        idx = (layout >> _MSS_SHIFT) & _MSS_MASK
        mac = self._mac(local_ip, local_port, remote_ip, remote_port, peer_isn, counter, idx)
        if (mac & _MAC_MASK) != (layout & _MAC_MASK):
            return None
        return MSS_TABLE[idx]

    def encode_ts_options(self, tsval: int, wscale: int | None, sack_permitted: bool) -> int:
        """Put the peer's SYN options into the low bits of our SYN-ACK TSval.

        The result is never above `tsval` (mod 2**32: up to 64 ticks below
        it), so later TSvals from the real clock never go backwards, which
        the peer's PAWS check would punish (RFC 7323 §5.3, §5.4).

        Returns:
            The TSval to send.

        Raises:
            ValueError: wscale is outside 0..14 (RFC 7323 §2.3).
        """
        if wscale is None:
            opts = TS_NO_WSCALE
        elif 0 <= wscale <= MAX_WINDOW_SCALE:
            opts = wscale
        else:
            raise ValueError("window scale must be in 0..14")
        if sack_permitted:
            opts |= TS_SACK
        opts |= TS_MARK
        tsval &= _MASK32
        encoded = (tsval & ~TS_OPT_MASK) | opts
        if opts > (tsval & TS_OPT_MASK):
            encoded = (encoded - (1 << TS_OPT_BITS)) & _MASK32
        return encoded

    def decode_ts_options(self, tsecr: int) -> tuple[int | None, bool] | None:
        """Recover the options from the TSecr of the handshake-completing ACK.

        Returns:
            (peer window scale or None, SACK-permitted), or None if the TSecr
            does not carry options (the marker bit is clear).
        """
        opts = tsecr & TS_OPT_MASK
        if not opts & TS_MARK:
            return None
        wscale = opts & TS_WSCALE_MASK
        return (None if wscale == TS_NO_WSCALE else wscale), bool(opts & TS_SACK)

    def _offset(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> int:
        data = _TUPLE.pack(local_ip, local_port, remote_ip, remote_port)
        digest = hashlib.blake2s(data, digest_size=4, key=self._key, person=_PERSON_OFFSET)
        return int.from_bytes(digest.digest(), "big")

    def _mac(
        self,
        local_ip: int,
        local_port: int,
        remote_ip: int,
        remote_port: int,
        peer_isn: int,
        counter: int,
        idx: int,
    ) -> int:
        data = _MAC_INPUT.pack(local_ip, local_port, remote_ip, remote_port, peer_isn, counter, idx)
        digest = hashlib.blake2s(data, digest_size=4, key=self._key, person=_PERSON_MAC)
        return int.from_bytes(digest.digest(), "big")
