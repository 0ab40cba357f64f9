"""Malformed frames aimed at a stack instance, each kind with the drop
reason the stack must count it under. Run in the peer namespace:

    python -m tests.support.malformed --iface WIRE --dst-mac MAC --count N

prints one JSON object {kind: frames sent} when done.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import time
from collections.abc import Callable

from stackservice.net.checksum import internet_checksum
from stackservice.net.drops import DropReason

SRC_MAC = bytes.fromhex("020000000001")
PEER_IP = socket.inet_aton("198.18.0.1")
_CLAIMED_ETHERTYPES = {0x0800, 0x0806, 0x86DD, 0x8100, 0x88A8, 0x9100}


def _ipv4(
    dst_ip: bytes,
    payload: bytes,
    proto: int = 1,
    *,
    version_ihl: int = 0x45,
    total: int | None = None,
    flags_frag: int = 0x4000,
    bad_sum: bool = False,
) -> bytes:
    total = 20 + len(payload) if total is None else total
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s", version_ihl, 0, total, 1, flags_frag, 64, proto, 0, PEER_IP, dst_ip
        )
    )
    struct.pack_into("!H", header, 10, internet_checksum(header) ^ (1 if bad_sum else 0))
    return bytes(header) + payload


def _icmp(type_: int, body: bytes, bad_sum: bool = False) -> bytes:
    msg = bytearray(struct.pack("!BBH", type_, 0, 0) + body)
    struct.pack_into("!H", msg, 2, internet_checksum(msg) ^ (1 if bad_sum else 0))
    return bytes(msg)


def _arp(hw_type: int = 1, length: int = 28) -> bytes:
    body = struct.pack(
        "!HHBBH6s4s6s4s", hw_type, 0x0800, 6, 4, 1, SRC_MAC, PEER_IP, b"\0" * 6, PEER_IP
    )
    return body[:length]


def kinds(
    dst_ip: bytes, rng: random.Random
) -> dict[str, tuple[int, DropReason | None, Callable[[], bytes]]]:
    """kind -> (ethertype, expected drop reason or None if unpredictable, payload maker)."""
    echo = struct.pack("!HH", 7, 1) + b"x" * 32
    return {
        "ipv4_truncated": (
            0x0800,
            DropReason.IPV4_TOO_SHORT,
            lambda: _ipv4(dst_ip, b"")[: rng.randrange(1, 20)],
        ),
        "ipv4_bad_version": (
            0x0800,
            DropReason.IPV4_BAD_VERSION,
            lambda: _ipv4(dst_ip, _icmp(8, echo), version_ihl=0x65),
        ),
        "ipv4_bad_ihl": (
            0x0800,
            DropReason.IPV4_BAD_IHL,
            lambda: _ipv4(dst_ip, _icmp(8, echo), version_ihl=0x40 | rng.randrange(5)),
        ),
        "ipv4_total_too_big": (
            0x0800,
            DropReason.IPV4_BAD_TOTAL_LENGTH,
            lambda: _ipv4(dst_ip, _icmp(8, echo), total=rng.randrange(1000, 65536)),
        ),
        "ipv4_total_too_small": (
            0x0800,
            DropReason.IPV4_BAD_TOTAL_LENGTH,
            lambda: _ipv4(dst_ip, _icmp(8, echo), total=rng.randrange(20)),
        ),
        "ipv4_bad_checksum": (
            0x0800,
            DropReason.IPV4_BAD_CHECKSUM,
            lambda: _ipv4(dst_ip, _icmp(8, echo), bad_sum=True),
        ),
        "ipv4_fragment": (
            0x0800,
            DropReason.IPV4_FRAGMENT,
            lambda: _ipv4(dst_ip, _icmp(8, echo), flags_frag=0x2000 | rng.randrange(8)),
        ),
        "icmp_truncated": (
            0x0800,
            DropReason.ICMP_TOO_SHORT,
            lambda: _ipv4(dst_ip, b"\x08\x00\x00"),
        ),
        "icmp_bad_checksum": (
            0x0800,
            DropReason.ICMP_BAD_CHECKSUM,
            lambda: _ipv4(dst_ip, _icmp(8, echo, bad_sum=True)),
        ),
        "icmp_unsupported_type": (
            0x0800,
            DropReason.ICMP_UNSUPPORTED_TYPE,
            lambda: _ipv4(dst_ip, _icmp(13, echo)),
        ),
        "ipv4_udp": (
            0x0800,
            DropReason.IPV4_UNSUPPORTED_PROTOCOL,
            lambda: _ipv4(dst_ip, b"\x00\x07\x00\x07\x00\x08\x00\x00", proto=17),
        ),
        "arp_truncated": (
            0x0806,
            DropReason.ARP_TOO_SHORT,
            lambda: _arp(length=rng.randrange(1, 28)),
        ),
        "arp_bad_hardware": (
            0x0806,
            DropReason.ARP_UNSUPPORTED_FORMAT,
            lambda: _arp(hw_type=rng.randrange(2, 65536)),
        ),
        "ethertype_unknown": (
            -1,
            DropReason.ETH_UNSUPPORTED_ETHERTYPE,
            lambda: rng.randbytes(rng.randrange(46, 1500)),
        ),
        "ipv4_random": (0x0800, None, lambda: rng.randbytes(rng.randrange(0, 1500))),
    }


def _ethertype(ethertype: int, rng: random.Random) -> int:
    """`ethertype`, or for -1 a random one that no protocol we know claims."""
    while ethertype < 0:
        candidate = rng.randrange(0x0600, 0x10000)
        if candidate not in _CLAIMED_ETHERTYPES:
            return candidate
    return ethertype


def send(iface: str, dst_mac: bytes, dst_ip: bytes, count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    table = kinds(dst_ip, rng)
    names = sorted(table)
    sent = dict.fromkeys(names, 0)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((iface, 0))
        for i in range(count):
            name = names[i % len(names)]
            ethertype, _, make = table[name]
            frame = dst_mac + SRC_MAC + struct.pack("!H", _ethertype(ethertype, rng)) + make()
            sock.send(frame)
            sent[name] += 1
            # Paced so the receiver's ring never overflows: this checks
            # accounting by reason, not overload behaviour.
            if i % 200 == 199:
                time.sleep(0.002)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--dst-ip", default="198.18.0.10")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sent = send(
        args.iface,
        bytes.fromhex(args.dst_mac.replace(":", "")),
        socket.inet_aton(args.dst_ip),
        args.count,
        args.seed,
    )
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
