"""Timer structures: a hashed wheel and a sorted deadline list (mTCP §3.2.2).

mTCP keeps two kinds of timers (NSDI 2014 §3.2.2, `timer.c`):
- fine-grained ones armed on nearly every segment (retransmission, persist,
  delayed ACK) in a hash table indexed by the deadline in milliseconds, so
  arming is O(1) and one bucket is processed per millisecond: `TimerWheel`;
- coarse ones with one fixed timeout each (TIME-WAIT) in a list sorted by
  deadline, which stays sorted by appending because every new deadline is
  now + the same timeout: `DeadlineList`.

Both are intrusive: the entries are the caller's objects (TCBs inherit
`TimerEntry`), linked through slots on the entry, so membership is a field
and never a scan (STYLE rule 9), and arming, re-arming and cancelling
allocate nothing. An entry has one set of links per structure: it can be
in one wheel and in one DeadlineList at once, never in two lists. So a TCB
folds every per-connection deadline (RTO, persist, delayed ACK, keepalive:
RFC 6298 / RFC 9293 §3.8.6.1 / RFC 1122 §4.2.3.2 / §4.2.3.6) into the
earliest one and keeps that in the wheel, as smoltcp's `poll_at` does, and
uses the one DeadlineList only for its end-of-life timeout (TIME-WAIT, or
an orphan's FIN-WAIT-2), which comes after every other timer has stopped.
Keepalive left its list for the wheel because its timeout differs per
socket (TCP_KEEPIDLE) and because a connection that closed first needs it
and the FIN-WAIT-2 timeout at once.

Neither structure reads a clock: `now` and deadlines are int microseconds
supplied by the caller, and time is expected not to go backwards.

TimerWheel decisions:
- Slots of `granularity_us` (1 ms) each, `slots` of them (4096, one turn =
  4.096 s; mTCP uses 3000). An entry sits in slot (deadline // granularity)
  mod slots with its exact deadline; `expire(now)` returns exactly the
  entries whose deadline is <= now, so the granularity only coarsens
  `next_deadline` (early, never late), not firing.
- Deadlines beyond one turn: no rounds counter and no overflow list. The
  entry keeps its exact deadline, and a slot visit takes only the entries
  whose deadline has passed; the others stay for a later turn. An entry r
  turns away is thus looked at r times before it fires: the RFC 6298
  initial RTO (1 s), the 200 ms minimum RTO and delayed ACKs (<= 500 ms,
  RFC 1122 §4.2.3.2) fit in one turn, and a fully backed-off 120 s RTO costs
  about 30 extra looks over two minutes.
- A deadline already behind the wheel's cursor goes to the cursor's slot,
  which the next `expire` visits first, so a late arm is never lost.
- A two-level occupancy bitmap (64-slot words plus a summary word) lets
  `expire` and `next_deadline` jump over empty slots, so a loop that slept
  long does not walk thousands of empty slots.
- Bounded work: one `expire` call does O(limit + occupied slots visited +
  not-yet-due entries in them) and visits each slot at most once: after a
  whole turn every entry has been looked at, so the cursor jumps to now.
- Order: entries come out slot by slot (by deadline tick) and first-armed
  first within a slot, as long as one call spans less than one turn.

DeadlineList decisions:
- An intrusive doubly-linked list in deadline order. `push` appends at the
  tail in O(1) when the deadline is >= the last one (the mTCP case) and
  prepends in O(1) when it is below the first; otherwise it walks to its
  place from the end nearer in deadline: O(k) for the k entries passed.
  Equal deadlines keep push order. Timeouts that differ per entry make
  pushes land mid-list; with many of them the wheel suits better.
- `remove` unlinks at once in O(1), rather than leaving a stale record
  behind a generation counter for `expire` to skip: a TIME-WAIT restarted
  by every retransmitted FIN would otherwise pile up one dead record per
  FIN until its deadline reached the head. `list_generation` still
  counts every push and remove, so a caller that noted it can tell whether
  the entry was re-armed or removed since.
"""

from __future__ import annotations

from stackservice.net.errors import LocalProtocolError

__all__ = ["DeadlineList", "TimerEntry", "TimerWheel"]

_NEVER = (1 << 63) - 1  # "no deadline" in the wheel's cached minima (fits int64)
_WORD_BITS = 64
_WORD_SHIFT = 6
_WORD_MASK = 63


def _lowest_bit(x: int) -> int:
    """Index of the lowest set bit of x > 0."""
    return (x & -x).bit_length() - 1


class TimerEntry:
    """The slots `TimerWheel` and `DeadlineList` link an entry through.

    Subclasses (the TCB) must call `super().__init__()`. The fields belong to
    the timer structures: read `wheel_deadline` / `list_deadline` if useful,
    never write any of them.
    """

    __slots__ = (
        "list_deadline",  # deadline in the DeadlineList, valid while list_owner is set
        "list_generation",  # bumped on every push and remove
        "list_next",
        "list_owner",  # the DeadlineList holding the entry, or None
        "list_prev",
        "wheel_deadline",  # exact deadline (µs), valid while wheel_owner is set
        "wheel_next",
        "wheel_owner",  # the TimerWheel holding the entry, or None
        "wheel_prev",
        "wheel_slot",  # slot index, -1 when not scheduled
    )

    def __init__(self) -> None:
        self.wheel_deadline: int = 0
        self.wheel_slot: int = -1
        self.wheel_prev: TimerEntry | None = None
        self.wheel_next: TimerEntry | None = None
        self.wheel_owner: TimerWheel | None = None
        self.list_deadline: int = 0
        self.list_generation: int = 0
        self.list_prev: TimerEntry | None = None
        self.list_next: TimerEntry | None = None
        self.list_owner: DeadlineList | None = None


class TimerWheel:
    """Hashed timer wheel for fine-grained deadlines (mTCP `timer.c` RTO list).

    See the module docstring for the design. All operations but `expire`
    are O(1); `expire` is bounded by its `limit` plus the slots it visits.
    """

    __slots__ = (
        "_count",
        "_cursor",  # absolute tick of the next slot to visit; every entry's tick >= it
        "_cursor_min",  # lower bound of the deadlines in the cursor's slot
        "_granularity",
        "_next",  # cached next_deadline (a lower bound), valid unless _next_dirty
        "_next_dirty",
        "_sentinels",  # per slot: a circular list's sentinel entry
        "_slots",
        "_summary",  # bit w set: _words[w] != 0
        "_words",  # bit b of word w set: slot 64 * w + b is occupied
    )

    def __init__(self, granularity_us: int = 1000, slots: int = 4096) -> None:
        """Raises:
        ValueError: granularity_us or slots is not positive.
        """
        if granularity_us <= 0 or slots <= 0:
            raise ValueError("granularity_us and slots must be positive")
        self._granularity = granularity_us
        self._slots = slots
        sentinels: list[TimerEntry] = []
        for _ in range(slots):
            s = TimerEntry()
            s.wheel_prev = s
            s.wheel_next = s
            sentinels.append(s)
        self._sentinels = sentinels
        self._words: list[int] = [0] * ((slots + _WORD_BITS - 1) >> _WORD_SHIFT)
        self._summary = 0
        self._count = 0
        self._cursor = 0
        self._cursor_min = _NEVER
        self._next = _NEVER
        self._next_dirty = False

    def __len__(self) -> int:
        return self._count

    def is_scheduled(self, entry: TimerEntry) -> bool:
        """Returns: whether `entry` is in this wheel."""
        return entry.wheel_owner is self

    def schedule(self, entry: TimerEntry, deadline: int) -> None:
        """Arm `entry` to expire at `deadline` (µs), moving it if already armed. O(1).

        Raises:
            LocalProtocolError: the entry is scheduled in another wheel.
        """
        owner = entry.wheel_owner
        if owner is self:
            self._unlink(entry)
        elif owner is not None:
            raise LocalProtocolError("entry is scheduled in another TimerWheel")
        tick = deadline // self._granularity
        cursor = self._cursor
        if tick <= cursor:
            # The cursor's slot is visited first by the next expire: a deadline
            # at or behind the cursor is never skipped.
            tick = cursor
            if deadline < self._cursor_min:
                self._cursor_min = deadline
        slot = tick % self._slots
        sentinel = self._sentinels[slot]
        last = sentinel.wheel_prev
        assert last is not None
        if last is sentinel:
            self._mark(slot)
        entry.wheel_prev = last
        entry.wheel_next = sentinel
        last.wheel_next = entry
        sentinel.wheel_prev = entry
        entry.wheel_deadline = deadline
        entry.wheel_slot = slot
        entry.wheel_owner = self
        self._count += 1
        if not self._next_dirty and deadline < self._next:
            self._next = deadline

    def cancel(self, entry: TimerEntry) -> None:
        """Disarm `entry`; nothing happens if it is not in this wheel. O(1)."""
        if entry.wheel_owner is self:
            self._unlink(entry)
            if self._count == 0:
                self._next = _NEVER
                self._next_dirty = False

    def next_deadline(self) -> int | None:
        """Returns: a time (µs) no later than the earliest deadline in the
        wheel, or None when the wheel is empty. It may be early: by up to a
        slot; by up to a turn for an entry more than a turn away; and, until
        the next `expire`, it may still be the deadline of a cancelled
        entry (the loop then wakes once for nothing). Cached: O(1) between
        `expire` calls, one bitmap search after one.
        """
        if self._count == 0:
            return None
        if self._next_dirty:
            self._next = self._lower_bound()
            self._next_dirty = False
        return self._next

    def expire(self, now: int, limit: int) -> list[TimerEntry]:
        """Remove and return entries whose deadline is <= now, at most `limit`.

        Entries left over because of `limit` come out on the next call; none
        is lost and none is returned early. `now` should not go backwards.

        Returns:
            The expired entries, in deadline-tick order (see module doc).
        """
        out: list[TimerEntry] = []
        if limit <= 0:
            return out
        now_tick = now // self._granularity
        if self._count == 0:
            if now_tick > self._cursor:
                self._cursor = now_tick
                self._cursor_min = _NEVER
            return out
        self._next_dirty = True
        slots = self._slots
        start = self._cursor
        cursor = start
        while True:
            if not self._visit(cursor % slots, now, limit, out):
                break  # limit reached inside this slot: resume here next call
            if cursor >= now_tick:
                break  # the slot of `now`: what is left is due later
            dist = self._distance_to_occupied((cursor + 1) % slots) if self._count else -1
            if dist < 0 or cursor + 1 + dist > now_tick:
                # The slots of ticks cursor+1 .. now_tick (less than a turn,
                # as dist < slots) are empty, the slot of `now` included.
                cursor = now_tick
                self._cursor_min = _NEVER
                break
            cursor += 1 + dist
            if cursor - start >= slots:
                # Every slot was visited once in this call, so every entry due
                # by `now` is out and the rest are due after `now`.
                cursor = now_tick
                self._cursor_min = now + 1
                break
            self._cursor_min = cursor * self._granularity
            if len(out) >= limit:
                break
        self._cursor = cursor
        return out

    # -- internals ---------------------------------------------------------

    def _visit(self, slot: int, now: int, limit: int, out: list[TimerEntry]) -> bool:
        """Move the due entries of `slot` to `out`.

        Returns: True if the whole slot was walked (then `_cursor_min` is the
        exact minimum of what stays, valid if `slot` is the cursor's), False
        if `limit` stopped the walk.
        """
        sentinel = self._sentinels[slot]
        entry = sentinel.wheel_next
        assert entry is not None
        low = _NEVER
        while entry is not sentinel:
            following = entry.wheel_next
            assert following is not None
            deadline = entry.wheel_deadline
            if deadline <= now:
                self._unlink(entry)
                out.append(entry)
                if len(out) >= limit and following is not sentinel:
                    return False
            elif deadline < low:
                low = deadline
            entry = following
        self._cursor_min = low
        return True

    def _unlink(self, entry: TimerEntry) -> None:
        prev = entry.wheel_prev
        following = entry.wheel_next
        assert prev is not None and following is not None
        prev.wheel_next = following
        following.wheel_prev = prev
        if prev is following:  # only the sentinel is left
            self._unmark(entry.wheel_slot)
        entry.wheel_prev = None
        entry.wheel_next = None
        entry.wheel_owner = None
        entry.wheel_slot = -1
        self._count -= 1

    def _mark(self, slot: int) -> None:
        word = slot >> _WORD_SHIFT
        self._words[word] |= 1 << (slot & _WORD_MASK)
        self._summary |= 1 << word

    def _unmark(self, slot: int) -> None:
        word = slot >> _WORD_SHIFT
        bits = self._words[word] & ~(1 << (slot & _WORD_MASK))
        self._words[word] = bits
        if bits == 0:
            self._summary &= ~(1 << word)

    def _distance_to_occupied(self, start: int) -> int:
        """Returns: how many slots past `start` (circularly, 0 = `start`
        itself) the first occupied slot is, or -1 if none is.
        """
        word = start >> _WORD_SHIFT
        words = self._words
        bits = words[word] >> (start & _WORD_MASK)
        if bits:
            return _lowest_bit(bits)
        above = self._summary >> (word + 1)
        if above:
            w = word + 1 + _lowest_bit(above)
            return (w << _WORD_SHIFT) + _lowest_bit(words[w]) - start
        below = self._summary & ((2 << word) - 1)  # words 0..word, wrapped around
        if below:
            w = _lowest_bit(below)
            return (w << _WORD_SHIFT) + _lowest_bit(words[w]) + self._slots - start
        return -1

    def _lower_bound(self) -> int:
        """A time no later than any deadline in the (non-empty) wheel.

        Entries in the cursor's slot are bounded by `_cursor_min`; any other
        entry sits at a tick after the cursor, and the first occupied slot
        after the cursor is the earliest such tick (a deadline is never
        before the start of its tick, except in the cursor's slot).
        """
        best = self._cursor_min
        cursor = self._cursor
        dist = self._distance_to_occupied((cursor + 1) % self._slots)
        if dist >= 0:
            at = (cursor + 1 + dist) * self._granularity
            if at < best:
                best = at
        return best


class DeadlineList:
    """Entries sorted by deadline, for timers with one fixed timeout each
    (TIME-WAIT): mTCP's sorted timer lists (NSDI 2014 §3.2.2).

    Push is O(1) for non-decreasing deadlines, remove O(1), expire O(returned).
    """

    __slots__ = ("_count", "_sentinel")

    def __init__(self) -> None:
        sentinel = TimerEntry()
        sentinel.list_prev = sentinel
        sentinel.list_next = sentinel
        self._sentinel = sentinel
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def contains(self, entry: TimerEntry) -> bool:
        """Returns: whether `entry` is in this list."""
        return entry.list_owner is self

    def push(self, entry: TimerEntry, deadline: int) -> None:
        """Add `entry` with `deadline` (µs), moving it if already here.

        O(1) when `deadline` is >= every deadline in the list (callers use
        now + a fixed timeout) or below all of them; otherwise a walk from
        the end nearer in deadline, O(k) for the k entries passed.

        Raises:
            LocalProtocolError: the entry is in another DeadlineList.
        """
        owner = entry.list_owner
        if owner is self:
            self._unlink(entry)
        elif owner is not None:
            raise LocalProtocolError("entry is in another DeadlineList")
        following = self._sentinel
        after = following.list_prev
        assert after is not None
        if after is not following and after.list_deadline > deadline:
            after = self._insertion_point(deadline)
            following = after.list_next
            assert following is not None
        entry.list_prev = after
        entry.list_next = following
        after.list_next = entry
        following.list_prev = entry
        entry.list_deadline = deadline
        entry.list_owner = self
        entry.list_generation += 1
        self._count += 1

    def remove(self, entry: TimerEntry) -> None:
        """Take `entry` out; nothing happens if it is not in this list. O(1)."""
        if entry.list_owner is self:
            self._unlink(entry)
            entry.list_generation += 1

    def next_deadline(self) -> int | None:
        """Returns: the earliest deadline (exact), or None when empty."""
        first = self._sentinel.list_next
        assert first is not None
        if first is self._sentinel:
            return None
        return first.list_deadline

    def expire(self, now: int, limit: int) -> list[TimerEntry]:
        """Remove and return entries whose deadline is <= now, earliest
        first, at most `limit`; the rest come out on later calls.
        """
        out: list[TimerEntry] = []
        sentinel = self._sentinel
        while len(out) < limit:
            first = sentinel.list_next
            assert first is not None
            if first is sentinel or first.list_deadline > now:
                break
            self._unlink(first)
            out.append(first)
        return out

    def _insertion_point(self, deadline: int) -> TimerEntry:
        """The entry (or the sentinel) after which `deadline` goes, behind
        any equal deadlines: O(1) at either end, else a walk from the end
        nearer in deadline.
        """
        sentinel = self._sentinel
        last = sentinel.list_prev
        first = sentinel.list_next
        assert last is not None and first is not None
        if last is sentinel or last.list_deadline <= deadline:
            return last
        if deadline < first.list_deadline:
            return sentinel
        if deadline - first.list_deadline < last.list_deadline - deadline:
            entry = first
            while entry.list_deadline <= deadline:  # stops at `last` at the latest
                entry = entry.list_next
                assert entry is not None
            prev = entry.list_prev
            assert prev is not None
            return prev
        entry = last
        while entry.list_deadline > deadline:  # stops at `first` at the latest
            entry = entry.list_prev
            assert entry is not None
        return entry

    def _unlink(self, entry: TimerEntry) -> None:
        prev = entry.list_prev
        following = entry.list_next
        assert prev is not None and following is not None
        prev.list_next = following
        following.list_prev = prev
        entry.list_prev = None
        entry.list_next = None
        entry.list_owner = None
        self._count -= 1
