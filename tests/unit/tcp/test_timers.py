"""Timer wheel and deadline list (mTCP NSDI 2014 §3.2.2; RFC 6298 timers)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.net.errors import LocalProtocolError
from stackservice.tcp.timers import DeadlineList, TimerEntry, TimerWheel
from tests.support.checks import CHECK, FUZZ

MS = 1000


class Entry(TimerEntry):
    """A stand-in for a TCB: a subclass with its own slots."""

    __slots__ = ("name",)

    def __init__(self, name: int) -> None:
        super().__init__()
        self.name = name


def names(entries: list[TimerEntry]) -> list[int]:
    return [e.name for e in entries]  # type: ignore[attr-defined]


def drain(wheel: TimerWheel, now: int) -> list[TimerEntry]:
    return wheel.expire(now, 1 << 30)


# -- TimerWheel: basic behaviour ------------------------------------------


def test_wheel_distinct_deadlines_expire_in_deadline_order() -> None:
    wheel = TimerWheel()
    entries = [Entry(i) for i in range(6)]
    for e, d in zip(
        entries, [5 * MS, 1 * MS, 3 * MS + 7, 2 * MS, 4 * MS, 1 * MS + 999], strict=True
    ):
        wheel.schedule(e, d)
    assert names(drain(wheel, 10 * MS)) == [1, 5, 3, 2, 4, 0]
    assert len(wheel) == 0


def test_wheel_same_tick_expires_first_armed_first() -> None:
    wheel = TimerWheel()
    entries = [Entry(i) for i in range(4)]
    for e in entries:
        wheel.schedule(e, 7 * MS + 500)
    assert names(drain(wheel, 8 * MS)) == [0, 1, 2, 3]


def test_wheel_expire_before_deadline_returns_nothing() -> None:
    wheel = TimerWheel()
    e = Entry(0)
    wheel.schedule(e, 200 * MS)
    for now in range(0, 200 * MS, 997):
        assert wheel.expire(now, 100) == []
    assert wheel.is_scheduled(e)
    assert drain(wheel, 200 * MS) == [e]
    assert not wheel.is_scheduled(e)


@pytest.mark.parametrize("offset", [-1, 0, 1, MS - 1])
def test_wheel_deadline_near_slot_boundary_fires_exactly_at_deadline(offset: int) -> None:
    """Granularity coarsens next_deadline only: firing is exact to the µs."""
    wheel = TimerWheel()
    e = Entry(0)
    deadline = 50 * MS + offset
    wheel.schedule(e, deadline)
    for now in range(deadline - 3 * MS, deadline):
        assert wheel.expire(now, 10) == [], now
    assert wheel.expire(deadline, 10) == [e]


def test_wheel_expire_long_after_deadline_fires_on_first_call() -> None:
    wheel = TimerWheel()
    e = Entry(0)
    wheel.schedule(e, 3 * MS)
    assert drain(wheel, 1_000_000 * MS) == [e]


def test_wheel_reschedule_later_moves_entry() -> None:
    wheel = TimerWheel()
    e = Entry(0)
    wheel.schedule(e, 10 * MS)
    wheel.schedule(e, 30 * MS)
    assert len(wheel) == 1
    assert drain(wheel, 29 * MS) == []
    assert drain(wheel, 30 * MS) == [e]


def test_wheel_reschedule_earlier_moves_entry() -> None:
    wheel = TimerWheel()
    e = Entry(0)
    wheel.schedule(e, 30 * MS)
    wheel.schedule(e, 10 * MS)
    assert drain(wheel, 10 * MS) == [e]
    assert drain(wheel, 40 * MS) == []
    assert len(wheel) == 0


def test_wheel_cancel_twice_is_idempotent() -> None:
    wheel = TimerWheel()
    a, b = Entry(0), Entry(1)
    wheel.schedule(a, 5 * MS)
    wheel.schedule(b, 5 * MS)
    wheel.cancel(a)
    wheel.cancel(a)
    wheel.cancel(Entry(2))  # never scheduled
    assert len(wheel) == 1
    assert not wheel.is_scheduled(a)
    assert drain(wheel, 6 * MS) == [b]


def test_wheel_cancel_last_entry_next_deadline_none() -> None:
    wheel = TimerWheel()
    e = Entry(0)
    wheel.schedule(e, 5 * MS)
    wheel.cancel(e)
    assert wheel.next_deadline() is None
    assert drain(wheel, 6 * MS) == []


@pytest.mark.parametrize("turns", [1, 2, 7, 1000])
def test_wheel_deadline_beyond_one_turn_fires_on_time(turns: int) -> None:
    """An entry several turns away is passed over until its own turn."""
    wheel = TimerWheel(granularity_us=MS, slots=16)
    e = Entry(0)
    deadline = turns * 16 * MS + 5 * MS + 123
    wheel.schedule(e, deadline)
    now = 0
    while now < deadline:
        assert wheel.expire(now, 10) == []
        nd = wheel.next_deadline()
        assert nd is not None and nd <= deadline
        now = min(max(nd, now + 1), deadline)  # sleep as a loop would
    assert wheel.expire(deadline, 10) == [e]


def test_wheel_far_and_near_deadlines_in_same_slot_fire_separately() -> None:
    wheel = TimerWheel(granularity_us=MS, slots=8)
    near, far = Entry(0), Entry(1)
    wheel.schedule(far, 8 * MS + 3 * MS)  # same slot as `near`, next turn
    wheel.schedule(near, 3 * MS)
    assert drain(wheel, 3 * MS) == [near]
    assert drain(wheel, 11 * MS - 1) == []
    assert drain(wheel, 11 * MS) == [far]


def test_wheel_past_deadline_fires_on_next_expire() -> None:
    """Arming behind the cursor (a late timer) is never lost for a turn."""
    wheel = TimerWheel(granularity_us=MS, slots=8)
    wheel.expire(100 * MS, 10)  # cursor at 100 ms
    e = Entry(0)
    wheel.schedule(e, 42 * MS)
    assert wheel.next_deadline() == 42 * MS
    assert wheel.expire(100 * MS, 10) == [e]


def test_wheel_limit_returns_at_most_limit_rest_next_call() -> None:
    wheel = TimerWheel()
    entries = [Entry(i) for i in range(25)]
    for i, e in enumerate(entries):
        wheel.schedule(e, (i % 3) * MS + i)  # several per slot
    got: list[TimerEntry] = []
    for _ in range(4):
        batch = wheel.expire(10 * MS, 7)
        assert len(batch) <= 7
        got += batch
    assert len(wheel) == 0
    assert sorted(names(got)) == list(range(25))
    assert [e.wheel_deadline for e in got] == sorted(e.wheel_deadline for e in got)


def test_wheel_limit_reached_next_deadline_is_due() -> None:
    wheel = TimerWheel()
    for i in range(5):
        wheel.schedule(Entry(i), 2 * MS + i)
    assert len(wheel.expire(3 * MS, 2)) == 2
    nd = wheel.next_deadline()
    assert nd is not None and nd <= 2 * MS + 2


def test_wheel_limit_zero_does_nothing() -> None:
    wheel = TimerWheel()
    wheel.schedule(Entry(0), 1)
    assert wheel.expire(10 * MS, 0) == []
    assert len(wheel) == 1


def test_wheel_next_deadline_never_later_than_earliest() -> None:
    wheel = TimerWheel()
    assert wheel.next_deadline() is None
    a, b = Entry(0), Entry(1)
    wheel.schedule(a, 9 * MS + 400)
    nd = wheel.next_deadline()
    assert nd is not None and 9 * MS <= nd <= 9 * MS + 400
    wheel.schedule(b, 4 * MS + 1)
    nd = wheel.next_deadline()
    assert nd is not None and nd <= 4 * MS + 1
    wheel.expire(5 * MS, 10)
    nd = wheel.next_deadline()
    assert nd is not None and 5 * MS < nd <= 9 * MS + 400


def test_wheel_next_deadline_after_expire_not_in_past() -> None:
    """An expire that leaves only later entries must not make a loop spin."""
    wheel = TimerWheel()
    wheel.schedule(Entry(0), 5 * MS + 900)  # later in the current tick
    wheel.schedule(Entry(1), 70 * MS)
    assert wheel.expire(5 * MS + 100, 10) == []
    nd = wheel.next_deadline()
    assert nd == 5 * MS + 900


def test_wheel_entry_in_other_wheel_schedule_raises() -> None:
    first, second = TimerWheel(), TimerWheel()
    e = Entry(0)
    first.schedule(e, 10)
    with pytest.raises(LocalProtocolError):
        second.schedule(e, 10)
    second.cancel(e)  # not ours: no effect
    assert first.is_scheduled(e) and not second.is_scheduled(e)


def test_wheel_bad_geometry_raises() -> None:
    with pytest.raises(ValueError):
        TimerWheel(granularity_us=0)
    with pytest.raises(ValueError):
        TimerWheel(slots=0)


def test_wheel_long_idle_then_many_entries_all_fire() -> None:
    """After a sleep of many turns the cursor catches up in one call."""
    wheel = TimerWheel(granularity_us=MS, slots=64)
    entries = [Entry(i) for i in range(200)]
    for i, e in enumerate(entries):
        wheel.schedule(e, 10_000 * MS + i * 37 * MS)
    assert drain(wheel, 9_999 * MS) == []
    now = 10_000 * MS + 199 * 37 * MS
    assert sorted(names(drain(wheel, now))) == list(range(200))


# -- DeadlineList ---------------------------------------------------------


def test_list_in_order_pushes_expire_earliest_first() -> None:
    lst = DeadlineList()
    entries = [Entry(i) for i in range(5)]
    for i, e in enumerate(entries):
        lst.push(e, 100 + 10 * i)
    assert lst.next_deadline() == 100
    assert names(lst.expire(125, 100)) == [0, 1, 2]
    assert lst.next_deadline() == 130
    assert len(lst) == 2


def test_list_out_of_order_push_inserted_in_place() -> None:
    lst = DeadlineList()
    for i, d in enumerate([50, 10, 30, 30, 5, 60, 20]):
        lst.push(Entry(i), d)
    assert lst.next_deadline() == 5
    assert names(lst.expire(1000, 100)) == [4, 1, 6, 2, 3, 0, 5]


def test_list_mid_list_push_near_either_end_keeps_order_and_fifo_ties() -> None:
    lst = DeadlineList()
    for i in range(100):
        lst.push(Entry(i), i * 10)
    lst.push(Entry(100), 15)  # walks from the head
    lst.push(Entry(101), 985)  # walks from the tail
    lst.push(Entry(102), 500)  # ties go behind the existing 500
    lst.push(Entry(103), -1)  # before everything: O(1)
    got = lst.expire(10_000, 1000)
    deadlines = [e.list_deadline for e in got]
    assert deadlines == sorted(deadlines)
    order = names(got)
    assert order[:4] == [103, 0, 1, 100]
    assert order.index(102) == order.index(50) + 1
    assert order[-2:] == [101, 99]


def test_list_remove_twice_is_idempotent() -> None:
    lst = DeadlineList()
    a, b = Entry(0), Entry(1)
    lst.push(a, 10)
    lst.push(b, 20)
    lst.remove(a)
    lst.remove(a)
    lst.remove(Entry(2))
    assert not lst.contains(a) and lst.contains(b)
    assert len(lst) == 1
    assert lst.next_deadline() == 20
    assert lst.expire(100, 10) == [b]


def test_list_push_again_moves_entry() -> None:
    lst = DeadlineList()
    a, b = Entry(0), Entry(1)
    lst.push(a, 10)
    lst.push(b, 20)
    lst.push(a, 30)  # keepalive re-armed
    assert len(lst) == 2
    assert names(lst.expire(100, 10)) == [1, 0]


def test_list_generation_counts_pushes_and_removes() -> None:
    lst = DeadlineList()
    e = Entry(0)
    g0 = e.list_generation
    lst.push(e, 10)
    lst.push(e, 20)
    lst.remove(e)
    lst.remove(e)  # no-op: not counted
    assert e.list_generation == g0 + 3


def test_list_limit_bounds_expire_rest_next_call() -> None:
    lst = DeadlineList()
    for i in range(10):
        lst.push(Entry(i), i)
    assert names(lst.expire(100, 4)) == [0, 1, 2, 3]
    assert names(lst.expire(100, 4)) == [4, 5, 6, 7]
    assert names(lst.expire(100, 4)) == [8, 9]
    assert lst.next_deadline() is None


def test_list_entry_in_other_list_push_raises() -> None:
    first, second = DeadlineList(), DeadlineList()
    e = Entry(0)
    first.push(e, 1)
    with pytest.raises(LocalProtocolError):
        second.push(e, 1)
    second.remove(e)
    assert first.contains(e)


def test_entry_in_wheel_and_list_each_fires_independently() -> None:
    wheel, lst = TimerWheel(), DeadlineList()
    e = Entry(0)
    wheel.schedule(e, 5 * MS)
    lst.push(e, 60_000 * MS)  # e.g. keepalive
    assert drain(wheel, 5 * MS) == [e]
    assert lst.contains(e) and not wheel.is_scheduled(e)
    wheel.schedule(e, 6 * MS)
    lst.remove(e)
    assert wheel.is_scheduled(e) and not lst.contains(e)
    assert lst.expire(100_000 * MS, 10) == []
    assert drain(wheel, 6 * MS) == [e]


# -- against a reference model --------------------------------------------

N_ENTRIES = 12

op = st.one_of(
    st.tuples(st.just("schedule"), st.integers(0, N_ENTRIES - 1), st.integers(-3000, 40_000)),
    st.tuples(st.just("cancel"), st.integers(0, N_ENTRIES - 1)),
    st.tuples(st.just("push"), st.integers(0, N_ENTRIES - 1), st.integers(-200, 20_000)),
    st.tuples(st.just("remove"), st.integers(0, N_ENTRIES - 1)),
    st.tuples(st.just("advance"), st.integers(0, 30_000)),
    st.tuples(st.just("expire"), st.integers(1, 5)),
)


def check_expired(
    got: list[TimerEntry], ref: dict[int, int], now: int, limit: int, exact_order: bool
) -> None:
    """No entry early, none lost, at most `limit`, removed from the model."""
    assert len(got) <= limit
    deadlines = []
    for e in got:
        name = e.name  # type: ignore[attr-defined]
        assert name in ref and ref[name] <= now
        deadlines.append(ref.pop(name))
    if len(got) < limit:
        assert all(d > now for d in ref.values())  # never later than this call
    if exact_order:
        assert deadlines == sorted(deadlines)
        assert all(d >= deadlines[-1] for d in ref.values()) if deadlines else True


@pytest.mark.parametrize(
    ("granularity", "slots"), [(1000, 4096), (1000, 8), (7, 5), (1, 64), (250, 130)]
)
def test_timers_random_operations_match_reference(granularity: int, slots: int) -> None:
    @FUZZ
    @given(st.integers(0, 10**12), st.lists(op, max_size=120))
    def run(start: int, ops: list[tuple]) -> None:
        wheel = TimerWheel(granularity_us=granularity, slots=slots)
        lst = DeadlineList()
        entries = [Entry(i) for i in range(N_ENTRIES)]
        in_wheel: dict[int, int] = {}
        in_list: dict[int, int] = {}
        now = start
        for o in ops:
            kind = o[0]
            if kind == "schedule":
                wheel.schedule(entries[o[1]], now + o[2])
                in_wheel[o[1]] = now + o[2]
            elif kind == "cancel":
                wheel.cancel(entries[o[1]])
                in_wheel.pop(o[1], None)
            elif kind == "push":
                lst.push(entries[o[1]], now + o[2])
                in_list[o[1]] = now + o[2]
            elif kind == "remove":
                lst.remove(entries[o[1]])
                in_list.pop(o[1], None)
            elif kind == "advance":
                now += o[1]
            else:
                limit = o[1]
                check_expired(wheel.expire(now, limit), in_wheel, now, limit, False)
                check_expired(lst.expire(now, limit), in_list, now, limit, True)
            assert len(wheel) == len(in_wheel) and len(lst) == len(in_list)
            for i, e in enumerate(entries):
                assert wheel.is_scheduled(e) == (i in in_wheel)
                assert lst.contains(e) == (i in in_list)
                if i in in_wheel:
                    assert e.wheel_deadline == in_wheel[i]
            nd = wheel.next_deadline()
            assert (nd is None) == (not in_wheel)
            if in_wheel:
                assert nd is not None and nd <= min(in_wheel.values())
            assert lst.next_deadline() == (min(in_list.values()) if in_list else None)

    run()


@CHECK
@given(st.lists(st.integers(0, 50_000), min_size=1, max_size=60), st.integers(1, 4))
def test_wheel_loop_sleeping_until_next_deadline_fires_each_on_time(
    delays: list[int], limit: int
) -> None:
    """A loop that sleeps until next_deadline() and expires with a small
    limit gets every entry, none before its deadline, and each within one
    granule of its deadline unless the limit held it back."""
    wheel = TimerWheel(granularity_us=MS, slots=16)
    entries = [Entry(i) for i in range(len(delays))]
    for e, d in zip(entries, delays, strict=True):
        wheel.schedule(e, d)
    now = 0
    fired: dict[int, int] = {}
    for _ in range(10_000):
        batch = wheel.expire(now, limit)
        for e in batch:
            assert e.wheel_deadline <= now  # type: ignore[attr-defined]
            fired[e.name] = now  # type: ignore[attr-defined]
        nd = wheel.next_deadline()
        if nd is None:
            break
        if len(batch) < limit:
            assert nd > now  # nothing due is left: no busy loop
        now = max(now, nd)
    assert sorted(fired) == list(range(len(delays)))
