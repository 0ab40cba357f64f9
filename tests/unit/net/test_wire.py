"""Network-order fields by byte (net/wire.py), in whichever build runs."""

import struct

import pytest

from stackservice.net.wire import read16, read32, write16, write32


@pytest.mark.parametrize("value", [0, 1, 0x80, 0xFF00, 0xFFFF])
def test_16_bit_fields_match_struct_at_any_offset(value):
    buf = bytearray(7)
    write16(buf, 3, value)
    assert buf == bytearray(3) + struct.pack("!H", value) + bytearray(2)
    assert read16(bytes(buf), 3) == value
    assert read16(memoryview(buf)[3:], 0) == value


@pytest.mark.parametrize("value", [0, 1, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF])
def test_32_bit_fields_match_struct_and_stay_unsigned(value):
    """The top bit set must not come back negative (a C int shift would)."""
    buf = bytearray(9)
    write32(buf, 5, value)
    assert buf == bytearray(5) + struct.pack("!I", value)
    assert read32(buf, 5) == value
    assert read32(memoryview(buf), 5) == value


def test_fields_beyond_the_buffer_raise_index_error():
    """Never a write past the end (callers check bounds first, this is the
    backstop): compiled, bounds checks stay on."""
    buf = bytearray(3)
    with pytest.raises(IndexError):
        write32(buf, 0, 0)
    with pytest.raises(IndexError):
        write16(buf, 2, 0)
    with pytest.raises(IndexError):
        read16(buf, 2)
    with pytest.raises(IndexError):
        read32(memoryview(buf)[1:], 0)
