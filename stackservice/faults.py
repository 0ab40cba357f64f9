"""Fault containment (docs/architecture.md principle 5, "Never down"): the one policy
for an unexpected exception, i.e. a bug, caught at one of the instance's
containment points.

Like a kernel's WARN rather than a panic: the point that caught it drops
what met the bug (the frame, the app's session, the control request, the
connection) and goes on; `Containment.fault` does the rest, the same way
everywhere:

- counts it, one u64 slot per `FaultSite` in the shared-memory section
  `internal_errors`, exported as `vfstack_internal_errors_total{where}`;
- logs it with its traceback, at most `burst` tracebacks per site in a
  window of `window_us`: a bug hit by every frame of a flood must not
  flood the log too. The faults beyond are counted, and one line per site
  tells how many were left out once their window is over (`report`);
- strict (`--strict`, `VFSTACK_STRICT=1`, every test) re-raises instead,
  so containment never hides a bug from the suite.

Hostile input is not a fault: a bad frame is a drop reason, a bad record
ends its session as a violation. Only what nobody foresaw lands here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import IntEnum, unique

log = logging.getLogger(__name__)

DEFAULT_BURST = 3  # tracebacks logged per site and window
DEFAULT_WINDOW_US = 60_000_000
_NEVER = 1 << 62  # `report_at` while nothing waits to be told


@unique
class FaultSite(IntEnum):
    """Where a fault was contained, and what that cost (`where` label)."""

    FRAME = 0  # handling one received frame: the frame is dropped
    EVENT = 1  # a socket's in-process owner on readiness: the connection is aborted
    TIMER = 2  # a connection's timers (it is aborted) or the host's (ARP)
    OUTPUT = 3  # a connection's segments (it is aborted), or a batch for the NIC
    SESSION = 4  # serving one app's session (commands, liveness, attach...): it ends
    CONTROL = 5  # answering one control request: it fails with INTERNAL
    OTHER = 6  # a TcpEngine fault site this version has no name for

    @classmethod
    def named(cls, site: str) -> FaultSite:
        """The member for a TcpEngine or Ipv4Host fault site ("timer", "frame", ...)."""
        return cls.__members__.get(site.upper(), cls.OTHER)


class _Window:
    """One site's log budget: tracebacks told and faults left out since `start`."""

    __slots__ = ("logged", "start", "suppressed")

    def __init__(self) -> None:
        self.start = -_NEVER
        self.logged = 0
        self.suppressed = 0


class Containment:
    """Counts, logs (rate-limited) or, when strict, re-raises faults.

    `counters`: a u64 array indexed by FaultSite (the instance's
    `internal_errors` section); None keeps private ones. `clock`: the
    loop's, in microseconds (strict never reads it).
    """

    __slots__ = ("_burst", "_clock", "_counters", "_window_us", "_windows", "report_at", "strict")

    def __init__(
        self,
        counters=None,
        strict: bool = True,
        clock: Callable[[], int] | None = None,
        burst: int = DEFAULT_BURST,
        window_us: int = DEFAULT_WINDOW_US,
    ) -> None:
        if not strict and clock is None:
            raise ValueError("a containing (non-strict) Containment needs a clock")
        self.strict = strict
        self._counters = counters if counters is not None else [0] * len(FaultSite)
        self._clock = clock
        self._burst = burst
        self._window_us = window_us
        self._windows = [_Window() for _ in FaultSite]
        # The earliest end of a window with faults left out: the loop
        # compares it with its own `now` each pass and calls `report`.
        self.report_at = _NEVER

    def count(self, site: FaultSite) -> int:
        return self._counters[site]

    def fault(self, site: FaultSite, exc: BaseException, outcome: str) -> None:
        """Contain `exc`, caught at `site`; `outcome` says what it cost
        ("the frame is dropped", "session 3 (web) ends").

        Raises: `exc` again, when strict.
        """
        if self.strict:
            raise exc
        self._counters[site] += 1
        now = self._clock()
        window = self._windows[site]
        if now - window.start >= self._window_us:
            self._tell_suppressed(site, window)
            window.start, window.logged = now, 0
        if window.logged < self._burst:
            window.logged += 1
            log.error(
                "internal error (where=%s): %s: %r", site.name.lower(), outcome, exc, exc_info=exc
            )
            return
        window.suppressed += 1
        self.report_at = min(self.report_at, window.start + self._window_us)

    def drain(self, faults: list[tuple[str, Exception]], outcome: str) -> None:
        """Contain the faults a non-strict TcpEngine kept (`engine.faults`,
        each already cost its connection) and empty the list."""
        for site, exc in faults:
            self.fault(FaultSite.named(site), exc, f"{outcome} ({site})")
        faults.clear()

    def report(self, now: int) -> None:
        """Tell, one line per site, the faults left out in windows over by `now`."""
        self.report_at = _NEVER
        for site, window in zip(FaultSite, self._windows, strict=True):
            if not window.suppressed:
                continue
            end = window.start + self._window_us
            if now >= end:
                self._tell_suppressed(site, window)
            else:
                self.report_at = min(self.report_at, end)

    def _tell_suppressed(self, site: FaultSite, window: _Window) -> None:
        if window.suppressed:
            log.error(
                "internal error (where=%s): %d more in %d s, tracebacks not logged",
                site.name.lower(), window.suppressed, self._window_us // 1_000_000,
            )  # fmt: skip
            window.suppressed = 0


__all__ = ["Containment", "FaultSite"]
