"""Generic segmentation offload on transmit: a run of consecutive TCP
segments of one flow, from one batch, leaves as one super-frame that the
kernel (or a NIC with TSO) cuts back into exactly those segments.

Why: every frame the port sends is a system call, and on a veth or a VF
the receiver's processing of the frame runs inside it. One super-frame of
n segments is one call and, up to the peer, one packet (veth hands GSO
packets through whole, as the kernel's own TCP sends them): a bulk sender
pays per send, not per segment.

The super-frame is written for an AF_PACKET socket with PACKET_VNET_HDR
(linux/virtio_net.h): a `virtio_net_hdr` in host byte order (flags
NEEDS_CSUM, gso_type TCPV4, hdr_len, gso_size = the segments' payload
size, csum_start/csum_offset = the TCP checksum field), then the first
segment's Ethernet, IPv4 and TCP headers with the total length of the run,
then every segment's payload. The kernel's segmentation (tcp_gso_segment)
gives each segment that TCP header with its own sequence number, clears
PSH on all but the last, numbers the IPv4 ids on from the first, and sums
every checksum: the TCP checksum field carries the pseudo-header sum over
the whole run, which it adjusts per segment.

A run is what segmentation would give back bit for bit: the same
Ethernet and IPv4 header bytes (lengths, id and checksum aside, no IPv4
options, not a fragment), the same TCP header bytes (sequence number and
checksum aside; ports, ACK, window, options alike), plain ACK or ACK+PSH
flags with PSH on the last segment only, sequence numbers that follow
each other, every payload the size of the first but the last (which may be
shorter), and at most 64 KiB of IPv4 datagram. Anything else is sent as it
is, one frame per call.

The TCP engine builds such runs itself when the port takes super-frames
(stackservice.net.offload): `vnet_header` is the header for one of its
`SuperFrame`s, and `segment` cuts one up in software, bit for bit as the
kernel would, for a port that cannot hand it over.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from stackservice.net.checksum import internet_checksum, pseudo_header_sum
from stackservice.net.offload import SuperFrame
from stackservice.net.wire import read16, read32, write16, write32

__all__ = [
    "VNET_HEADER_LEN", "run_length", "segment", "super_frame", "vnet_header", "wire_length",
]  # fmt: skip

# struct virtio_net_hdr (linux/virtio_net.h), in host byte order on an
# AF_PACKET socket (a legacy, not a virtio 1.0, header).
_VNET_HEADER = struct.Struct("=BBHHHH")
VNET_HEADER_LEN = _VNET_HEADER.size  # 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_TCPV4 = 1

# Offsets in a frame: Ethernet (14), IPv4 without options (20), TCP.
_ETHERTYPE = 12
_IP = 14
_IP_TOTAL_LEN = _IP + 2
_IP_ID = _IP + 4
_IP_FLAGS_FRAG = _IP + 6
_IP_CHECKSUM = _IP + 10
_TCP = _IP + 20  # 34
_TCP_SEQ = _TCP + 4
_TCP_OFFSET = _TCP + 12
_TCP_FLAGS = _TCP + 13
_TCP_CHECKSUM_FIELD = 16  # from the TCP header's start
_TCP_CHECKSUM = _TCP + _TCP_CHECKSUM_FIELD

_ETHERTYPE_IPV4 = 0x0800
_PROTO_TCP = 6
_IP_MF_OR_OFFSET = 0x3FFF  # MF and the fragment offset
_ACK = 0x10
_PSH = 0x08
_FIN = 0x01
MAX_DATAGRAM = 0xFFFF  # an IPv4 datagram's length field
MIN_RUN = 2  # a lone segment gains nothing from a super-frame

Frame = bytes | bytearray | memoryview


def _payload_size(frame: Frame) -> int:
    """Bytes of TCP payload in `frame` if it is a segment a run can hold
    (IPv4 without options or fragmentation, TCP with ACK and at most PSH
    besides, payload at least one byte), else 0."""
    if len(frame) < _TCP + 20 or read16(frame, _ETHERTYPE) != _ETHERTYPE_IPV4:
        return 0
    if frame[_IP] != 0x45 or frame[_IP + 9] != _PROTO_TCP:
        return 0
    if read16(frame, _IP_FLAGS_FRAG) & _IP_MF_OR_OFFSET:
        return 0
    if frame[_TCP_FLAGS] & ~_PSH != _ACK:
        return 0
    datagram = read16(frame, _IP_TOTAL_LEN)
    headers = 20 + ((frame[_TCP_OFFSET] >> 4) << 2)  # IPv4 and TCP
    if datagram > len(frame) - _IP or headers >= datagram:
        return 0
    return datagram - headers


def _same(a: Frame, b: Frame, start: int, end: int) -> bool:
    # A loop, not all(...): compiled (gso.pxd) it is a C loop over bytes.
    for i in range(start, end):  # noqa: SIM110
        if a[i] != b[i]:
            return False
    return True


def run_length(frames: Sequence[Frame], start: int) -> int:
    """How many frames from `frames[start]` on make one run (module
    docstring); 1 when `frames[start]` begins none."""
    # Most frames begin no run: the batch's last, one with PSH (a reply),
    # SYN or FIN, or one followed by a longer frame (a bare ACK). Told
    # from the objects, as typed views of them cost more than the rest
    # of the test (~0.7% of the stack's time on short transactions).
    if start + 1 >= len(frames):
        return 1
    head = frames[start]
    if len(frames[start + 1]) > len(head) or len(head) <= _TCP_FLAGS or head[_TCP_FLAGS] != _ACK:
        return 1
    first = frames[start]
    size = _payload_size(first)
    if size == 0 or first[_TCP_FLAGS] & _PSH:
        return 1
    headers = _TCP + ((first[_TCP_OFFSET] >> 4) << 2)
    datagram = headers - _IP + size
    seq = read32(first, _TCP_SEQ)
    count = len(frames)
    index = start + 1
    while index < count:
        frame = frames[index]
        length = _payload_size(frame)
        if length == 0 or length > size or datagram + length > MAX_DATAGRAM:
            break
        if len(frame) < headers or read32(frame, _TCP_SEQ) != (seq + size) & 0xFFFFFFFF:
            break
        # Headers alike but for: IPv4 total length and id (16..19), its
        # checksum (24, 25), the sequence number (38..41), PSH (47), the
        # TCP checksum (50, 51).
        if not (
            _same(frame, first, 0, _IP_TOTAL_LEN)
            and _same(frame, first, _IP_FLAGS_FRAG, _IP_CHECKSUM)
            and _same(frame, first, _IP_CHECKSUM + 2, _TCP_SEQ)
            and _same(frame, first, _TCP_SEQ + 4, _TCP_FLAGS)
            and _same(frame, first, _TCP_FLAGS + 1, _TCP_CHECKSUM)
            and _same(frame, first, _TCP_CHECKSUM + 2, headers)
        ):
            break
        seq = (seq + size) & 0xFFFFFFFF
        datagram += length
        index += 1
        if length < size or frame[_TCP_FLAGS] & _PSH:
            break  # a short or pushed segment ends its run
    return index - start


def super_frame(frames: Sequence[Frame], start: int, run: int) -> bytearray:
    """The virtio_net_hdr and super-frame for `frames[start:start + run]`,
    a run as `run_length` found it."""
    first = frames[start]
    last = frames[start + run - 1]
    size = _payload_size(first)
    headers = _TCP + ((first[_TCP_OFFSET] >> 4) << 2)
    total = size * (run - 1) + _payload_size(last)
    out = bytearray(VNET_HEADER_LEN + headers + total)
    out[:VNET_HEADER_LEN] = _vnet_header(headers, size)
    base = VNET_HEADER_LEN
    out[base : base + headers] = first[:headers]
    write16(out, base + _IP_TOTAL_LEN, headers - _IP + total)
    # The kernel sums every segment's IPv4 header again; this one's is
    # left right too, for anything that looks at the super-frame itself.
    write16(out, base + _IP_CHECKSUM, 0)
    with memoryview(out) as view:
        write16(out, base + _IP_CHECKSUM, internet_checksum(view[base + _IP : base + _TCP]))
    out[base + _TCP_FLAGS] |= last[_TCP_FLAGS] & _PSH
    src = read32(first, _IP + 12)
    dst = read32(first, _IP + 16)
    partial = pseudo_header_sum(src, dst, _PROTO_TCP, headers - _TCP + total)
    write16(out, base + _TCP_CHECKSUM, partial)
    at = base + headers
    for index in range(start, start + run):
        frame = frames[index]
        length = _payload_size(frame)
        out[at : at + length] = frame[headers : headers + length]
        at += length
    return out


def _vnet_header(headers: int, size: int) -> bytes:
    """For a super-frame with `headers` bytes of headers and `size`-byte
    segments: the kernel sums each TCP checksum and segments it."""
    return _VNET_HEADER.pack(
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
        headers, size, _TCP, _TCP_CHECKSUM_FIELD,
    )  # fmt: skip


def _headers_len(frame: Frame) -> int:
    return _TCP + ((frame[_TCP_OFFSET] >> 4) << 2)


def vnet_header(frame: SuperFrame) -> bytes:
    """The `virtio_net_hdr` that goes before `frame` on the port's GSO socket."""
    return _vnet_header(_headers_len(frame), frame.segment_size)


def wire_length(frame: SuperFrame) -> int:
    """Bytes `frame`'s segments take on the wire (without FCS): each its
    own headers."""
    return len(frame) + (frame.segments - 1) * _headers_len(frame)


def segment(frame: SuperFrame) -> list[bytearray]:
    """The frames the kernel's segmentation makes of `frame`: each gets the
    headers with its own IPv4 length, id (on from the frame's) and header
    checksum, its sequence number and its TCP checksum, and PSH and FIN
    only if it is the last."""
    headers = _headers_len(frame)
    size = frame.segment_size
    end = len(frame)
    ident = read16(frame, _IP_ID)
    seq = read32(frame, _TCP_SEQ)
    flags = frame[_TCP_FLAGS]
    src = read32(frame, _IP + 12)
    dst = read32(frame, _IP + 16)
    pieces = []
    with memoryview(frame) as view:
        for start in range(headers, end, size):
            length = min(size, end - start)
            piece = bytearray(headers + length)
            piece[:headers] = view[:headers]
            piece[headers:] = view[start : start + length]
            write16(piece, _IP_TOTAL_LEN, headers - _IP + length)
            write16(piece, _IP_ID, ident)
            write16(piece, _IP_CHECKSUM, 0)
            write16(piece, _IP_CHECKSUM, internet_checksum(piece[_IP:_TCP]))
            write32(piece, _TCP_SEQ, seq)
            if start + length < end:
                piece[_TCP_FLAGS] = flags & ~(_PSH | _FIN)
            write16(piece, _TCP_CHECKSUM, 0)
            initial = pseudo_header_sum(src, dst, _PROTO_TCP, headers - _TCP + length)
            write16(piece, _TCP_CHECKSUM, internet_checksum(piece[_TCP:], initial))
            pieces.append(piece)
            ident = (ident + 1) & 0xFFFF
            seq = (seq + length) & 0xFFFFFFFF
    return pieces
