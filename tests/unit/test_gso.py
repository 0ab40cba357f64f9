"""GSO super-frames (stackservice.nic.gso): what the kernel's segmentation
of a super-frame gives back must be the very frames it was made of.

`kernel_segments` below is that segmentation, written from Linux's
tcp_gso_segment / inet_gso_segment: the headers copied to every segment,
the sequence number advanced by gso_size, PSH on the last segment only,
the IPv4 id counted on from the first, lengths and both checksums summed
again per segment.
"""

from __future__ import annotations

import struct

import pytest

from stackservice.net.checksum import internet_checksum, pseudo_header_sum
from stackservice.net.offload import SuperFrame
from stackservice.nic.gso import (
    MAX_DATAGRAM,
    VNET_HEADER_LEN,
    run_length,
    segment,
    super_frame,
    vnet_header,
    wire_length,
)
from stackservice.tcp.segment import ACK, FIN, NO_OPTIONS, PSH, SYN, TcpOptions
from tests.support.tcp_frames import TIMESTAMPS, frames_of
from tests.support.tcp_frames import host as _host

MSS = 1448


def kernel_segments(packet: bytes) -> list[bytes]:
    vnet = struct.unpack_from("=BBHHHH", packet)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = vnet
    assert (flags, gso_type, csum_start, csum_offset) == (1, 1, 34, 16)
    frame = packet[VNET_HEADER_LEN:]
    headers, payload = frame[:hdr_len], frame[hdr_len:]
    assert struct.unpack_from("!H", frame, 16)[0] == len(frame) - 14  # IPv4 total length
    src, dst = struct.unpack_from("!II", frame, 26)
    # What the sender leaves in the TCP checksum field: the pseudo-header
    # sum over the whole run (RFC 793's, not complemented).
    assert struct.unpack_from("!H", frame, 50)[0] == pseudo_header_sum(src, dst, 6, len(frame) - 34)
    ip_id, seq = struct.unpack_from("!H", frame, 18)[0], struct.unpack_from("!I", frame, 38)[0]
    chunks = [payload[i : i + gso_size] for i in range(0, len(payload), gso_size)]
    out = []
    for n, chunk in enumerate(chunks):
        segment = bytearray(headers + chunk)
        struct.pack_into("!HH", segment, 16, len(segment) - 14, (ip_id + n) & 0xFFFF)
        struct.pack_into("!H", segment, 24, 0)
        struct.pack_into("!H", segment, 24, internet_checksum(segment[14:34]))
        struct.pack_into("!I", segment, 38, (seq + n * gso_size) & 0xFFFFFFFF)
        if n < len(chunks) - 1:
            segment[47] &= ~(PSH | FIN)
        struct.pack_into("!H", segment, 50, 0)
        tcp = segment[34:]
        tcp_checksum = internet_checksum(tcp, pseudo_header_sum(src, dst, 6, len(tcp)))
        struct.pack_into("!H", segment, 50, tcp_checksum)
        out.append(bytes(segment))
    return out


def test_a_run_segments_back_into_the_very_frames_it_was_made_of():
    host = _host()
    data = bytes(range(256)) * 40
    chunks = [(1000 + i * MSS, ACK, data[i * MSS : (i + 1) * MSS]) for i in range(6)]
    chunks.append((1000 + 6 * MSS, ACK | PSH, b"tail"))
    frames = frames_of(host, chunks)
    assert run_length(frames, 0) == 7
    assert kernel_segments(bytes(super_frame(frames, 0, 7))) == [bytes(f) for f in frames]


def test_sequence_numbers_that_wrap_and_ids_that_wrap_still_make_one_run():
    host = _host(first_ident=0xFFFE)
    frames = frames_of(host, [(0xFFFFFFFF - MSS + 1 + i * MSS & 0xFFFFFFFF, ACK, b"x" * MSS)
                              for i in range(4)])  # fmt: skip
    assert run_length(frames, 0) == 4
    assert kernel_segments(bytes(super_frame(frames, 0, 4))) == [bytes(f) for f in frames]


def test_a_run_starts_anywhere_and_stops_at_the_first_segment_that_breaks_it():
    host = _host()
    a = [(100 + i * MSS, ACK, b"a" * MSS) for i in range(3)]
    other_flow = [(9, ACK, b"b" * MSS, TIMESTAMPS, 81)]
    b = [(100 + 3 * MSS, ACK, b"c" * MSS), (100 + 4 * MSS, ACK, b"d" * MSS)]
    frames = frames_of(host, a + other_flow + b)
    assert [run_length(frames, i) for i in range(len(frames))] == [3, 2, 1, 1, 2, 1]
    assert kernel_segments(bytes(super_frame(frames, 4, 2))) == [bytes(f) for f in frames[4:]]


SIZE = 1000  # the first segment's payload, so that a longer one fits the MTU


@pytest.mark.parametrize(
    "second, why",
    [
        ((100 + SIZE + 1, ACK, b"y" * SIZE), "a gap in the sequence"),
        ((100 + SIZE, ACK, b"y" * (SIZE + 1)), "a longer payload"),
        ((100 + SIZE, ACK | FIN, b"y" * SIZE), "FIN"),
        ((100 + SIZE, ACK, b""), "no payload"),
        ((100 + SIZE, ACK, b"y" * SIZE, TcpOptions(timestamps=(1001, 2000))), "other options"),
        ((100 + SIZE, ACK, b"y" * SIZE, NO_OPTIONS), "a shorter header"),
        ((100 + SIZE, ACK, b"y" * SIZE, TIMESTAMPS, 81), "another flow"),
    ],
)
def test_what_segmentation_could_not_give_back_is_no_run(second, why):
    frames = frames_of(_host(), [(100, ACK, b"x" * SIZE), second])
    assert run_length(frames, 0) == 1, why


def test_the_same_pair_but_alike_is_a_run():
    """The control for the cases above: nothing else keeps them apart."""
    frames = frames_of(_host(), [(100, ACK, b"x" * SIZE), (100 + SIZE, ACK, b"y" * SIZE)])
    assert run_length(frames, 0) == 2


def test_pushed_short_or_non_data_segments_end_or_begin_no_run():
    host = _host()
    pushed_first = frames_of(host, [(1, ACK | PSH, b"x" * MSS), (1 + MSS, ACK, b"y" * MSS)])
    assert run_length(pushed_first, 0) == 1  # the kernel would clear its PSH
    short_then_more = frames_of(host, [(1, ACK, b"x" * MSS), (1 + MSS, ACK, b"y" * 10),
                                       (11 + MSS, ACK, b"z" * 10)])  # fmt: skip
    assert run_length(short_then_more, 0) == 2
    syn = frames_of(host, [(1, SYN | ACK, b""), (2, ACK, b"y" * MSS)])
    assert run_length(syn, 0) == 1
    assert run_length([b"\x00" * 20, b"\x00" * 20], 0) == 1  # not even a frame


def test_a_run_stops_where_the_datagram_would_pass_64_kib():
    host = _host()
    count = MAX_DATAGRAM // MSS + 2
    frames = frames_of(host, [(i * MSS, ACK, b"x" * MSS) for i in range(count)])
    run = run_length(frames, 0)
    assert 20 + 32 + run * MSS <= MAX_DATAGRAM < 20 + 32 + (run + 1) * MSS
    assert kernel_segments(bytes(super_frame(frames, 0, run))) == [bytes(f) for f in frames[:run]]


def _as_engine_builds_it(frames: list[bytearray]) -> SuperFrame:
    """The run `frames` as the TCP engine builds it with offload
    (stackservice.net.offload): the super-frame's bytes, without the
    virtio_net_hdr, its segment size and count beside them."""
    packet = super_frame(frames, 0, len(frames))
    run = SuperFrame(len(packet) - VNET_HEADER_LEN, len(frames[0]) - 66, len(frames))
    run[:] = packet[VNET_HEADER_LEN:]
    return run


@pytest.mark.parametrize("tail", [MSS, 1, 700], ids=["full", "one-byte", "short"])
def test_an_engine_super_frame_is_cut_as_the_kernel_cuts_it(tail: int) -> None:
    """`segment` (a port without GSO) and the kernel, given `vnet_header`,
    give back the same frames, the ones built one by one; only the last
    keeps PSH."""
    host = _host(first_ident=0xFFFE)
    data = bytes(range(256)) * 40
    first = 0xFFFFF000  # the sequence numbers wrap, and so do the ids
    chunks = [(first + i * MSS & 0xFFFFFFFF, ACK, data[i * MSS : (i + 1) * MSS]) for i in range(4)]
    chunks.append((first + 4 * MSS & 0xFFFFFFFF, ACK | PSH, data[:tail]))
    frames = frames_of(host, chunks)
    run = _as_engine_builds_it(frames)
    assert run.segments == 5 and len(run) == 66 + 4 * MSS + tail
    assert [bytes(f) for f in segment(run)] == [bytes(f) for f in frames]
    assert kernel_segments(vnet_header(run) + bytes(run)) == [bytes(f) for f in frames]
    assert wire_length(run) == sum(len(f) for f in frames)
