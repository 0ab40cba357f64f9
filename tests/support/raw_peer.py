"""A hostile peer on the wire (issue 13's remote findings): TCP segments
crafted as raw frames on the wire's far end, in the peer namespace, where
no kernel TCP stands between the attacker and what it sends.

    python -m tests.support.raw_peer zero-window --iface WIRE --dst-mac MAC --count N
    python -m tests.support.raw_peer challenge --iface WIRE --dst-mac MAC --victim P:P:SEQ:SEQ
    python -m tests.support.raw_peer responder --iface WIRE --dst-mac MAC --ip ADDR --port P

`zero-window` opens N connections from made-up addresses on the wire's
subnet (it answers the stack's ARP for them with a made-up MAC, so the
peer's kernel never sees their traffic), asks the diag HTTP service for a
body, lets the first bytes through, then keeps its window shut for good:
every other connection never answers the stack's zero-window probes, the
rest answer each with a zero window. It prints {"shut": N} once every
window is shut, then what the stack did to each connection.

`challenge` holds --own kernel connections to --port (their sequence
numbers read back with TCP_REPAIR: an attacker holding real connections
knows them), then, as in CVE-2016-5696, (1) aims in-window SYNs and RSTs,
and stale bare ACKs from far outside the window, at a victim's connection
(its 4-tuple and sequence numbers given, spoofed from the peer's address),
1000 a second for --victim-seconds, counting the ACKs the victim's side
gets; (2) for --seconds, an in-window SYN
or RST at each of its own connections 8 times a second (more challenges
than the instance's budget answers), counting the challenge ACKs it gets
back in each second of the stack's clock (CLOCK_MONOTONIC, the same
here). Prints one JSON line.

`responder` is a server at a made-up address (--ip, --port) that keeps
no state and never closes: whatever connects to it stays open, or, once
its client closes, closing (its FIN is never acknowledged). It prints {"serving": ADDR}, and when
SIGTERM ends it, how many segments it answered.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass

from tests.support.synflood import tcp_frame

ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
SOL_PACKET, PACKET_IGNORE_OUTGOING = 263, 23  # linux/if_packet.h: not our own frames back
SO_RCVBUFFORCE = 33  # asm-generic/socket.h: root may pass rmem_max
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
SEQ_MASK = 0xFFFFFFFF
ATTACKER_MAC = bytes.fromhex("02000000a77a")  # nobody's: the peer's kernel drops its frames
PEER_IP = "198.18.0.1"
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_TCP = struct.Struct("!HHIIBBH")

# TCP_REPAIR (linux/tcp.h), to read a kernel connection's sequence numbers.
TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ = 19, 20, 21
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2


def sequence_numbers(sock: socket.socket) -> tuple[int, int]:
    """(SND.NXT, RCV.NXT) of a kernel connection with nothing in flight."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    try:
        seqs = []
        for queue in (TCP_SEND_QUEUE, TCP_RECV_QUEUE):
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
            seqs.append(sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ) & SEQ_MASK)
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)
    return seqs[0], seqs[1]


def _ip(text: str) -> int:
    return int.from_bytes(socket.inet_aton(text), "big")


@dataclass(slots=True)
class Segment:
    src_ip: int
    dst_ip: int
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    length: int  # payload bytes


def parse_tcp(frame: bytes) -> Segment | None:
    """The TCP segment an IPv4 frame carries, or None."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    total = int.from_bytes(frame[16:18], "big")
    at = 14 + ihl
    sport, dport, seq, ack, offset, flags, window = _TCP.unpack_from(frame, at)
    return Segment(
        int.from_bytes(frame[26:30], "big"), int.from_bytes(frame[30:34], "big"),
        sport, dport, seq, ack, flags, window, total - ihl - (offset >> 4) * 4,
    )  # fmt: skip


class Wire:
    """The wire's far end as an attacker holds it: raw frames both ways."""

    def __init__(self, iface: str, dst_mac: bytes) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        self.sock.bind((iface, ETH_P_ALL))
        self.mac = self.sock.getsockname()[4]  # the peer's own (vfwire)
        self.dst_mac = dst_mac

    def frame(self, src_mac: bytes, src_ip: int, *segment, payload: bytes = b"") -> bytes:
        """A frame to the stack: `segment` is (dst_ip, sport, dport, seq,
        ack, flags, window), sequence numbers taken modulo 2**32."""
        dst_ip, sport, dport, seq, ack, flags, window = segment
        return tcp_frame(
            self.dst_mac, src_mac, src_ip, dst_ip, sport, dport, seq & SEQ_MASK, ack & SEQ_MASK,
            flags, window, payload,
        )  # fmt: skip

    def send(self, src_ip: int, *segment, payload: bytes = b"") -> None:
        """A segment (as `frame`'s) from ATTACKER_MAC."""
        self.sock.send(self.frame(ATTACKER_MAC, src_ip, *segment, payload=payload))

    def receive(self, timeout: float) -> list[bytes]:
        """Frames that came in (not our own) within `timeout`, all ready ones."""
        frames = []
        if not select.select([self.sock], [], [], timeout)[0]:
            return frames
        while True:
            try:
                frames.append(self.sock.recv(65536, socket.MSG_DONTWAIT))
            except BlockingIOError:
                return frames

    def answer_arp(self, frame: bytes, addresses: set[int]) -> bool:
        """Answer the stack's ARP request for one of `addresses` with
        ATTACKER_MAC; whether `frame` was ARP at all."""
        if frame[12:14] != b"\x08\x06" or len(frame) < 42:
            return False
        _, _, _, _, op, sender_mac, sender_ip, _, target_ip = _ARP.unpack_from(frame, 14)
        if op == 1 and int.from_bytes(target_ip, "big") in addresses:
            reply = _ARP.pack(1, ETH_P_IP, 6, 4, 2, ATTACKER_MAC, target_ip, sender_mac, sender_ip)
            self.sock.send(sender_mac + ATTACKER_MAC + b"\x08\x06" + reply)
        return True

    def close(self) -> None:
        self.sock.close()


# -- zero-window -------------------------------------------------------------


@dataclass(slots=True)
class _Shut:
    """One of the attacker's connections."""

    src_ip: int
    sport: int
    silent: bool
    iss: int
    state: str = "syn"  # syn, open, shut, reset
    rcv_nxt: int = 0
    right_edge: int = 0  # of the window it offered: it never moves
    probes: int = 0
    beyond_window: int = 0  # data segments past a shut window (a stack bug)
    shut_at: float = 0.0
    reset_at: float = 0.0


def zero_window(args) -> dict:
    wire = Wire(args.iface, bytes.fromhex(args.dst_mac.replace(":", "")))
    dst = _ip(args.dst_ip)
    base = _ip(args.src_net)
    addresses = {base + k for k in range(args.addresses)}
    conns: dict[tuple[int, int], _Shut] = {}
    for n in range(args.count):
        src = base + n % args.addresses
        sport = 20000 + n // args.addresses
        conns[src, sport] = _Shut(src, sport, silent=n % 2 == 0, iss=(n * 7919 << 12) & SEQ_MASK)
    request = f"GET /{args.body} HTTP/1.0\r\n\r\n".encode()
    pending = list(conns.values())
    shut = reported = 0
    deadline = time.monotonic() + args.timeout

    def send(conn: _Shut, seq: int, flags: int, window: int, payload: bytes = b"") -> None:
        wire.send(conn.src_ip, dst, conn.sport, args.port, seq, conn.rcv_nxt, flags, window,
                  payload=payload)  # fmt: skip

    def ack(conn: _Shut, window: int) -> None:
        send(conn, conn.iss + 1 + len(request), ACK, window)

    while time.monotonic() < deadline:
        for conn in pending[:32]:  # a paced flood of SYNs, answered as they come
            send(conn, conn.iss, SYN, 65535)
        del pending[:32]
        for frame in wire.receive(0.05):
            if wire.answer_arp(frame, addresses):
                continue
            seg = parse_tcp(frame)
            if seg is None or seg.src_ip != dst or seg.sport != args.port:
                continue
            conn = conns.get((seg.dst_ip, seg.dport))
            if conn is None or conn.state == "reset":
                continue
            now = time.monotonic()
            if seg.flags & RST:
                conn.state, conn.reset_at = "reset", now
            elif conn.state == "syn":
                if seg.flags & (SYN | ACK) == SYN | ACK and seg.ack == conn.iss + 1:
                    conn.rcv_nxt = (seg.seq + 1) & SEQ_MASK
                    conn.right_edge = (conn.rcv_nxt + args.window) & SEQ_MASK
                    send(conn, conn.iss + 1, ACK | PSH, args.window, request)
                    conn.state = "open"
            elif conn.state == "open":
                if seg.length and seg.seq == conn.rcv_nxt:  # in order: take it
                    conn.rcv_nxt = (conn.rcv_nxt + seg.length) & SEQ_MASK
                if seg.length:
                    window = (conn.right_edge - conn.rcv_nxt) & SEQ_MASK
                    window = 0 if window > args.window else window  # past the edge
                    ack(conn, window)
                    if window == 0:
                        conn.state, conn.shut_at = "shut", now
                        shut += 1
            elif seg.length:
                conn.beyond_window += 1
            elif seg.seq == (conn.rcv_nxt - 1) & SEQ_MASK:  # a zero-window probe
                conn.probes += 1
                if not conn.silent:
                    ack(conn, 0)
        if shut == args.count and not reported:
            print(json.dumps({"shut": shut}), flush=True)
            reported = 1
        if all(c.state == "reset" for c in conns.values()):
            break
    wire.close()
    silent = [c for c in conns.values() if c.silent]
    answering = [c for c in conns.values() if not c.silent]
    return {
        "shut": shut,
        "reset": sum(c.state == "reset" for c in conns.values()),
        "beyond_window": sum(c.beyond_window for c in conns.values()),
        "silent": _summary(silent),
        "answering": _summary(answering),
    }


def _summary(conns: list[_Shut]) -> dict:
    """The probes each connection got (the distinct counts), and how long
    the first and the last were held shut before their reset."""
    held = [c.reset_at - c.shut_at for c in conns if c.reset_at and c.shut_at]
    return {
        "probes": sorted({c.probes for c in conns}),
        "seconds_shut": [round(min(held), 1), round(max(held), 1)] if held else None,
    }


# -- challenge ---------------------------------------------------------------


def _is_ack_only(seg: Segment) -> bool:
    return seg.flags & (SYN | FIN | RST | ACK) == ACK and seg.length == 0


def challenge(args) -> dict:
    wire = Wire(args.iface, bytes.fromhex(args.dst_mac.replace(":", "")))
    dst, peer = _ip(args.dst_ip), _ip(PEER_IP)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.own + 256)), hard))
    own = [socket.create_connection((args.dst_ip, args.port), timeout=10) for _ in range(args.own)]

    def pokes(sport: int, dport: int, snd_nxt: int, rcv_nxt: int) -> tuple[bytes, bytes]:
        # One byte past RCV.NXT: in the window, but not the exact RST that
        # would reset (RFC 5961 §3.2), and any SYN (§4.2): both challenged.
        syn, rst = (
            wire.frame(wire.mac, peer, dst, sport, dport, snd_nxt + 1, rcv_nxt, flags, 65535)
            for flags in (SYN, RST)
        )
        return syn, rst

    # (1) the victim's connection: the ACKs it draws, however many pokes.
    # A stale bare ACK (a window's worth behind) draws none but what the
    # same per-connection limit allows (Linux's tcp_oow_rate_limited).
    victim_port, victim_dport, victim_snd, victim_rcv = map(int, args.victim.split(":"))
    stale_seq = (victim_snd - (1 << 20)) & SEQ_MASK
    victim = (
        *pokes(victim_port, victim_dport, victim_snd, victim_rcv),
        wire.frame(
            wire.mac, peer, dst, victim_port, victim_dport, stale_seq, victim_rcv, ACK, 65535
        ),
    )
    acks: dict[int, int] = {}
    end = time.monotonic() + args.victim_seconds
    sent, next_burst = 0, time.monotonic()
    while (now := time.monotonic()) < end:
        if now >= next_burst:  # 10 every 10 ms
            for _ in range(10):
                wire.sock.send(victim[sent % len(victim)])
                sent += 1
            next_burst += 0.01
        _count(wire.receive(max(0.0, next_burst - time.monotonic())), dst, {victim_port}, acks)
    _count(wire.receive(0.6), dst, {victim_port}, acks)  # the last one's answer

    # (2) the instance's budget: each own connection poked 8 times a second
    # (challenged about 1.8 times a second: more than any budget's 1.5 per
    # connection), challenge ACKs counted per second of the stack's clock
    own_pokes = [pokes(s.getsockname()[1], args.port, *sequence_numbers(s)) for s in own]
    ports = {s.getsockname()[1] for s in own}
    per_second: dict[int, int] = {}
    first = int(time.monotonic()) + 1
    end = first + args.seconds
    next_round, k = time.monotonic(), 0
    while (now := time.monotonic()) < end + 0.2:
        if next_round <= now < end:
            for pair in own_pokes:
                wire.sock.send(pair[k % 2])
            k += 1
            next_round += 0.125
        _count(wire.receive(0.002), dst, ports, per_second)
    for sock in own:
        sock.close()
    wire.close()
    return {
        "victim_pokes": sent,
        "victim_seconds": args.victim_seconds,
        "victim_challenge_acks": sum(acks.values()),
        "own": len(own),
        "own_pokes": k * len(own),
        "per_second": [per_second.get(s, 0) for s in range(first, end)],
    }


def _count(frames: list[bytes], dst: int, ports: set[int], per_second: dict[int, int]) -> None:
    """Add the challenge ACKs among `frames` (pure ACKs from `dst` to one
    of `ports`: nothing else sends these any) to this second's count."""
    second = int(time.monotonic())
    for frame in frames:
        seg = parse_tcp(frame)
        if seg and seg.src_ip == dst and seg.dport in ports and _is_ack_only(seg):
            per_second[second] = per_second.get(second, 0) + 1


# -- responder ---------------------------------------------------------------


def responder(args) -> dict:
    """A server at a made-up address that keeps no state: a SYN gets its
    SYN-ACK (our sequence numbers derived from the client's port), data its
    ACK; a FIN none, so a client that closes retransmits it until it gives
    up (an orphan's orphan_retries, about 100 s). Until SIGTERM or --timeout."""
    wire = Wire(args.iface, bytes.fromhex(args.dst_mac.replace(":", "")))
    stack, me = _ip(args.dst_ip), _ip(args.ip)
    answered = 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    deadline = time.monotonic() + args.timeout
    try:
        print(json.dumps({"serving": args.ip}), flush=True)
        while time.monotonic() < deadline:
            for frame in wire.receive(0.1):
                if wire.answer_arp(frame, {me}):
                    continue
                seg = parse_tcp(frame)
                if not seg or (seg.src_ip, seg.dst_ip, seg.dport) != (stack, me, args.port):
                    continue
                iss = seg.sport * 65537
                if seg.flags & (SYN | ACK) == SYN:
                    wire.send(me, stack, args.port, seg.sport, iss, seg.seq + 1, SYN | ACK, 65535)
                elif seg.length and not seg.flags & FIN:
                    end = seg.seq + seg.length
                    wire.send(me, stack, args.port, seg.sport, iss + 1, end, ACK, 65535)
                else:
                    continue
                answered += 1
    finally:
        wire.close()
        print(json.dumps({"answered": answered}), flush=True)
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("zero-window", "challenge", "responder"):
        mode = sub.add_parser(name)
        mode.add_argument("--iface", required=True)
        mode.add_argument("--dst-mac", required=True)
        mode.add_argument("--dst-ip", default="198.18.0.10")
        mode.add_argument("--timeout", type=float, default=240)
    shut = sub.choices["zero-window"]
    shut.add_argument("--port", type=int, default=80)
    shut.add_argument("--count", type=int, default=200)
    shut.add_argument("--src-net", default="198.18.0.200")  # first made-up address
    shut.add_argument("--addresses", type=int, default=8)
    shut.add_argument("--body", type=int, default=65536)  # what each asks the diag HTTP for
    shut.add_argument("--window", type=int, default=1072)  # 2 MSS (536: no MSS option)
    chal = sub.choices["challenge"]
    chal.add_argument("--port", type=int, default=7)
    chal.add_argument("--own", type=int, default=1000)
    chal.add_argument("--victim", required=True, help="PEER_PORT:STACK_PORT:SND_NXT:RCV_NXT")
    chal.add_argument("--victim-seconds", type=float, default=3)
    chal.add_argument("--seconds", type=int, default=6)
    serve = sub.choices["responder"]
    serve.add_argument("--ip", default="198.18.0.250")
    serve.add_argument("--port", type=int, default=9999)
    args = parser.parse_args()
    if args.mode == "responder":
        responder(args)
        return
    report = zero_window(args) if args.mode == "zero-window" else challenge(args)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
