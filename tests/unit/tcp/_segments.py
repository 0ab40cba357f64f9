"""Test helpers: an independent TCP segment builder and reference checksum.

Builders use struct and the word-by-word RFC 1071 algorithm, not the code
under test, so byte-exact comparisons check the implementation against an
independent encoding.
"""

from __future__ import annotations

import struct

from hypothesis import settings
from hypothesis import strategies as st

from stackservice.tcp import TcpOptions, TcpRepr
from tests.support.checks import CHECK, ip  # noqa: F401  (re-exported to the tests)
from tests.support.checks import FUZZ as _FUZZ

FUZZ = settings(_FUZZ, max_examples=1000)


PEER_IP = ip("198.18.0.1")
OUR_IP = ip("198.18.0.10")
PROTO_TCP = 6

# Flag bits, spelled out independently of the module under test.
F_FIN, F_SYN, F_RST, F_PSH, F_ACK, F_URG, F_ECE, F_CWR = (1 << i for i in range(8))


def ref_sum(data: bytes) -> int:
    """RFC 1071 §4.1, word by word with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header(src_ip: int, dst_ip: int, length: int) -> bytes:
    """RFC 9293 §3.1 (Figure 2): source, destination, zero, PTCL, TCP length."""
    return struct.pack("!IIBBH", src_ip, dst_ip, 0, PROTO_TCP, length)


def ref_tcp_checksum(segment: bytes, src_ip: int, dst_ip: int) -> int:
    """Checksum of `segment` with its checksum field taken as zero."""
    zeroed = segment[:16] + b"\0\0" + segment[18:]
    return ~ref_sum(pseudo_header(src_ip, dst_ip, len(segment)) + zeroed) & 0xFFFF


def ref_verifies(segment: bytes, src_ip: int, dst_ip: int) -> bool:
    return ref_sum(pseudo_header(src_ip, dst_ip, len(segment)) + segment) == 0xFFFF


def tcp_segment(
    src_port: int = 40000,
    dst_port: int = 80,
    seq: int = 1000,
    ack: int = 2000,
    flags: int = F_ACK,
    window: int = 65535,
    options: bytes = b"",
    payload: bytes = b"",
    *,
    urgent: int = 0,
    data_offset: int | None = None,
    reserved: int = 0,
    src_ip: int = PEER_IP,
    dst_ip: int = OUR_IP,
    checksum: int | None = None,
) -> bytes:
    """A segment as the RFC 9293 §3.1 figure lays it out, checksum by reference.

    `options` is placed verbatim; `data_offset` defaults to cover it.
    """
    if data_offset is None:
        assert len(options) % 4 == 0
        data_offset = 5 + len(options) // 4
    header = struct.pack(
        "!HHIIBBHHH", src_port, dst_port, seq, ack, data_offset << 4 | reserved, flags, window,
        0, urgent,
    )  # fmt: skip
    segment = header + options + payload
    if checksum is None:
        checksum = ref_tcp_checksum(segment, src_ip, dst_ip)
    return segment[:16] + struct.pack("!H", checksum) + segment[18:]


# Option encodings, written out by hand (RFC 9293 §3.2, RFC 7323, RFC 2018).
NOP = b"\x01"
EOL = b"\x00"


def opt_mss(mss: int) -> bytes:
    return struct.pack("!BBH", 2, 4, mss)


def opt_ws(shift: int) -> bytes:
    return bytes([3, 3, shift])


SACK_PERM = b"\x04\x02"


def opt_ts(tsval: int, tsecr: int) -> bytes:
    return struct.pack("!BBII", 8, 10, tsval, tsecr)


def opt_sack(*blocks: tuple[int, int]) -> bytes:
    return bytes([5, 2 + 8 * len(blocks)]) + b"".join(struct.pack("!II", *b) for b in blocks)


# Hypothesis strategies for values of the module under test.

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ports = st.integers(1, 0xFFFF)
# At most one of SYN, FIN, RST: the flag mixes parse accepts.
legal_flags = st.integers(0, 0xFF).filter(lambda f: f & 0x07 in (0, 1, 2, 4))


@st.composite
def tcp_options(draw: st.DrawFn) -> TcpOptions:
    """Any option set `emit` can encode in 40 bytes, window scale <= 14."""
    mss = draw(st.none() | u16)
    window_scale = draw(st.none() | st.integers(0, 14))
    sack_permitted = draw(st.booleans())
    timestamps = draw(st.none() | st.tuples(u32, u32))
    used = (mss is not None) * 4 + (window_scale is not None) * 4
    used += 12 if timestamps is not None else 4 * sack_permitted
    room = max(0, (40 - used - 4) // 8)
    blocks = draw(st.lists(st.tuples(u32, u32), max_size=min(4, room)))
    return TcpOptions(mss, window_scale, sack_permitted, timestamps, tuple(blocks))


@st.composite
def reprs_and_payloads(draw: st.DrawFn) -> tuple[TcpRepr, bytes]:
    payload = draw(st.binary(max_size=300))
    rep = TcpRepr(
        draw(ports), draw(ports), draw(u32), draw(u32), draw(legal_flags), draw(u16),
        draw(u16), draw(tcp_options()), len(payload),
    )  # fmt: skip
    return rep, payload
