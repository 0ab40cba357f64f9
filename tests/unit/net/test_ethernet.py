"""Ethernet framing and L2 acceptance in Ipv4Host.receive."""

from __future__ import annotations

import pytest

from stackservice.net.errors import MalformedFrame
from stackservice.net.ethernet import EthernetRepr, EthernetView

from ._frames import (
    ARP_REQUEST,
    BROADCAST_MAC,
    OUR_IP,
    OUR_MAC,
    PEER_IP,
    PEER_MAC,
    PROTO_TCP,
    ZERO_MAC,
    arp_frame,
    eth,
    ipv4_frame,
    make_rig,
)


def test_ethernet_repr_emit_then_parse_roundtrips() -> None:
    rep = EthernetRepr(OUR_MAC, PEER_MAC, 0x0800)
    buf = bytearray(rep.buffer_len())
    rep.emit(buf)
    assert bytes(buf) == OUR_MAC + PEER_MAC + b"\x08\x00"
    assert EthernetRepr.parse(EthernetView.checked(memoryview(buf))) == rep


def test_ethernet_view_checked_13_bytes_raises_frame_too_short() -> None:
    with pytest.raises(MalformedFrame) as info:
        EthernetView.checked(memoryview(bytes(13)))
    assert info.value.reason.name == "FRAME_TOO_SHORT"


@pytest.mark.parametrize("length", [0, 1, 6, 13])
def test_receive_runt_frame_counted_frame_too_short(length: int) -> None:
    rig = make_rig()
    rig.feed((OUR_MAC + PEER_MAC + b"\x08")[:length])
    assert rig.dropped() == {"frame_too_short": 1}
    assert rig.sent() == []


def test_receive_frame_longer_than_mtu_counted_frame_too_long() -> None:
    rig = make_rig()
    rig.feed(ipv4_frame(PROTO_TCP, bytes(1481)))
    assert rig.dropped() == {"frame_too_long": 1}
    assert rig.sent() == []


@pytest.mark.parametrize(
    "dst",
    [bytes.fromhex("02aabbcc0099"), bytes.fromhex("01005e000001"), bytes.fromhex("333300000001")],
)
def test_receive_other_or_multicast_destination_counted_eth_not_for_us(dst: bytes) -> None:
    """IEEE 802.3 §3.2.3: only our individual address and broadcast are accepted."""
    rig = make_rig()
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP, eth_dst=dst))
    assert rig.dropped() == {"eth_not_for_us": 1}
    assert rig.sent() == []


def test_receive_group_source_mac_counted_eth_bad_source() -> None:
    """IEEE 802.3 §3.2.3: a source address is always an individual address."""
    rig = make_rig()
    rig.feed(ipv4_frame(PROTO_TCP, b"x", eth_src=bytes.fromhex("03aabbcc0001")))
    assert rig.dropped() == {"eth_bad_source": 1}
    assert rig.sent() == []


@pytest.mark.parametrize(
    ("ethertype", "reason"),
    [
        (0x8100, "eth_vlan_tagged"),
        (0x88A8, "eth_vlan_tagged"),
        (0x9100, "eth_vlan_tagged"),
        (0x86DD, "eth_ipv6"),
        (0x88CC, "eth_unsupported_ethertype"),  # LLDP
        (0x002E, "eth_unsupported_ethertype"),  # 802.3 length field
    ],
)
def test_receive_unhandled_ethertype_counted_by_kind(ethertype: int, reason: str) -> None:
    rig = make_rig()
    rig.feed(eth(OUR_MAC, PEER_MAC, ethertype, bytes(46)))
    assert rig.dropped() == {reason: 1}
    assert rig.sent() == []


def test_receive_ipv4_to_link_broadcast_counted_ipv4_not_for_us() -> None:
    """RFC 1122 §3.3.6: discard a link-broadcast datagram not sent to IP broadcast."""
    rig = make_rig()
    rig.feed(ipv4_frame(PROTO_TCP, b"x", eth_dst=BROADCAST_MAC))
    assert rig.dropped() == {"ipv4_not_for_us": 1}
    assert rig.sent() == []
