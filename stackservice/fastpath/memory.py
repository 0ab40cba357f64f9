"""The shared memory an instance commits to its sessions, held to the
instance's limit and each app's (stackservice.limits).

Bytes are charged when committed: a segment's header, command and event
rings and slot table at Attach, a socket slot's two rings when the slot is
first used (a slot keeps its rings while the session lives, so a freed
slot is reused before a new one is committed); they are released when the
session ends. What is charged is what `Segment` preallocates, so the
gauge is the memory the stack holds, not an estimate.
"""

from __future__ import annotations

from collections import Counter

from stackservice.limits import Limits, MemoryPool, Refusal

__all__ = ["SharedMemory"]

_SEGMENTS = int(MemoryPool.SEGMENTS)


class SharedMemory:
    """Committed shared memory, in total and per uid, with the gauges and
    refusal counters that show it (u64 arrays of the counters file)."""

    __slots__ = ("_by_uid", "_gauges", "_refusals", "limits", "total")

    def __init__(self, limits: Limits, gauges, limit_gauges, refusals) -> None:
        self.limits = limits
        self.total = 0
        self._by_uid: Counter[int] = Counter()
        self._gauges = gauges
        self._refusals = refusals
        gauges[_SEGMENTS] = 0
        limit_gauges[_SEGMENTS] = limits.shm_bytes

    def charge(self, uid: int, nbytes: int) -> str | None:
        """Take `nbytes` for an app of `uid`. Returns None, or why not (the
        refusal is counted)."""
        limits = self.limits
        if self.total + nbytes > limits.shm_bytes:
            self._refusals[Refusal.SHM_INSTANCE] += 1
            return f"the instance's shared memory is at its limit ({limits.shm_bytes} bytes)"
        if uid != 0 and self._by_uid[uid] + nbytes > limits.app_shm_bytes:
            self._refusals[Refusal.SHM_APP] += 1
            return f"uid {uid}'s shared memory is at its limit ({limits.app_shm_bytes} bytes)"
        self.total += nbytes
        self._by_uid[uid] += nbytes
        self._gauges[_SEGMENTS] = self.total
        return None

    def refused_allocation(self) -> None:
        """The kernel had no memory for what was charged (it is released)."""
        self._refusals[Refusal.SHM_ALLOCATION] += 1

    def release(self, uid: int, nbytes: int) -> None:
        self.total -= nbytes
        left = self._by_uid[uid] - nbytes
        if left:
            self._by_uid[uid] = left
        else:
            del self._by_uid[uid]
        self._gauges[_SEGMENTS] = self.total
