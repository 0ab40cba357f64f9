"""vfstack.shm: segment geometry, header, records, and the mapped segment.

Geometry and records are checked as pure functions (hypothesis over the
sizes and argument ranges); the segment is created and opened as two
mappings of one file, as the stack and an application do.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vfstack.shm import (
    HEADER_BYTES,
    MAGIC,
    BadRecord,
    ByteRing,
    Command,
    CorruptRing,
    Event,
    EventKind,
    Geometry,
    Op,
    RecordRing,
    Segment,
    SlotState,
    decode_command,
    decode_event,
    encode_command_into,
    encode_event_into,
)

TOKEN = bytes(range(32))
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
SLOTS = 1024
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
POW2_RING = st.integers(6, 16).map(lambda e: 1 << e)
POW2_BYTES = st.integers(12, 24).map(lambda e: 1 << e)


def small_geometry() -> Geometry:
    return Geometry(command_slots=64, event_slots=128, socket_slots=8, socket_ring_bytes=4096)


# -- geometry ----------------------------------------------------------------


@given(command=POW2_RING, event=POW2_RING, sockets=st.integers(1, 65536), ring_bytes=POW2_BYTES)
def test_geometry_regions_are_aligned_ordered_and_disjoint(command, event, sockets, ring_bytes):
    try:
        g = Geometry(command, event, sockets, ring_bytes)
    except ValueError as exc:
        assert "exceeds" in str(exc)
        assert 2 * sockets * ring_bytes > (4 << 30) - (16 << 20)
        return
    regions = [
        (0, HEADER_BYTES),
        (g.command_offset, RecordRing.region_size(command, 64)),
        (g.event_offset, RecordRing.region_size(event, 64)),
        (g.slot_table_offset, 64 * sockets),
    ]
    for slot in {0, sockets // 2, sockets - 1}:
        regions.append((g.rx_offset(slot), ByteRing.region_size(ring_bytes)))
        regions.append((g.tx_offset(slot), ByteRing.region_size(ring_bytes)))
    regions.sort()
    for (start, size), (next_start, _) in itertools.pairwise(regions):
        assert start % 64 == 0
        assert start + size <= next_start
    last_start, last_size = max(regions)
    assert last_start + last_size <= g.file_bytes <= 4 << 30
    assert g.tx_offset(sockets - 1) + ByteRing.region_size(ring_bytes) == g.file_bytes


@pytest.mark.parametrize(
    "kwargs",
    [
        {"command_slots": 32},
        {"command_slots": 100},
        {"command_slots": 131072},
        {"event_slots": 0},
        {"event_slots": 96},
        {"socket_slots": 0},
        {"socket_slots": 65537},
        {"socket_ring_bytes": 2048},
        {"socket_ring_bytes": 5000},
        {"socket_ring_bytes": 32 << 20},
        {"record_size": 128},
        {"socket_slots": 65536, "socket_ring_bytes": 1 << 16},  # 8 GiB file
    ],
)
def test_geometry_refuses_bad_sizes(kwargs):
    sizes = {"command_slots": 64, "event_slots": 64, "socket_slots": 1, "socket_ring_bytes": 4096}
    sizes.update(kwargs)
    with pytest.raises(ValueError):
        Geometry(**sizes)


def test_geometry_at_upper_bounds_fits_four_gib():
    g = Geometry(65536, 65536, 65536, 16384)
    assert g.file_bytes <= 4 << 30


@given(command=POW2_RING, event=POW2_RING, sockets=st.integers(1, 4096), ring_bytes=POW2_BYTES)
def test_header_round_trip(command, event, sockets, ring_bytes):
    try:
        g = Geometry(command, event, sockets, ring_bytes)
    except ValueError:
        return
    header = g.header(session_id=2**64 - 1, token=TOKEN, app_pid=-1)
    assert len(header) == HEADER_BYTES
    assert header.startswith(MAGIC)
    assert Geometry.from_header(header) == g


# (offset, struct format, new value) of a header field to tamper with
TAMPER = {
    "magic": (0, "8s", b"VFSTSEG2"),
    "layout_version": (8, "<I", 1),
    "header_bytes": (12, "<I", 8192),
    "command_slots": (60, "<I", 128),
    "event_slots": (64, "<I", 100),
    "record_size": (68, "<I", 32),
    "socket_slots": (72, "<I", 9),
    "socket_ring_bytes": (76, "<I", 8192),
    "command_offset": (80, "<Q", 8192),
    "event_offset": (88, "<Q", 4096),
    "slot_table_offset": (96, "<Q", 0),
    "socket_offset": (104, "<Q", 2**63),
    "file_bytes": (112, "<Q", 1 << 40),
}


@pytest.mark.parametrize("name", sorted(TAMPER))
def test_header_with_a_tampered_field_is_refused(name):
    offset, fmt, value = TAMPER[name]
    header = bytearray(small_geometry().header(1, TOKEN, 42))
    struct.pack_into(fmt, header, offset, value)
    with pytest.raises(ValueError):
        Geometry.from_header(header)


def test_header_short_is_refused():
    with pytest.raises(ValueError, match="header has"):
        Geometry.from_header(small_geometry().header(1, TOKEN, 1)[:4095])


def test_header_refuses_a_token_of_the_wrong_length():
    with pytest.raises(ValueError, match="token"):
        small_geometry().header(1, b"short", 1)


# -- records -----------------------------------------------------------------

PORT = st.integers(1, 65535)
VALID_ARGS = {
    Op.SOCKET: st.fixed_dictionaries({"slot": st.just(0)}),
    Op.BIND: st.fixed_dictionaries({"a1": U32, "a2": st.integers(0, 65535)}),
    Op.LISTEN: st.fixed_dictionaries({"a1": st.integers(1, 65535)}),
    Op.CONNECT: st.fixed_dictionaries({"a1": U32, "a2": PORT}),
    Op.TX: st.fixed_dictionaries({}),
    Op.RX_DONE: st.fixed_dictionaries({}),
    Op.SHUTDOWN: st.fixed_dictionaries({"a1": st.integers(0, 2)}),
    Op.CLOSE: st.fixed_dictionaries({}),
    Op.SETSOCKOPT: st.fixed_dictionaries({"a1": U32, "a2": U32, "a64": U64}),
    Op.GETSOCKOPT: st.fixed_dictionaries({"a1": U32, "a2": U32}),
}
assert set(VALID_ARGS) == set(Op)


@st.composite
def valid_commands(draw):
    op = draw(st.sampled_from(list(Op)))
    args = {"slot": draw(st.integers(0, SLOTS - 1)), "request": draw(U32)}
    args.update(draw(VALID_ARGS[op]))
    return op, args


@given(valid_commands(), st.integers(0, 3))
def test_command_round_trip(command, index):
    op, args = command
    buf = bytearray(b"\xff" * 256)  # encoding must overwrite every byte
    encode_command_into(buf, index * 64, op, **args)
    decoded = decode_command(buf, SLOTS, index * 64)
    full = {"slot": 0, "request": 0, "a1": 0, "a2": 0, "a3": 0, "a4": 0, "a64": 0} | args
    assert decoded == Command(op, **full)
    assert type(decoded.op) is Op


@given(
    kind=st.sampled_from(list(EventKind)),
    slot=st.integers(0, SLOTS - 1),
    request=U32,
    result=st.integers(-(2**31), 2**31 - 1),
    a1=U32,
    a2=U32,
    a3=U32,
    a64=U64,
)
def test_event_round_trip(kind, slot, request, result, a1, a2, a3, a64):
    buf = bytearray(b"\xff" * 64)
    encode_event_into(buf, 0, kind, slot, request, result, a1, a2, a3, a64)
    decoded = decode_event(buf, SLOTS)
    assert decoded == Event(kind, slot, request, result, a1, a2, a3, a64)
    assert type(decoded.kind) is EventKind


def command_bytes(op, **args) -> bytearray:
    buf = bytearray(64)
    encode_command_into(buf, 0, op, **args)
    return buf


def raw_command(**fields) -> bytearray:
    """A record with any field set, bypassing the encoder's rules."""
    buf = command_bytes(Op.CLOSE, slot=1)
    layout = {"op": (0, "B"), "slot": (4, "<I"), "a1": (12, "<I"), "a2": (16, "<I")}
    layout |= {"a3": (20, "<I"), "a4": (24, "<I"), "a64": (32, "<Q")}
    for name, value in fields.items():
        offset, fmt = layout[name]
        struct.pack_into(fmt, buf, offset, value)
    return buf


BAD_COMMANDS = {
    "unknown op 0": (raw_command(op=0), "unknown op"),
    "unknown op 11": (raw_command(op=11), "unknown op"),
    "unknown op 255": (raw_command(op=255), "unknown op"),
    "slot == socket_slots": (command_bytes(Op.CLOSE, slot=SLOTS), "slot out of range"),
    "slot huge": (command_bytes(Op.TX, slot=2**32 - 1), "slot out of range"),
    "SOCKET with slot": (command_bytes(Op.SOCKET, slot=3), "SOCKET takes no slot"),
    "BIND port 65536": (command_bytes(Op.BIND, slot=1, a2=65536), "port out of range"),
    "CONNECT port 0": (command_bytes(Op.CONNECT, slot=1, a1=1, a2=0), "port out of range"),
    "CONNECT port 65536": (command_bytes(Op.CONNECT, slot=1, a2=65536), "port out of range"),
    "LISTEN backlog 0": (command_bytes(Op.LISTEN, slot=1, a1=0), "backlog out of range"),
    "LISTEN backlog 65536": (command_bytes(Op.LISTEN, slot=1, a1=65536), "backlog out of range"),
    "SHUTDOWN how 3": (command_bytes(Op.SHUTDOWN, slot=1, a1=3), "shutdown how out of range"),
    "CLOSE with a1": (raw_command(a1=1), "unused argument not zero"),
    "CLOSE with a4": (raw_command(a4=1), "unused argument not zero"),
    "CONNECT with a3": (command_bytes(Op.CONNECT, slot=1, a2=80, a3=1), "unused argument"),
    "GETSOCKOPT with a64": (command_bytes(Op.GETSOCKOPT, slot=1, a64=1), "unused argument"),
}
for _pad in (1, 2, 3, 28, 31, 40, 50, 63):
    _buf = command_bytes(Op.CLOSE, slot=1)
    _buf[_pad] = 1
    BAD_COMMANDS[f"padding byte {_pad}"] = (_buf, "non-zero padding")


@pytest.mark.parametrize("case", sorted(BAD_COMMANDS))
def test_bad_command_raises_bad_record_with_reason(case):
    buf, reason = BAD_COMMANDS[case]
    with pytest.raises(BadRecord) as info:
        decode_command(bytes(buf), SLOTS)
    assert reason in info.value.reason


@given(st.binary(min_size=64, max_size=64))
def test_any_64_bytes_decode_or_raise_bad_record(record):
    """The h11 fuzz invariant: no other exception type escapes."""
    with contextlib.suppress(BadRecord):
        decode_command(record, SLOTS)
    with contextlib.suppress(BadRecord):
        decode_event(record, SLOTS)


def test_bad_event_raises_bad_record():
    buf = bytearray(64)
    encode_event_into(buf, 0, EventKind.READY, slot=SLOTS)
    with pytest.raises(BadRecord, match="slot out of range"):
        decode_event(buf, SLOTS)
    encode_event_into(buf, 0, 9)
    with pytest.raises(BadRecord, match="unknown event kind"):
        decode_event(buf, SLOTS)
    encode_event_into(buf, 0, EventKind.RESULT)
    buf[60] = 1
    with pytest.raises(BadRecord, match="padding"):
        decode_event(buf, SLOTS)


def test_decoded_command_is_a_copy():
    buf = bytearray(64)
    encode_command_into(buf, 0, Op.CONNECT, slot=3, request=9, a1=0x0A000001, a2=80)
    view = memoryview(buf)
    command = decode_command(view, SLOTS)
    encode_command_into(buf, 0, Op.CONNECT, slot=4, request=10, a1=1, a2=0)
    buf[63] = 0xFF
    assert command == Command(Op.CONNECT, 3, 9, 0x0A000001, 80, 0, 0, 0)
    view.release()


# -- segment -----------------------------------------------------------------


@pytest.fixture
def pair():
    """(stack side, app side): two mappings of one segment."""
    stack = Segment.create(small_geometry(), session_id=77, token=TOKEN, app_pid=4242)
    app = Segment.open(os.dup(stack.fd))
    yield stack, app
    app.close()
    stack.close()


def sealed_copy(segment: Segment, size: int | None = None, patch: dict | None = None) -> int:
    """A sealed memfd holding `segment`'s bytes, cut or padded to `size`,
    with `patch` (offset: bytes) written over them: what a stack that
    breaks the format would hand over."""
    data = bytearray(segment._view[: segment.geometry.file_bytes])
    for offset, chunk in (patch or {}).items():
        data[offset : offset + len(chunk)] = chunk
    size = len(data) if size is None else size
    fd = os.memfd_create("forged", os.MFD_ALLOW_SEALING)
    os.write(fd, bytes(data[:size]))
    os.ftruncate(fd, size)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    return fd


def test_segment_is_a_sealed_memfd_of_geometry_size(pair):
    stack, app = pair
    assert os.fstat(stack.fd).st_size == small_geometry().file_bytes
    assert os.readlink(f"/proc/self/fd/{stack.fd}").startswith("/memfd:")
    assert fcntl.fcntl(stack.fd, fcntl.F_GET_SEALS) == SEALS
    assert (app.session_id, app.token, app.app_pid) == (77, TOKEN, 4242)
    assert app.geometry == stack.geometry


def test_no_holder_of_the_segment_can_resize_it_or_unseal_it(pair):
    """What an app would do to SIGBUS the stack: shrink the segment under its
    mapping; or grow it; or drop the seals first. The kernel refuses all."""
    stack, _ = pair
    theirs = os.dup(stack.fd)  # the app's descriptor
    size = small_geometry().file_bytes
    for change in (
        lambda: os.ftruncate(theirs, 0),
        lambda: os.ftruncate(theirs, size - 4096),
        lambda: os.ftruncate(theirs, size + 4096),
        lambda: os.posix_fallocate(theirs, size, 4096),
        lambda: fcntl.fcntl(theirs, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE),
    ):
        with pytest.raises(PermissionError):
            change()
    os.close(theirs)
    assert os.fstat(stack.fd).st_size == size
    stack.rx(7).write(b"the last slot")  # the whole mapping still works


def test_segment_end_by_the_stack_is_seen_by_the_app(pair):
    stack, app = pair
    assert not app.ended
    stack.end()
    assert app.ended
    with app._view[:HEADER_BYTES] as header:
        assert Geometry.from_header(header) == app.geometry  # still a valid header


def test_segment_command_pushed_by_app_is_popped_by_stack(pair):
    stack, app = pair
    assert app.commands.reserve(1) == 1
    encode_command_into(
        app.commands.data, app.commands.write_offset(0), Op.LISTEN, slot=2, request=5, a1=128
    )
    app.commands.publish(1)
    assert stack.commands.available() == 1
    command = decode_command(stack.commands.peek(0), stack.geometry.socket_slots)
    stack.commands.release(1)
    assert command == Command(Op.LISTEN, 2, 5, 128, 0, 0, 0, 0)


def test_segment_event_pushed_by_stack_is_popped_by_app(pair):
    stack, app = pair
    record = bytearray(64)
    encode_event_into(record, 0, EventKind.RESULT, slot=3, request=5, result=-111)
    assert stack.events.push_many([record]) == 1
    [raw] = app.events.pop_many(8)
    assert decode_event(raw, 8) == Event(EventKind.RESULT, 3, 5, -111, 0, 0, 0, 0)


def test_segment_socket_rings_carry_bytes_both_ways(pair):
    stack, app = pair
    stack.rx(5), stack.tx(5)  # the stack initialises a slot's rings before handing it out
    assert app.tx(5).write(b"request") == 7
    buf = bytearray(16)
    assert stack.tx(5).read_into(buf) == 7
    assert buf[:7] == b"request"
    assert stack.rx(5).write(b"response") == 8
    assert app.rx(5).read_into(buf) == 8
    assert buf[:8] == b"response"
    assert app.rx(5) is app.rx(5) and app.tx(5) is not app.rx(5)


def test_segment_app_cannot_attach_a_ring_the_stack_has_not_initialised(pair):
    _, app = pair
    with pytest.raises(CorruptRing):
        app.rx(6)


def test_segment_ring_index_out_of_range(pair):
    stack, _ = pair
    for bad in (-1, 8):
        with pytest.raises(IndexError):
            stack.rx(bad)
        with pytest.raises(IndexError):
            stack.tx(bad)
        with pytest.raises(IndexError):
            stack.readiness(bad)


def test_drop_stale_rx_drops_the_old_connections_bytes_only(pair):
    stack, app = pair
    stack.rx(3).write(b"old, never read")
    end = stack.rx(3).produced  # what SLOT_FREED carries
    stack.rx(3).write(b"new")  # the slot was handed out again meanwhile
    assert app.drop_stale_rx(3, end) == len(b"old, never read")
    buf = bytearray(16)
    assert buf[: app.rx(3).read_into(buf)] == b"new"
    assert app.drop_stale_rx(3, end) == 0  # nothing of the old left


def test_drop_stale_rx_ignores_an_index_behind_or_beyond_the_ring(pair):
    stack, app = pair
    stack.rx(2).write(b"abc")
    assert app.drop_stale_rx(2, 0) == 0
    assert app.drop_stale_rx(2, 4) == 0  # more than was published
    assert app.rx(2).readable() == 3


def test_segment_slot_table_written_by_stack_is_read_by_app(pair):
    stack, app = pair
    assert app.slot_state(7) == SlotState.FREE and app.readiness(7) == 0
    stack.set_slot(7, SlotState.CONNECTED, 0x2005, 2**32 - 1, -104)
    assert app.slot_state(7) == SlotState.CONNECTED
    assert app.readiness(7) == 0x2005
    assert app.generation(7) == 2**32 - 1
    assert app.slot_error(7) == -104
    stack.set_readiness(7, 4)
    assert app.readiness(7) == 4
    assert app.slot_state(6) == 0 and app.readiness(6) == 0  # neighbours untouched


def test_segment_open_refuses_an_unsealed_segment():
    fd = os.memfd_create("unsealed", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, small_geometry().file_bytes)
    with pytest.raises(ValueError, match="not sealed"):
        Segment.open(fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # open closed it, failing too


def test_segment_open_refuses_what_is_not_a_regular_file():
    read_end, write_end = os.pipe()
    with pytest.raises(ValueError, match="not a regular file"):
        Segment.open(read_end)
    os.close(write_end)


def test_segment_open_truncated_segment_fails(pair):
    stack, _ = pair
    with pytest.raises(ValueError, match="truncated"):
        Segment.open(sealed_copy(stack, size=1000))
    with pytest.raises(ValueError, match="header says"):
        Segment.open(sealed_copy(stack, size=small_geometry().file_bytes - 4096))


def test_segment_open_bad_header_fails(pair):
    stack, _ = pair
    with pytest.raises(ValueError, match="bad magic"):
        Segment.open(sealed_copy(stack, patch={0: b"NOTASEG!"}))


def test_segment_open_corrupt_command_ring_fails(pair):
    stack, _ = pair
    tail = small_geometry().command_offset + 64
    with pytest.raises(ValueError, match="tail ahead of head"):
        Segment.open(sealed_copy(stack, patch={tail: struct.pack("<Q", 5)}))


def test_segment_close_is_idempotent_and_context_managed():
    with Segment.create(small_geometry(), 1, TOKEN, 1) as stack:
        stack.rx(0)
    stack.close()  # a second close, after the context manager's, is a no-op
    with pytest.raises(ValueError):
        stack.rx(0).write(b"x")  # ... and the mapping is really gone


def test_segment_with_65536_slots_maps_the_last_slot_on_both_sides():
    g = Geometry(1024, 1024, 65536, 4096)
    with Segment.create(g, 1, TOKEN, 1) as stack, Segment.open(os.dup(stack.fd)) as app:
        stack.rx(65535).write(b"last")
        buf = bytearray(8)
        assert app.rx(65535).read_into(buf) == 4 and buf[:4] == b"last"


def test_the_plain_ints_and_the_enums_name_the_same_numbers():
    """The hot paths compare plain ints; the enums name them, one for one."""
    import vfstack.shm as shm

    for enum, prefix in ((Op, "OP_"), (EventKind, "EVENT_"), (SlotState, "SLOT_")):
        ints = {name: getattr(shm, name) for name in shm.__all__ if name.startswith(prefix)}
        assert ints == {prefix + member.name: member.value for member in enum}
