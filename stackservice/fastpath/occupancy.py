"""Ring occupancy: how full each app's rings are, swept into the app table
(stackservice.metrics.apps) for `vfstack_ring_occupancy_ratio{app,ring}`.

A sweep starts at most every SAMPLE_INTERVAL_US and visits at most
SAMPLE_BUDGET socket slots a loop pass, session after session, so a stack
with many sockets never stalls a pass for it (measured: ~0.85 µs per
connected slot, ~20 ns per other one). Scrapes come every few seconds; a
quarter-second-old value is fresh. With many connections sweeps start
further apart, SAMPLE_US_PER_CONNECTED per connected socket of the last
sweep, so they stay under ~1% of the loop.

When every session is done, each app gets its sample: the fullest command
and event ring of its sessions, and rx/tx as the bytes waiting in all its
connected sockets' rings over their total size. One connection whose peer
stopped reading is TCP flow control doing its job and fills only its own
ring; the sum crosses 90% (VfstackRingFull) when the app as a whole falls
behind.

Every index read here is checked by the rings: a corrupt one raises
CorruptRing, which the sweep hands back with its session (`step`) for the
manager to end, as anything else that goes wrong while sampling it.
"""

from __future__ import annotations

from vfstack.shm import SLOT_CONNECTED

from stackservice.fastpath.session import Session
from stackservice.metrics.apps import AppStatsTable

__all__ = [
    "SAMPLE_BUDGET",
    "SAMPLE_INTERVAL_US",
    "SAMPLE_US_PER_CONNECTED",
    "OccupancySweep",
    "sample_queues",
    "sample_rings",
]

SAMPLE_INTERVAL_US = 250_000
SAMPLE_BUDGET = 256
SAMPLE_US_PER_CONNECTED = 100

# An app's totals while a sweep runs: the fullest command ring (used,
# capacity), the fullest event ring (used, capacity), then rx used, rx
# capacity, tx used, tx capacity (sums), and its connected sockets.
_TOTALS = 9


class OccupancySweep:
    """The sweep over every session, a bounded piece per loop pass."""

    __slots__ = ("next_at", "_table", "_started_at", "_interval", "_left", "_slot", "_totals")

    def __init__(self, table: AppStatsTable) -> None:
        self.next_at = 0  # when `step` is due next (0 while a sweep runs)
        self._table = table
        self._started_at = 0
        self._interval = SAMPLE_INTERVAL_US
        self._left: list[Session] = []  # sessions still to visit, the next one last
        self._slot = 0  # the next slot of that session
        self._totals: dict[int, list[int]] = {}  # app index -> its totals so far

    @property
    def running(self) -> bool:
        """A sweep is half done (the loop should come back without sleeping)."""
        return bool(self._left)

    def forget(self, index: int) -> None:
        """The app in slot `index` of the app table starts over (its first
        session, the name perhaps new to the slot): what the running sweep
        gathered there is not its."""
        self._totals.pop(index, None)

    def step(self, now: int, sessions: dict[int, Session]) -> list[tuple[Session, Exception]]:
        """Start a sweep over `sessions` if none runs, then go on with it for
        at most SAMPLE_BUDGET slots; publish the samples when it is done.
        Call it when `next_at` has come.

        Returns the sessions that could not be sampled, with the exception
        met (a CorruptRing: the app broke its rings; anything else: a bug),
        for the caller to end; the sweep has left them behind.
        """
        if not self._left:
            self._started_at = now
            self._left = list(sessions.values())
            self._slot = 0
            self._totals = {}
        left = self._left
        failed: list[tuple[Session, Exception]] = []
        budget = SAMPLE_BUDGET
        while left and budget > 0:
            session = left[-1]
            start = self._slot
            if session.closed or session.app_index < 0:
                left.pop()
                self._slot = 0
                continue
            slots = session.segment.geometry.socket_slots
            totals = self._totals.get(session.app_index)
            if totals is None:
                totals = self._totals[session.app_index] = [0] * _TOTALS
            try:
                if start == 0:
                    _keep_fullest(totals, sample_queues(session))
                end = sample_rings(session, start, budget, totals)
            except Exception as exc:
                failed.append((session, exc))
                end = slots
            budget -= max(1, end - start)
            if end >= slots:
                left.pop()
                self._slot = 0
            else:
                self._slot = end
        if left:
            self.next_at = 0
        else:
            self._publish()
            self.next_at = self._started_at + self._interval
        return failed

    def _publish(self) -> None:
        table = self._table
        connected = 0
        for index, totals in self._totals.items():
            if table.sessions(index):
                table.publish(index, *totals[:8])
            connected += totals[8]
        self._totals = {}
        self._interval = max(SAMPLE_INTERVAL_US, connected * SAMPLE_US_PER_CONNECTED)


def sample_queues(session: Session) -> tuple[int, int, int, int]:
    """(command records waiting, command ring slots, event records
    waiting, event ring slots), from indices the rings validate.
    Raises CorruptRing."""
    commands = session.segment.commands
    events = session.segment.events
    command_used = commands.available()
    # As the events' producer: the room left, after loading and checking
    # the app's tail. The reservation this makes is replaced by the next
    # flush's own before anything is written.
    event_used = events.capacity - events.reserve(events.capacity)
    return command_used, commands.capacity, event_used, events.capacity


def sample_rings(session: Session, start: int, budget: int, totals: list[int]) -> int:
    """Add the bytes waiting in, and the size of, the RX and TX rings of
    the connected slots in start .. start + budget - 1 to totals[4:8] (rx
    used, rx capacity, tx used, tx capacity), and their number to totals[8].

    Returns the next slot to visit (the number of slots when done).
    Raises CorruptRing.
    """
    seg = session.segment
    slots = session.sockets.slots
    end = min(len(slots), start + budget)
    capacity = seg.geometry.socket_ring_bytes
    rx_used = tx_used = connected = 0
    for slot in range(start, end):
        s = slots[slot]
        if s is None or s.state != SLOT_CONNECTED:
            continue  # no bytes flow through the rings of other slots
        rx_used += capacity - seg.rx(slot).free()
        tx_used += seg.tx(slot).readable()
        connected += 1
    totals[4] += rx_used
    totals[5] += connected * capacity
    totals[6] += tx_used
    totals[7] += connected * capacity
    totals[8] += connected
    return end


def _keep_fullest(totals: list[int], queues: tuple[int, int, int, int]) -> None:
    """totals[0:4] := the fuller (by ratio) of each of its command and event
    (used, capacity) pairs and the session's."""
    command_used, command_capacity, event_used, event_capacity = queues
    if command_used * (totals[1] or 1) >= totals[0] * command_capacity:
        totals[0], totals[1] = command_used, command_capacity
    if event_used * (totals[3] or 1) >= totals[2] * event_capacity:
        totals[2], totals[3] = event_used, event_capacity
