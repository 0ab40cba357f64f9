"""The stack's clock: monotonic microseconds, the unit of every deadline,
timestamp and latency in the engine, the fast path and the metrics."""

from __future__ import annotations

import time


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000
