"""Test helpers: independent frame builders, a reference checksum, a host rig.

Builders use struct and the word-by-word RFC 1071 algorithm, not the code
under test, so byte-exact comparisons check the implementation against an
independent encoding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stackservice.net import (
    DROP_REASON_COUNT,
    NET_EVENT_COUNT,
    ArpSettings,
    DropReason,
    IcmpSettings,
    Ipv4Host,
    NetEvent,
)
from tests.support.checks import CHECK, FUZZ, ip  # noqa: F401  (re-exported to the tests)

OUR_MAC = bytes.fromhex("020000000010")
OUR_IP = ip("198.18.0.10")
PEER_MAC = bytes.fromhex("02aabbcc0001")
PEER_IP = ip("198.18.0.1")
OTHER_MAC = bytes.fromhex("02aabbcc0002")
OTHER_IP = ip("198.18.0.20")
GATEWAY_MAC = bytes.fromhex("02aabbcc00fe")
GATEWAY_IP = ip("198.18.0.254")
REMOTE_IP = ip("203.0.113.5")  # off-link
SUBNET_BROADCAST = ip("198.18.0.255")
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = bytes(6)
PREFIX_LEN = 24

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ARP_REQUEST = 1
ARP_REPLY = 2
DF = 0x4000
MF = 0x2000
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
ICMP_ECHO_REPLY = 0
ICMP_UNREACHABLE = 3
ICMP_ECHO_REQUEST = 8
SECOND = 1_000_000


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


def ref_checksum(data: bytes) -> int:
    return ~ref_sum(data) & 0xFFFF


def eth(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def arp_packet(
    op: int,
    sender_mac: bytes,
    sender_ip: int,
    target_mac: bytes,
    target_ip: int,
    *,
    htype: int = 1,
    ptype: int = 0x0800,
    hlen: int = 6,
    plen: int = 4,
) -> bytes:
    return struct.pack(
        "!HHBBH6sI6sI", htype, ptype, hlen, plen, op, sender_mac, sender_ip, target_mac, target_ip
    )


def arp_frame(
    op: int,
    sender_mac: bytes,
    sender_ip: int,
    target_mac: bytes,
    target_ip: int,
    *,
    eth_dst: bytes | None = None,
    eth_src: bytes | None = None,
) -> bytes:
    """An ARP frame; by default a request is broadcast and a reply unicast."""
    if eth_dst is None:
        eth_dst = BROADCAST_MAC if op == ARP_REQUEST else target_mac
    packet = arp_packet(op, sender_mac, sender_ip, target_mac, target_ip)
    return eth(eth_dst, eth_src or sender_mac, ETH_ARP, packet)


def ipv4_header(
    src: int,
    dst: int,
    protocol: int,
    payload_len: int,
    *,
    ident: int = 0,
    ttl: int = 64,
    flags_frag: int = DF,
    options: bytes = b"",
) -> bytes:
    ihl = 5 + len(options) // 4
    header = struct.pack(
        "!BBHHHBBHII", 0x40 | ihl, 0, 4 * ihl + payload_len, ident, flags_frag, ttl, protocol,
        0, src, dst,
    ) + options  # fmt: skip
    return fix_ipv4_checksum(header)


def fix_ipv4_checksum(header: bytes) -> bytes:
    header = header[:10] + b"\0\0" + header[12:]
    return header[:10] + struct.pack("!H", ref_checksum(header)) + header[12:]


def ipv4_frame(
    protocol: int,
    payload: bytes,
    *,
    src: int = PEER_IP,
    dst: int = OUR_IP,
    eth_dst: bytes = OUR_MAC,
    eth_src: bytes = PEER_MAC,
    **header_fields: int | bytes,
) -> bytes:
    header = ipv4_header(src, dst, protocol, len(payload), **header_fields)  # type: ignore[arg-type]
    return eth(eth_dst, eth_src, ETH_IPV4, header + payload)


def icmp_message(icmp_type: int, code: int, rest: int, data: bytes) -> bytes:
    message = struct.pack("!BBHI", icmp_type, code, 0, rest) + data
    return message[:2] + struct.pack("!H", ref_checksum(message)) + message[4:]


def echo_request_frame(ident: int = 0x1234, seq: int = 1, data: bytes = b"ping!", **kw) -> bytes:
    return ipv4_frame(PROTO_ICMP, icmp_message(ICMP_ECHO_REQUEST, 0, ident << 16 | seq, data), **kw)


def reply_frame(
    dst_mac: bytes, dst_ip: int, protocol: int, payload: bytes, ident: int = 0
) -> bytes:
    """A frame exactly as our host must build it (TTL 64, DF, TOS 0)."""
    return ipv4_frame(
        protocol, payload, src=OUR_IP, dst=dst_ip, eth_dst=dst_mac, eth_src=OUR_MAC, ident=ident
    )


@dataclass
class Rig:
    """An Ipv4Host with list counters and helpers to drive it."""

    host: Ipv4Host
    drops: list[int]
    events: list[int]

    def feed(self, frame: bytes, now: int = 0, trusted: bool = False) -> None:
        self.host.receive(memoryview(frame), now, trusted)

    def sent(self) -> list[bytes]:
        """Frames transmitted since the last call (clears the outbox in place)."""
        out = [bytes(frame) for frame in self.host.outbox]
        self.host.outbox.clear()
        return out

    def dropped(self) -> dict[str, int]:
        return {
            reason.name.lower(): n for reason, n in zip(DropReason, self.drops, strict=True) if n
        }

    def counted(self) -> dict[str, int]:
        return {event.name.lower(): n for event, n in zip(NetEvent, self.events, strict=True) if n}

    def reset_counters(self) -> None:
        self.drops[:] = [0] * DROP_REASON_COUNT
        self.events[:] = [0] * NET_EVENT_COUNT


def make_rig(
    *,
    gateway: int | None = GATEWAY_IP,
    arp: ArpSettings | None = None,
    icmp: IcmpSettings | None = None,
    prefix_len: int = PREFIX_LEN,
    mtu: int = 1500,
    answers_arp: bool = True,
) -> Rig:
    drops = [0] * DROP_REASON_COUNT
    events = [0] * NET_EVENT_COUNT
    host = Ipv4Host(
        OUR_MAC, OUR_IP, prefix_len, gateway, drops, events, arp, icmp, mtu,
        answers_arp=answers_arp,
    )  # fmt: skip
    return Rig(host, drops, events)


def learn(rig: Rig, mac: bytes, addr: int, now: int = 0) -> None:
    """Teach the host a neighbour with an ARP request for us, then forget the exchange."""
    rig.feed(arp_frame(ARP_REQUEST, mac, addr, ZERO_MAC, OUR_IP), now)
    rig.sent()
    rig.reset_counters()


def rig_with_peer(**kw) -> Rig:
    """A host that has resolved PEER and GATEWAY at time 0, counters at zero."""
    rig = make_rig(**kw)
    learn(rig, PEER_MAC, PEER_IP)
    learn(rig, GATEWAY_MAC, GATEWAY_IP)
    return rig
