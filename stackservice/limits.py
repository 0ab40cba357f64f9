"""What one instance lets its applications take: every limit, its default,
and what counts a refusal (issue 13). A limit is a number with a metric
(docs/architecture.md principle 5): usage in `vfstack_memory_bytes{pool}`
beside `vfstack_memory_limit_bytes{pool}`, refusals in
`vfstack_refusals_total{reason}`.

An app's identity is its uid, as the kernel gives it on the control
socket (stackservice.control.gate), never the name it gives itself. Root
(uid 0) is not held to the per-app limits, only to the instance's, as
Linux exempts it from RLIMIT_NPROC: run apps under uids of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

MIB = 1 << 20


class MemoryPool(IntEnum):
    """Memory the instance holds for its apps (gauges, bytes)."""

    # Shared memory committed to sessions' segments: each segment's header,
    # command and event rings and slot table at Attach, then a socket slot's
    # RX and TX rings when the slot is first used; preallocated (fallocate),
    # so the stack never faults a fresh page in later. Freed when the
    # session ends.
    SEGMENTS = 0
    # Events waiting for room in an app's event ring, as the 64-byte records
    # they become. Bounded by construction, not configured: per session
    # 2 x socket slots (a READY and an ACCEPTED each at most) + one command
    # batch of answers (no command is taken while events wait).
    EVENT_BACKLOG = 1
    # The rings of every connection's send and receive buffers (TCP's
    # tcp_mem): limit `stackservice run --tcp-memory-mib`; above 3/4 of it
    # out-of-order data stops growing rings (tcp/buffers.py).
    TCP_BUFFERS = 2


class Refusal(IntEnum):
    """Why the instance refused an app something (counters)."""

    # Attach, or a socket's rings, would take the shared memory committed
    # to all sessions over --shm-limit-mib.
    SHM_INSTANCE = 0
    # ... to the caller's uid's sessions over --app-shm-limit-mib.
    SHM_APP = 1
    # The kernel refused to preallocate (ENOMEM, ENOSPC): under the limits,
    # but out of memory.
    SHM_ALLOCATION = 2
    # Attach: --max-sessions sessions are attached already.
    SESSIONS_INSTANCE = 3
    # Attach: the caller's uid has --max-app-sessions sessions already
    # (those whose descriptors wait at the handoff included).
    SESSIONS_APP = 4
    # The app never came for its session's descriptors within
    # --attach-timeout-ms: its session ended.
    ATTACH_TIMEOUT = 5
    # BIND (or LISTEN) of a port below 1024 by a uid neither root nor one
    # of --privileged-port-uids: EACCES (stackservice.fastpath.ports).
    PRIVILEGED_PORT = 6
    # BIND of a port another uid's app listened on, within
    # --port-reserve-ms of its session's end: EADDRINUSE.
    RESERVED_PORT = 7
    # The app rang its stack doorbell again and again with nothing for the
    # stack to take (no command): the doorbell is muted for a back-off,
    # counted once per mute (stackservice.fastpath.backoff).
    DOORBELL_FLOOD = 8


@dataclass(frozen=True, slots=True)
class Limits:
    """An instance's limits (`stackservice run` flags)."""

    shm_bytes: int = 1024 * MIB  # --shm-limit-mib: all sessions' shared memory
    app_shm_bytes: int = 256 * MIB  # --app-shm-limit-mib: one uid's sessions'
    sessions: int = 64  # --max-sessions: attached at once (instance)
    app_sessions: int = 16  # --max-app-sessions: one uid's, attached at once
    attach_timeout_ms: int = 2000  # --attach-timeout-ms: from Attach to the handoff
    # --privileged-port-uids: who, besides root, may bind ports below 1024
    privileged_port_uids: frozenset[int] = frozenset()
    port_reserve_ms: int = 10_000  # --port-reserve-ms: a port kept for its app's uid

    def __post_init__(self) -> None:
        if not 0 < self.app_shm_bytes <= self.shm_bytes:
            raise ValueError("the per-app shared-memory limit must be in 1..the instance's")
        if not 0 < self.app_sessions <= self.sessions:
            raise ValueError("the per-app session limit must be in 1..the instance's")
        if self.attach_timeout_ms <= 0:
            raise ValueError("the attach timeout must be above 0")
        if self.port_reserve_ms < 0:
            raise ValueError("the port reservation cannot be negative")
