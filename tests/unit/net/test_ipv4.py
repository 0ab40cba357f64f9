"""IPv4 header validation, delivery and output (RFC 791, RFC 1122 §3.2.1)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.net import DropReason, Ipv4Host
from stackservice.net.errors import LocalProtocolError, MalformedFrame
from stackservice.net.host import FRAME_HEADROOM
from stackservice.net.ipv4 import Ipv4Repr, Ipv4View, write_header
from stackservice.net.offload import MAX_IPV4_PAYLOAD, SuperFrame

from ._frames import (
    CHECK,
    GATEWAY_MAC,
    MF,
    OTHER_IP,
    OUR_IP,
    OUR_MAC,
    PEER_IP,
    PEER_MAC,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    REMOTE_IP,
    SUBNET_BROADCAST,
    Rig,
    fix_ipv4_checksum,
    ip,
    ipv4_frame,
    ipv4_header,
    make_rig,
    ref_checksum,
    reply_frame,
    rig_with_peer,
)

TCP_FRAME = ipv4_frame(PROTO_TCP, b"segment")


def with_tcp(rig: Rig) -> list[tuple[int, int, bytes, int, bool]]:
    """Register a TCP handler recording (src, dst, payload, now, trusted)."""
    calls: list[tuple[int, int, bytes, int, bool]] = []

    def handler(hdr: Ipv4View, now: int, trusted: bool) -> None:
        calls.append((hdr.src(), hdr.dst(), bytes(hdr.payload()), now, trusted))

    rig.host.register_protocol(PROTO_TCP, handler)
    return calls


def patched(frame: bytes, offset: int, value: bytes, *, fix_checksum: bool = True) -> bytes:
    """Overwrite IPv4 header bytes at `offset` (relative to the IP header)."""
    header = frame[14:34]
    header = header[:offset] + value + header[offset + len(value) :]
    if fix_checksum:
        header = fix_ipv4_checksum(header)
    return frame[:14] + header + frame[34:]


# Wire format.

u32 = st.integers(0, 0xFFFFFFFF)


@CHECK
@given(u32, u32, st.integers(0, 255), st.integers(0, 1480), st.integers(0, 0xFFFF), st.booleans())
def test_ipv4_repr_emit_then_parse_roundtrips_with_valid_checksum(
    src: int, dst: int, protocol: int, payload_len: int, ident: int, df: bool
) -> None:
    rep = Ipv4Repr(src, dst, protocol, payload_len, ident=ident, dont_fragment=df)
    buf = bytearray(rep.buffer_len() + payload_len)
    rep.emit(buf)
    view = Ipv4View.checked(memoryview(buf), True)
    assert (view.version(), view.header_len(), view.total_len()) == (4, 20, 20 + payload_len)
    assert view.checksum() == ref_checksum(bytes(buf[:10]) + b"\0\0" + bytes(buf[12:20]))
    assert Ipv4Repr.parse(view) == rep


def test_ipv4_repr_parse_fragment_raises_malformed_fragment() -> None:
    """RFC 791 §3.2: Ipv4Repr describes whole datagrams only."""
    header = ipv4_header(PEER_IP, OUR_IP, PROTO_TCP, 0, flags_frag=MF)
    with pytest.raises(MalformedFrame) as info:
        Ipv4Repr.parse(Ipv4View.checked(memoryview(header), True))
    assert info.value.reason == DropReason.IPV4_FRAGMENT


def test_write_header_matches_independent_encoding() -> None:
    """RFC 791 §3.1 layout; TTL 64 and DF by default."""
    buf = bytearray(20)
    write_header(buf, 0, OUR_IP, PEER_IP, PROTO_TCP, 12, 0x1234)
    assert bytes(buf) == ipv4_header(OUR_IP, PEER_IP, PROTO_TCP, 12, ident=0x1234)


# Malformed headers: each counted under its own reason, nothing sent.


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (TCP_FRAME[:33], "ipv4_too_short"),
        (patched(TCP_FRAME, 0, b"\x65"), "ipv4_bad_version"),
        (patched(TCP_FRAME, 0, b"\x44"), "ipv4_bad_ihl"),
        (patched(TCP_FRAME, 0, b"\x4f"), "ipv4_bad_ihl"),  # 60-byte header, 27-byte datagram
        (patched(TCP_FRAME, 2, struct.pack("!H", 28)), "ipv4_bad_total_length"),  # > frame
        (patched(TCP_FRAME, 2, struct.pack("!H", 19)), "ipv4_bad_total_length"),  # < header
        (patched(TCP_FRAME, 10, b"\x00\x00", fix_checksum=False), "ipv4_bad_checksum"),
    ],
    ids=[
        "short",
        "version",
        "ihl_4",
        "ihl_past_frame",
        "total_gt_frame",
        "total_lt_header",
        "csum",
    ],
)
def test_receive_malformed_ipv4_header_counted_by_reason(frame: bytes, reason: str) -> None:
    """RFC 1122 §3.2.1.1-2: wrong version or checksum is silently discarded."""
    rig = rig_with_peer()
    calls = with_tcp(rig)
    rig.feed(frame)
    assert rig.dropped() == {reason: 1}
    assert rig.counted() == {}
    assert (calls, rig.sent()) == ([], [])


def test_receive_bad_checksum_trusted_delivered() -> None:
    """checksum_trusted: the NIC verified it, the header checksum is not summed again."""
    rig = rig_with_peer()
    calls = with_tcp(rig)
    rig.feed(patched(TCP_FRAME, 10, b"\x00\x00", fix_checksum=False), now=3, trusted=True)
    assert calls == [(PEER_IP, OUR_IP, b"segment", 3, True)]


@pytest.mark.parametrize(
    "dst",
    [OTHER_IP, SUBNET_BROADCAST, 0xFFFFFFFF, ip("224.0.0.1")],
    ids=["other", "subnet", "all", "mcast"],
)
def test_receive_ipv4_other_destination_counted_not_for_us(dst: int) -> None:
    """RFC 1122 §3.2.1.3: a host forwards nothing; we accept no broadcast or multicast."""
    rig = rig_with_peer()
    rig.feed(ipv4_frame(PROTO_UDP, b"x", dst=dst))
    assert rig.dropped() == {"ipv4_not_for_us": 1}
    assert rig.sent() == []


@pytest.mark.parametrize(
    "src",
    [0, 0xFFFFFFFF, SUBNET_BROADCAST, ip("224.0.0.5"), OUR_IP, ip("127.0.0.1")],
    ids=["zero", "all", "subnet", "mcast", "ours", "loopback"],
)
def test_receive_ipv4_impossible_source_counted_bad_source(src: int) -> None:
    """RFC 1122 §3.2.1.3: discard datagrams whose source is no single host."""
    rig = rig_with_peer()
    rig.feed(ipv4_frame(PROTO_UDP, b"x", src=src))
    assert rig.dropped() == {"ipv4_bad_source": 1}
    assert rig.sent() == []


@pytest.mark.parametrize(
    "flags_frag", [MF, 1, MF | 185, 0x4000 | 3], ids=["first", "last", "mid", "df_off"]
)
def test_receive_fragment_counted_and_not_reassembled(flags_frag: int) -> None:
    """RFC 791 §3.2: no reassembly here; fragments are counted and dropped."""
    rig = rig_with_peer()
    calls = with_tcp(rig)
    rig.feed(ipv4_frame(PROTO_TCP, b"segment", flags_frag=flags_frag))
    assert rig.dropped() == {"ipv4_fragment": 1}
    assert (calls, rig.sent()) == ([], [])


# Delivery.


def test_receive_tcp_registered_handler_gets_payload_now_trusted() -> None:
    rig = rig_with_peer()
    calls = with_tcp(rig)
    rig.feed(TCP_FRAME, now=42)
    assert calls == [(PEER_IP, OUR_IP, b"segment", 42, False)]
    assert rig.counted() == {"ipv4_delivered": 1}
    assert (rig.dropped(), rig.sent()) == ({}, [])


def test_receive_min_size_frame_padding_not_in_payload() -> None:
    """IEEE 802.3 pads to 60 bytes; RFC 791 total length bounds the datagram."""
    rig = rig_with_peer()
    calls = with_tcp(rig)
    frame = ipv4_frame(PROTO_TCP, b"ab")
    rig.feed(frame + bytes(60 - len(frame)))
    assert calls == [(PEER_IP, OUR_IP, b"ab", 0, False)]


def test_receive_header_with_options_skips_them() -> None:
    """RFC 791 §3.1: IHL covers options; the payload starts after them."""
    rig = rig_with_peer()
    calls = with_tcp(rig)
    rig.feed(ipv4_frame(PROTO_TCP, b"segment", options=b"\x01\x01\x01\x00"))
    assert calls == [(PEER_IP, OUR_IP, b"segment", 0, False)]


def test_payload_bounds_start_after_the_options_and_end_at_the_total_length() -> None:
    """What TCP slices the view's bytes with (TcpEngine.on_segment): the
    header with its options before, link-layer padding after."""
    header = ipv4_header(PEER_IP, OUR_IP, PROTO_TCP, 3, options=b"\x01\x01\x01\x00")
    view = Ipv4View(memoryview(header + b"abc" + bytes(9)))
    assert view.payload_bounds() == (24, 27)
    start, end = view.payload_bounds()
    assert bytes(view.octets[start:end]) == bytes(view.payload()) == b"abc"


def test_register_protocol_icmp_or_duplicate_raises_local_protocol_error() -> None:
    rig = make_rig()
    with_tcp(rig)
    with pytest.raises(LocalProtocolError):
        with_tcp(rig)
    with pytest.raises(LocalProtocolError):
        rig.host.register_protocol(PROTO_ICMP, lambda *args: None)


# Output.


def test_send_ipv4_on_link_frame_has_ttl_64_df_and_next_ident() -> None:
    """RFC 1122 §3.2.1.7 (TTL), RFC 6864 §4.1 (ident of atomic datagrams)."""
    rig = rig_with_peer()
    assert rig.host.send_ipv4(PEER_IP, PROTO_TCP, b"one", 0)
    assert rig.host.send_ipv4(PEER_IP, PROTO_TCP, bytearray(b"two"), 0)
    assert rig.sent() == [
        reply_frame(PEER_MAC, PEER_IP, PROTO_TCP, b"one", ident=0),
        reply_frame(PEER_MAC, PEER_IP, PROTO_TCP, b"two", ident=1),
    ]
    assert (rig.dropped(), rig.counted()) == ({}, {})


def test_send_ipv4_off_link_goes_to_gateway_mac() -> None:
    """RFC 1122 §3.3.1.1: an off-link destination is reached through the gateway."""
    rig = rig_with_peer()
    rig.host.send_ipv4(REMOTE_IP, PROTO_TCP, b"far", 0)
    expected = ipv4_frame(
        PROTO_TCP, b"far", src=OUR_IP, dst=REMOTE_IP, eth_dst=GATEWAY_MAC, eth_src=OUR_MAC
    )
    assert rig.sent() == [expected]


def test_send_ipv4_off_link_without_gateway_counted_no_route() -> None:
    rig = make_rig(gateway=None)
    assert rig.host.route(REMOTE_IP) is None
    assert not rig.host.send_ipv4(REMOTE_IP, PROTO_TCP, b"far", 0)
    assert rig.dropped() == {"ipv4_no_route": 1}
    assert rig.sent() == []


@pytest.mark.parametrize(
    "dst",
    [OUR_IP, SUBNET_BROADCAST, 0xFFFFFFFF, 0, ip("224.0.0.1"), ip("127.0.0.1")],
    ids=["ours", "subnet", "all", "zero", "mcast", "loopback"],
)
def test_send_ipv4_non_unicast_or_own_destination_counted_no_route(dst: int) -> None:
    rig = rig_with_peer()
    assert not rig.host.send_ipv4(dst, PROTO_TCP, b"x", 0)
    assert rig.dropped() == {"ipv4_no_route": 1}
    assert rig.sent() == []


def test_send_ipv4_payload_beyond_mtu_raises_local_protocol_error() -> None:
    rig = rig_with_peer()
    assert rig.host.send_ipv4(PEER_IP, PROTO_TCP, bytes(1480), 0)
    with pytest.raises(LocalProtocolError):
        rig.host.send_ipv4(PEER_IP, PROTO_TCP, bytes(1481), 0)


def test_send_in_frame_without_room_for_the_headers_raises_and_sends_nothing() -> None:
    """A caller's bug, refused before a header byte is written."""
    rig = rig_with_peer()
    frame = bytearray(FRAME_HEADROOM - 1)
    with pytest.raises(LocalProtocolError):
        rig.host.send_in_frame(PEER_IP, PROTO_TCP, frame, 0)
    assert frame == bytearray(FRAME_HEADROOM - 1)
    assert rig.sent() == []


def test_send_in_frame_super_frame_may_exceed_the_mtu_and_takes_an_id_per_segment() -> None:
    """stackservice.net.offload: a run of 3 segments is one frame as long
    as the IPv4 length allows; the kernel numbers its segments' ids on
    from its own, so the next datagram's id comes after all three."""
    rig = rig_with_peer()
    run = SuperFrame(FRAME_HEADROOM + 3 * 1480, 1480, 3)
    assert rig.host.send_in_frame(PEER_IP, PROTO_TCP, run, 0)
    assert rig.host.send_ipv4(PEER_IP, PROTO_TCP, b"next", 0)
    sent = rig.sent()
    assert bytes(sent[0]) == reply_frame(PEER_MAC, PEER_IP, PROTO_TCP, bytes(3 * 1480), ident=0)
    assert sent[1] == reply_frame(PEER_MAC, PEER_IP, PROTO_TCP, b"next", ident=3)
    largest = SuperFrame(FRAME_HEADROOM + MAX_IPV4_PAYLOAD, 1460, 44)
    assert rig.host.send_in_frame(PEER_IP, PROTO_TCP, largest, 0)
    with pytest.raises(LocalProtocolError):
        rig.host.send_in_frame(
            PEER_IP, PROTO_TCP, SuperFrame(FRAME_HEADROOM + MAX_IPV4_PAYLOAD + 1, 1460, 44), 0
        )
    with pytest.raises(LocalProtocolError):  # not a super-frame: the MTU holds
        rig.host.send_in_frame(PEER_IP, PROTO_TCP, bytearray(FRAME_HEADROOM + 1481), 0)


@pytest.mark.parametrize(
    "config",
    [
        {"mac": bytes.fromhex("01005e000001")},
        {"ip": ip("224.0.0.1")},
        {"prefix_len": 0},
        {"gateway": REMOTE_IP},
        {"gateway": OUR_IP},
        {"gateway": SUBNET_BROADCAST},
        {"mtu": 575},
    ],
    ids=str,
)
def test_host_impossible_config_rejected(config: dict[str, object]) -> None:
    args: dict[str, object] = {
        "mac": OUR_MAC, "ip": OUR_IP, "prefix_len": 24, "gateway": None,
        "drops": [], "events": [],
    }  # fmt: skip
    args.update(config)
    with pytest.raises(ValueError):
        Ipv4Host(**args)  # type: ignore[arg-type]
