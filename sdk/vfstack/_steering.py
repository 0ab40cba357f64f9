"""Which worker of an instance holds a flow: the contract between the
stack's steering (stackservice.nic.fanout, a classic-BPF program that
computes the same) and the SDK, which attaches once per worker and must
open each connection on the worker that the flow's frames reach.

Worker i of N owns the ephemeral ports p with p mod N == i: its active
opens pick their local port among them, so the replies come back to it.
A flow whose local port is not ephemeral (a listener's connections, or a
socket bound to a well-known port) goes by a hash of the peer's port.
"""

from __future__ import annotations

__all__ = ["EPHEMERAL_FIRST", "EPHEMERAL_LAST", "MAX_WORKERS", "worker_of"]

EPHEMERAL_FIRST = 32768  # Linux's ip_local_port_range
EPHEMERAL_LAST = 60999
MAX_WORKERS = 64  # workers of one instance
# Linux's connect() prefers even ports, so a client's port mod N would
# send every Linux client to one worker of two: its port is mixed first
# (Fibonacci hashing, the top 16 of 32 bits).
PORT_MIX = 0x9E3779B1


def worker_of(our_port: int, peer_port: int, workers: int) -> int:
    """Which worker the steering hands a TCP segment between `our_port`
    and `peer_port` to, in either direction."""
    if EPHEMERAL_FIRST <= our_port <= EPHEMERAL_LAST:
        return our_port % workers
    return (((peer_port * PORT_MIX) & 0xFFFFFFFF) >> 16) % workers
