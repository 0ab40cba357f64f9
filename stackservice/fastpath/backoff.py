"""Doorbell back-off: a session whose rings keep finding nothing to do has
its stack doorbell muted for a while (issue 13, the `ring` attack).

Why. The stack's doorbell is an eventfd the app holds too. Each ring wakes
the loop, and each wake-up costs a whole pass (timers, every session's
rings, the sleep protocol), about 25 µs here. An app that rings without
publishing a command keeps the loop from ever sleeping: measured, one
such app made the loop burn a third of a core on 13 500 empty passes a
second, CPU a 2-core machine takes from the honest apps and their
clients. The drain itself is bounded already (one read per wake-up,
vfstack.shm._doorbell); what is not is how often the loop wakes.

What. Like interrupt moderation on a NIC, or NAPI leaving interrupts off
while polling: a ring is *spurious* when the session's pass right after it
took nothing from the app (no command popped, no waiting event published
into room the app made). After `threshold` spurious rings in a row the
doorbell is muted: the loop stops polling it for `delay` µs, doubling at
each mute from `floor_us` up to `cap_us`. While muted the session is still
served on every pass the loop makes for any reason, and the loop never
sleeps past the end of the mute: then it reads the doorbell itself (one
read) and serves the session's command ring. So an app that publishes a
command and rings during a mute waits at most the cap (plus the loop's
1 ms sleep granularity), and any pass that takes work from the app, rung
or not, ends the mute and the back-off at once. Rings found pending at the
end of a mute with nothing to take mute it again, for twice as long: a
flooder costs the loop one pass per `cap_us`.

Honest apps never get there. The SDK rings only after publishing a
command and finding the stack asleep (need-wakeup), or while its command
ring is full (the stack then has its commands or events to take). A
command it publishes is popped by some pass, which resets the count; a
ring can only be spurious when that pass came before the ring was drained
(the loop woke for something else meanwhile), so an honest session's
count is at most 1 or 2 between resets, never `threshold`.

Sans-IO: the manager feeds it times and outcomes; `muted_until` is what
the loop's sleep must not pass.
"""

from __future__ import annotations

__all__ = ["RingBackoff"]

THRESHOLD = 4  # spurious rings in a row before the doorbell is muted
FLOOR_US = 125  # the first mute
CAP_US = 1000  # the longest: what an app racing a mute may wait, at worst


class RingBackoff:
    """One session's doorbell back-off state (times in µs)."""

    __slots__ = ("cap_us", "delay_us", "floor_us", "muted_until", "spurious", "threshold")

    def __init__(
        self, threshold: int = THRESHOLD, floor_us: int = FLOOR_US, cap_us: int = CAP_US
    ) -> None:
        if threshold < 1 or not 0 < floor_us <= cap_us:
            raise ValueError("need threshold >= 1 and 0 < floor_us <= cap_us")
        self.threshold = threshold
        self.floor_us = floor_us
        self.cap_us = cap_us
        self.spurious = 0  # rings in a row that found nothing
        self.delay_us = 0  # the last mute's length (0: none since the last reset)
        self.muted_until = 0  # 0: the doorbell is polled

    @property
    def muted(self) -> bool:
        return self.muted_until != 0

    def due(self, now: int) -> bool:
        """A mute is over: look at the doorbell and the command ring now."""
        return self.muted_until != 0 and now >= self.muted_until

    def unmute(self) -> None:
        """The mute is over; the count and the delay are kept, so one more
        spurious ring mutes again, for twice as long."""
        self.muted_until = 0

    def served(self) -> None:
        """A pass took work from the app: the back-off starts over."""
        self.spurious = 0
        self.delay_us = 0
        self.muted_until = 0

    def rang_for_nothing(self, now: int) -> bool:
        """A ring whose pass took nothing. Returns True if the doorbell is
        muted by it (until `muted_until`)."""
        self.spurious += 1
        if self.spurious < self.threshold:
            return False
        self.delay_us = min(self.cap_us, 2 * self.delay_us if self.delay_us else self.floor_us)
        self.muted_until = now + self.delay_us
        return True
