"""Per-worker flow steering: one PACKET_FANOUT group per instance.

An instance with N workers opens N AF_PACKET sockets on its interface
and joins them, in worker order, to one fanout group in mode
PACKET_FANOUT_CBPF: for every frame the kernel runs the group's
classic-BPF program and hands the frame to the member whose join index
is the program's result modulo the group size. No frame is copied to two
workers, and none crosses between them afterwards.

The program is the whole steering policy (mTCP §4's per-core flow
affinity without RSS):

- worker i owns the ephemeral ports p (EPHEMERAL_FIRST..EPHEMERAL_LAST)
  with p mod N == i; active opens pick their local port among them
  (`stackservice.tcp.portshare`), so the peer's replies come back to the opener;
- an IPv4 TCP frame that is not a fragment goes to its destination port
  mod N when that port is ephemeral (a reply to an active open, or a
  connection to a listener on an ephemeral port), else to a hash of its
  source port mod N (a client of a listener on a well-known port: its
  random port spreads connections over the workers; `worker_of`, from
  vfstack._steering, which the SDK shares);
- everything else (ARP, ICMP, fragments, other protocols) goes to
  worker 0, which answers for the instance.

Both directions of a flow depend only on (our port, their port), so every
frame of a flow reaches the one worker that holds its TCB. Hardware RSS
would spread by a seeded hash instead, and PACKET_FANOUT_HASH uses the
kernel's seeded flow hash: neither can be aimed at the worker that picked
the port. On a VF with several queues, PACKET_FANOUT_QM (a member per
queue) plus an ntuple rule per worker's port set would move this
decision into the NIC.

Join order is the index: a member that leaves shifts the last member into
its place, so the workers' sockets stay open (held by the supervisor) for
the instance's life.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from vfstack._steering import EPHEMERAL_FIRST, EPHEMERAL_LAST, MAX_WORKERS, PORT_MIX, worker_of

__all__ = ["join_fanout", "steering_program", "worker_of"]

SOL_PACKET = 263
PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_CBPF = 6
# Our own transmitted frames would pass through the group too (with their
# data at the Ethernet header, which the program does not expect).
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000


# <linux/filter.h> classic BPF opcodes
_LD_H_ABS = 0x28  # A = u16 at [k]
_LD_B_ABS = 0x30  # A = u8 at [k]
_LDX_B_MSH = 0xB1  # X = 4 * ([k] & 0xf): the IPv4 header length
_LD_H_IND = 0x48  # A = u16 at [X + k]
_JEQ = 0x15
_JGE = 0x35
_JGT = 0x25
_JSET = 0x45
_MUL_K = 0x24  # A *= k (32 bits)
_RSH_K = 0x74  # A >>= k
_MOD_K = 0x94  # A %= k
_RET_A = 0x16
_RET_K = 0x06

# The kernel runs the program on a received frame with its data at the
# network header: offsets are into the IPv4 header, and the ethertype is
# the ancillary load SKF_AD_OFF + SKF_AD_PROTOCOL (in host order).
_SKF_AD_PROTOCOL = 0xFFFFF000
_ETHERTYPE_IPV4 = 0x0800
_PROTO_TCP = 6
_FRAGMENT = 0x3FFF  # MF flag or a fragment offset: not a whole datagram

_SOCK_FILTER = struct.Struct("=HBBI")  # code, jt, jf, k


def steering_program(workers: int) -> list[tuple[int, int, int, int]]:
    """The classic-BPF program of the module docstring, as (code, jt, jf, k)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be 1..{MAX_WORKERS}")
    other = 15  # index of the final "ret #0"
    program = [
        (_LD_H_ABS, 0, 0, _SKF_AD_PROTOCOL),  # 0: ethertype
        (_JEQ, 0, other - 2, _ETHERTYPE_IPV4),  # 1
        (_LD_B_ABS, 0, 0, 9),  # 2: protocol
        (_JEQ, 0, other - 4, _PROTO_TCP),  # 3
        (_LD_H_ABS, 0, 0, 6),  # 4: flags and fragment offset
        (_JSET, other - 6, 0, _FRAGMENT),  # 5
        (_LDX_B_MSH, 0, 0, 0),  # 6: X = IPv4 header length
        (_LD_H_IND, 0, 0, 2),  # 7: destination port
        (_JGE, 0, 1, EPHEMERAL_FIRST),  # 8: below the range -> 10
        (_JGT, 0, 3, EPHEMERAL_LAST),  # 9: in it -> 13 with A = destination
        (_LD_H_IND, 0, 0, 0),  # 10: source port
        (_MUL_K, 0, 0, PORT_MIX),  # 11
        (_RSH_K, 0, 0, 16),  # 12
        (_MOD_K, 0, 0, workers),  # 13
        (_RET_A, 0, 0, 0),  # 14
        (_RET_K, 0, 0, 0),  # 15 (other): worker 0
    ]
    assert len(program) == other + 1
    return program


def join_fanout(sock: socket.socket, group: int, workers: int, first: bool) -> None:
    """Join bound packet socket `sock` to fanout group `group` (16 bits,
    unique per network namespace: the interface's index). The first member
    also installs the steering program, which the group shares. Members
    must join in worker order: the join index is the worker index.

    Raises OSError (EINVAL: `sock` not bound, or the group is bound to
    another interface or mode)."""
    mode = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_IGNORE_OUTGOING
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (group & 0xFFFF) | mode << 16)
    if not first:
        return
    program = steering_program(workers)
    code = ctypes.create_string_buffer(b"".join(_SOCK_FILTER.pack(*i) for i in program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }:
    # the kernel copies the program during the call.
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, fprog)
