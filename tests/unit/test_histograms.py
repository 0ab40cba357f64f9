"""Histograms in the counters file: the loop's `observe`, readers' snapshots."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from enum import IntEnum
from pathlib import Path

import pytest

from stackservice.metrics.counters import (
    MAX_OBSERVATION,
    CounterBlock,
    CounterLayout,
    HistogramSnapshot,
    read_all,
    read_counters,
    read_histograms,
)
from stackservice.metrics.layout import (
    BATCH_BOUNDS,
    INSTANCE_LAYOUT,
    TIME_BOUNDS_US,
)


class Rx(IntEnum):
    PACKETS = 0
    BYTES = 1


BOUNDS = (10, 100, 1000)
LAYOUT = CounterLayout({"rx": Rx}, histograms={"rtt_us": BOUNDS, "batch": (1, 2, 4)})


@pytest.fixture
def block(tmp_path):
    block = CounterBlock(LAYOUT, tmp_path / "h.counters")
    yield block
    block.close()


def test_observe_value_equal_to_bound_lands_in_that_bucket(block, tmp_path):
    rtt = block.histogram("rtt_us")
    for value in (0, 10, 11, 100, 1000, 1001, 10**9):
        rtt.observe(value)
    snap = read_histograms(tmp_path / "h.counters", LAYOUT)["rtt_us"]
    #                  <=10 <=100 <=1000 +Inf
    assert snap == ((10, 100, 1000), (2, 2, 1, 2), 0 + 10 + 11 + 100 + 1000 + 1001 + 10**9, 7)
    assert snap.total == snap.count == 7


def test_observe_many_is_that_many_observes(tmp_path):
    """A pass's events are observed as one run (SocketTable.flush_events):
    buckets, sum and count as if each had been observed on its own."""
    blocks = [CounterBlock(LAYOUT, tmp_path / f"{n}.counters") for n in ("one", "many")]
    try:
        one, many = (b.histogram("rtt_us") for b in blocks)
        for value, count in ((0, 3), (10, 2), (11, 5), (1001, 1), (-4, 2), (2**70, 2)):
            for _ in range(count):
                one.observe(value)
            many.observe_many(value, count)
        assert blocks[0].histogram_snapshot() == blocks[1].histogram_snapshot()
        assert blocks[1].histogram_snapshot()["rtt_us"].count == 15
    finally:
        for b in blocks:
            b.close()


def test_observe_out_of_range_values_clamped(block):
    batch = block.histogram("batch")
    batch.observe(-5)
    batch.observe(2**70)
    snap = block.histogram_snapshot()["batch"]
    assert snap.buckets == (1, 0, 0, 1)
    assert snap.sum == MAX_OBSERVATION


def test_a_block_closes_with_its_histograms_in_use_and_they_refuse_after(tmp_path):
    """Compiled, a histogram pins the mapping with a typed view: close lets
    go of it first (else BufferError), and a late observe raises rather
    than write to an unmapped page."""
    block = CounterBlock(LAYOUT, tmp_path / "h.counters")
    rtt = block.histogram("rtt_us")
    rtt.observe(5)
    block.close()
    assert not (tmp_path / "h.counters").exists()
    with pytest.raises((IndexError, TypeError)):
        rtt.observe(5)


def test_histograms_do_not_touch_counters_or_each_other(block, tmp_path):
    rx = block.section("rx")
    rx[Rx.BYTES] = 2**64 - 1
    block.histogram("rtt_us").observe(5)
    path = tmp_path / "h.counters"
    assert read_counters(path, LAYOUT) == {"rx": {"packets": 0, "bytes": 2**64 - 1}}
    reading = read_all(path, LAYOUT)
    assert reading.histograms["batch"] == HistogramSnapshot((1, 2, 4), (0, 0, 0, 0), 0, 0)
    assert reading.histograms["rtt_us"].buckets == (1, 0, 0, 0)
    assert reading.counters == read_counters(path, LAYOUT)


def test_fingerprint_changes_with_bounds_and_names():
    same = CounterLayout({"rx": Rx}, histograms={"rtt_us": BOUNDS, "batch": (1, 2, 4)})
    other_bounds = CounterLayout({"rx": Rx}, histograms={"rtt_us": (10, 100), "batch": (1, 2, 4)})
    other_name = CounterLayout({"rx": Rx}, histograms={"rtt": BOUNDS, "batch": (1, 2, 4)})
    assert same.fingerprint == LAYOUT.fingerprint
    assert other_bounds.fingerprint != LAYOUT.fingerprint
    assert other_name.fingerprint != LAYOUT.fingerprint
    # Without histograms the fingerprint is what it was before they existed.
    assert CounterLayout({"rx": Rx}).fingerprint != LAYOUT.fingerprint


def test_reader_with_other_bounds_refused(block, tmp_path):
    other = CounterLayout({"rx": Rx}, histograms={"rtt_us": (10, 100, 999), "batch": (1, 2, 4)})
    with pytest.raises(ValueError, match="not a counters file of this vfstack version"):
        read_histograms(tmp_path / "h.counters", other)


@pytest.mark.parametrize(
    "bounds, complaint",
    [((), "no bounds"), ((1, 1), "increase"), ((5, 2), "increase"), ((-1, 2), "non-negative")],
)
def test_layout_bad_bounds_rejected(bounds, complaint):
    with pytest.raises(ValueError, match=complaint):
        CounterLayout({"rx": Rx}, histograms={"h": bounds})


def test_layout_unknown_histogram_key_error(block):
    with pytest.raises(KeyError):
        block.histogram("nope")


def test_instance_layout_histograms():
    assert INSTANCE_LAYOUT.histograms == {
        "tcp_rtt_us": TIME_BOUNDS_US,
        "tcp_connect_us": TIME_BOUNDS_US,
        "event_delivery_us": TIME_BOUNDS_US,
        "loop_iteration_us": TIME_BOUNDS_US,
        "rx_batch_packets": BATCH_BOUNDS,
    }
    assert TIME_BOUNDS_US[0] == 10 and TIME_BOUNDS_US[-1] == 10_000_000
    assert BATCH_BOUNDS == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    assert INSTANCE_LAYOUT.gauges == {"tcp_states", "sessions", "memory", "memory_limits"}


# -- a writer in another process ---------------------------------------------

WRITER = textwrap.dedent(
    """
    import mmap, os, sys, time
    from stackservice.metrics.counters import Histogram, histogram_slots

    path, size, rx_slot, start, bounds, seconds = sys.argv[1:]
    bounds = tuple(int(b) for b in bounds.split(","))
    fd = os.open(path, os.O_RDWR)
    view = memoryview(mmap.mmap(fd, int(size))).cast("Q")
    rx = view[int(rx_slot) :]
    rtt = Histogram(view[int(start) : int(start) + histogram_slots(bounds)], bounds)
    print("go", flush=True)
    end = time.monotonic() + float(seconds)
    i = 0
    while time.monotonic() < end:
        for _ in range(1000):
            i += 1
            # Every byte of the value equal: a torn read shows mixed bytes.
            rx[0] = 0x0101010101010101 * (i & 0xFF)
            rtt.observe(i % 2000)
    """
)


def spawn_writer(path: Path, seconds: float) -> subprocess.Popen:
    """A process writing `rx.packets` and observing `rtt_us` for `seconds`."""
    args = (
        path,
        LAYOUT.size,
        LAYOUT.offsets["rx"] // 8,
        LAYOUT.histogram_offsets["rtt_us"] // 8,
        ",".join(map(str, BOUNDS)),
        seconds,
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, *map(str, args)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline() == "go\n"
    return writer


def test_concurrent_reader_sees_no_torn_slot_and_consistent_histogram(block, tmp_path):
    path = tmp_path / "h.counters"
    writer = spawn_writer(path, 1.0)
    try:
        reads, lag, last_count, last_buckets = 0, 0, 0, (0, 0, 0, 0)
        counts = set()
        while writer.poll() is None:  # read for as long as the writer writes
            reading = read_all(path, LAYOUT)
            value = reading.counters["rx"]["packets"]
            assert value == 0x0101010101010101 * (value & 0xFF), hex(value)
            snap = reading.histograms["rtt_us"]
            # Monotonic; the count (read first, stored last) never leads the
            # buckets. How far it lags is what the writer did meanwhile: a
            # matter of scheduling (thousands on a loaded machine), not a bound.
            assert snap.count >= last_count
            assert all(a >= b for a, b in zip(snap.buckets, last_buckets, strict=True))
            assert snap.total >= snap.count
            lag = max(lag, snap.total - snap.count)
            last_count, last_buckets = snap.count, snap.buckets
            counts.add(snap.count)
            reads += 1
        assert writer.wait(timeout=10) == 0
    finally:
        writer.kill()
    final = read_histograms(path, LAYOUT)["rtt_us"]
    assert final.total == final.count > 0
    assert any(0 < count < final.count for count in counts), "no read met the writer at work"
    print(f"\n{reads} concurrent reads of {final.count} observations, count lag <= {lag}")
