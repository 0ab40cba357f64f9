"""IPv4 header (RFC 791 §3.1), validation per RFC 1122 §3.2.1."""

from __future__ import annotations

from dataclasses import dataclass

from stackservice.net.checksum import ones_complement_sum
from stackservice.net.drops import DropReason
from stackservice.net.errors import MalformedFrame
from stackservice.net.wire import read16, read32, write16, write32

# Offsets table.
VER_IHL = 0
DSCP_ECN = 1
TOTAL_LEN = 2  # 2 bytes
IDENT = 4  # 2 bytes
FLAGS_FRAG = 6  # 2 bytes: reserved, DF, MF, 13-bit fragment offset
TTL = 8
PROTOCOL = 9
CHECKSUM = 10  # 2 bytes
SRC_ADDR = 12  # 4 bytes
DST_ADDR = 16  # 4 bytes
HEADER_LEN = 20  # without options

FLAG_DF = 0x4000
FLAG_MF = 0x2000
FRAG_OFFSET_MASK = 0x1FFF

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

DEFAULT_TTL = 64  # RFC 1700 / Linux default
LIMITED_BROADCAST = 0xFFFFFFFF


def is_host_address(addr: int) -> bool:
    """Return True if `addr` can belong to a single host (RFC 1122 §3.2.1.3).

    False for 0/8 ("this network"), 127/8 (loopback) and everything from
    224.0.0.0 up (multicast, reserved class E, limited broadcast). Subnet
    broadcast depends on the prefix and is checked by the caller.
    """
    first = addr >> 24
    return 0 < first < 224 and first != 127


def write_header(
    buf: bytearray | memoryview,
    offset: int,
    src: int,
    dst: int,
    protocol: int,
    payload_len: int,
    ident: int,
    ttl: int = DEFAULT_TTL,
    dscp_ecn: int = 0,
    flags_frag: int = FLAG_DF,
) -> None:
    """Write a 20-byte header with its checksum at `buf[offset:]`.

    The checksum is summed from the field values rather than read back from
    the buffer: no slice, no second pass over the bytes. 0x4500 keeps the sum
    non-zero, so the -0 case cannot arise.
    """
    total_len = HEADER_LEN + payload_len
    total = (0x4500 | dscp_ecn) + total_len + ident + flags_frag + (ttl << 8 | protocol)
    total += (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    # The offsets table at the top, written out: compiled, C constants.
    buf[offset] = 0x45  # version 4, five words
    buf[offset + 1] = dscp_ecn
    write16(buf, offset + 2, total_len)
    write16(buf, offset + 4, ident)
    write16(buf, offset + 6, flags_frag)
    buf[offset + 8] = ttl
    buf[offset + 9] = protocol
    write16(buf, offset + 10, ~total & 0xFFFF)
    write32(buf, offset + 12, src)
    write32(buf, offset + 16, dst)


class Ipv4View:
    """Read access to an IPv4 header over a memoryview.

    `buf` is the datagram as given; `octets` the same bytes, which
    ipv4.pxd types as a C byte array, so compiled getters read the header
    without converting `buf` on every call.
    """

    __slots__ = ("buf", "octets")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.octets = buf

    @classmethod
    def checked(cls, buf: memoryview, verify_checksum: bool) -> Ipv4View:
        """Validate the header of the datagram at the start of `buf`
        (`checked_datagram`)."""
        return checked_datagram(buf, verify_checksum)

    def version(self) -> int:
        return self.octets[VER_IHL] >> 4

    def header_len(self) -> int:
        """Header length in bytes, options included."""
        return (self.octets[VER_IHL] & 0x0F) << 2

    def dscp_ecn(self) -> int:
        return self.octets[DSCP_ECN]

    def total_len(self) -> int:
        return read16(self.octets, TOTAL_LEN)

    def ident(self) -> int:
        return read16(self.octets, IDENT)

    def flags_frag(self) -> int:
        return read16(self.octets, FLAGS_FRAG)

    def is_fragment(self) -> bool:
        """True if MF is set or the fragment offset is non-zero."""
        return read16(self.octets, FLAGS_FRAG) & (FLAG_MF | FRAG_OFFSET_MASK) != 0

    def ttl(self) -> int:
        return self.octets[TTL]

    def protocol(self) -> int:
        return self.octets[PROTOCOL]

    def checksum(self) -> int:
        return read16(self.octets, CHECKSUM)

    def src(self) -> int:
        return read32(self.octets, SRC_ADDR)

    def dst(self) -> int:
        return read32(self.octets, DST_ADDR)

    def datagram(self) -> memoryview:
        """Header and payload, without any link-layer padding."""
        return self.buf[: self.total_len()]

    def payload(self) -> memoryview:
        """The datagram's payload, without options or link-layer padding."""
        start, end = self.payload_bounds()
        return self.buf[start:end]

    def payload_bounds(self) -> tuple[int, int]:
        """Where the payload lies in the view: (header length, total length).
        Compiled, a C pair: a handler slices the typed `octets` with it and
        acquires no buffer again (TcpEngine.on_segment)."""
        octets = self.octets
        return (octets[VER_IHL] & 0x0F) << 2, octets[TOTAL_LEN] << 8 | octets[TOTAL_LEN + 1]


def checked_datagram(buf: memoryview, verify_checksum: bool) -> Ipv4View:
    """Validate the header of the datagram at the start of `buf`.

    `buf` may extend past the datagram (Ethernet padding): only the total
    length counts. Options are covered by the checksum and otherwise
    skipped. (A function as well as `Ipv4View.checked`: compiled, the host
    calls it in C, where a classmethod is a Python call.)

    Raises:
        MalformedFrame: IPV4_TOO_SHORT, IPV4_BAD_VERSION, IPV4_BAD_IHL,
            IPV4_BAD_TOTAL_LENGTH or IPV4_BAD_CHECKSUM.
    """
    available = len(buf)
    if available < HEADER_LEN:
        raise MalformedFrame(DropReason.IPV4_TOO_SHORT)
    view = Ipv4View(buf)
    octets = view.octets
    ver_ihl = octets[VER_IHL]
    if ver_ihl >> 4 != 4:
        raise MalformedFrame(DropReason.IPV4_BAD_VERSION)
    header_len = (ver_ihl & 0x0F) << 2
    if header_len < HEADER_LEN or header_len > available:
        raise MalformedFrame(DropReason.IPV4_BAD_IHL)
    total_len = octets[TOTAL_LEN] << 8 | octets[TOTAL_LEN + 1]
    if total_len < header_len or total_len > available:
        raise MalformedFrame(DropReason.IPV4_BAD_TOTAL_LENGTH)
    # A valid header sums to -0 (RFC 1071: 0xFFFF folded). Compiled, that
    # is a C loop over the view's bytes, not a big integer of them.
    if verify_checksum and ones_complement_sum(octets[:header_len]) != 0xFFFF:
        raise MalformedFrame(DropReason.IPV4_BAD_CHECKSUM)
    return view


@dataclass(frozen=True, slots=True)
class Ipv4Repr:
    """An unfragmented IPv4 header without options."""

    src: int
    dst: int
    protocol: int
    payload_len: int
    ident: int = 0
    ttl: int = DEFAULT_TTL
    dscp_ecn: int = 0
    dont_fragment: bool = True

    @classmethod
    def parse(cls, view: Ipv4View) -> Ipv4Repr:
        """Build from a checked view.

        Raises:
            MalformedFrame: IPV4_FRAGMENT.
        """
        if view.is_fragment():
            raise MalformedFrame(DropReason.IPV4_FRAGMENT)
        return cls(
            src=view.src(),
            dst=view.dst(),
            protocol=view.protocol(),
            payload_len=view.total_len() - view.header_len(),
            ident=view.ident(),
            ttl=view.ttl(),
            dscp_ecn=view.dscp_ecn(),
            dont_fragment=bool(view.flags_frag() & FLAG_DF),
        )

    def buffer_len(self) -> int:
        return HEADER_LEN

    def emit(self, buf: bytearray | memoryview) -> None:
        """Write the header, checksum included, into the first 20 bytes of `buf`."""
        write_header(
            buf, 0, self.src, self.dst, self.protocol, self.payload_len, self.ident,
            self.ttl, self.dscp_ecn, FLAG_DF if self.dont_fragment else 0,
        )  # fmt: skip
