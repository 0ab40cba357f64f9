"""Fault containment in the loop (docs/architecture.md principle 5): a real Instance
(host, TCP engine, diag services, sessions, StackLoop) run in-process over
a scripted port. A bug one frame meets costs that frame; one a connection's
handler or output meets costs that connection; each is counted at its site
in the instance's `internal_errors` counters. Strict, the loop ends with it."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterator

import pytest

from stackservice.config import InstanceConfig
from stackservice.diag import DiagServices
from stackservice.instance import Instance
from stackservice.metrics.counters import CounterBlock
from stackservice.metrics.layout import INSTANCE_LAYOUT
from stackservice.net import host as host_module
from stackservice.net.host import FRAME_HEADROOM
from stackservice.net.ipv4 import write_header
from stackservice.tcp.segment import ACK, NO_OPTIONS, PSH, RST, SYN, TcpRepr, TcpView
from tests.support.faults import InjectedFault, inject
from tests.unit.net._frames import (
    ARP_REQUEST,
    ETH_IPV4,
    OUR_IP,
    OUR_MAC,
    PEER_IP,
    PEER_MAC,
    PROTO_ICMP,
    PROTO_TCP,
    ZERO_MAC,
    arp_frame,
    echo_request_frame,
    eth,
)

PEER_ISS = 1000
FAULTY, HEALTHY = 40001, 40002  # the peer's ports


class ScriptedPort:
    """What StackLoop needs of a PacketPort. Each loop pass receives the
    frames the script yields next (it may read `sent`, what the stack has
    transmitted so far); when the script ends, the stop fd turns readable
    and the loop returns. Always readable, so the loop never sleeps."""

    tx_pending = False
    segmentation_offload = False  # (make_instance's `gso`) what it sent is read a frame a segment

    def __init__(self) -> None:
        self._ready, self._ready_peer = socket.socketpair()
        self._ready_peer.send(b"x")
        self._stop, self._stop_peer = socket.socketpair()
        self.sent: list[bytes] = []
        self.script: Iterator[list[bytes]] = iter(())

    def fileno(self) -> int:
        return self._ready.fileno()

    def arp_fileno(self) -> int:
        return -1  # one worker: no ARP copies

    @property
    def stop_fd(self) -> int:
        return self._stop.fileno()

    def receive_batch(self, deliver, now) -> int:
        frames = next(self.script, None)
        if frames is None:
            self._stop_peer.send(b"x")
            return 0
        for frame in frames:
            deliver(memoryview(frame), now, False)
        return len(frames)

    def transmit(self, frames) -> int:
        self.sent.extend(bytes(frame) for frame in frames)
        return len(frames)

    def collect_drops(self) -> None:
        pass

    def close(self) -> None:
        for sock in (self._ready, self._ready_peer, self._stop, self._stop_peer):
            sock.close()


@pytest.fixture
def make_instance(tmp_path):
    """make(strict) -> (Instance with diag services, its ScriptedPort)."""
    made = []

    def make(strict: bool = False, gso: bool = False) -> tuple[Instance, ScriptedPort]:
        config = InstanceConfig.build(
            iface="fake0", ip="198.18.0.10/24", run_dir=str(tmp_path), strict=strict
        )
        counters = CounterBlock(INSTANCE_LAYOUT)
        port = ScriptedPort()
        port.segmentation_offload = gso
        instance = Instance(config, "emulated", "02:00:00:00:00:10", counters, port)
        DiagServices(instance.engine)
        made.append((counters, port))
        return instance, port

    yield make
    for counters, port in made:
        counters.close()
        port.close()


def internal_errors(instance: Instance) -> dict[str, int]:
    return {k: v for k, v in instance.counters.snapshot()["internal_errors"].items() if v}


def peer_arp() -> bytes:
    """The peer asks for us: the host learns its MAC (RFC 826 merge)."""
    return arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP)


def echo_replies(sent: list[bytes]) -> list[int]:
    """The sequence numbers of the ICMP echo replies in `sent`."""
    return [
        struct.unpack_from("!H", f, 40)[0]
        for f in sent
        if f[12:14] == b"\x08\x00" and f[23] == PROTO_ICMP and f[34] == 0
    ]


def tcp_frame(src_port: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    rep = TcpRepr(src_port, 80, seq, ack, flags, 65535, 0, NO_OPTIONS, len(payload))
    datagram = bytearray(20 + rep.buffer_len())
    rep.emit(datagram, PEER_IP, OUR_IP, payload, offset=20)
    write_header(datagram, 0, PEER_IP, OUR_IP, PROTO_TCP, rep.buffer_len(), 1)
    return eth(OUR_MAC, PEER_MAC, ETH_IPV4, bytes(datagram))


def segments(sent: list[bytes], port: int) -> list[tuple[TcpRepr, bytes]]:
    """The TCP segments in `sent` to the peer's `port`, with their payloads."""
    found = []
    for frame in sent:
        if frame[12:14] != b"\x08\x00" or frame[23] != PROTO_TCP:
            continue
        view = TcpView.checked(memoryview(frame[34:]))
        rep = TcpRepr.parse(view, OUR_IP, PEER_IP, False)
        if rep.dst_port == port:
            found.append((rep, bytes(view.payload())))
    return found


def http_exchange(port: ScriptedPort, requests: dict[int, bytes]) -> Iterator[list[bytes]]:
    """A script: the peer opens one connection to HTTP (80) from each port
    of `requests`, sends it that request, then waits a few passes."""
    yield [peer_arp()]
    yield [tcp_frame(p, PEER_ISS, 0, SYN) for p in requests]
    frames = []
    for p, request in requests.items():
        synacks = [rep for rep, _ in segments(port.sent, p) if rep.flags == SYN | ACK]
        if synacks:
            ack = synacks[0].seq + 1
            frames.append(tcp_frame(p, PEER_ISS + 1, ack, ACK | PSH, request))
    yield frames
    yield from ([] for _ in range(5))


def test_a_frame_that_meets_a_bug_is_dropped_and_the_next_ones_served(
    make_instance, monkeypatch, caplog
):
    inject(host_module, "echo_reply", lambda request: b"FAULT" in bytes(request),
           monkeypatch.setattr)  # fmt: skip
    instance, port = make_instance()
    port.script = iter(
        [
            [
                peer_arp(),
                echo_request_frame(seq=1),
                echo_request_frame(seq=2, data=b"FAULT"),
                echo_request_frame(seq=3),
            ],
            [echo_request_frame(seq=4, data=b"FAULT"), echo_request_frame(seq=5)],
        ]
    )
    with caplog.at_level(logging.ERROR, "stackservice.faults"):
        instance.run(port.stop_fd)
    assert echo_replies(port.sent) == [1, 3, 5]
    assert internal_errors(instance) == {"frame": 2}
    logged = [r for r in caplog.records if r.name == "stackservice.faults"]
    assert len(logged) == 2 and all(r.exc_info[0] is InjectedFault for r in logged)
    assert "where=frame" in logged[0].getMessage()


def test_the_engine_stops_building_runs_once_the_port_refuses_them(make_instance):
    """A device that refuses a super-frame turns GSO off for the port
    (PacketPort._send_gso); from the next batch on the engine sends
    segments one by one, not runs the port would cut up again."""
    instance, port = make_instance(gso=True)
    assert instance.engine.segmentation_offload

    def script():
        yield [peer_arp(), echo_request_frame(seq=1)]
        port.segmentation_offload = False  # what a refused super-frame leaves
        yield [echo_request_frame(seq=2)]

    port.script = script()
    instance.run(port.stop_fd)
    assert echo_replies(port.sent) == [1, 2]
    assert not instance.engine.segmentation_offload


def test_strict_a_frame_that_meets_a_bug_ends_the_loop(make_instance, monkeypatch):
    inject(host_module, "echo_reply", lambda *_: True, monkeypatch.setattr)
    instance, port = make_instance(strict=True)
    port.script = iter([[peer_arp(), echo_request_frame(seq=1)], [echo_request_frame(seq=2)]])
    with pytest.raises(InjectedFault):
        instance.run(port.stop_fd)
    assert echo_replies(port.sent) == []


def test_a_handler_that_meets_a_bug_costs_its_connection_only(make_instance, monkeypatch):
    """Readiness to an in-process owner (the diag HTTP service): the
    connection whose handler failed is reset, the other one is answered."""
    from stackservice import diag

    inject(diag, "_requested_size", lambda target: target == "/fault", monkeypatch.setattr)
    instance, port = make_instance()
    requests = {FAULTY: b"GET /fault HTTP/1.0\r\n\r\n", HEALTHY: b"GET /5 HTTP/1.0\r\n\r\n"}
    port.script = http_exchange(port, requests)
    instance.run(port.stop_fd)
    faulty = segments(port.sent, FAULTY)
    assert faulty[-1][0].flags & RST and not any(data for _, data in faulty)
    answer = b"".join(data for _, data in segments(port.sent, HEALTHY))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'\r\n\r\n !"#$')
    assert internal_errors(instance) == {"event": 1}


def _syn_ack_to(port: int | None):
    """The engine's frame sink (`TcpEngine._send_frame`, the host's
    `send_in_frame`) is given a SYN-ACK to the peer's `port` (None: to any
    port). The fault goes in there, below the engine's output: compiled,
    the engine calls output's functions and the host its own in C, past
    any patch."""

    def when(dst, protocol, frame, now) -> bool:
        if protocol != PROTO_TCP:
            return False
        view = TcpView.unchecked(memoryview(frame)[FRAME_HEADROOM:])
        return bool(view.flags() & SYN) and port in (None, view.dst_port())

    return when


def test_a_connection_whose_output_meets_a_bug_is_aborted_others_go_on(make_instance, monkeypatch):
    """The engine contains it (engine.faults); the loop counts it."""
    instance, port = make_instance()
    inject(instance.engine, "_send_frame", _syn_ack_to(FAULTY), monkeypatch.setattr)
    requests = {FAULTY: b"GET /5 HTTP/1.0\r\n\r\n", HEALTHY: b"GET /5 HTTP/1.0\r\n\r\n"}
    port.script = http_exchange(port, requests)
    instance.run(port.stop_fd)
    faulty = [rep.flags for rep, _ in segments(port.sent, FAULTY)]
    assert faulty and all(flags & RST and not flags & SYN for flags in faulty)  # no SYN-ACK
    assert b"HTTP/1.1 200 OK" in b"".join(data for _, data in segments(port.sent, HEALTHY))
    assert internal_errors(instance) == {"output": 1}
    assert instance.engine.faults == []  # drained
    assert not any(tcb.remote_port == FAULTY for tcb in instance.engine.flows.values())


def test_a_batch_the_port_fails_on_is_dropped_and_the_next_sent(make_instance, monkeypatch):
    inject(ScriptedPort, "transmit", lambda _, frames: any(b"FAULT" in f for f in frames),
           monkeypatch.setattr)  # fmt: skip
    instance, port = make_instance()
    port.script = iter(
        [
            [peer_arp(), echo_request_frame(seq=1)],
            [echo_request_frame(seq=2, data=b"FAULT")],
            [echo_request_frame(seq=3)],
        ]
    )
    instance.run(port.stop_fd)
    assert echo_replies(port.sent) == [1, 3]
    assert internal_errors(instance) == {"output": 1}


def test_strict_engine_raises_a_connection_fault(make_instance, monkeypatch):
    instance, port = make_instance(strict=True)
    inject(instance.engine, "_send_frame", _syn_ack_to(None), monkeypatch.setattr)
    port.script = http_exchange(port, {FAULTY: b""})
    with pytest.raises(InjectedFault):
        instance.run(port.stop_fd)
