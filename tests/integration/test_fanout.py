"""Per-worker steering (stackservice.nic.fanout) in the kernel: frames the
peer puts on the wire land in exactly the PacketPort the policy names.

The program runs in the kernel's classic-BPF interpreter, so these frames
test what the stack's workers will actually get: ports, IPv4 options (the
header-length load), fragments and the non-TCP traffic worker 0 answers.
"""

from __future__ import annotations

import os
import socket
import struct

import pytest

from stackservice.nic.emulate import vf_mac
from stackservice.nic.fanout import join_fanout, steering_program, worker_of
from stackservice.nic.packet_io import NicCounter, PacketPort
from stackservice.tcp.portshare import EPHEMERAL_FIRST, EPHEMERAL_LAST, PortShare
from tests.integration.test_packet_io import Receiver, peer_send, wire_mac

pytestmark = pytest.mark.root

WORKERS = 3
VF0_MAC = bytes.fromhex(vf_mac(0).replace(":", ""))
STACK_IP = bytes((198, 18, 0, 10))
PEER_IP = bytes((198, 18, 0, 1))


def ipv4_frame(
    src_mac: bytes,
    ident: int,
    protocol: int = 6,
    ports: tuple[int, int] = (80, 80),
    fragment: int = 0,
    options: bytes = b"",
) -> bytes:
    """An IPv4 frame to VF 0 whose IP id names the case; for TCP and UDP
    the payload starts with (source port, destination port)."""
    ihl = 5 + len(options) // 4
    payload = struct.pack("!HH", *ports) + bytes(16)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), ident, fragment, 64,
        protocol, 0, PEER_IP, STACK_IP,
    ) + options  # fmt: skip
    return VF0_MAC + src_mac + b"\x08\x00" + header + payload


def arp_frame(src_mac: bytes) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src_mac, PEER_IP, bytes(6), STACK_IP)
    return b"\xff" * 6 + src_mac + b"\x08\x06" + body


def cases(src_mac: bytes) -> list[tuple[str, bytes, int]]:
    """(what, frame, the worker it must reach)."""
    n = WORKERS

    def tcp(ident: int, peer: int, ours: int, **kw) -> bytes:
        return ipv4_frame(src_mac, ident, ports=(peer, ours), **kw)

    return [
        ("client of a well-known port", tcp(1, 40_001, 80), worker_of(80, 40_001, n)),
        ("another client", tcp(2, 40_004, 80), worker_of(80, 40_004, n)),
        ("reply to an active open", tcp(3, 80, 40_000), 40_000 % n),
        ("reply, first ephemeral port", tcp(4, 443, EPHEMERAL_FIRST), EPHEMERAL_FIRST % n),
        ("reply, last ephemeral port", tcp(5, 443, EPHEMERAL_LAST), EPHEMERAL_LAST % n),
        ("destination above the range", tcp(6, 33_334, 61_000), worker_of(61_000, 33_334, n)),
        ("destination below the range", tcp(7, 40_001, 32_767), worker_of(32_767, 40_001, n)),
        ("IPv4 options", tcp(8, 40_001, 80, options=bytes(8)), worker_of(80, 40_001, n)),
        ("peer's ephemeral to ours", tcp(9, 50_000, 40_000), 40_000 % n),
        ("later fragment", tcp(10, 40_001, 80, fragment=185), 0),
        ("first fragment", tcp(11, 40_001, 80, fragment=0x2000), 0),
        ("UDP", ipv4_frame(src_mac, 12, protocol=17, ports=(40_001, 40_001)), 0),
        ("ICMP", ipv4_frame(src_mac, 13, protocol=1), 0),
        ("ARP", arp_frame(src_mac), 0),
    ]


def test_the_cases_reach_every_worker_so_they_can_fail():
    assert {worker for *_, worker in cases(bytes(6))} == set(range(WORKERS))


def test_clients_with_even_ports_spread_over_two_workers():
    """Linux's connect() prefers even ports: a port mod 2 would put every
    Linux client on worker 0."""
    spread = [worker_of(80, port, 2) for port in range(EPHEMERAL_FIRST, EPHEMERAL_FIRST + 2000, 2)]
    assert 0.4 < sum(spread) / len(spread) < 0.6


def test_the_program_is_what_the_kernel_accepts_and_bounded():
    with pytest.raises(ValueError):
        steering_program(0)
    # Every jump lands inside the program (the kernel checks it too).
    program = steering_program(WORKERS)
    for index, (code, jt, jf, _) in enumerate(program):
        if code & 0x07 == 0x05:  # BPF_JMP
            assert index + 1 + max(jt, jf) < len(program)
    assert program[-1][0] & 0x07 == 0x06  # ends with a return


def test_every_frame_reaches_exactly_the_worker_the_policy_names(emulated_port):
    vf = emulated_port.vf(0)
    group = socket.if_nametoindex(vf)
    counters = [[0] * len(NicCounter) for _ in range(WORKERS)]
    ports = [
        PacketPort(vf, counters[i], ring_frames=32, block_size=1 << 16,
                   fanout=(group, i, WORKERS))
        for i in range(WORKERS)
    ]  # fmt: skip
    try:
        receivers = [Receiver(port) for port in ports]
        expected = cases(wire_mac(emulated_port))
        peer_send(emulated_port, [frame for _, frame, _ in expected])
        for receiver in receivers:
            receiver.port.receive_batch(receiver.deliver, 0)
        got: dict[bytes, list[int]] = {}
        for worker, receiver in enumerate(receivers):
            for frame in receiver.frames:
                got.setdefault(bytes(frame), []).append(worker)
        for what, frame, worker in expected:
            # ARP goes to the first worker, and a copy to each other one.
            wanted = list(range(WORKERS)) if what == "ARP" else [worker]
            assert got.get(frame) == wanted, what
    finally:
        for port in ports:
            port.close()


def test_replies_to_each_workers_ports_come_back_to_it(emulated_port):
    """What the engine relies on: any port PortShare gives worker i is
    steered to worker i when the peer answers from a well-known port."""
    vf = emulated_port.vf(0)
    group = socket.if_nametoindex(vf)
    ports = [
        PacketPort(vf, [0] * len(NicCounter), ring_frames=64, block_size=1 << 16,
                   fanout=(group, i, 2))
        for i in range(2)
    ]  # fmt: skip
    try:
        src = wire_mac(emulated_port)
        shares = [PortShare(i, 2) for i in range(2)]
        sent = {}
        for worker, share in enumerate(shares):
            for k in (0, 1, 7, share.count - 1):
                frame = ipv4_frame(src, len(sent), ports=(443, share.port(k)))
                sent[frame] = worker
        peer_send(emulated_port, list(sent))
        for worker, port in enumerate(ports):
            receiver = Receiver(port)
            port.receive_batch(receiver.deliver, 0)
            assert {f for f in map(bytes, receiver.frames) if f in sent} == {
                f for f, w in sent.items() if w == worker
            }
    finally:
        for port in ports:
            port.close()


def test_joining_a_group_of_another_interface_fails(emulated_port):
    group = socket.if_nametoindex(emulated_port.vf(0))
    with PacketPort(emulated_port.vf(0), [0] * len(NicCounter), ring_frames=32,
                    fanout=(group, 0, 2)):  # fmt: skip
        other = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            other.bind((emulated_port.vf(1), 0x0003))
            with pytest.raises(OSError):
                join_fanout(other, group, 2, first=False)
        finally:
            other.close()


def test_every_worker_but_the_first_hears_a_copy_of_each_arp_frame(emulated_port):
    vf = emulated_port.vf(0)
    group = socket.if_nametoindex(vf)
    counters = [[0] * len(NicCounter) for _ in range(3)]
    ports = [PacketPort(vf, counters[i], ring_frames=32, fanout=(group, i, 3)) for i in range(3)]
    try:
        assert ports[0].arp_fileno() == -1 and min(p.arp_fileno() for p in ports[1:]) >= 0
        src = wire_mac(emulated_port)
        arp, tcp = arp_frame(src), ipv4_frame(src, 1, ports=(40_001, 80))
        peer_send(emulated_port, [arp, tcp])
        got = []
        for port in ports:
            receiver = Receiver(port)
            port.receive_batch(receiver.deliver, 0)
            got.append([bytes(f) for f in receiver.frames if f in (arp, tcp)])
        assert got == [[arp], [arp], [tcp, arp]]
        # The copies are not counted as received: the first worker did.
        assert [c[NicCounter.RX_PACKETS] for c in counters] == [1, 0, 1]
    finally:
        for port in ports:
            port.close()


@pytest.mark.parametrize("read", [2, 5], ids=["frames left", "nothing left"])
def test_a_successor_takes_the_ring_over_where_a_dead_reader_left_it(emulated_port, read):
    """A restarted worker is a fork of the supervisor, whose copy of the
    port never read: it must resume at the oldest frame the dead worker
    left unread, in order, or, if it left none, at the next one to come;
    not at the ring's first slot."""
    vf = emulated_port.vf(0)
    src = wire_mac(emulated_port)
    frames = [ipv4_frame(src, ident, ports=(40_001, 80)) for ident in range(1, 9)]
    with PacketPort(vf, [0] * len(NicCounter), ring_frames=32) as port:
        peer_send(emulated_port, frames[:5])
        pid = os.fork()
        if pid == 0:  # the worker: reads some frames, then dies
            port.receive_batch(lambda frame, now, trusted: None, 0, limit=read)
            os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        port.recover()
        receiver = Receiver(port)
        assert port.receive_batch(receiver.deliver, 0) == 5 - read
        assert [f for f in map(bytes, receiver.frames) if f in frames] == frames[read:5]
        peer_send(emulated_port, frames[5:])
        port.receive_batch(receiver.deliver, 0)
        assert [f for f in map(bytes, receiver.frames) if f in frames] == frames[read:]
