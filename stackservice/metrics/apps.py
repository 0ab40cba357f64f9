"""Per-application counters in shared memory: written by the stack loop,
read by the exporter in the control process at scrape time.

The counters file (`stackservice.metrics.counters`) has a fixed layout
with a fingerprint, and per-app series are dynamic, so they live in a
second small file, `<run_dir>/<name>.apps`, with a fixed number of app
slots. One slot per application *name*, not per session: docs/architecture.md labels
the families `{app,direction}` and `{app,ring}` only, so the sessions of
one name are aggregated by the stack, where no byte is lost between two
scrapes, and the counters stay monotonic when sessions come and go.

- `vfstack_app_bytes_total{app,direction}`: `RX_BYTES` (bytes the stack
  put into the app's RX rings) and `TX_BYTES` (bytes it took from its TX
  rings), summed over every session of that name since the instance
  started. The loop adds to them where it moves the bytes: one u64 add per
  pump, no lock, nothing else. When the last session of a name ends the
  slot keeps its name and totals, so the counter series stays (a
  reattaching app continues it). Only when every slot is taken and a new
  name arrives is the name idle longest evicted; its series then vanishes
  (Prometheus reads that as the series ending, not as a reset).
- `vfstack_ring_occupancy_ratio{app,ring}`: sampled by the loop
  (`SessionManager`), published here as (used, capacity) pairs per ring,
  only while sessions of the name are attached; the exporter divides.

File layout (u64 little-endian words; a 64-byte header, then `slots`
slots of `SLOT_WORDS` words each)::

    header: 0 magic b"VFSTAPP1"   1 fingerprint   2 slots   3 used_slots
            4-7 zero              (used_slots: slots ever claimed, a prefix)
    slot:   AppField below; the name is UTF-8 in words NAME .. NAME + 63

Concurrency: one writer (the loop), any number of readers. Every word is
stored and loaded as one aligned 8-byte access (docs/architecture.md "Known
pitfalls"). The byte counters are independent words, bumped in place.
Everything that must be read together (a slot's name with its counters
after a claim, the ring pairs of one sample) is written inside a seqlock:
`SEQ` goes odd, the words change, `SEQ` goes even. A reader copies the
slot and accepts it only if `SEQ` was even and the same before and after
(`read_apps` retries a few times, then leaves the slot out of that read).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "NAME_BYTES",
    "RINGS",
    "SLOT_WORDS",
    "AppField",
    "AppSample",
    "AppStatsTable",
    "read_apps",
]

MAGIC = b"VFSTAPP1"
HEADER_WORDS = 8
NAME_BYTES = 512  # MAX_APP_NAME (128) characters of up to 4 UTF-8 bytes each
DEFAULT_SLOTS = 256
READ_ATTEMPTS = 3


class AppField(IntEnum):
    """Words of one app slot."""

    SEQ = 0  # seqlock: odd while the writer changes the slot
    IN_USE = 1  # 1 once a name is claimed
    SESSIONS = 2  # sessions of this name attached now
    RX_BYTES = 3  # bytes into the app's RX rings (stack -> app), ever
    TX_BYTES = 4  # bytes taken from the app's TX rings (app -> stack), ever
    COMMAND_USED = 5  # records waiting in the fullest command ring
    COMMAND_CAPACITY = 6
    EVENT_USED = 7  # records waiting in the fullest event ring
    EVENT_CAPACITY = 8
    RX_USED = 9  # bytes waiting in all RX rings of connected sockets
    RX_CAPACITY = 10  # their capacity, summed
    TX_USED = 11
    TX_CAPACITY = 12
    NAME_LENGTH = 13  # bytes of the UTF-8 name
    NAME = 16  # first word of the name


SLOT_WORDS = AppField.NAME + NAME_BYTES // 8
SLOT_BYTES = 8 * SLOT_WORDS
HEADER_BYTES = 8 * HEADER_WORDS
_SLOTS_WORD, _USED_SLOTS_WORD = 2, 3

# `ring` label -> the (used, capacity) words it is computed from.
RINGS: dict[str, tuple[int, int]] = {
    "command": (AppField.COMMAND_USED, AppField.COMMAND_CAPACITY),
    "event": (AppField.EVENT_USED, AppField.EVENT_CAPACITY),
    "rx": (AppField.RX_USED, AppField.RX_CAPACITY),
    "tx": (AppField.TX_USED, AppField.TX_CAPACITY),
}

FINGERPRINT = hashlib.sha256(
    (",".join(f"{f.name}={f.value}" for f in AppField) + f";name_bytes={NAME_BYTES}").encode()
).digest()[:8]


def file_bytes(slots: int) -> int:
    return HEADER_BYTES + slots * SLOT_BYTES


class AppStatsTable:
    """The writer's side: the stack loop, the only writer.

    `attach` gives a session the index of its app's slot, `counters(index)`
    the u64 view the session bumps `RX_BYTES` / `TX_BYTES` in; `publish`
    stores a ring sample, `detach` ends one session of the name.

    Raises (construction): ValueError for fewer than one slot; OSError when
    the file cannot be created.
    """

    __slots__ = (
        "_bytes",
        "_idle_since",
        "_index",
        "_map",
        "_names",
        "_path",
        "_views",
        "_words",
        "slots",
    )

    def __init__(self, slots: int = DEFAULT_SLOTS, path: Path | None = None) -> None:
        if slots < 1:
            raise ValueError("an app table needs at least one slot")
        self.slots = slots
        self._path = path
        size = file_bytes(slots)
        if path is None:
            self._map = mmap.mmap(-1, size)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                # Allocated now, not page by page as the loop first writes
                # them: on a full tmpfs that first write would be SIGBUS.
                os.posix_fallocate(fd, 0, size)
                self._map = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        self._bytes = memoryview(self._map)
        self._words = self._bytes.cast("Q")
        self._words[1] = int.from_bytes(FINGERPRINT, "little")
        self._words[_SLOTS_WORD] = slots
        self._bytes[: len(MAGIC)] = MAGIC  # last: a reader checks it first
        self._index: dict[str, int] = {}  # app name -> slot
        self._names: list[str | None] = [None] * slots  # slot -> app name
        self._idle_since: dict[int, int] = {}  # slot of a name with no session -> since (µs)
        self._views: list[memoryview | None] = [None] * slots  # counters(), made once

    # ----------------------------------------------------------- sessions

    def attach(self, app: str) -> int:
        """One more session of `app`: its slot (claimed if the name is new),
        or -1 when every slot holds a name with sessions attached."""
        index = self._index.get(app)
        if index is None:
            index = self._claim(app)
            if index < 0:
                return -1
        self._idle_since.pop(index, None)
        base = self._base(index)
        self._words[base + AppField.SESSIONS] += 1
        return index

    def detach(self, index: int, now: int) -> None:
        """One session of the slot's app ended. With the last one the ring
        sample is cleared (no rings, no occupancy series); the name and its
        byte totals stay until the slot is needed for another name."""
        words = self._words
        base = self._base(index)
        sessions = words[base + AppField.SESSIONS]
        if sessions == 0:
            return
        words[base + AppField.SESSIONS] = sessions - 1
        if sessions == 1:
            self._idle_since[index] = now
            self.publish(index, 0, 0, 0, 0, 0, 0, 0, 0)

    def counters(self, index: int) -> memoryview:
        """The u64 words of one slot, for the session's byte counters."""
        base = self._base(index)
        view = self._views[index]
        if view is None:
            view = self._views[index] = self._words[base : base + SLOT_WORDS]
        return view

    def sessions(self, index: int) -> int:
        return self._words[self._base(index) + AppField.SESSIONS]

    def publish(
        self, index: int, command_used: int, command_capacity: int, event_used: int,
        event_capacity: int, rx_used: int, rx_capacity: int, tx_used: int, tx_capacity: int,
    ) -> None:  # fmt: skip
        """Store one ring sample of the slot's app, as one seqlocked update."""
        words = self._words
        base = self._base(index)
        seq = words[base]
        words[base] = seq + 1
        words[base + AppField.COMMAND_USED] = command_used
        words[base + AppField.COMMAND_CAPACITY] = command_capacity
        words[base + AppField.EVENT_USED] = event_used
        words[base + AppField.EVENT_CAPACITY] = event_capacity
        words[base + AppField.RX_USED] = rx_used
        words[base + AppField.RX_CAPACITY] = rx_capacity
        words[base + AppField.TX_USED] = tx_used
        words[base + AppField.TX_CAPACITY] = tx_capacity
        words[base] = seq + 2

    def _claim(self, app: str) -> int:
        """A slot for a new name: the lowest never used, else the one idle
        longest (its name and totals are dropped), else -1."""
        used = self._words[_USED_SLOTS_WORD]
        if used < self.slots:
            index = used
        elif self._idle_since:
            index = min(self._idle_since, key=self._idle_since.__getitem__)
            del self._idle_since[index]
            del self._index[self._names[index]]
        else:
            return -1
        name = app.encode("utf-8", "replace")[:NAME_BYTES]
        words = self._words
        base = self._base(index)
        seq = words[base]
        words[base] = seq + 1
        for field in range(AppField.IN_USE, SLOT_WORDS):
            words[base + field] = 0
        start = 8 * (base + AppField.NAME)
        self._bytes[start : start + len(name)] = name
        words[base + AppField.NAME_LENGTH] = len(name)
        words[base + AppField.IN_USE] = 1
        words[base] = seq + 2
        if index >= used:
            words[_USED_SLOTS_WORD] = index + 1  # after the slot: readers see it whole
        self._index[app] = index
        self._names[index] = app
        return index

    def _base(self, index: int) -> int:
        if not 0 <= index < self.slots:
            raise IndexError("app slot out of range")
        return HEADER_WORDS + index * SLOT_WORDS

    def close(self, unlink: bool = True) -> None:
        """Unmap (views handed out become unusable); by default remove the file."""
        for view in self._views:
            if view is not None:
                view.release()
        self._words.release()
        self._bytes.release()
        self._map.close()
        if unlink and self._path is not None:
            self._path.unlink(missing_ok=True)


def detached_counters() -> memoryview:
    """Slot-shaped u64 words in private memory: for a session whose app got
    no slot (the table was full), so the hot path needs no branch."""
    return memoryview(bytearray(SLOT_BYTES)).cast("Q")


class AppSample(NamedTuple):
    """One app as read from the table."""

    app: str
    sessions: int  # attached now; 0: the name is kept for its byte totals
    rx_bytes: int
    tx_bytes: int
    rings: dict[str, tuple[int, int]]  # ring -> (used, capacity), as in RINGS

    def occupancy(self, ring: str) -> float:
        """used / capacity, clamped to 0..1 (0 without capacity)."""
        used, capacity = self.rings[ring]
        if capacity <= 0:
            return 0.0
        return min(1.0, used / capacity)


def read_apps(path: Path) -> list[AppSample]:
    """Every named slot of a running instance's app table, each consistent.

    Raises OSError when the file cannot be opened or mapped, ValueError
    when another layout wrote it or it is truncated.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        header = os.pread(fd, HEADER_BYTES, 0)
        if header[: len(MAGIC)] != MAGIC or header[8:16] != FINGERPRINT:
            raise ValueError(f"{path}: not an app table of this vfstack version")
        slots = int.from_bytes(header[16:24], "little")
        size = file_bytes(slots)
        if os.fstat(fd).st_size < size:
            raise ValueError(f"{path}: truncated app table")
        with (
            mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as mapped,
            memoryview(mapped) as view,
            view.cast("Q") as words,
        ):
            return _read_slots(words, min(words[_USED_SLOTS_WORD], slots))
    finally:
        os.close(fd)


def _read_slots(words: memoryview, used: int) -> list[AppSample]:
    samples: dict[int, AppSample] = {}
    pending = list(range(used))
    for _ in range(READ_ATTEMPTS):
        end = HEADER_WORDS + used * SLOT_WORDS
        copy = words[HEADER_WORDS:end].tolist()  # ascending: each SEQ before its slot
        retry = []
        for index in pending:
            base = index * SLOT_WORDS
            seq = copy[base]
            if seq & 1 or words[HEADER_WORDS + base] != seq:
                retry.append(index)  # the writer was inside: read it again
            elif copy[base + AppField.IN_USE]:
                samples[index] = _sample(copy[base : base + SLOT_WORDS])
        pending = retry
        if not pending:
            break
    return [samples[index] for index in sorted(samples)]


def _sample(slot: list[int]) -> AppSample:
    length = min(slot[AppField.NAME_LENGTH], NAME_BYTES)
    name_words = slot[AppField.NAME : AppField.NAME + (length + 7) // 8]
    raw = struct.pack(f"<{len(name_words)}Q", *name_words)[:length]
    return AppSample(
        raw.decode("utf-8", "replace"),
        slot[AppField.SESSIONS],
        slot[AppField.RX_BYTES],
        slot[AppField.TX_BYTES],
        {ring: (slot[used], slot[capacity]) for ring, (used, capacity) in RINGS.items()},
    )
