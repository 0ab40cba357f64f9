"""Shared settings for property-based tests and address helpers."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, settings

# Deterministic hypothesis runs that leave no example database behind.
CHECK = settings(derandomize=True, database=None, deadline=None, max_examples=200)
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow],
)


def ip(text: str) -> int:
    """A dotted-quad IPv4 address as the int the sans-IO layers use."""
    return int(ipaddress.IPv4Address(text))
