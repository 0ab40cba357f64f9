"""The instance's buffer memory (tcp/buffers.py BufferMemory, like Linux's
tcp_mem) against a remote peer that wants us to hold memory: out-of-order
bytes at the far edge of every window."""

from __future__ import annotations

from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.drops import TcpDropReason
from stackservice.tcp.settings import TcpSettings
from tests.unit.tcp._rig import MS, PEER_PORT, Rig
from tests.unit.tcp._states import PEER_ISS, accepted_from, established, seq

WINDOW = 64 * 1024  # what the fixtures' handshake (no window scaling) lets us offer
LIMIT = 4 << 20


def test_far_out_of_order_bytes_stop_growing_rings_at_the_pressure_mark() -> None:
    """One byte just inside each window costs a whole window of ring
    (64 KiB here, up to 4 MiB with window scaling): 64 connections would
    hold 4 MiB. Beyond 3/4 of
    the limit such bytes are refused (counted, duplicate ACK sent); the
    in-order path still works, and closing gives everything back."""
    rig = Rig(TcpSettings(receive_buffer=WINDOW, buffer_memory=LIMIT))
    memory = rig.engine.buffer_memory
    first = established(rig)
    tcbs = [first.tcb] + [accepted_from(rig, PEER_PORT + i) for i in range(1, 64)]
    now = first.now + MS
    for i, tcb in enumerate(tcbs):
        rig.deliver(now, seq=seq(PEER_ISS, WINDOW - 2000), ack=seq(tcb.iss, 1), payload=b"x",
                    src_port=PEER_PORT + i)  # fmt: skip
    acks = rig.flush(now)
    assert len(acks) == 64  # every one answered (RFC 5681 §4.2: a duplicate ACK)
    assert memory.held <= LIMIT * 3 // 4
    refused = rig.dropped().get(TcpDropReason.TCP_RCV_BUFFER_FULL.name.lower(), 0)
    assert refused >= 64 - (LIMIT * 3 // 4) // WINDOW
    # In order still flows on a connection that holds no ring yet.
    last = tcbs[-1]
    rig.deliver(now, seq=seq(PEER_ISS, 1), ack=seq(last.iss, 1), payload=bytes(1000),
                src_port=PEER_PORT + 63)  # fmt: skip
    assert last.receive_buffer.readable() == 1000
    for tcb in tcbs:
        rig.engine.abort(tcb, 0, True, now)
        rig.engine.close(tcb, now)
    assert memory.held == 0
    assert rig.counted(TcpCounter.APP_ABORTS) == 0
