"""ICMP for a host (RFC 792, RFC 1122 §3.2.2): echo and error generation."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stackservice.net.checksum import checksum_adjust, internet_checksum, ones_complement_sum
from stackservice.net.drops import DropReason
from stackservice.net.errors import MalformedFrame

# Offsets table.
TYPE = 0
CODE = 1
CHECKSUM = 2  # 2 bytes
REST = 4  # 4 bytes: identifier + sequence for echo, unused for unreachable
IDENT = 4  # 2 bytes, echo only
SEQ = 6  # 2 bytes, echo only
HEADER_LEN = 8

ECHO_REPLY = 0
DEST_UNREACHABLE = 3
ECHO_REQUEST = 8

CODE_PROTOCOL_UNREACHABLE = 2

# RFC 1812 §4.3.2.3: quote as much of the offending datagram as fits in a
# 576-byte IP datagram (Linux does the same); RFC 1122 only requires 8 bytes.
MAX_ERROR_DATAGRAM = 576
MAX_QUOTE = MAX_ERROR_DATAGRAM - 20 - HEADER_LEN

_HEADER = struct.Struct("!BBHI")


class IcmpView:
    """Read access to an ICMP message over a memoryview."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf

    @classmethod
    def checked(cls, buf: memoryview, verify_checksum: bool) -> IcmpView:
        """Wrap a whole ICMP message (the IPv4 payload).

        Raises:
            MalformedFrame: ICMP_TOO_SHORT or ICMP_BAD_CHECKSUM.
        """
        if len(buf) < HEADER_LEN:
            raise MalformedFrame(DropReason.ICMP_TOO_SHORT)
        if verify_checksum and ones_complement_sum(buf) != 0xFFFF:
            raise MalformedFrame(DropReason.ICMP_BAD_CHECKSUM)
        return cls(buf)

    def icmp_type(self) -> int:
        return self.buf[TYPE]

    def code(self) -> int:
        return self.buf[CODE]

    def checksum(self) -> int:
        buf = self.buf
        return buf[CHECKSUM] << 8 | buf[CHECKSUM + 1]

    def rest(self) -> int:
        buf = self.buf
        return buf[REST] << 24 | buf[REST + 1] << 16 | buf[REST + 2] << 8 | buf[REST + 3]

    def ident(self) -> int:
        buf = self.buf
        return buf[IDENT] << 8 | buf[IDENT + 1]

    def seq(self) -> int:
        buf = self.buf
        return buf[SEQ] << 8 | buf[SEQ + 1]

    def data(self) -> memoryview:
        return self.buf[HEADER_LEN:]


@dataclass(frozen=True, slots=True)
class IcmpRepr:
    """An ICMP message: type, code, the 4 type-specific header bytes, data."""

    icmp_type: int
    code: int
    rest: int
    data: bytes

    @classmethod
    def parse(cls, view: IcmpView) -> IcmpRepr:
        return cls(view.icmp_type(), view.code(), view.rest(), bytes(view.data()))

    @classmethod
    def protocol_unreachable(cls, datagram: memoryview) -> IcmpRepr:
        """Destination unreachable, code 2, quoting `datagram` (RFC 792 p.4)."""
        return cls(DEST_UNREACHABLE, CODE_PROTOCOL_UNREACHABLE, 0, bytes(datagram[:MAX_QUOTE]))

    def buffer_len(self) -> int:
        return HEADER_LEN + len(self.data)

    def emit(self, buf: bytearray | memoryview) -> None:
        """Write the message, checksum included, into `buf[:buffer_len()]`."""
        _HEADER.pack_into(buf, 0, self.icmp_type, self.code, 0, self.rest)
        end = HEADER_LEN + len(self.data)
        buf[HEADER_LEN:end] = self.data
        checksum = internet_checksum(buf[:end])
        buf[CHECKSUM] = checksum >> 8
        buf[CHECKSUM + 1] = checksum & 0xFF


def echo_reply(request: memoryview) -> bytearray:
    """Return the echo reply to a checked echo request (RFC 792 p.14).

    The reply is the request with only the type changed, so identifier,
    sequence number and data are identical and the checksum is adjusted
    incrementally instead of summed again over the payload.
    """
    reply = bytearray(request)
    code = reply[CODE]
    old = reply[CHECKSUM] << 8 | reply[CHECKSUM + 1]
    reply[TYPE] = ECHO_REPLY
    checksum = checksum_adjust(old, ECHO_REQUEST << 8 | code, ECHO_REPLY << 8 | code)
    if checksum == 0:
        # Ambiguous -0: right unless the reply is all zero (see checksum_adjust).
        reply[CHECKSUM] = reply[CHECKSUM + 1] = 0
        checksum = internet_checksum(reply)
    reply[CHECKSUM] = checksum >> 8
    reply[CHECKSUM + 1] = checksum & 0xFF
    return reply


@dataclass(frozen=True, slots=True)
class IcmpSettings:
    """ICMP error rate limit: one message per `error_interval` µs, bursts of `error_burst`."""

    error_interval: int = 1_000  # Linux icmp_msgs_per_sec = 1000
    error_burst: int = 50  # Linux icmp_msgs_burst = 50


class TokenBucket:
    """Rate limit for ICMP error messages (RFC 1812 §4.3.2.8, RFC 1122 §3.2.2).

    Credit accrues one microsecond per microsecond up to `burst` tokens'
    worth; a message costs `interval_us`. Integer-only, driven by `now`.
    """

    __slots__ = ("_capacity", "_credit", "_interval", "_last")

    def __init__(self, interval_us: int, burst: int) -> None:
        if interval_us <= 0 or burst <= 0:
            raise ValueError("interval_us and burst must be positive")
        self._interval = interval_us
        self._capacity = interval_us * burst
        self._credit = self._capacity
        self._last = 0

    def take(self, now: int) -> bool:
        """Spend one token if available.

        Returns:
            True if a message may be sent at `now`.
        """
        credit = self._credit + now - self._last
        self._last = now
        if credit > self._capacity:
            credit = self._capacity
        if credit < self._interval:
            self._credit = credit
            return False
        self._credit = credit - self._interval
        return True
