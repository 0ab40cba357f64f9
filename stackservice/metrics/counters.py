"""Counters and histograms in shared memory: written by the stack loop, read
by anyone.

The loop increments plain 64-bit slots (`memoryview.cast("Q")`) with no
lock and no call into prometheus-client per packet; an exporter or a test
maps the same file read-only and reads the slots at its own pace. Each slot
has one writer, and an aligned 8-byte store is atomic on the platforms we
run on; readers load each slot with one aligned 8-byte load too (an mmap
read through `memoryview.cast("Q")`, never a byte copy such as `read()`,
which may split a slot), so they see an old or a new value, never a torn one.

File layout: a 16-byte header (magic, layout fingerprint), then one array of
u64 per section in the order the layout lists them, then one array per
histogram: `[count, sum, bucket_0 .. bucket_n]`, where bucket i < n counts
observations `bounds[i-1] < v <= bounds[i]` (not cumulative) and bucket n
counts those above the last bound (+Inf).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

MAGIC = b"VFSTCNT1"
HEADER_BYTES = 16

# Histogram slots, relative to the histogram's start.
HIST_COUNT = 0
HIST_SUM = 1
HIST_BUCKETS = 2  # first bucket; one per bound, then +Inf

# Larger observations are recorded as this value (in the +Inf bucket): a
# garbage value (a peer's bogus timestamp echo, a clock bug) must neither
# crash the loop by overflowing the u64 sum nor poison it. 2**40 µs is 12.7
# days; the sum overflows only after 2**24 such observations.
MAX_OBSERVATION = 1 << 40


class CounterLayout:
    """Named sections, each an IntEnum whose members index its slots, and
    named histograms, each a tuple of increasing upper bounds (ints in the
    base unit: µs for times, a count for sizes).

    `gauges` names the sections whose slots hold a current value rather
    than a running total (readers must not difference them).

    Raises ValueError on empty, unsorted or negative bounds, or a name used
    twice.
    """

    __slots__ = (
        "fingerprint",
        "gauges",
        "histogram_offsets",
        "histograms",
        "offsets",
        "sections",
        "size",
    )

    def __init__(
        self,
        sections: dict[str, type[IntEnum]],
        histograms: Mapping[str, Iterable[int]] | None = None,
        gauges: Iterable[str] = (),
    ) -> None:
        self.sections = sections
        self.histograms = {name: _bounds(name, b) for name, b in (histograms or {}).items()}
        self.gauges = frozenset(gauges)
        if unknown := sorted(self.gauges - set(sections)):
            raise ValueError(f"gauge section {unknown[0]!r} is not a section")
        if clash := sorted(set(sections) & set(self.histograms)):
            raise ValueError(f"{clash[0]!r} is both a section and a histogram")
        self.offsets: dict[str, int] = {}
        offset = HEADER_BYTES
        described = []
        for name, enum in sections.items():
            self.offsets[name] = offset
            offset += 8 * len(enum)
            described.append(name + ":" + ",".join(m.name for m in enum))
        self.histogram_offsets: dict[str, int] = {}
        for name, bounds in self.histograms.items():
            self.histogram_offsets[name] = offset
            offset += 8 * histogram_slots(bounds)
            described.append("histogram " + name + ":" + ",".join(map(str, bounds)))
        self.size = offset
        # Readers refuse a file written with a different layout (another
        # version of the stack) instead of mislabelling its slots.
        self.fingerprint = hashlib.sha256(";".join(described).encode()).digest()[:8]


def _bounds(name: str, bounds: Iterable[int]) -> tuple[int, ...]:
    result = tuple(bounds)
    if not result:
        raise ValueError(f"histogram {name!r}: no bounds")
    if any(not isinstance(b, int) or isinstance(b, bool) or b < 0 for b in result):
        raise ValueError(f"histogram {name!r}: bounds must be non-negative ints")
    if any(a >= b for a, b in pairwise(result)):
        raise ValueError(f"histogram {name!r}: bounds must increase strictly")
    return result


def histogram_slots(bounds: Sequence[int]) -> int:
    """u64 slots one histogram takes: count, sum, a bucket per bound, +Inf."""
    return HIST_BUCKETS + len(bounds) + 1


class Histogram:
    """The writer's handle on one histogram: `observe` is the hot path.

    Single writer, lock-free: each observation is three aligned 8-byte
    increments (bucket, sum, count). A concurrent reader may see one of
    them without the others; `HistogramSnapshot.total` (the buckets' sum)
    is the count that always matches the buckets.

    Compiled (counters.pxd), the slots are a typed view: an observation
    per RTT sample and per connection was ~3% of the stack's CPU on short
    transactions while this ran interpreted. A typed view pins the
    mapping, so `CounterBlock.close` releases it first (`release`).
    """

    __slots__ = ("_bounds", "_slots")

    def __init__(self, slots: memoryview, bounds: tuple[int, ...]) -> None:
        """`slots`: a u64 memoryview of `histogram_slots(bounds)` items."""
        if slots.format != "Q" or len(slots) != histogram_slots(bounds):
            raise ValueError("histogram slots must be u64, count + sum + buckets")
        self._slots: memoryview = slots
        self._bounds: tuple[int, ...] = bounds

    @property
    def bounds(self) -> tuple[int, ...]:
        return self._bounds

    def release(self) -> None:
        """Let go of the slots (the block is closing); observing after this
        raises."""
        self._slots = None

    def observe(self, value: int) -> None:
        """Record one value (in the layout's unit). A value equal to a bound
        lands in that bound's bucket, one above the last bound in +Inf;
        negative values count as 0, huge ones as `MAX_OBSERVATION`."""
        self.observe_many(value, 1)

    def observe_many(self, value: int, count: int) -> None:
        """Record `value` `count` times, as that many `observe` calls would,
        in one update (a pass publishes its events together, all with the
        same delay)."""
        if value < 0:
            value = 0
        elif value > MAX_OBSERVATION:
            value = MAX_OBSERVATION
        slots = self._slots
        slots[2 + bisect_left(self._bounds, value)] += count  # HIST_BUCKETS
        slots[1] += value * count  # HIST_SUM
        slots[0] += count  # HIST_COUNT


class HistogramSnapshot(NamedTuple):
    """One histogram as read: `buckets` are per bucket (not cumulative), the
    last one +Inf, so `len(buckets) == len(bounds) + 1`."""

    bounds: tuple[int, ...]
    buckets: tuple[int, ...]
    sum: int
    count: int  # as the writer counted: stored last, read first, so <= total

    @property
    def total(self) -> int:
        """Observations in the buckets: the count consistent with them."""
        return sum(self.buckets)


class CounterBlock:
    """The counters of one stack instance, optionally backed by a file."""

    __slots__ = ("_histograms", "_map", "_path", "_sections", "_view", "layout")

    def __init__(self, layout: CounterLayout, path: Path | None = None) -> None:
        self.layout = layout
        self._path = path
        if path is None:
            self._map = mmap.mmap(-1, layout.size)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                # Allocated now, not page by page as the loop first writes
                # them: on a full tmpfs that first write would be SIGBUS.
                os.posix_fallocate(fd, 0, layout.size)
                self._map = mmap.mmap(fd, layout.size)
            finally:
                os.close(fd)
        self._map[: len(MAGIC)] = MAGIC
        self._map[8:HEADER_BYTES] = layout.fingerprint
        self._view = memoryview(self._map)
        self._sections: list[memoryview] = []
        self._histograms: list[Histogram] = []

    def section(self, name: str) -> memoryview:
        """A writable u64 array for one section, indexable by its enum."""
        start = self.layout.offsets[name]
        count = len(self.layout.sections[name])
        return self._slots(start, count)

    def histogram(self, name: str) -> Histogram:
        """The writer's handle on one histogram of the layout.

        Raises KeyError for a name the layout does not list.
        """
        bounds = self.layout.histograms[name]
        start = self.layout.histogram_offsets[name]
        histogram = Histogram(self._slots(start, histogram_slots(bounds)), bounds)
        self._histograms.append(histogram)
        return histogram

    def _slots(self, start: int, count: int) -> memoryview:
        slots = self._view[start : start + 8 * count].cast("Q")
        self._sections.append(slots)
        return slots

    def snapshot(self) -> dict[str, dict[str, int]]:
        return snapshot(self._view, self.layout)

    def histogram_snapshot(self) -> dict[str, HistogramSnapshot]:
        with self._view.cast("Q") as slots:
            return histograms_from_slots(slots, self.layout)

    def reset_gauges(self) -> None:
        """Zero the gauge sections: a restarted worker starts with no
        connections, sessions or memory, whatever its predecessor held.
        (Running totals go on: a scrape never sees a counter go back.)"""
        layout = self.layout
        for name in layout.gauges:
            section = self.section(name)
            for index in range(len(section)):
                section[index] = 0

    def close(self, unlink: bool = True) -> None:
        """Unmap (every section and histogram handed out becomes unusable)
        and by default remove the file."""
        for histogram in self._histograms:
            histogram.release()
        for section in self._sections:
            section.release()
        self._view.release()
        self._map.close()
        if unlink and self._path is not None:
            self._path.unlink(missing_ok=True)


class Reading(NamedTuple):
    """Counters and histograms read together from one mapping."""

    counters: dict[str, dict[str, int]]
    histograms: dict[str, HistogramSnapshot]


def read_slots(path: Path, layout: CounterLayout) -> list[int]:
    """Every u64 slot of a running instance's counters file (header
    included), each read with one aligned 8-byte load.

    Raises OSError when the file cannot be opened or mapped, ValueError when
    it was written with another layout or is truncated.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        header = os.pread(fd, HEADER_BYTES, 0)
        if header[: len(MAGIC)] != MAGIC or header[8:HEADER_BYTES] != layout.fingerprint:
            raise ValueError(f"{path}: not a counters file of this vfstack version")
        if os.fstat(fd).st_size < layout.size:
            raise ValueError(f"{path}: truncated counters file")
        with (
            mmap.mmap(fd, layout.size, mmap.MAP_SHARED, mmap.PROT_READ) as mapped,
            memoryview(mapped) as view,
            view.cast("Q") as slots,
        ):
            return slots.tolist()
    finally:
        os.close(fd)


CounterFiles = Path | Sequence[Path]  # an instance's file, or one per worker


def read_summed(paths: CounterFiles, layout: CounterLayout) -> list[int]:
    """`read_slots` of one file, or of each worker's file added slot by
    slot: the instance's totals. Gauges add up too, since each worker
    holds its own connections, sessions and memory. Raises like
    `read_slots`."""
    if isinstance(paths, Path):
        return read_slots(paths, layout)
    total = read_slots(paths[0], layout)
    for path in paths[1:]:
        total = [a + b for a, b in zip(total, read_slots(path, layout), strict=True)]
    return total


def read_counters(paths: CounterFiles, layout: CounterLayout) -> dict[str, dict[str, int]]:
    """Snapshot a running instance's counters: {section: {name: value}}.

    Raises OSError when a file cannot be read, ValueError when it was
    written with another layout.
    """
    return counters_from_slots(read_summed(paths, layout), layout)


def read_histograms(paths: CounterFiles, layout: CounterLayout) -> dict[str, HistogramSnapshot]:
    """Snapshot a running instance's histograms: {name: HistogramSnapshot},
    each a (bounds, buckets, sum, count) tuple.

    Raises OSError when a file cannot be read, ValueError when it was
    written with another layout.
    """
    return histograms_from_slots(read_summed(paths, layout), layout)


def read_all(paths: CounterFiles, layout: CounterLayout) -> Reading:
    """Counters and histograms from one read of the files (an exporter's
    scrape). Raises like `read_counters`."""
    slots = read_summed(paths, layout)
    return Reading(counters_from_slots(slots, layout), histograms_from_slots(slots, layout))


def snapshot(buffer: memoryview, layout: CounterLayout) -> dict[str, dict[str, int]]:
    with buffer.cast("Q") as slots:
        return counters_from_slots(slots, layout)


def counters_from_slots(
    slots: Sequence[int] | memoryview, layout: CounterLayout
) -> dict[str, dict[str, int]]:
    return {
        name: {m.name.lower(): slots[(layout.offsets[name] // 8) + m.value] for m in enum}
        for name, enum in layout.sections.items()
    }


def histograms_from_slots(
    slots: Sequence[int] | memoryview, layout: CounterLayout
) -> dict[str, HistogramSnapshot]:
    result = {}
    for name, bounds in layout.histograms.items():
        start = layout.histogram_offsets[name] // 8
        buckets = tuple(slots[start + HIST_BUCKETS : start + histogram_slots(bounds)])
        result[name] = HistogramSnapshot(
            bounds, buckets, slots[start + HIST_SUM], slots[start + HIST_COUNT]
        )
    return result


def nonzero(snapshot: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The snapshot without zero counters, for a readable summary."""
    return {
        section: {k: v for k, v in values.items() if v}
        for section, values in snapshot.items()
        if any(values.values())
    }
