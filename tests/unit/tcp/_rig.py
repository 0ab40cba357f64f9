"""A TCP engine on a fake wire: tests hand it segments from an imaginary
peer and read back what it sends, with time as plain integers (µs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stackservice.net.ethernet import HEADER_LEN as ETH_HEADER_LEN
from stackservice.net.host import FRAME_HEADROOM
from stackservice.net.ipv4 import PROTO_TCP, Ipv4View, write_header
from stackservice.net.offload import SuperFrame
from stackservice.nic.gso import segment
from stackservice.tcp.counters import TCP_COUNTER_COUNT, TcpCounter
from stackservice.tcp.drops import TCP_DROP_REASON_COUNT, TcpDropReason
from stackservice.tcp.engine import TcpEngine
from stackservice.tcp.portshare import PortShare
from stackservice.tcp.segment import ACK, NO_OPTIONS, TcpOptions, TcpRepr, TcpView
from stackservice.tcp.settings import TcpSettings
from stackservice.tcp.state import TCP_STATE_COUNT
from tests.support.checks import ip

LOCAL_IP = ip("198.18.0.10")
PEER_IP = ip("198.18.0.1")
LOCAL_PORT = 80
PEER_PORT = 40000
SECRET = bytes(range(32))
MS = 1000


def tcp_segments(frame: bytearray, src: int, dst: int) -> list[memoryview]:
    """The TCP segments in a frame the engine sent: one, or a super-frame's
    as the kernel cuts it (after the IPv4 header the host would write)."""
    if type(frame) is not SuperFrame:
        return [memoryview(bytes(frame))[FRAME_HEADROOM:]]
    write_header(frame, ETH_HEADER_LEN, src, dst, PROTO_TCP, len(frame) - FRAME_HEADROOM, 1)
    return [memoryview(bytes(piece))[FRAME_HEADROOM:] for piece in segment(frame)]


@dataclass(frozen=True)
class Sent:
    """One segment the engine sent, parsed back."""

    dst: int
    seg: TcpRepr
    payload: bytes

    @property
    def flags(self) -> int:
        return self.seg.flags


# Whether a Rig's engine sends runs of segments as super-frames, unless a
# test says: conftest.py runs every test here both ways.
offload_by_default = False


@dataclass
class Rig:
    """One engine and everything it sent since the last `take()`: a
    super-frame as the segments the kernel cuts it into (`super_frames`
    counts them)."""

    settings: TcpSettings = field(default_factory=TcpSettings)
    sent: list[Sent] = field(default_factory=list)
    engine_class: type[TcpEngine] = TcpEngine  # a subclass, to make a method fail
    ports: PortShare | None = None  # one worker's share of several
    segmentation_offload: bool | None = None  # None: offload_by_default

    def __post_init__(self) -> None:
        self.counters = [0] * TCP_COUNTER_COUNT
        self.drops = [0] * TCP_DROP_REASON_COUNT
        self.states = [0] * TCP_STATE_COUNT
        if self.segmentation_offload is None:
            self.segmentation_offload = offload_by_default
        self.super_frames = 0
        self.frames = 0  # handed to send_frame, super-frames included
        self.engine = self.engine_class(
            LOCAL_IP, self._send, self._route, self.settings, self.counters, self.drops,
            self.states, SECRET, ports=self.ports, segmentation_offload=self.segmentation_offload,
        )  # fmt: skip

    def _send(self, dst: int, protocol: int, frame: bytearray, now: int) -> bool:
        assert protocol == PROTO_TCP
        self.frames += 1
        if type(frame) is SuperFrame:
            assert self.segmentation_offload
            self.super_frames += 1
        for octets in tcp_segments(frame, LOCAL_IP, dst):
            view = TcpView.checked(octets)
            seg = TcpRepr.parse(view, LOCAL_IP, dst, False)  # our checksum must verify
            self.sent.append(Sent(dst, seg, bytes(view.payload())))
        return True

    @staticmethod
    def _route(dst: int) -> int | None:
        return dst if dst != LOCAL_IP else None

    def deliver(
        self,
        now: int,
        seq: int,
        ack: int = 0,
        flags: int = ACK,
        window: int = 65535,
        payload: bytes = b"",
        options: TcpOptions = NO_OPTIONS,
        src_port: int = PEER_PORT,
        dst_port: int = LOCAL_PORT,
        src_ip: int = PEER_IP,
    ) -> None:
        """Hand the engine one segment from the peer (checksum computed)."""
        rep = TcpRepr(src_port, dst_port, seq, ack, flags, window, 0, options, len(payload))
        datagram = bytearray(20 + rep.buffer_len())
        rep.emit(datagram, src_ip, LOCAL_IP, payload, offset=20)
        write_header(datagram, 0, src_ip, LOCAL_IP, PROTO_TCP, rep.buffer_len(), 1)
        header = Ipv4View.checked(memoryview(datagram), True)
        self.engine.on_segment(header, now, False)

    def flush(self, now: int) -> list[Sent]:
        """Run due timers and the output lists; return what went out."""
        if (deadline := self.engine.poll_at()) is not None and deadline <= now:
            self.engine.on_timer(now)
        self.engine.flush(now)
        return self.take()

    def take(self) -> list[Sent]:
        sent, self.sent = self.sent, []
        return sent

    def dropped(self) -> dict[str, int]:
        return {r.name.lower(): n for r, n in zip(TcpDropReason, self.drops, strict=True) if n}

    def counted(self, counter: TcpCounter) -> int:
        return self.counters[counter]
