"""PacketPort on an emulated VF, with the Linux kernel peer on the far end.

Frames are checked byte for byte on both sides: the peer sends with a raw
socket (or its kernel answers ping/UDP) and captures with an AF_PACKET
socket, each a short Python run in the peer namespace.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackservice.net.offload import SuperFrame
from stackservice.nic.emulate import EmulatedPort, vf_mac
from stackservice.nic.gso import VNET_HEADER_LEN, super_frame, wire_length
from stackservice.nic.packet_io import (
    PACKET_IGNORE_OUTGOING,
    SOL_PACKET,
    NicCounter,
    PacketPort,
)
from stackservice.tcp.segment import ACK
from tests.support.netns import in_netns, spawn_in_netns
from tests.support.stack import wait_until
from tests.support.tcp_frames import frames_of
from tests.support.tcp_frames import host as tcp_host

pytestmark = pytest.mark.root

ETHERTYPE = bytes.fromhex("88b5")  # IEEE local experimental: nobody else sends it
VF0_MAC = bytes.fromhex(vf_mac(0).replace(":", ""))
BROADCAST = b"\xff" * 6
STACK_IP = bytes((198, 18, 0, 10))
PEER_IP = bytes((198, 18, 0, 1))

# Sends each hex line of stdin as one frame on the interface argv[1].
PEER_SEND = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((sys.argv[1], 0))
for line in sys.stdin.read().split():
    s.send(bytes.fromhex(line))
"""

# Captures incoming 0x88b5 frames on argv[1] until argv[2] of them arrived
# or argv[3] seconds passed; says "ready" first, then prints them in hex.
# argv[4]: the EtherType captured.
PEER_CAPTURE = r"""
import select, socket, sys, time
ifname, want, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((ifname, int(sys.argv[4])))
print("ready", flush=True)
deadline = time.monotonic() + timeout
frames = []
while len(frames) < want:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([s], [], [], left)[0]:
        break
    data, addr = s.recvfrom(65535)
    if addr[2] != socket.PACKET_OUTGOING:
        frames.append(data.hex())
print(" ".join(frames))
"""


def make_frame(dst: bytes, src: bytes, seq: int, size: int = 60) -> bytes:
    """A 0x88b5 frame of `size` bytes carrying `seq`."""
    head = dst + src + ETHERTYPE + seq.to_bytes(4, "big")
    return head + bytes((seq + i) & 0xFF for i in range(size - len(head)))


def wire_mac(port: EmulatedPort) -> bytes:
    out = in_netns(port.netns, "cat", f"/sys/class/net/{port.wire}/address").stdout
    return bytes.fromhex(out.strip().replace(":", ""))


def vf_rx_packets(port: EmulatedPort) -> int:
    return int(Path(f"/sys/class/net/{port.vf(0)}/statistics/rx_packets").read_text())


def peer_send(port: EmulatedPort, frames: list[bytes]) -> None:
    """Put frames (all to VF 0's MAC) on the wire from the peer; returns once
    VF 0 has taken every one: stored in a listening port's ring, or dropped
    there if it is full."""
    before = vf_rx_packets(port)
    lines = "\n".join(frame.hex() for frame in frames)
    in_netns(port.netns, sys.executable, "-c", PEER_SEND, port.wire, input=lines, timeout=30)
    # The veth hands frames over in softirq context, normally before send()
    # returns; under load ksoftirqd finishes the job later. The macvlan VF
    # counts a unicast frame in the same pass that hands it to the packet
    # sockets, so its counter says when they have it.
    assert wait_until(lambda: vf_rx_packets(port) - before >= len(frames)), "frames not received"


class PeerCapture:
    """Frames of type 0x88b5 (or `ethertype`) arriving at the peer,
    captured in its namespace."""

    def __init__(
        self, port: EmulatedPort, want: int, timeout: float = 5.0, ethertype: int = 0x88B5
    ) -> None:
        self.proc = spawn_in_netns(
            port.netns,
            *(sys.executable, "-c", PEER_CAPTURE, port.wire, str(want), str(timeout)),
            str(ethertype),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def frames(self) -> list[bytes]:
        out, _ = self.proc.communicate(timeout=30)
        return [bytes.fromhex(h) for h in out.split()]


class Receiver:
    """Drives receive_batch the way the stack loop does: poll, then drain."""

    def __init__(self, port: PacketPort) -> None:
        self.port = port
        self.frames: list[bytes] = []
        self.trusted: list[bool] = []
        self.wakeups = 0
        self.poller = select.poll()
        self.poller.register(port.fileno(), select.POLLIN)

    def deliver(self, frame: memoryview, now: int, checksum_trusted: bool) -> None:
        self.frames.append(bytes(frame))
        self.trusted.append(checksum_trusted)

    def until(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """Receive until `count` frames of type 0x88b5 arrived; returns them."""
        deadline = time.monotonic() + timeout
        while len(self.ours()) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self.poller.poll(int(left * 1000) + 1):
                self.wakeups += 1
                self.port.receive_batch(self.deliver, 0)
        return self.ours()

    def ours(self) -> list[bytes]:
        return [f for f in self.frames if f[12:14] == ETHERTYPE]


def shape(ifname: str, rate: str) -> None:
    """A token bucket that holds ~3 full frames: more makes send() fail (ENOBUFS)."""
    tbf = ("tbf", "rate", rate, "burst", "1600", "limit", "3000")
    subprocess.run(["tc", "qdisc", "add", "dev", ifname, "root", *tbf], check=True)


def counters() -> list[int]:
    return [0] * len(NicCounter)


# --- receive -----------------------------------------------------------------


def test_arp_request_from_peer_kernel_arrives_byte_exact(emulated_port):
    count = counters()
    with PacketPort(emulated_port.vf(0), count) as port:
        rx = Receiver(port)
        in_netns(emulated_port.netns, "ping", "-c", "1", "-W", "0.2", "198.18.0.10", check=False)
        deadline = time.monotonic() + 5
        while not rx.frames and time.monotonic() < deadline:
            rx.poller.poll(100)
            port.receive_batch(rx.deliver, 0)
    peer = wire_mac(emulated_port)
    arp_request = (
        BROADCAST + peer + b"\x08\x06"
        + bytes.fromhex("0001 0800 06 04 0001") + peer + PEER_IP + bytes(6) + STACK_IP
    )  # fmt: skip
    assert rx.frames[0] == arp_request
    assert rx.trusted[0] is False  # no checksum offload on this path
    assert count[NicCounter.RX_PACKETS] == len(rx.frames)
    assert count[NicCounter.RX_BYTES] == sum(len(f) for f in rx.frames)


def test_burst_arrives_in_order_in_one_wakeup(emulated_port):
    peer = wire_mac(emulated_port)
    burst = [make_frame(VF0_MAC, peer, seq, size=60 + seq) for seq in range(500)]
    count = counters()
    with PacketPort(emulated_port.vf(0), count) as port:
        peer_send(emulated_port, burst)  # all queued in the ring before we look
        rx = Receiver(port)
        got = rx.until(len(burst))
    assert got == burst
    assert rx.wakeups == 1  # one wake-up walks every ready frame
    assert count[NicCounter.RX_PACKETS] == len(rx.frames)
    assert count[NicCounter.RX_BYTES] == sum(len(f) for f in rx.frames)
    assert count[NicCounter.RX_RING_DROPS] == 0


def test_receive_batch_limit_leaves_the_rest_for_the_next_call(emulated_port):
    peer = wire_mac(emulated_port)
    burst = [make_frame(VF0_MAC, peer, seq) for seq in range(10)]
    with PacketPort(emulated_port.vf(0), counters()) as port:
        peer_send(emulated_port, burst)
        rx = Receiver(port)
        assert port.receive_batch(rx.deliver, 0, limit=4) == 4
        assert port.receive_batch(rx.deliver, 0, limit=100) == 6
        assert port.receive_batch(rx.deliver, 0) == 0
        assert not rx.poller.poll(0)  # drained: nothing wakes the loop
    assert rx.ours() == burst


def test_checksum_trusted_when_peer_leaves_checksum_to_offload(emulated_port):
    """TP_STATUS_CSUMNOTREADY (CHECKSUM_PARTIAL across the veth) means trusted."""
    ns, wire = emulated_port.netns, emulated_port.wire
    in_netns(ns, "ip", "neigh", "replace", "198.18.0.10", "lladdr", vf_mac(0), "dev", wire)
    send_udp = (
        "import socket; "
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('198.18.0.10', 9))"
    )
    with PacketPort(emulated_port.vf(0), counters()) as port:
        rx = Receiver(port)
        for offload in ("off", "on"):
            in_netns(ns, "ethtool", "-K", wire, "tx", offload)
            in_netns(ns, sys.executable, "-c", send_udp)
            before = len(rx.frames)
            deadline = time.monotonic() + 5
            while len(rx.frames) == before and time.monotonic() < deadline:
                rx.poller.poll(100)
                port.receive_batch(rx.deliver, 0)
    udp = [t for f, t in zip(rx.frames, rx.trusted, strict=True) if f[12:14] == b"\x08\x00"]
    assert udp == [False, True]


def test_truncated_frames_are_counted_and_dropped(emulated_port):
    peer = wire_mac(emulated_port)
    # 256-byte slots hold 256 - 66 = 190 bytes of frame.
    frames = [make_frame(VF0_MAC, peer, 0, 190), make_frame(VF0_MAC, peer, 1, 191)]
    frames.append(make_frame(VF0_MAC, peer, 2, 60))
    count = counters()
    small = {"ring_frames": 64, "frame_size": 256, "block_size": 4096}
    with PacketPort(emulated_port.vf(0), count, **small) as port:
        peer_send(emulated_port, frames)
        got = Receiver(port).until(2)
    assert got == [frames[0], frames[2]]
    assert count[NicCounter.RX_TRUNCATED] == 1


def test_ring_overflow_is_counted_as_drops(emulated_port):
    peer = wire_mac(emulated_port)
    count = counters()
    with PacketPort(emulated_port.vf(0), count, ring_frames=8, block_size=4096) as port:
        rx = Receiver(port)
        peer_send(emulated_port, [make_frame(VF0_MAC, peer, seq) for seq in range(50)])
        assert port.receive_batch(rx.deliver, 0, limit=3) == 3
        assert count[NicCounter.RX_RING_DROPS] == 42  # found the ring full
        assert port.receive_batch(rx.deliver, 0) == 5
        late = make_frame(VF0_MAC, peer, 50)
        peer_send(emulated_port, [late])
        rx.until(9)
        assert port.collect_drops() == 0  # read and reset: nothing new
    assert rx.ours() == [make_frame(VF0_MAC, peer, seq) for seq in range(8)] + [late]
    assert count[NicCounter.RX_RING_DROPS] == 42
    assert count[NicCounter.RX_PACKETS] == 9


def test_drop_while_emptying_the_ring_is_counted_from_a_later_frame(emulated_port):
    """TP_STATUS_LOSING on the next stored frame reports a drop that
    happened while the ring was full in the middle of a walk."""
    peer = wire_mac(emulated_port)
    frames = [make_frame(VF0_MAC, peer, seq) for seq in range(10)]
    count = counters()
    with PacketPort(emulated_port.vf(0), count, ring_frames=8, block_size=4096) as port:
        rx = Receiver(port)
        peer_send(emulated_port, frames[:7])  # one slot left

        def deliver(frame: memoryview, now: int, trusted: bool) -> None:
            rx.deliver(frame, now, trusted)
            if len(rx.frames) == 1:  # its slot is still held: 1 fits, 1 drops
                peer_send(emulated_port, frames[7:9])

        assert port.receive_batch(deliver, 0) == 8
        assert count[NicCounter.RX_RING_DROPS] == 0  # not reported yet
        peer_send(emulated_port, frames[9:])
        rx.until(9)
    assert rx.ours() == frames[:8] + frames[9:]
    assert count[NicCounter.RX_RING_DROPS] == 1


def test_frame_that_breaks_deliver_is_not_delivered_again(emulated_port):
    peer = wire_mac(emulated_port)
    burst = [make_frame(VF0_MAC, peer, seq) for seq in range(3)]
    seen: list[bytes] = []

    def fragile(frame: memoryview, now: int, trusted: bool) -> None:
        seen.append(bytes(frame))
        if len(seen) == 2:
            raise RuntimeError("stack bug")

    with PacketPort(emulated_port.vf(0), counters()) as port:
        peer_send(emulated_port, burst)
        with pytest.raises(RuntimeError):
            port.receive_batch(fragile, 0)
        assert port.receive_batch(fragile, 0) == 1
    assert seen == burst


# --- transmit ----------------------------------------------------------------


def test_transmitted_frames_arrive_at_peer_byte_exact(emulated_port):
    peer = wire_mac(emulated_port)
    sizes = [60, 61, 128, 1000, 1514]
    frames = [make_frame(peer, VF0_MAC, seq, size) for seq, size in enumerate(sizes)]
    frames.append(bytearray(make_frame(BROADCAST, VF0_MAC, 99)))
    count = counters()
    capture = PeerCapture(emulated_port, len(frames))
    with PacketPort(emulated_port.vf(0), count) as port:
        assert port.transmit(frames) == len(frames)
        assert not port.tx_pending
    assert capture.frames() == frames
    assert count[NicCounter.TX_PACKETS] == len(frames)
    assert count[NicCounter.TX_BYTES] == sum(len(f) for f in frames)
    assert count[NicCounter.TX_ERRORS] == 0


def test_own_frames_are_not_received_back(emulated_port):
    count = counters()
    with PacketPort(emulated_port.vf(0), count) as port:
        rx = Receiver(port)
        port.transmit([make_frame(BROADCAST, VF0_MAC, seq) for seq in range(20)])
        # An echo would be in the ring by now: transmission is synchronous on veth.
        rx.until(1, timeout=0.3)
    assert rx.ours() == []
    assert count[NicCounter.RX_OUTGOING] == 0


def test_outgoing_frames_skipped_without_ignore_outgoing(emulated_port):
    """The fallback for kernels before 4.20: PACKET_OUTGOING frames are skipped."""
    count = counters()
    with PacketPort(emulated_port.vf(0), count) as port:
        # A dup of the port's socket: the option is the socket's, not the fd's.
        with socket.fromfd(port.fileno(), socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 0)
        rx = Receiver(port)
        # Another local sender on the interface (the port never sees its own).
        with PacketPort(emulated_port.vf(0), counters()) as other:
            other.transmit([make_frame(BROADCAST, VF0_MAC, seq) for seq in range(5)])
        deadline = time.monotonic() + 5
        while count[NicCounter.RX_OUTGOING] < 5 and time.monotonic() < deadline:
            rx.poller.poll(100)
            port.receive_batch(rx.deliver, 0)
    assert count[NicCounter.RX_OUTGOING] == 5
    assert rx.ours() == []


def test_refused_frames_are_counted_not_raised(emulated_port):
    peer = wire_mac(emulated_port)
    good = [make_frame(peer, VF0_MAC, 0), make_frame(peer, VF0_MAC, 1)]
    too_long = make_frame(peer, VF0_MAC, 2, 1515)  # MTU 1500 + 14
    count = counters()
    capture = PeerCapture(emulated_port, 2)
    with PacketPort(emulated_port.vf(0), count) as port:
        assert port.transmit([good[0], too_long, b"\x00" * 5, good[1]]) == 2
        subprocess.run(["ip", "link", "set", emulated_port.vf(0), "down"], check=True)
        assert port.transmit([good[0]]) == 0  # ENETDOWN
    assert capture.frames() == good
    assert count[NicCounter.TX_ERRORS] == 3
    assert count[NicCounter.TX_PACKETS] == 2
    assert count[NicCounter.TX_DEFERRED] == 0


def test_a_run_of_segments_leaves_as_one_super_frame_and_a_down_link_does_not_end_gso(
    emulated_port,
):
    """A run of one flow's segments is one send (TX_GSO_SENDS), each segment
    counted as a frame. With the link down its frames fail one by one as
    TX_ERRORS; that is the link's doing, not the device refusing GSO, so
    the next run, link up again, is a super-frame again."""
    run = frames_of(
        tcp_host(our_mac=VF0_MAC, peer_mac=wire_mac(emulated_port)),
        [(1000 + i * 1000, ACK, bytes(1000)) for i in range(3)],
    )
    count = counters()
    vf = emulated_port.vf(0)
    with PacketPort(vf, count) as port:
        assert port.transmit(run) == 3
        assert (count[NicCounter.TX_GSO_SENDS], count[NicCounter.TX_PACKETS]) == (1, 3)
        assert count[NicCounter.TX_BYTES] == sum(len(frame) for frame in run)
        subprocess.run(["ip", "link", "set", vf, "down"], check=True)
        assert port.transmit(run) == 0  # ENETDOWN, for the run and for each frame
        assert count[NicCounter.TX_ERRORS] == 3
        subprocess.run(["ip", "link", "set", vf, "up"], check=True)
        assert port.transmit(run) == 3
    assert (count[NicCounter.TX_GSO_SENDS], count[NicCounter.TX_PACKETS]) == (2, 6)


def test_without_gso_every_frame_is_its_own_send(emulated_port):
    run = frames_of(
        tcp_host(our_mac=VF0_MAC, peer_mac=wire_mac(emulated_port)),
        [(1000 + i * 1000, ACK, bytes(1000)) for i in range(3)],
    )
    count = counters()
    with PacketPort(emulated_port.vf(0), count, gso=False) as port:
        assert port.transmit(run) == 3
    assert (count[NicCounter.TX_GSO_SENDS], count[NicCounter.TX_PACKETS]) == (0, 3)


def engine_run(port: EmulatedPort) -> tuple[SuperFrame, list[bytearray]]:
    """Four 1000-byte segments to the peer, as the TCP engine builds them
    with offload (stackservice.net.offload), and as one frame each."""
    frames = frames_of(
        tcp_host(our_mac=VF0_MAC, peer_mac=wire_mac(port)),
        [(1000 + i * 1000, ACK, bytes([i]) * 1000) for i in range(4)],
    )
    packet = super_frame(frames, 0, 4)
    run = SuperFrame(len(packet) - VNET_HEADER_LEN, 1000, 4)
    run[:] = packet[VNET_HEADER_LEN:]
    return run, frames


def test_an_engine_super_frame_is_one_send_counted_as_its_segments(emulated_port):
    """With the link down it fails as its segments, one by one (TX_ERRORS),
    and the port keeps GSO: the link's doing, not the device refusing it."""
    run, frames = engine_run(emulated_port)
    count = counters()
    vf = emulated_port.vf(0)
    with PacketPort(vf, count) as port:
        assert port.segmentation_offload
        assert port.transmit([run, frames[0], run]) == 9
        assert (count[NicCounter.TX_GSO_SENDS], count[NicCounter.TX_PACKETS]) == (2, 9)
        assert count[NicCounter.TX_BYTES] == 2 * wire_length(run) + len(frames[0])
        subprocess.run(["ip", "link", "set", vf, "down"], check=True)
        assert port.transmit([run]) == 0
        assert count[NicCounter.TX_ERRORS] == 4
        subprocess.run(["ip", "link", "set", vf, "up"], check=True)
        assert port.segmentation_offload
        assert port.transmit([run]) == 4
    assert (count[NicCounter.TX_GSO_SENDS], count[NicCounter.TX_PACKETS]) == (3, 13)


def test_without_gso_an_engine_super_frame_leaves_as_its_segments(emulated_port):
    run, frames = engine_run(emulated_port)
    count = counters()
    capture = PeerCapture(emulated_port, 2 * len(frames), ethertype=0x0800)
    with PacketPort(emulated_port.vf(0), count, gso=False) as port:
        assert not port.segmentation_offload
        assert port.transmit([run, run]) == 8
    assert capture.frames() == [bytes(f) for f in frames] * 2
    assert (count[NicCounter.TX_GSO_SENDS], count[NicCounter.TX_PACKETS]) == (0, 8)


def test_a_deferred_super_frame_waits_as_its_segments(emulated_port):
    """The backlog holds plain frames (and copies): a super-frame the
    kernel pushed back goes later as its segments, in order."""
    run, frames = engine_run(emulated_port)
    lone = make_frame(BROADCAST, VF0_MAC, 7)
    count = counters()
    capture = PeerCapture(emulated_port, len(frames), ethertype=0x0800)
    with PacketPort(emulated_port.vf(0), count, gso=False) as port:
        port._defer([run, lone], 0)
        run[:] = bytes(len(run))  # the caller may reuse its buffers at once
        assert port.tx_pending
        assert port.transmit([]) == len(frames) + 1
    assert capture.frames() == [bytes(f) for f in frames]
    assert count[NicCounter.TX_DEFERRED] == len(frames) + 1


def test_backpressure_defers_frames_and_sends_them_in_order(emulated_port):
    """A token-bucket qdisc that holds ~3 frames makes the kernel refuse
    (ENOBUFS); refused frames go in order with later transmit() calls."""
    vf = emulated_port.vf(0)
    shape(vf, "2mbit")
    peer = wire_mac(emulated_port)
    frames = [make_frame(peer, VF0_MAC, seq, 1000) for seq in range(30)]
    count = counters()
    capture = PeerCapture(emulated_port, len(frames), timeout=10)
    with PacketPort(vf, count) as port:
        first = port.transmit(frames)
        assert 0 < first < len(frames)
        assert port.tx_pending
        deadline = time.monotonic() + 10
        while port.tx_pending and time.monotonic() < deadline:
            time.sleep(0.002)
            port.transmit([])
        assert not port.tx_pending
    assert capture.frames() == frames
    assert count[NicCounter.TX_PACKETS] == len(frames)
    assert count[NicCounter.TX_DEFERRED] == len(frames) - first
    assert count[NicCounter.TX_DROPPED] == 0


def test_backlog_bound_drops_the_excess(emulated_port):
    vf = emulated_port.vf(0)
    shape(vf, "1mbit")
    frames = [make_frame(BROADCAST, VF0_MAC, seq, 1000) for seq in range(30)]
    count = counters()
    with PacketPort(vf, count, tx_backlog=5) as port:
        first = port.transmit(frames)
        assert port.tx_pending
    assert count[NicCounter.TX_DEFERRED] == 5
    assert count[NicCounter.TX_DROPPED] == len(frames) - first - 5


# --- life cycle --------------------------------------------------------------


def test_close_is_idempotent_and_missing_interface_raises(emulated_port):
    port = PacketPort(emulated_port.vf(0), counters())
    with port:
        assert port.fileno() >= 0
    port.close()
    with pytest.raises(OSError):
        PacketPort(emulated_port.vf(0) + "x", counters())


def test_bad_ring_geometry_is_refused():
    with pytest.raises(ValueError):
        PacketPort("lo", counters(), frame_size=100)
    with pytest.raises(ValueError):
        PacketPort("lo", counters(), ring_frames=3, block_size=4096)
