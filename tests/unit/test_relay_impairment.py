"""The relay's sans-IO core: seeded, deterministic link impairment."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tests.support.relay import (
    ETH_HEADER_LEN,
    DirectionStats,
    Impairment,
    RelayStats,
    Scheduler,
    corrupt_one_bit,
    direction_seed,
    impairments_from_args,
    parse_args,
)

N = 20_000
STEP_US = 10  # frames arrive every 10 µs


def ipv4_frame(i: int, payload: int = 40) -> bytes:
    """An Ethernet + IPv4 frame numbered i (the number is in its payload)."""
    total = 20 + payload
    eth = bytes.fromhex("0200000000100200000000010800")
    ip = bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(16)
    return eth + ip + i.to_bytes(4, "big") + bytes(payload - 4)


def arp_frame() -> bytes:
    return bytes.fromhex("ffffffffffff0200000000010806") + bytes(28)


def number(frame: bytes) -> int:
    return int.from_bytes(frame[34:38], "big")


def run(imp: Impairment, count: int = N, tail_us: int = 1_000_000) -> list[tuple[int, bytes]]:
    """Offer `count` numbered frames STEP_US apart; return (release time, frame)."""
    out: list[tuple[int, bytes]] = []
    for i in range(count):
        now = i * STEP_US
        imp.offer(ipv4_frame(i), now)
        out.extend((now, f) for f in imp.due(now))
    end = count * STEP_US + tail_us
    while (deadline := imp.next_deadline()) is not None and deadline <= end:
        out.extend((deadline, f) for f in imp.due(deadline))
    return out


def within(observed: int, p: float, n: int = N, sigmas: float = 5.0) -> bool:
    return abs(observed - p * n) <= sigmas * math.sqrt(n * p * (1 - p))


ALL = {
    "loss": 0.05,
    "reorder": 0.05,
    "duplicate": 0.05,
    "corrupt": 0.05,
    "delay_us": 300,
    "jitter_us": 50,
}


# --- determinism -----------------------------------------------------------


def test_impairment_same_seed_same_decisions():
    assert run(Impairment(seed=7, **ALL), 5000) == run(Impairment(seed=7, **ALL), 5000)


def test_impairment_decisions_do_not_depend_on_arrival_times():
    a, b = Impairment(seed=7, loss=0.2, duplicate=0.2), Impairment(seed=7, loss=0.2, duplicate=0.2)
    for i in range(2000):
        a.offer(ipv4_frame(i), i)
        b.offer(ipv4_frame(i), i * 1000)
    assert a.due(10**9) == b.due(10**9)


def test_impairment_different_seeds_differ():
    assert run(Impairment(seed=1, **ALL), 5000) != run(Impairment(seed=2, **ALL), 5000)


def test_relay_directions_get_distinct_derived_seeds():
    args = parse_args(["--a", "x", "--b", "y", "--seed", "3", "--loss", "0.5"])
    imps = impairments_from_args(args)
    assert imps["a_to_b"].seed == direction_seed(3, "a_to_b") != imps["b_to_a"].seed
    assert run(imps["a_to_b"], 500) != run(imps["b_to_a"], 500)


def test_relay_direction_option_impairs_one_way_only():
    args = parse_args(["--a", "x", "--b", "y", "--loss", "0.5", "--direction", "b_to_a"])
    imps = impairments_from_args(args)
    assert imps["a_to_b"].loss == 0.0
    assert imps["b_to_a"].loss == 0.5


# --- rates -----------------------------------------------------------------


def test_impairment_loss_rate_within_bounds():
    imp = Impairment(loss=0.1, seed=11)
    out = run(imp)
    assert within(imp.stats.dropped, 0.1)
    assert len(out) == N - imp.stats.dropped == imp.stats.forwarded


def test_impairment_duplicate_rate_within_bounds_and_copies_adjacent():
    imp = Impairment(duplicate=0.2, seed=12)
    out = [f for _, f in run(imp)]
    assert within(imp.stats.duplicated, 0.2)
    assert len(out) == N + imp.stats.duplicated
    pairs = sum(1 for x, y in itertools.pairwise(out) if x == y)
    assert pairs == imp.stats.duplicated


def test_impairment_corrupt_rate_within_bounds():
    imp = Impairment(corrupt=0.05, seed=13)
    out = run(imp)
    changed = sum(1 for i, (_, f) in enumerate(out) if f != ipv4_frame(i))
    assert within(imp.stats.corrupted, 0.05)
    assert changed == imp.stats.corrupted


def test_impairment_full_loss_drops_all_and_none_is_no_op():
    lossy, clean = Impairment(loss=1.0), Impairment()
    assert run(lossy, 100) == []
    assert [f for _, f in run(clean, 100)] == [ipv4_frame(i) for i in range(100)]
    assert clean.snapshot() == DirectionStats(received=100, forwarded=100)


# --- corruption ------------------------------------------------------------


def test_corruption_keeps_length_and_flips_one_bit_inside_ipv4():
    rng = random.Random(5)
    for i in range(2000):
        frame = ipv4_frame(i, payload=4 + i % 200)
        bad = corrupt_one_bit(frame, rng)
        assert bad is not None and len(bad) == len(frame)
        diff = int.from_bytes(bad, "big") ^ int.from_bytes(frame, "big")
        assert diff.bit_count() == 1
        byte = len(frame) - 1 - (diff.bit_length() - 1) // 8
        assert ETH_HEADER_LEN <= byte < len(frame)
        assert bad[:ETH_HEADER_LEN] == frame[:ETH_HEADER_LEN]


def test_corruption_spares_ethernet_padding_and_non_ipv4():
    rng = random.Random(6)
    padded = ipv4_frame(1, payload=6) + bytes(20)  # 60-byte minimum frame
    for _ in range(500):
        assert corrupt_one_bit(padded, rng)[-20:] == bytes(20)
    assert corrupt_one_bit(arp_frame(), rng) is None
    imp = Impairment(corrupt=1.0)
    imp.offer(arp_frame(), 0)
    assert imp.due(0) == [arp_frame()]
    assert imp.stats.corrupted == 0


def test_corruption_each_duplicate_copy_decided_apart():
    imp = Impairment(duplicate=1.0, corrupt=0.5, seed=3)
    out = [f for _, f in run(imp, 2000)]
    assert len(out) == 4000
    differing = sum(1 for x, y in zip(out[::2], out[1::2], strict=True) if x != y)
    assert within(differing, 0.75, 2000)  # unless neither copy is corrupted (1 - 0.5 * 0.5)


# --- reordering ------------------------------------------------------------


def late_frames(out: list[tuple[int, bytes]]) -> int:
    """Frames released after some frame that was offered later."""
    late, highest = 0, -1
    for _, f in out:
        n = number(f)
        if n < highest:
            late += 1
        highest = max(highest, n)
    return late


def test_reorder_really_reorders_and_loses_nothing():
    imp = Impairment(reorder=0.1, seed=21)
    out = run(imp)
    numbers = [number(f) for _, f in out]
    assert sorted(numbers) == list(range(N))
    assert numbers != list(range(N))
    assert within(imp.scheduler.reordered, 0.1)
    assert late_frames(out) == imp.snapshot().reordered
    assert imp.snapshot().pending == 0


def test_reorder_with_delay_jitter_and_duplicates_loses_nothing():
    imp = Impairment(reorder=0.3, duplicate=0.1, delay_us=200, jitter_us=150, seed=22)
    numbers = sorted(number(f) for _, f in run(imp))
    assert len(numbers) == N + imp.stats.duplicated
    assert sorted(set(numbers)) == list(range(N))
    assert imp.snapshot().pending == 0
    assert imp.snapshot().reordered > 0


def test_reorder_held_frame_leaves_right_after_its_overtaker():
    imp = Impairment(reorder=1.0, reorder_hold_us=1000)
    imp.offer(ipv4_frame(0), 0)
    assert imp.due(10) == []
    imp.reorder = 0.0
    imp.offer(ipv4_frame(1), 20)
    assert [number(f) for f in imp.due(20)] == [1, 0]
    assert imp.next_deadline() is None
    assert imp.snapshot().reordered == 1


def test_reorder_gap_needs_that_many_overtakers():
    imp = Impairment(reorder=1.0, reorder_gap=3, reorder_hold_us=10**6)
    imp.offer(ipv4_frame(0), 0)
    imp.reorder = 0.0
    released = []
    for i in range(1, 5):
        imp.offer(ipv4_frame(i), i)
        released += [number(f) for f in imp.due(i)]
    assert released == [1, 2, 3, 0, 4]


def test_reorder_without_later_frames_releases_at_hold_timeout():
    imp = Impairment(reorder=1.0, reorder_hold_us=5000, delay_us=100)
    imp.offer(ipv4_frame(0), 1000)
    assert imp.next_deadline() == 1000 + 100 + 5000
    assert imp.due(6099) == []
    assert [number(f) for f in imp.due(6100)] == [0]
    assert imp.snapshot().reordered == 0  # nothing overtook it


# --- delay and jitter ------------------------------------------------------


def test_delay_holds_frames_until_due():
    imp = Impairment(delay_us=5000)
    imp.offer(ipv4_frame(0), 100)
    imp.offer(ipv4_frame(1), 200)
    assert imp.next_deadline() == 5100
    assert imp.due(5099) == []
    assert [number(f) for f in imp.due(5100)] == [0]
    assert imp.next_deadline() == 5200
    assert [number(f) for f in imp.due(10**6)] == [1]
    assert imp.next_deadline() is None


def test_jitter_stays_within_bounds():
    imp = Impairment(delay_us=1000, jitter_us=300, seed=4)
    for i in range(1000):
        imp.offer(ipv4_frame(i), 0)
    times = []
    while (deadline := imp.next_deadline()) is not None:
        times += [deadline] * len(imp.due(deadline))
    assert len(times) == 1000
    assert 700 <= min(times) < 750 and 1250 < max(times) <= 1300


def test_scheduler_is_fifo_for_equal_release_times():
    sched = Scheduler()
    for i in range(100):
        sched.push(bytes([i]), 50)
    assert len(sched) == 100
    assert sched.due(50) == [bytes([i]) for i in range(100)]
    assert len(sched) == 0


# --- validation and reporting ----------------------------------------------


@pytest.mark.parametrize(
    "kwargs", [{"loss": 1.5}, {"corrupt": -0.1}, {"delay_us": -1}, {"reorder_gap": 0}]
)
def test_impairment_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        Impairment(**kwargs)


def test_relay_stats_parse_from_json_line():
    line = (
        '{"a_to_b": {"received": 3, "forwarded": 2, "dropped": 1}, '
        '"b_to_a": {"received": 5, "duplicated": 1}, "elapsed_s": 0.5}'
    )
    stats = RelayStats.from_json(line)
    assert stats.a_to_b == DirectionStats(received=3, forwarded=2, dropped=1)
    assert stats.b_to_a.duplicated == 1
