"""The h11 fuzz invariant for Ipv4Host.receive (STYLE.md rule 7).

Whatever the bytes, receive() never raises and each frame ends as exactly one
receive-side drop reason or one accepted event; every frame sent in response
is well formed.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from stackservice.net import ACCEPTED_EVENTS, TX_DROP_REASONS, DropReason, Ipv4View

from ._frames import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST_MAC,
    ETH_ARP,
    ETH_IPV4,
    FUZZ,
    MF,
    OTHER_IP,
    OTHER_MAC,
    OUR_IP,
    OUR_MAC,
    PEER_IP,
    PEER_MAC,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    REMOTE_IP,
    SECOND,
    ZERO_MAC,
    Rig,
    arp_frame,
    echo_request_frame,
    eth,
    fix_ipv4_checksum,
    icmp_message,
    ipv4_frame,
    make_rig,
    ref_sum,
)

RX_REASONS = [reason for reason in DropReason if reason not in TX_DROP_REASONS]

SEEDS = [
    arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP),
    arp_frame(ARP_REPLY, OTHER_MAC, OTHER_IP, OUR_MAC, OUR_IP),
    arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OTHER_IP),
    arp_frame(ARP_REQUEST, PEER_MAC, 0, ZERO_MAC, OUR_IP),
    echo_request_frame(data=b"abcdefgh" * 8),
    echo_request_frame(src=OTHER_IP, eth_src=OTHER_MAC),
    echo_request_frame(src=REMOTE_IP),
    ipv4_frame(PROTO_TCP, b"tcp segment"),
    ipv4_frame(PROTO_UDP, b"udp datagram" * 10),
    ipv4_frame(PROTO_UDP, b"x", flags_frag=MF),
    ipv4_frame(PROTO_TCP, b"opt", options=b"\x01\x01\x01\x00"),
    ipv4_frame(PROTO_ICMP, icmp_message(3, 2, 0, bytes(28))),
    ipv4_frame(PROTO_TCP, b"ab") + bytes(20),  # padded to the 60-byte minimum
]

# Byte offsets worth overwriting: ethertype, IPv4 version/IHL, total length,
# flags/fragment, TTL/protocol, checksum, addresses, ARP format and opcode.
HOT_OFFSETS = [12, 14, 16, 17, 20, 21, 22, 23, 24, 25, 26, 30, 33, 14 + 4, 14 + 6, 34, 36]


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "byte", "u16", "extend"]))
        if kind == "truncate":
            del frame[draw(st.integers(0, len(frame))) :]
        elif kind == "extend":
            frame += draw(st.binary(max_size=64))
        elif frame:
            offset = draw(st.sampled_from(HOT_OFFSETS) | st.integers(0, len(frame) - 1))
            offset = min(offset, len(frame) - 1)
            if kind == "flip":
                frame[offset] ^= 1 << draw(st.integers(0, 7))
            elif kind == "byte":
                frame[offset] = draw(st.integers(0, 255))
            else:  # bogus 16-bit value, e.g. a length
                frame[offset : offset + 2] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
    if draw(st.booleans()) and len(frame) >= 34 and frame[12:14] == b"\x08\x00":
        frame[14:34] = fix_ipv4_checksum(bytes(frame[14:34]))  # reach the checks past it
    return bytes(frame)


def outcomes(rig: Rig) -> int:
    return sum(rig.drops[r] for r in RX_REASONS) + sum(rig.events[e] for e in ACCEPTED_EVENTS)


def assert_well_formed(frame: bytes | bytearray) -> None:
    assert frame[6:12] == OUR_MAC
    if frame[12:14] == b"\x08\x06":
        assert len(frame) == 42 and frame[22:28] == OUR_MAC
    else:
        assert frame[12:14] == b"\x08\x00"
        assert ref_sum(bytes(frame[14:34])) == 0xFFFF
        assert struct.unpack("!I", frame[26:30])[0] == OUR_IP


def fuzz_rig() -> tuple[Rig, list[int]]:
    rig = make_rig()
    delivered: list[int] = []

    def tcp(hdr: Ipv4View, now: int, trusted: bool) -> None:
        delivered.append(len(hdr.payload()))

    rig.host.register_protocol(PROTO_TCP, tcp)
    return rig, delivered


def feed_and_check(rig: Rig, frame: bytes, now: int, trusted: bool) -> None:
    before = outcomes(rig)
    rig.feed(frame, now, trusted)
    assert outcomes(rig) == before + 1
    for out in rig.host.outbox:
        assert_well_formed(out)


@FUZZ
@given(st.lists(st.binary(max_size=1600), max_size=10), st.booleans())
def test_receive_random_bytes_never_raises_counts_each_frame_once(
    frames: list[bytes], trusted: bool
) -> None:
    rig, _ = fuzz_rig()
    for frame in frames:
        feed_and_check(rig, frame, 0, trusted)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from([OUR_MAC, BROADCAST_MAC]),
            st.sampled_from([ETH_IPV4, ETH_ARP]),
            st.binary(max_size=200),
        ),
        max_size=10,
    ),
    st.booleans(),
)
def test_receive_garbage_after_valid_ethernet_header_counts_each_frame_once(
    frames: list[tuple[bytes, int, bytes]], trusted: bool
) -> None:
    rig, _ = fuzz_rig()
    for dst, ethertype, body in frames:
        feed_and_check(rig, eth(dst, PEER_MAC, ethertype, body), 0, trusted)


@FUZZ
@given(
    st.lists(st.tuples(mutated_frames(), st.booleans(), st.integers(0, 2 * SECOND)), max_size=20)
)
def test_receive_mutated_valid_frames_with_timers_counts_each_frame_once(
    steps: list[tuple[bytes, bool, int]],
) -> None:
    rig, delivered = fuzz_rig()
    rig.host.announce(0)
    now = 0
    for frame, trusted, elapsed in steps:
        now += elapsed
        deadline = rig.host.poll_at()
        if deadline is not None and deadline <= now:
            rig.host.on_timer(now)
        feed_and_check(rig, frame, now, trusted)
        rig.sent()
    assert len(delivered) == rig.counted().get("ipv4_delivered", 0)
