"""The NIC port's receive and transmit paths, measured on an emulated port.

Why `stackservice.nic.packet_io` reads a TPACKET_V2 ring: this compares it
with a TPACKET_V3 ring (retire timer 1 ms, poll() wake-ups) and with plain
`recv_into` per frame, on

- latency: the peer kernel pings the port (`ping -f`, one echo in flight,
  and a Python raw-ICMP client for percentiles); a minimal responder on the
  port answers ARP and ICMP echo through each receive path;
- drain rate: the peer puts a burst of 64-byte frames on the wire while the
  port does not read; then one timed pass delivers them all;
- transmit: 64-byte frames in batches of 1 to 256 through `PacketPort.transmit`
  (`send()` per frame), the same with PACKET_QDISC_BYPASS, and through a
  PACKET_TX_RING with one kick per batch.

The V3, recv_into and TX ring paths live only here, to re-measure the choice.

    python3 -m bench.packet_io [--quick] [--json]     (as root)
"""

from __future__ import annotations

import argparse
import json
import mmap
import re
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable

from stackservice.nic.emulate import vf_mac
from stackservice.nic.packet_io import (
    ETH_P_ALL,
    PACKET_IGNORE_OUTGOING,
    PACKET_QDISC_BYPASS,
    PACKET_RX_RING,
    PACKET_VERSION,
    SOL_PACKET,
    NicCounter,
    PacketPort,
)
from tests.support.netns import in_netns, private_port, spawn_in_netns

STACK_IP = bytes((198, 18, 0, 10))
TPACKET_V3 = 2
SO_RCVBUFFORCE = 33
TP_STATUS_USER = 1
TP_STATUS_SEND_REQUEST = 1
PACKET_TX_RING = 13
TP_STATUS_CSUM_TRUSTED = (1 << 3) | (1 << 7)
_V3_FRAME = struct.Struct("=I8xIIIH")  # next_offset, snaplen, len, status, mac
_ETH = struct.Struct("!6s6sH")
TX_FRAME = bytes.fromhex("020000000001" + vf_mac(0).replace(":", "") + "88b5") + bytes(46)
_RTT = re.compile(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")

Deliver = Callable[[memoryview, int, bool], None]


class V3Ring:
    """A TPACKET_V3 RX ring: blocks handed over when full or on timeout."""

    def __init__(self, ifname: str, tov_ms: int, block_size: int = 1 << 16, blocks: int = 128):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frames = block_size * blocks // 2048
        req = struct.pack("=7I", block_size, blocks, 2048, frames, tov_ms, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.map = mmap.mmap(sock.fileno(), block_size * blocks)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
        self.sock, self.block_size, self.blocks, self.block = sock, block_size, blocks, 0
        self.ring = memoryview(self.map)
        self.words = self.ring.cast("I")

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive_batch(self, deliver: Deliver, now: int, limit: int = 1 << 30) -> int:
        words, ring, unpack = self.words, self.ring, _V3_FRAME.unpack_from
        count = 0
        while count < limit:
            base = self.block * self.block_size
            if not words[(base + 8) >> 2] & TP_STATUS_USER:
                break
            offset = base + words[(base + 16) >> 2]
            for _ in range(words[(base + 12) >> 2]):
                step, snaplen, _length, status, mac = unpack(ring, offset)
                trusted = (status & TP_STATUS_CSUM_TRUSTED) != 0
                deliver(ring[offset + mac : offset + mac + snaplen], now, trusted)
                offset += step
                count += 1
            words[(base + 8) >> 2] = 0
            self.block = (self.block + 1) % self.blocks
        return count

    def transmit(self, frames: list) -> int:
        for frame in frames:
            self.sock.send(frame)
        return len(frames)

    def close(self) -> None:
        self.words.release()
        self.ring.release()
        self.sock.close()
        self.map.close()


class RecvIntoPort:
    """No ring: one recv_into() system call per frame."""

    def __init__(self, ifname: str):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
        self.sock = sock
        self.buf = bytearray(2048)
        self.view = memoryview(self.buf)

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive_batch(self, deliver: Deliver, now: int, limit: int = 1 << 30) -> int:
        recv_into, buf, view = self.sock.recv_into, self.buf, self.view
        count = 0
        while count < limit:
            try:
                size = recv_into(buf)
            except BlockingIOError:
                break
            deliver(view[:size], now, False)
            count += 1
        return count

    def transmit(self, frames: list) -> int:
        for frame in frames:
            self.sock.send(frame)
        return len(frames)

    def close(self) -> None:
        self.view.release()
        self.sock.close()


def open_port(kind: str, ifname: str):
    if kind == "v2":
        return PacketPort(ifname, [0] * len(NicCounter))
    if kind == "v3":
        return V3Ring(ifname, tov_ms=1)
    return RecvIntoPort(ifname)


class Responder:
    """Answers ARP for 198.18.0.10 and ICMP echo to it: just enough for ping."""

    def __init__(self, mac: bytes):
        self.mac = mac
        self.outbox: list[bytes] = []

    def deliver(self, frame: memoryview, now: int, trusted: bool) -> None:
        ethertype = (frame[12] << 8) | frame[13]
        if ethertype == 0x0806 and frame[21] == 1 and frame[38:42] == STACK_IP:
            reply = bytearray(frame[:42])
            reply[0:6] = frame[6:12]
            reply[6:12] = self.mac
            reply[21] = 2
            reply[22:28] = self.mac
            reply[28:32] = STACK_IP
            reply[32:42] = frame[22:32]
            self.outbox.append(bytes(reply))
        elif ethertype == 0x0800 and frame[23] == 1 and frame[30:34] == STACK_IP:
            ihl = (frame[14] & 15) * 4
            if frame[14 + ihl] != 8:
                return
            reply = bytearray(frame)
            reply[0:6] = frame[6:12]
            reply[6:12] = self.mac
            reply[26:30] = frame[30:34]
            reply[30:34] = frame[26:30]
            reply[14 + ihl] = 0
            # Type 8 -> 0: add 0x0800 to the one's-complement checksum.
            csum = ((reply[16 + ihl] << 8) | reply[17 + ihl]) + 0x0800
            csum = (csum & 0xFFFF) + (csum >> 16)
            reply[16 + ihl] = csum >> 8
            reply[17 + ihl] = csum & 0xFF
            self.outbox.append(bytes(reply))

    def serve(self, port, until: subprocess.Popen) -> tuple[int, int]:
        """Answer until `until` exits. Returns (wake-ups, frames)."""
        poller = select.poll()
        poller.register(port.fileno(), select.POLLIN)
        wakeups = frames = 0
        while until.poll() is None:
            if not poller.poll(50):
                continue
            wakeups += 1
            frames += port.receive_batch(self.deliver, 0)
            if self.outbox:
                port.transmit(self.outbox)
                self.outbox.clear()
        return wakeups, frames


PING_CLIENT = r"""
import json, socket, struct, sys, time
count, warm = int(sys.argv[1]), 50
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.5)
def checksum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t & 0xFFFF) + (t >> 16); t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF
rtts, lost = [], 0
for seq in range(count + warm):
    body = struct.pack("!HH", 0x5646, seq & 0xFFFF) + b"x" * 56
    pkt = struct.pack("!BBH", 8, 0, checksum(b"\x08\x00\x00\x00" + body)) + body
    t0 = time.perf_counter_ns()
    s.sendto(pkt, ("198.18.0.10", 0))
    try:
        while True:
            data = s.recv(2048)
            ihl = (data[0] & 15) * 4
            if data[ihl] == 0 and data[ihl + 6:ihl + 8] == pkt[6:8]:
                break
    except TimeoutError:
        lost += 1
        continue
    if seq >= warm:
        rtts.append((time.perf_counter_ns() - t0) / 1000)
rtts.sort()
print(json.dumps({"p50": rtts[len(rtts) // 2], "p99": rtts[len(rtts) * 99 // 100],
                  "mean": sum(rtts) / len(rtts), "lost": lost}))
"""

BURST_SENDER = r"""
import socket, struct, sys
ifname, dst, count = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
src = s.getsockname()[4]
for seq in range(count):
    s.send(dst + src + b"\x88\xb5" + struct.pack("!I", seq) + bytes(42))
"""


def latency(port_kind: str, ifname: str, netns: str, count: int) -> dict:
    """RTT through a responder on the port: Python client percentiles, ping -f avg."""
    port = open_port(port_kind, ifname)
    try:
        responder = Responder(bytes.fromhex(vf_mac(0).replace(":", "")))
        client = spawn_in_netns(
            netns, sys.executable, "-c", PING_CLIENT, str(count), stdout=subprocess.PIPE, text=True
        )
        wakeups, frames = responder.serve(port, client)
        result = json.loads(client.communicate(timeout=120)[0])
        ping = spawn_in_netns(
            netns,
            *("ping", "-n", "-q", "-f", "-c", str(count), "198.18.0.10"),
            stdout=subprocess.PIPE,
            text=True,
        )
        responder.serve(port, ping)
        match = _RTT.search(ping.communicate(timeout=120)[0])
        result["ping_f_avg"] = 1000 * float(match.group(2)) if match else float("nan")
        result["frames_per_wakeup"] = frames / max(wakeups, 1)
        return result
    finally:
        port.close()


def drain(port_kind: str, ifname: str, wire: str, netns: str, burst: int, rounds: int) -> dict:
    """Median time per frame to deliver a burst already waiting in the port."""
    port = open_port(port_kind, ifname)
    headers = _ETH.unpack_from

    def deliver(frame: memoryview, now: int, trusted: bool) -> None:
        headers(frame, 0)

    try:
        per_frame = []
        dst = vf_mac(0).replace(":", "")
        for _ in range(rounds):
            in_netns(netns, sys.executable, "-c", BURST_SENDER, wire, dst, str(burst))
            time.sleep(0.02)  # lets V3 retire its last block (tov 1 ms)
            start = time.perf_counter_ns()
            got = port.receive_batch(deliver, 0, 1 << 30)
            elapsed = time.perf_counter_ns() - start
            if got != burst:
                raise RuntimeError(f"{port_kind}: {got} of {burst} frames arrived")
            per_frame.append(elapsed / 1000 / got)
        us = statistics.median(per_frame)
        return {"us_per_frame": us, "frames_per_s": 1e6 / us}
    finally:
        port.close()


def transmit_port(ifname: str, count: int, batch: int, bypass: bool) -> float:
    """µs per 64-byte frame through PacketPort.transmit (send() per frame)."""
    counters = [0] * len(NicCounter)
    with PacketPort(ifname, counters) as port:
        if bypass:  # on a dup of the port's socket: the option is the socket's
            with socket.fromfd(port.fileno(), socket.AF_PACKET, socket.SOCK_RAW) as sock:
                sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        frames = [TX_FRAME] * batch
        start = time.perf_counter_ns()
        for _ in range(count // batch):
            port.transmit(frames)
        elapsed = time.perf_counter_ns() - start
        if counters[NicCounter.TX_PACKETS] != count // batch * batch:
            raise RuntimeError(f"transmit: {counters}")
        return elapsed / 1000 / counters[NicCounter.TX_PACKETS]


def transmit_ring(ifname: str, count: int, batch: int) -> float:
    """µs per 64-byte frame through a V2 PACKET_TX_RING, one kick per batch."""
    frame_size, frames = 2048, 1024
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, 1)
    sock.setsockopt(SOL_PACKET, PACKET_TX_RING, struct.pack("=4I", 1 << 16, 32, frame_size, frames))
    ring = mmap.mmap(sock.fileno(), frame_size * frames)
    view = memoryview(ring)
    words = view.cast("I")
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    slot = 0
    size = len(TX_FRAME)
    start = time.perf_counter_ns()
    for _ in range(count // batch):
        for _ in range(batch):
            base = slot * frame_size
            if words[base >> 2]:
                raise RuntimeError("TX ring full")
            view[base + 32 : base + 32 + size] = TX_FRAME  # TPACKET2_HDRLEN - sockaddr_ll
            words[(base + 4) >> 2] = size
            words[base >> 2] = TP_STATUS_SEND_REQUEST
            slot = (slot + 1) % frames
        sock.send(b"")
    elapsed = time.perf_counter_ns() - start
    words.release()
    view.release()
    sock.close()
    ring.close()
    return elapsed / 1000 / (count // batch * batch)


def run(quick: bool, progress: Callable[[str], None]) -> dict:
    pings, repeats = (500, 1) if quick else (2000, 3)
    burst, rounds = (1000, 3) if quick else (3000, 9)
    tx_count = 12800 if quick else 102400
    kinds = ("v2", "v3", "recv_into")
    samples: dict[str, list[dict]] = {kind: [] for kind in kinds}
    results: dict = {"latency_us": {}, "drain": {}, "transmit_us_per_frame": {}}
    with private_port(vfs=1) as port:
        ifname = port.vf(0)
        # Interleaved repeats: the VM's timing drifts between runs.
        for rep in range(repeats):
            for kind in kinds:
                progress(f"latency {kind} ({rep + 1}/{repeats}) ...")
                samples[kind].append(latency(kind, ifname, port.netns, pings))
        for kind in kinds:
            results["latency_us"][kind] = {
                key: statistics.median(s[key] for s in samples[kind])
                for key in ("p50", "p99", "mean", "ping_f_avg", "frames_per_wakeup", "lost")
            }
            progress(f"drain {kind} ...")
            results["drain"][kind] = drain(kind, ifname, port.wire, port.netns, burst, rounds)
        tx = results["transmit_us_per_frame"]
        for batch in (1, 4, 32, 256):
            progress(f"transmit batch {batch} ...")
            samples_tx: dict[str, list[float]] = {"send": [], "bypass": [], "ring": []}
            for _ in range(repeats):
                samples_tx["send"].append(transmit_port(ifname, tx_count, batch, False))
                samples_tx["bypass"].append(transmit_port(ifname, tx_count, batch, True))
                samples_tx["ring"].append(transmit_ring(ifname, tx_count, batch))
            tx[batch] = {name: statistics.median(v) for name, v in samples_tx.items()}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run(args.quick, lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"{'RX path':<12} {'RTT p50':>9} {'p99':>9} {'ping -f':>9} "
        f"{'drain µs/f':>11} {'frames/s':>10}"
    )
    for kind, lat in results["latency_us"].items():
        dr = results["drain"][kind]
        print(
            f"{kind:<12} {lat['p50']:>9.1f} {lat['p99']:>9.1f} "
            f"{lat['ping_f_avg']:>9.1f} "
            f"{dr['us_per_frame']:>11.3f} {dr['frames_per_s']:>10.0f}"
        )
    print(f"{'TX µs/frame':<12} {'send()':>9} {'bypass':>9} {'TX ring':>9}")
    for batch, tx in results["transmit_us_per_frame"].items():
        print(
            f"{'batch ' + str(batch):<12} {tx['send']:>9.3f} {tx['bypass']:>9.3f} "
            f"{tx['ring']:>9.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
