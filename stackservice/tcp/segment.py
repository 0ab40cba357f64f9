"""TCP header and options (RFC 9293 §3.1; RFC 7323, RFC 2018, RFC 6691).

`TcpView` reads a received segment (the IPv4 payload); `TcpView.checked`
bounds-checks it, after which no getter can fail. `TcpRepr.parse` validates
the view into a frozen value (checksum, ports, flags, options), and
`TcpRepr.emit` / `write_segment` build a segment, checksum included, directly
into a caller-provided buffer at any offset, so a frame is assembled in place
behind its Ethernet and IPv4 headers.

Robustness choices (RFC 9293 §3.1 "Options", §3.7.1; Linux tcp_parse_options):
- Options the parser cannot walk make the segment malformed
  (TCP_BAD_OPTIONS, dropped and counted): a length byte of 0 or 1, a missing
  length byte, or an option running past the data offset. Linux stops parsing
  instead; a peer sending these is broken or hostile, and a truncated option
  list could hide the options it meant to send.
- A known kind with the wrong length (MSS != 4, WS != 3, SACK-permitted != 2,
  timestamps != 10, SACK not 2 + 8n with n >= 1) is skipped by its length and
  otherwise ignored, not counted (RFC 9293 §3.1 robustness, as Linux does).
- Unknown kinds are skipped by their length. Bytes after EOL are padding.
- A repeated option: the last occurrence wins (as Linux).
- The window scale is clamped to 14 (RFC 7323 §2.3). The MSS is kept as sent,
  0 included: the TCB applies its floor (RFC 9293 §3.7.1, RFC 6691).
- Options are parsed on every segment; whether MSS, WS and SACK-permitted
  count outside a SYN (they must not: RFC 7323 §2.2, RFC 2018 §2) is the
  TCB's decision.
- Reserved header bits are ignored on receive and written as zero
  (RFC 9293 §3.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from stackservice.net.checksum import internet_checksum, ones_complement_sum, pseudo_header_sum
from stackservice.net.errors import LocalProtocolError, RemoteProtocolError
from stackservice.net.ipv4 import PROTO_TCP
from stackservice.net.wire import read16, read32, write16, write32
from stackservice.tcp.drops import TcpDropReason

# Offsets table.
SRC_PORT = 0  # 2 bytes
DST_PORT = 2  # 2 bytes
SEQ_NUM = 4  # 4 bytes
ACK_NUM = 8  # 4 bytes
DATA_OFFSET = 12  # high nibble: header length in 32-bit words; low nibble reserved
FLAGS = 13
WINDOW = 14  # 2 bytes
CHECKSUM = 16  # 2 bytes
URGENT = 18  # 2 bytes
OPTIONS = 20
HEADER_LEN = 20  # without options
MAX_HEADER_LEN = 60
MAX_OPTIONS_LEN = MAX_HEADER_LEN - HEADER_LEN

# Control bits (RFC 9293 §3.1; ECE and CWR from RFC 3168 §6.1).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

# Flag mixes `TcpRepr.parse` rejects with TCP_BAD_FLAGS, as smoltcp's
# TcpRepr::parse does: any two of SYN, FIN, RST. No RFC defines a meaning for
# them and no real stack sends them; they are scans and fingerprinting probes.
# - SYN+FIN: opens and closes at once (Xmas/"SYN-FIN" scans; Linux discards it
#   in LISTEN).
# - SYN+RST: a reset cannot also synchronize; processing either half would
#   let a forged segment both reset and re-open.
# - FIN+RST: dropping it (instead of honouring the RST) costs a misbehaving
#   peer a timeout, never a correct one.
# Everything else passes to the TCB, which owns the per-state rules of
# RFC 9293 §3.10.7 (e.g. a segment without ACK, or without any flag, is
# dropped in synchronized states, but answered with RST in CLOSED).
ILLEGAL_FLAG_MIXES = (SYN | FIN, SYN | RST, FIN | RST)

# Option kinds (RFC 9293 §3.2, RFC 7323 §2-3, RFC 2018 §2-3).
KIND_EOL = 0
KIND_NOP = 1
KIND_MSS = 2
KIND_WINDOW_SCALE = 3
KIND_SACK_PERMITTED = 4
KIND_SACK = 5
KIND_TIMESTAMPS = 8

MAX_WINDOW_SCALE = 14  # RFC 7323 §2.3
MAX_SACK_BLOCKS = 4  # (40 - 2) // 8
MAX_SACK_BLOCKS_WITH_TIMESTAMPS = 3  # (40 - 12 - 4) // 8, as Linux sends

SEQ_MASK = 0xFFFFFFFF

# The word NOP NOP TS 10 that starts the 12-byte option list of data
# segments (Linux's TCPOLEN_TSTAMP_ALIGNED fast path).
_TS_WORD = KIND_NOP << 24 | KIND_NOP << 16 | KIND_TIMESTAMPS << 8 | 10

Buffer = bytes | bytearray | memoryview


class MalformedSegment(RemoteProtocolError):
    """A received segment failed validation; `reason` is the counter to bump."""

    def __init__(self, reason: TcpDropReason) -> None:
        super().__init__(reason)
        self.reason = reason


# Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4). Each comparison is
# on the signed 32-bit difference d = a - b: lt is d < 0, le d <= 0, gt d > 0,
# ge d >= 0, so ge == not lt and le == not gt always. Numbers exactly 2**31
# apart have no order (RFC 1982 §3.2): each is then "less" than the other, as
# Linux's before(); a TCB never compares them, windows being < 2**30
# (RFC 7323 §2.3). Inputs need not be reduced modulo 2**32 (but, compiled,
# must fit in 64 bits: segment.pxd makes these C functions on long long).
# Their constants are C globals (segment.pxd): compiled, an integer literal
# above 2**31 - 1 is a Python object to Cython, as a module global is, and
# either turns the C arithmetic into Python's: a boxed integer per step.
_MASK = 0xFFFFFFFF
_HALF = 0x80000000


def seq_lt(a: int, b: int) -> bool:
    """Return a < b in sequence space."""
    return ((a - b) & _MASK) >= _HALF


def seq_le(a: int, b: int) -> bool:
    """Return a <= b in sequence space."""
    return ((a - b - 1) & _MASK) >= _HALF - 1


def seq_gt(a: int, b: int) -> bool:
    """Return a > b in sequence space."""
    return ((a - b - 1) & _MASK) < _HALF - 1


def seq_ge(a: int, b: int) -> bool:
    """Return a >= b in sequence space."""
    return ((a - b) & _MASK) < _HALF


def seq_add(a: int, n: int) -> int:
    """Return a + n modulo 2**32 (n may be negative)."""
    return (a + n) & _MASK


def seq_sub(a: int, b: int) -> int:
    """Return a - b modulo 2**32: how far a lies ahead of b, in 0..2**32-1."""
    return (a - b) & _MASK


class TcpView:
    """Read access to a TCP segment (header, options, payload) over a memoryview."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf

    @classmethod
    def unchecked(cls, buf: memoryview) -> TcpView:
        """Wrap `buf` without validation: only for buffers this stack wrote."""
        return cls(buf)

    @classmethod
    def checked(cls, buf: memoryview) -> TcpView:
        """Wrap a whole segment (the IPv4 payload, without link padding).

        Raises:
            MalformedSegment: TCP_TOO_SHORT or TCP_BAD_DATA_OFFSET.
        """
        _checked_header_len(buf)
        return cls(buf)

    def src_port(self) -> int:
        return read16(self.buf, SRC_PORT)

    def dst_port(self) -> int:
        return read16(self.buf, DST_PORT)

    def seq(self) -> int:
        return read32(self.buf, SEQ_NUM)

    def ack(self) -> int:
        return read32(self.buf, ACK_NUM)

    def data_offset(self) -> int:
        """Header length in 32-bit words."""
        return self.buf[DATA_OFFSET] >> 4

    def header_len(self) -> int:
        """Header length in bytes, options included."""
        return (self.buf[DATA_OFFSET] >> 4) << 2

    def flags(self) -> int:
        """The eight control bits (FIN ... CWR)."""
        return self.buf[FLAGS]

    def window(self) -> int:
        """The raw, unscaled window field."""
        return read16(self.buf, WINDOW)

    def checksum(self) -> int:
        return read16(self.buf, CHECKSUM)

    def urgent(self) -> int:
        return read16(self.buf, URGENT)

    def options(self) -> memoryview:
        return self.buf[OPTIONS : self.header_len()]

    def payload(self) -> memoryview:
        return self.buf[self.header_len() :]


def verify_checksum(view: TcpView, src_ip: int, dst_ip: int) -> bool:
    """Check the segment's checksum over the IPv4 pseudo-header (RFC 9293 §3.1).

    Returns:
        True if the one's complement sum of pseudo-header and segment is -0.
    """
    return _checksum_ok(view.buf, src_ip, dst_ip)


def _checksum_ok(buf: Buffer, src_ip: int, dst_ip: int) -> bool:
    initial = pseudo_header_sum(src_ip, dst_ip, PROTO_TCP, len(buf))
    return ones_complement_sum(buf, initial) == 0xFFFF


# No slots=True on the two dataclasses below: compiled, each is an extension
# type with C fields (segment.pxd), which Cython's dataclass builds without
# __slots__ and a dictionary, and refuses the argument. Built once per
# segment each way, frozen instances cost 1.3-2.9 µs interpreted and
# 0.14 µs compiled.
@dataclass(frozen=True)
class TcpOptions:
    """The options this stack understands; absent ones are None/False/().

    `timestamps` is (TSval, TSecr); `sack_blocks` holds (left, right) edges,
    most recent first (RFC 2018 §4), at most 4.
    """

    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    timestamps: tuple[int, int] | None = None
    sack_blocks: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, data: Buffer) -> TcpOptions:
        """Parse the option bytes of a header (`TcpView.options()`).

        Raises:
            MalformedSegment: TCP_BAD_OPTIONS when an option cannot be walked
                (see the module docstring for what is ignored instead).
        """
        return _parse_options(data, 0, len(data))

    def buffer_len(self) -> int:
        """Bytes `emit` writes: a multiple of 4.

        Raises:
            LocalProtocolError: the options exceed 40 bytes (e.g. timestamps
                with 4 SACK blocks: send at most 3, as Linux does).
        """
        length = 0 if self.mss is None else 4
        if self.timestamps is not None:
            length += 12
        elif self.sack_permitted:
            length += 4
        if self.window_scale is not None:
            length += 4
        blocks = len(self.sack_blocks)
        if blocks:
            length += 4 + 8 * blocks
        if length > MAX_OPTIONS_LEN:
            raise LocalProtocolError("TCP options exceed 40 bytes")
        return length

    def emit(self, buf: bytearray | memoryview, offset: int) -> int:
        """Write the options at `buf[offset:]`, NOP-aligned as Linux does.

        Layout: MSS; SACK-permitted+TS (or NOP NOP TS, or NOP NOP
        SACK-permitted); NOP WS; NOP NOP SACK blocks. `buf` must hold
        `buffer_len()` bytes there.

        Returns:
            The number of bytes written.
        """
        pos = offset
        if self.mss is not None:
            buf[pos] = KIND_MSS
            buf[pos + 1] = 4
            write16(buf, pos + 2, self.mss)
            pos += 4
        timestamps = self.timestamps
        if timestamps is not None:
            if self.sack_permitted:
                buf[pos] = KIND_SACK_PERMITTED
                buf[pos + 1] = 2
            else:
                buf[pos] = buf[pos + 1] = KIND_NOP
            buf[pos + 2] = KIND_TIMESTAMPS
            buf[pos + 3] = 10
            write32(buf, pos + 4, timestamps[0])
            write32(buf, pos + 8, timestamps[1])
            pos += 12
        elif self.sack_permitted:
            write32(buf, pos, KIND_NOP << 24 | KIND_NOP << 16 | KIND_SACK_PERMITTED << 8 | 2)
            pos += 4
        if self.window_scale is not None:
            write32(buf, pos, KIND_NOP << 24 | KIND_WINDOW_SCALE << 16 | 3 << 8 | self.window_scale)
            pos += 4
        blocks = self.sack_blocks
        if blocks:
            length = 2 + 8 * len(blocks)
            write32(buf, pos, KIND_NOP << 24 | KIND_NOP << 16 | KIND_SACK << 8 | length)
            pos += 4
            for left, right in blocks:
                write32(buf, pos, left)
                write32(buf, pos + 4, right)
                pos += 8
        return pos - offset


def _parse_options(data: Buffer, start: int, end: int) -> TcpOptions:
    """`TcpOptions.parse` of the option bytes data[start:end]."""
    mss: int | None = None
    window_scale: int | None = None
    sack_permitted = False
    timestamps: tuple[int, int] | None = None
    sack_blocks: tuple[tuple[int, int], ...] = ()
    i = start
    while i < end:
        kind = data[i]
        if kind == KIND_NOP:
            i += 1
            continue
        if kind == KIND_EOL:
            break
        if i + 1 == end:
            raise MalformedSegment(TcpDropReason.TCP_BAD_OPTIONS)
        length = data[i + 1]
        if length < 2 or i + length > end:
            raise MalformedSegment(TcpDropReason.TCP_BAD_OPTIONS)
        if kind == KIND_TIMESTAMPS:
            if length == 10:
                timestamps = (read32(data, i + 2), read32(data, i + 6))
        elif kind == KIND_SACK:
            if length >= 10 and (length - 2) & 7 == 0:
                sack_blocks = _sack_blocks(data, i + 2, i + length)
        elif kind == KIND_MSS:
            if length == 4:
                mss = read16(data, i + 2)
        elif kind == KIND_WINDOW_SCALE:
            if length == 3:
                shift = data[i + 2]
                window_scale = shift if shift <= MAX_WINDOW_SCALE else MAX_WINDOW_SCALE
        elif kind == KIND_SACK_PERMITTED and length == 2:
            sack_permitted = True
        i += length
    return TcpOptions(mss, window_scale, sack_permitted, timestamps, sack_blocks)


def _sack_blocks(data: Buffer, start: int, end: int) -> tuple[tuple[int, int], ...]:
    blocks = []
    while start < end:
        blocks.append((read32(data, start), read32(data, start + 4)))
        start += 8
    return tuple(blocks)


NO_OPTIONS = TcpOptions()


def write_segment(
    buf: bytearray | memoryview,
    offset: int,
    src_ip: int,
    dst_ip: int,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: TcpOptions,
    payload_len: int,
    payload: Buffer | None = None,
    urgent: int = 0,
    checksum_offload: bool = False,
) -> int:
    """Write a segment, checksum included, at `buf[offset:]`.

    The output path's primitive (`TcpRepr.emit` calls it): a frame buffer gets
    the segment after its Ethernet and IPv4 headers with no copy beyond the
    payload's. With `payload` None the `payload_len` bytes already sitting
    after the header in `buf` are the payload (copied there straight from a
    send ring). One pass sums pseudo-header, header and payload; with
    `checksum_offload` the checksum field gets the pseudo-header sum alone,
    for the kernel or NIC to finish (stackservice.net.offload).

    Returns:
        The segment length (header + options + payload).

    Raises:
        LocalProtocolError: options over 40 bytes, `len(payload)` differs
            from `payload_len`, or the segment does not fit in `buf`.
    """
    header_len = 20 + options.buffer_len()
    segment_len = header_len + payload_len
    end = offset + segment_len
    if offset < 0 or end > len(buf):
        raise LocalProtocolError("buffer too small for the TCP segment")
    if payload is not None:
        if len(payload) != payload_len:
            raise LocalProtocolError("payload length differs from payload_len")
        buf[offset + header_len : end] = payload
    # The offsets table at the top, written out: compiled, these are C
    # constants, where a module global would be a Python object.
    write16(buf, offset, src_port)
    write16(buf, offset + 2, dst_port)
    write32(buf, offset + 4, seq)
    write32(buf, offset + 8, ack)
    buf[offset + 12] = header_len << 2  # data offset in words, high nibble
    buf[offset + 13] = flags
    write16(buf, offset + 14, window)
    write16(buf, offset + 16, 0)  # the checksum, summed as zero
    write16(buf, offset + 18, urgent)
    if header_len != 20:
        options.emit(buf, offset + 20)
    initial = pseudo_header_sum(src_ip, dst_ip, PROTO_TCP, segment_len)
    if checksum_offload:
        write16(buf, offset + 16, initial)
    else:
        write16(buf, offset + 16, internet_checksum(buf[offset:end], initial))
    return segment_len


@dataclass(frozen=True)
class TcpRepr:
    """A validated TCP header (RFC 9293 §3.1); the payload stays in the view.

    `flags` is the control-bit mask (FIN ... CWR); `window` the raw 16-bit
    field, unscaled; `ack` is kept as sent even without ACK.
    """

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int = 0
    options: TcpOptions = NO_OPTIONS
    payload_len: int = 0

    @classmethod
    def parse(cls, view: TcpView, src_ip: int, dst_ip: int, checksum_trusted: bool) -> TcpRepr:
        """Validate a checked view; `checksum_trusted` skips the checksum sum.

        Checks run in order checksum, ports, flags, options, so a corrupted
        segment is counted as such rather than by whatever it corrupted.

        Raises:
            MalformedSegment: TCP_BAD_CHECKSUM, TCP_BAD_PORT (either port 0),
                TCP_BAD_FLAGS (ILLEGAL_FLAG_MIXES) or TCP_BAD_OPTIONS.
        """
        return parse_header(view.buf, src_ip, dst_ip, checksum_trusted)

    def header_len(self) -> int:
        """Header bytes, options included.

        Raises:
            LocalProtocolError: the options exceed 40 bytes.
        """
        return HEADER_LEN + self.options.buffer_len()

    def buffer_len(self) -> int:
        """Bytes `emit` writes: header, options and payload.

        Raises:
            LocalProtocolError: the options exceed 40 bytes.
        """
        return HEADER_LEN + self.options.buffer_len() + self.payload_len

    def segment_len(self) -> int:
        """SEG.LEN: sequence space consumed, payload plus SYN and FIN (RFC 9293 §3.4)."""
        flags = self.flags
        return self.payload_len + ((flags & SYN) >> 1) + (flags & FIN)

    def emit(
        self,
        buf: bytearray | memoryview,
        src_ip: int,
        dst_ip: int,
        payload: Buffer | None = None,
        offset: int = 0,
    ) -> int:
        """Write `buffer_len()` bytes, checksum included, at `buf[offset:]`.

        `payload` None means the payload is already in place after the
        header (see `write_segment`).

        Returns:
            The segment length, `buffer_len()`.

        Raises:
            LocalProtocolError: as `write_segment`.
        """
        return write_segment(
            buf, offset, src_ip, dst_ip, self.src_port, self.dst_port, self.seq, self.ack,
            self.flags, self.window, self.options, self.payload_len, payload, self.urgent,
        )  # fmt: skip


def _checked_header_len(buf: Buffer) -> int:
    """The header length of a whole segment (the IPv4 payload, without link
    padding), once its bounds are checked.

    Raises:
        MalformedSegment: TCP_TOO_SHORT or TCP_BAD_DATA_OFFSET.
    """
    available = len(buf)
    if available < 20:  # HEADER_LEN: literals, which compiled are C constants
        raise MalformedSegment(TcpDropReason.TCP_TOO_SHORT)
    header_len = (buf[12] >> 4) << 2  # DATA_OFFSET
    if header_len < 20 or header_len > available:
        raise MalformedSegment(TcpDropReason.TCP_BAD_DATA_OFFSET)
    return header_len


def parse_header(buf: Buffer, src_ip: int, dst_ip: int, checksum_trusted: bool) -> TcpRepr:
    """`TcpView.checked` and `TcpRepr.parse` of a whole segment in one: the
    engine calls it directly on the IPv4 payload, with no view object,
    since compiled, a classmethod is reached by a Python call. The
    payload is the buffer's last `payload_len` bytes.

    Raises:
        MalformedSegment: as `TcpView.checked`, then as `TcpRepr.parse`.
    """
    header_len = _checked_header_len(buf)
    if not checksum_trusted and not _checksum_ok(buf, src_ip, dst_ip):
        raise MalformedSegment(TcpDropReason.TCP_BAD_CHECKSUM)
    src_port = read16(buf, 0)
    dst_port = read16(buf, 2)
    if src_port == 0 or dst_port == 0:
        raise MalformedSegment(TcpDropReason.TCP_BAD_PORT)
    flags = buf[13]
    control = flags & 0x07  # SYN | FIN | RST
    if control & (control - 1):  # more than one of them
        raise MalformedSegment(TcpDropReason.TCP_BAD_FLAGS)
    if header_len == 20:
        options = NO_OPTIONS
    elif header_len == 32 and read32(buf, 20) == _TS_WORD:
        # NOP NOP TS alone, as on every data segment: Linux's
        # tcp_fast_parse_options takes the same shortcut.
        options = TcpOptions(None, None, False, (read32(buf, 24), read32(buf, 28)), ())
    else:
        options = _parse_options(buf, 20, header_len)
    return TcpRepr(
        src_port, dst_port, read32(buf, 4), read32(buf, 8), flags, read16(buf, 14),
        read16(buf, 18), options, len(buf) - header_len,
    )  # fmt: skip
