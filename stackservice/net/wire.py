"""Big-endian (network order) fields read and written in place, by byte.

Compiled (wire.pxd), each call is a few C instructions on the buffer
itself, where `struct` would box every field and build a tuple; the header
code of both layers (ipv4, tcp/segment) cimports them. Interpreted, a
header's few fields cost about what `struct` costs.
"""

from __future__ import annotations

Buffer = bytes | bytearray | memoryview


def read16(buf: Buffer, at: int) -> int:
    return buf[at] << 8 | buf[at + 1]


def read32(buf: Buffer, at: int) -> int:
    value = buf[at]
    value = value << 8 | buf[at + 1]
    value = value << 8 | buf[at + 2]
    return value << 8 | buf[at + 3]


def write16(buf: bytearray | memoryview, at: int, value: int) -> None:
    buf[at] = value >> 8 & 0xFF
    buf[at + 1] = value & 0xFF


def write32(buf: bytearray | memoryview, at: int, value: int) -> None:
    buf[at] = value >> 24 & 0xFF
    buf[at + 1] = value >> 16 & 0xFF
    buf[at + 2] = value >> 8 & 0xFF
    buf[at + 3] = value & 0xFF
