"""TCP segments in Ethernet frames as the stack sends them: a segment
written by `write_segment` and framed by a real `Ipv4Host.send_ipv4`. For
the GSO tests (unit: stackservice.nic.gso; integration: PacketPort)."""

from __future__ import annotations

from stackservice.net.arp import OP_REPLY, ArpRepr
from stackservice.net.drops import DROP_REASON_COUNT, NET_EVENT_COUNT
from stackservice.net.host import Ipv4Host
from stackservice.tcp.segment import TcpOptions, write_segment

OUR_MAC, PEER_MAC = bytes.fromhex("020000000010"), bytes.fromhex("020000000001")
OUR_IP, PEER_IP = 0xC612000A, 0xC6120001  # 198.18.0.10, 198.18.0.1
TIMESTAMPS = TcpOptions(timestamps=(1000, 2000))


def host(first_ident: int = 7, our_mac: bytes = OUR_MAC, peer_mac: bytes = PEER_MAC) -> Ipv4Host:
    """A host at OUR_IP that knows PEER_IP's MAC."""
    h = Ipv4Host(our_mac, OUR_IP, 24, None, [0] * DROP_REASON_COUNT, [0] * NET_EVENT_COUNT,
                 first_ident=first_ident)  # fmt: skip
    h.arp.receive(ArpRepr(OP_REPLY, peer_mac, PEER_IP, our_mac, OUR_IP), 0)
    h.outbox.clear()
    return h


def frames_of(h: Ipv4Host, segments) -> list[bytearray]:
    """Each (seq, flags, payload[, options[, port]]) as the engine would
    send it: a TCP segment handed to the host's send_ipv4."""
    for seq, flags, payload, *rest in segments:
        options = rest[0] if rest else TIMESTAMPS
        port = rest[1] if len(rest) > 1 else 80
        segment = bytearray(20 + options.buffer_len() + len(payload))
        write_segment(segment, 0, OUR_IP, PEER_IP, port, 40000, seq, 5555, flags, 512, options,
                      len(payload), payload)  # fmt: skip
        assert h.send_ipv4(PEER_IP, 6, segment, 0)
    frames = list(h.outbox)
    h.outbox.clear()
    return frames
