"""The counters one stack instance keeps, in the order they sit in memory."""

from __future__ import annotations

from enum import IntEnum

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


INSTANCE_LAYOUT = CounterLayout(
    {
        "nic": NicCounter,
        "drops": DropReason,
        "events": NetEvent,
        "loop": LoopCounter,
        "tcp": TcpCounter,
        "tcp_drops": TcpDropReason,
        "tcp_states": TcpState,  # gauges: connections in each state now
    }
)
