"""The counters and histograms one stack instance keeps, in the order they
sit in memory."""

from __future__ import annotations

from enum import IntEnum

from stackservice.faults import FaultSite
from stackservice.limits import MemoryPool, Refusal
from stackservice.metrics.counters import CounterLayout
from stackservice.net.drops import DropReason, NetEvent
from stackservice.nic.packet_io import NicCounter
from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.drops import TcpDropReason
from stackservice.tcp.state import TcpState


class LoopCounter(IntEnum):
    ITERATIONS = 0  # passes through the loop
    SLEEPS = 1  # passes that blocked in poll() because nothing was ready
    RX_BATCHES = 2  # passes that received at least one frame
    TX_BATCHES = 3  # passes that transmitted at least one frame
    WORKER_RESTARTS = 4  # times this worker died and was started again (stackservice.workers)


class SessionGauge(IntEnum):
    ATTACHED = 0  # application sessions attached over the fast path now


# Time buckets in µs, 1-2-5 per decade from 10 µs to 10 s: 19 bounds.
TIME_BOUNDS_US = tuple(m * 10**e for e in range(1, 8) for m in (1, 2, 5) if m * 10**e <= 10**7)
# Batch sizes: powers of two, 1 .. 4096.
BATCH_BOUNDS = tuple(1 << i for i in range(13))

# Histogram names (what the loop passes to `CounterBlock.histogram`). A name
# ending in `_us` is exported in seconds (`vfstack_tcp_rtt_seconds`).
TCP_RTT_US = "tcp_rtt_us"  # RTT samples (RFC 6298 measurements)
TCP_CONNECT_US = "tcp_connect_us"  # SYN sent or received to ESTABLISHED
EVENT_DELIVERY_US = "event_delivery_us"  # event queued to the app's event ring
LOOP_ITERATION_US = "loop_iteration_us"  # one pass through the loop, sleep excluded
RX_BATCH_PACKETS = "rx_batch_packets"  # frames read in one wake-up (non-empty batches)

INSTANCE_LAYOUT = CounterLayout(
    {
        "nic": NicCounter,
        "drops": DropReason,
        "events": NetEvent,
        "loop": LoopCounter,
        "tcp": TcpCounter,
        "tcp_drops": TcpDropReason,
        "tcp_states": TcpState,  # gauges: connections in each state now
        "sessions": SessionGauge,  # gauges
        "internal_errors": FaultSite,  # contained faults (bugs), by site
        "memory": MemoryPool,  # gauges: bytes held for apps now, by pool
        "memory_limits": MemoryPool,  # gauges: each pool's limit
        "refusals": Refusal,  # what apps were refused, by reason (stackservice.limits)
    },
    histograms={
        TCP_RTT_US: TIME_BOUNDS_US,
        TCP_CONNECT_US: TIME_BOUNDS_US,
        EVENT_DELIVERY_US: TIME_BOUNDS_US,
        LOOP_ITERATION_US: TIME_BOUNDS_US,
        RX_BATCH_PACKETS: BATCH_BOUNDS,
    },
    gauges=("tcp_states", "sessions", "memory", "memory_limits"),
)
