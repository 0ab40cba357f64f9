"""Counters in shared memory: written by the stack loop, read by anyone.

The loop increments plain 64-bit slots (`memoryview.cast("Q")`) with no
lock and no call into prometheus-client per packet; an exporter or a test
maps the same file read-only and reads the slots at its own pace. Each slot
has one writer, and an aligned 8-byte store is atomic on the platforms we
run on, so a reader sees an old or a new value, never a torn one.

File layout: a 16-byte header (magic, layout fingerprint), then one array of
u64 per section in the order the layout lists them.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from enum import IntEnum
from pathlib import Path

MAGIC = b"VFSTCNT1"
HEADER_BYTES = 16


class CounterLayout:
    """Named sections, each an IntEnum whose members index its slots."""

    __slots__ = ("fingerprint", "offsets", "sections", "size")

    def __init__(self, sections: dict[str, type[IntEnum]]) -> None:
        self.sections = sections
        self.offsets: dict[str, int] = {}
        offset = HEADER_BYTES
        described = []
        for name, enum in sections.items():
            self.offsets[name] = offset
            offset += 8 * len(enum)
            described.append(name + ":" + ",".join(m.name for m in enum))
        self.size = offset
        # Readers refuse a file written with a different layout (another
        # version of the stack) instead of mislabelling its slots.
        self.fingerprint = hashlib.sha256(";".join(described).encode()).digest()[:8]


class CounterBlock:
    """The counters of one stack instance, optionally backed by a file."""

    __slots__ = ("_map", "_path", "_sections", "_view", "layout")

    def __init__(self, layout: CounterLayout, path: Path | None = None) -> None:
        self.layout = layout
        self._path = path
        if path is None:
            self._map = mmap.mmap(-1, layout.size)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                os.ftruncate(fd, layout.size)
                self._map = mmap.mmap(fd, layout.size)
            finally:
                os.close(fd)
        self._map[: len(MAGIC)] = MAGIC
        self._map[8:HEADER_BYTES] = layout.fingerprint
        self._view = memoryview(self._map)
        self._sections: list[memoryview] = []

    def section(self, name: str) -> memoryview:
        """A writable u64 array for one section, indexable by its enum."""
        start = self.layout.offsets[name]
        count = len(self.layout.sections[name])
        section = self._view[start : start + 8 * count].cast("Q")
        self._sections.append(section)
        return section

    def snapshot(self) -> dict[str, dict[str, int]]:
        return snapshot(self._view, self.layout)

    def close(self, unlink: bool = True) -> None:
        """Unmap (every section handed out becomes unusable) and by default
        remove the file."""
        for section in self._sections:
            section.release()
        self._view.release()
        self._map.close()
        if unlink and self._path is not None:
            self._path.unlink(missing_ok=True)


def read_counters(path: Path, layout: CounterLayout) -> dict[str, dict[str, int]]:
    """Snapshot a running instance's counters file: {section: {name: value}}.

    Raises ValueError when the file was written with another layout.
    """
    data = path.read_bytes()
    if data[: len(MAGIC)] != MAGIC or data[8:HEADER_BYTES] != layout.fingerprint:
        raise ValueError(f"{path}: not a counters file of this vfstack version")
    if len(data) < layout.size:
        raise ValueError(f"{path}: truncated counters file")
    return snapshot(memoryview(data)[: layout.size], layout)


def snapshot(buffer: memoryview, layout: CounterLayout) -> dict[str, dict[str, int]]:
    slots = buffer.cast("Q")
    return {
        name: {m.name.lower(): slots[(layout.offsets[name] // 8) + m.value] for m in enum}
        for name, enum in layout.sections.items()
    }


def nonzero(snapshot: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The snapshot without zero counters, for a readable summary."""
    return {
        section: {k: v for k, v in values.items() if v}
        for section, values in snapshot.items()
        if any(values.values())
    }
