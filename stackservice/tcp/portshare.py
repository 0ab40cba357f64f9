"""Which ephemeral ports a worker owns (stackservice.nic.fanout steers
by them): an active open picks its local port among its worker's, so the
peer's replies reach the worker that holds the connection."""

from __future__ import annotations

from vfstack._steering import EPHEMERAL_FIRST, EPHEMERAL_LAST, MAX_WORKERS

__all__ = ["EPHEMERAL_FIRST", "EPHEMERAL_LAST", "MAX_WORKERS", "PortShare"]


class PortShare:
    """The ephemeral ports one worker of `workers` owns: p with
    p mod workers == worker. With one worker, every ephemeral port."""

    __slots__ = ("count", "first", "worker", "workers")

    def __init__(self, worker: int = 0, workers: int = 1) -> None:
        if not 1 <= workers <= MAX_WORKERS or not 0 <= worker < workers:
            raise ValueError(f"worker {worker} of {workers}: out of range")
        self.worker = worker
        self.workers = workers
        self.first = EPHEMERAL_FIRST + (worker - EPHEMERAL_FIRST) % workers
        self.count = (EPHEMERAL_LAST - self.first) // workers + 1

    def port(self, index: int) -> int:
        """The owned port at `index` modulo `count`."""
        return self.first + index % self.count * self.workers

    def owns(self, port: int) -> bool:
        return port % self.workers == self.worker
