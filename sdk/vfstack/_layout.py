"""The shared-memory segment of one session: the one layout both sides import.

The stack creates one file per attached application (DESIGN.md "Data flow",
proto `AttachResponse.segment_path`) in its run directory on tmpfs; the
stack and the application both map it. Layout version 1, offsets in bytes
from the start of the file, every region 64-byte aligned::

    0                  header (4096 bytes, page 0), written by the stack
    command_offset     RecordRing(command_slots, 64)    app -> stack
    event_offset       RecordRing(event_slots, 64)      stack -> app
    slot_table_offset  socket_slots * 64-byte entries   written by the stack only
    socket_offset      per slot i, at socket_offset + i * 2 * ByteRing.region_size(B):
                         RX ByteRing(B)  stack -> app
                         TX ByteRing(B)  app -> stack   (B = socket_ring_bytes)
    file_bytes         end of file

Header (little-endian)::

    0   magic b"VFSTSEG1"     60  command_slots u32     80   command_offset u64
    8   layout_version u32    64  event_slots u32       88   event_offset u64
    12  header_bytes u32      68  record_size u32       96   slot_table_offset u64
    16  session_id u64        72  socket_slots u32      104  socket_offset u64
    24  token 32 bytes        76  socket_ring_bytes u32 112  file_bytes u64
    56  app_pid i32                                     120  ended u32
                                                        124-4095 zero

The stack writes the header once at attach, and `ended` once more at the
end; it never re-reads it (it keeps its own `Geometry`). The application
reads the fields up to 120 once at attach, and `Geometry.from_header`
refuses any header whose offsets are not exactly the ones recomputed from
its sizes.

Liveness, both ways. The application holds a shared `flock` on the
segment file for as long as it is attached (taken by `Segment.open`); the
stack probes it once a second (`app_alive`). The kernel releases the lock
when the app's last descriptor closes, on `kill -9` too, and unlike a pid
it means the same thing in the stack's container and in the app's. The
other way, the stack's end of the app's doorbell is the sign
(vfstack._doorbell: the app opens it read-only, and its poll reports a
hang-up once the stack's descriptor is closed, however the stack ends).
When the stack ends a session on purpose (Detach, a bad record, a fault,
shutdown), it first stores 1 in `ended` (`end`, one aligned 4-byte store):
seeing the hang-up, the app tells that (`ended`) from a stack that died
without a word, and a look at the word needs no system call.

Slot-table entry (64 bytes; the stack stores, the app loads; each field is
ONE aligned 4-byte store through a cast view, never `struct.pack_into`,
DESIGN.md "Known pitfalls")::

    0 state u32 (SlotState)   4 readiness u32 (EPOLL* bits)
    8 generation u32          12 error i32 (pending errno, 0 if none)   16-63 zero

Records (64 bytes, little-endian; `a64` sits at 32 so that a C struct of
the same fields has natural alignment; bytes 40-63 are zero)::

    command: 0 op u8, 1-3 zero, 4 slot u32, 8 request u32, 12 a1, 16 a2,
             20 a3, 24 a4 (u32), 28-31 zero, 32 a64 u64
    event:   0 kind u8, 1-3 zero, 4 slot u32, 8 request u32, 12 result i32,
             16 a1, 20 a2, 24 a3 (u32), 28-31 zero, 32 a64 u64

Trust (principle 4): everything the application writes is hostile.
`decode_command` unpacks the record ONCE into locals (the copy) and
validates only those; it raises `BadRecord` for an unknown op, a slot out
of range, non-zero padding, an argument the op does not use that is not
zero, or an argument out of range. Whether the slot belongs to this session
and is in the right state is the stack's business, not the layout's.

A slot's rings are initialised by the stack on first use (`Segment.rx`,
`Segment.tx`) and then live as long as the segment: they are never
re-initialised when the slot is reused (indices keep running), so neither
side has to re-attach. On CLOSE the app discards what is left in RX, the stack what is
left in TX.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import select
import stat
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from vfstack._rings import ByteRing, CorruptRing, RecordRing

__all__ = [
    "HEADER_BYTES",
    "LAYOUT_VERSION",
    "MAGIC",
    "RECORD_SIZE",
    "BadRecord",
    "Command",
    "Event",
    "EventKind",
    "Geometry",
    "Op",
    "Segment",
    "SlotState",
    "decode_command",
    "decode_event",
    "encode_command_into",
    "encode_event_into",
]

MAGIC = b"VFSTSEG1"
LAYOUT_VERSION = 1
HEADER_BYTES = 4096
RECORD_SIZE = 64
SLOT_ENTRY_BYTES = 64
TOKEN_BYTES = 32

MIN_RING_SLOTS, MAX_RING_SLOTS = 64, 65536
MIN_SOCKET_SLOTS, MAX_SOCKET_SLOTS = 1, 65536
MIN_SOCKET_RING_BYTES, MAX_SOCKET_RING_BYTES = 4096, 16 << 20
MAX_FILE_BYTES = 4 << 30

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP
EPOLLRDHUP = select.EPOLLRDHUP

_HEADER = struct.Struct("<8sIIQ32siIIIIIQQQQQ")
_U32 = 0xFFFFFFFF


class SlotState(IntEnum):
    FREE = 0
    OPEN = 1
    LISTENING = 2
    CONNECTING = 3
    CONNECTED = 4
    CLOSING = 5


class Op(IntEnum):
    """Command opcodes (app -> stack). 0 is never valid: a zeroed slot is not a command."""

    SOCKET = 1  # stack allocates a slot; RESULT.slot = it, or result -EMFILE
    BIND = 2  # a1 ip, a2 port (0: ephemeral)
    LISTEN = 3  # a1 backlog 1..65535
    CONNECT = 4  # a1 ip, a2 port 1..65535; RESULT 0 = in progress
    TX = 5  # bytes were written to the slot's TX ring; no reply
    RX_DONE = 6  # the app freed room in a full RX ring; no reply
    SHUTDOWN = 7  # a1 how: SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2
    CLOSE = 8  # no reply; SLOT_FREED follows when the slot may be reused
    SETSOCKOPT = 9  # a1 level, a2 name, a64 value (SO_LINGER: l_onoff | l_linger << 32)
    GETSOCKOPT = 10  # a1 level, a2 name; RESULT.a64 = value


class EventKind(IntEnum):
    """Event kinds (stack -> app)."""

    RESULT = 1  # answers `request`; result 0 or -errno
    READY = 2  # slot's readiness changed; a1 = new mask
    ACCEPTED = 3  # slot = listener, a1 = new slot, a2 = peer ip, a3 = peer port
    SLOT_FREED = 4  # slot may be reused; a64 = RX ring index where the old bytes end


class BadRecord(Exception):
    """A record from the other side breaks the layout; `reason` says how
    (for drop counters and the session's error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- records -----------------------------------------------------------------

# Encoders write all 64 bytes (x = zero) with one pack_into and no allocation.
_COMMAND_OUT = struct.Struct("<B3xIIIIII4xQ24x")
_EVENT_OUT = struct.Struct("<B3xIIiIII4xQ24x")
# Decoders read every byte as integers (no bytes objects): padding included.
_COMMAND_IN = struct.Struct("<BBHIIIIIIIQQQQ")
_EVENT_IN = struct.Struct("<BBHIIiIIIIQQQQ")

# Which of a1, a2, a64 each op uses; unused ones must be zero. No v1 op
# uses a3 or a4 (they are there for later ops).
_A1, _A2, _A64 = 1, 2, 16
_SOCKET, _BIND, _LISTEN, _CONNECT, _SHUTDOWN = 1, 2, 3, 4, 7
_USED = {
    Op.SOCKET: 0,
    Op.BIND: _A1 | _A2,
    Op.LISTEN: _A1,
    Op.CONNECT: _A1 | _A2,
    Op.TX: 0,
    Op.RX_DONE: 0,
    Op.SHUTDOWN: _A1,
    Op.CLOSE: 0,
    Op.SETSOCKOPT: _A1 | _A2 | _A64,
    Op.GETSOCKOPT: _A1 | _A2,
}
_OPS: tuple[Op | None, ...] = tuple(
    Op(i) if i in Op._value2member_map_ else None for i in range(256)
)
_USED_BY_OP: tuple[int, ...] = tuple(_USED[o] if o is not None else 0 for o in _OPS)
_KINDS: tuple[EventKind | None, ...] = tuple(
    EventKind(i) if i in EventKind._value2member_map_ else None for i in range(256)
)


class Command:
    """A validated command (treat as read-only)."""

    __slots__ = ("op", "slot", "request", "a1", "a2", "a3", "a4", "a64")

    def __init__(
        self, op: Op, slot: int, request: int, a1: int, a2: int, a3: int, a4: int, a64: int
    ) -> None:
        self.op = op
        self.slot = slot
        self.request = request
        self.a1 = a1
        self.a2 = a2
        self.a3 = a3
        self.a4 = a4
        self.a64 = a64

    def _key(self) -> tuple:
        return (self.op, self.slot, self.request, self.a1, self.a2, self.a3, self.a4, self.a64)

    def __eq__(self, other: object) -> bool:
        return type(other) is Command and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Command(op={!r}, slot={}, request={}, a1={}, a2={}, a3={}, a4={}, a64={})".format(
            *self._key()
        )


class Event:
    """A decoded event (treat as read-only)."""

    __slots__ = ("kind", "slot", "request", "result", "a1", "a2", "a3", "a64")

    def __init__(
        self,
        kind: EventKind,
        slot: int,
        request: int,
        result: int,
        a1: int,
        a2: int,
        a3: int,
        a64: int,
    ) -> None:
        self.kind = kind
        self.slot = slot
        self.request = request
        self.result = result
        self.a1 = a1
        self.a2 = a2
        self.a3 = a3
        self.a64 = a64

    def _key(self) -> tuple:
        return (
            self.kind,
            self.slot,
            self.request,
            self.result,
            self.a1,
            self.a2,
            self.a3,
            self.a64,
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is Event and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            "Event(kind={!r}, slot={}, request={}, result={}, a1={}, a2={}, a3={}, a64={})"
        ).format(*self._key())


def encode_command_into(
    buf,
    offset: int,
    op: int,
    slot: int = 0,
    request: int = 0,
    a1: int = 0,
    a2: int = 0,
    a3: int = 0,
    a4: int = 0,
    a64: int = 0,
) -> None:
    """Write one 64-byte command at buf[offset:] (padding zeroed).

    Raises:
        struct.error: a value does not fit its field.
    """
    _COMMAND_OUT.pack_into(buf, offset, op, slot, request, a1, a2, a3, a4, a64)


def encode_event_into(
    buf,
    offset: int,
    kind: int,
    slot: int = 0,
    request: int = 0,
    result: int = 0,
    a1: int = 0,
    a2: int = 0,
    a3: int = 0,
    a64: int = 0,
) -> None:
    """Write one 64-byte event at buf[offset:] (padding zeroed).

    Raises:
        struct.error: a value does not fit its field.
    """
    _EVENT_OUT.pack_into(buf, offset, kind, slot, request, result, a1, a2, a3, a64)


def decode_command(buf, socket_slots: int, offset: int = 0) -> Command:
    """Copy out and validate the command at buf[offset:offset + 64].

    The record is unpacked once into integers and only that copy is
    checked, so a producer scribbling on `buf` meanwhile changes nothing.

    Returns:
        The command; `op` is an `Op`.

    Raises:
        BadRecord: unknown op, slot >= socket_slots, non-zero padding, an
            unused argument not zero, or an argument out of range.
    """
    (op, p1, p2, slot, request, a1, a2, a3, a4, p3, a64, r1, r2, r3) = _COMMAND_IN.unpack_from(
        buf, offset
    )
    kind = _OPS[op]
    if kind is None:
        raise BadRecord("unknown op")
    if p1 | p2 | p3 | r1 | r2 | r3:
        raise BadRecord("non-zero padding")
    # Plain-int constants below: attribute access on an IntEnum class costs
    # ~50 ns a time in 3.11.
    used = _USED_BY_OP[op]
    if (a3 | a4) or (a1 and not used & _A1) or (a2 and not used & _A2) or (a64 and not used & _A64):
        raise BadRecord("unused argument not zero")
    if op == _SOCKET:
        if slot:
            raise BadRecord("SOCKET takes no slot")
    elif slot >= socket_slots:
        raise BadRecord("slot out of range")
    elif op == _CONNECT:
        if not 0 < a2 < 65536:
            raise BadRecord("port out of range")
    elif op == _BIND:
        if a2 >= 65536:
            raise BadRecord("port out of range")
    elif op == _LISTEN:
        if not 0 < a1 < 65536:
            raise BadRecord("backlog out of range")
    elif op == _SHUTDOWN and a1 > 2:
        raise BadRecord("shutdown how out of range")
    return Command(kind, slot, request, a1, a2, a3, a4, a64)


def decode_event(buf, socket_slots: int, offset: int = 0) -> Event:
    """Copy out and check the event at buf[offset:offset + 64] (app side).

    Returns:
        The event; `kind` is an `EventKind`.

    Raises:
        BadRecord: unknown kind, slot >= socket_slots, non-zero padding.
    """
    (kind, p1, p2, slot, request, result, a1, a2, a3, p3, a64, r1, r2, r3) = _EVENT_IN.unpack_from(
        buf, offset
    )
    member = _KINDS[kind]
    if member is None:
        raise BadRecord("unknown event kind")
    if p1 | p2 | p3 | r1 | r2 | r3:
        raise BadRecord("non-zero padding")
    if slot >= socket_slots:
        raise BadRecord("slot out of range")
    return Event(member, slot, request, result, a1, a2, a3, a64)


# -- geometry ----------------------------------------------------------------


def _power_of_two(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def _check_size(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high or not _power_of_two(value):
        raise ValueError(f"{name} must be a power of two in {low}..{high}, not {value}")


@dataclass(frozen=True, slots=True)
class Geometry:
    """Sizes of a segment and the offsets they imply (all 64-byte aligned).

    Raises (construction):
        ValueError: a size is not a power of two, out of bounds, or the
            file would exceed 4 GiB.
    """

    command_slots: int
    event_slots: int
    socket_slots: int
    socket_ring_bytes: int
    record_size: int = RECORD_SIZE
    command_offset: int = field(init=False)
    event_offset: int = field(init=False)
    slot_table_offset: int = field(init=False)
    socket_offset: int = field(init=False)
    socket_stride: int = field(init=False)  # bytes per slot: RX ring then TX ring
    file_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        _check_size("command_slots", self.command_slots, MIN_RING_SLOTS, MAX_RING_SLOTS)
        _check_size("event_slots", self.event_slots, MIN_RING_SLOTS, MAX_RING_SLOTS)
        if not MIN_SOCKET_SLOTS <= self.socket_slots <= MAX_SOCKET_SLOTS:
            raise ValueError(
                f"socket_slots must be in {MIN_SOCKET_SLOTS}..{MAX_SOCKET_SLOTS},"
                f" not {self.socket_slots}"
            )
        _check_size(
            "socket_ring_bytes",
            self.socket_ring_bytes,
            MIN_SOCKET_RING_BYTES,
            MAX_SOCKET_RING_BYTES,
        )
        if self.record_size != RECORD_SIZE:
            raise ValueError(f"record_size must be {RECORD_SIZE}, not {self.record_size}")
        command = HEADER_BYTES
        event = command + RecordRing.region_size(self.command_slots, RECORD_SIZE)
        table = event + RecordRing.region_size(self.event_slots, RECORD_SIZE)
        sockets = table + self.socket_slots * SLOT_ENTRY_BYTES
        stride = 2 * ByteRing.region_size(self.socket_ring_bytes)
        total = sockets + self.socket_slots * stride
        if total > MAX_FILE_BYTES:
            raise ValueError(f"segment of {total} bytes exceeds {MAX_FILE_BYTES}")
        for name, value in (
            ("command_offset", command),
            ("event_offset", event),
            ("slot_table_offset", table),
            ("socket_offset", sockets),
            ("socket_stride", stride),
            ("file_bytes", total),
        ):
            object.__setattr__(self, name, value)

    def rx_offset(self, slot: int) -> int:
        return self.socket_offset + slot * self.socket_stride

    def tx_offset(self, slot: int) -> int:
        return self.socket_offset + slot * self.socket_stride + (self.socket_stride >> 1)

    def header(self, session_id: int, token: bytes, app_pid: int) -> bytes:
        """The 4096-byte header page for a segment of this geometry.

        Raises:
            ValueError: token is not 32 bytes.
            struct.error: session_id or app_pid does not fit.
        """
        if len(token) != TOKEN_BYTES:
            raise ValueError(f"token must be {TOKEN_BYTES} bytes, not {len(token)}")
        fields = _HEADER.pack(
            MAGIC,
            LAYOUT_VERSION,
            HEADER_BYTES,
            session_id,
            bytes(token),
            app_pid,
            self.command_slots,
            self.event_slots,
            self.record_size,
            self.socket_slots,
            self.socket_ring_bytes,
            self.command_offset,
            self.event_offset,
            self.slot_table_offset,
            self.socket_offset,
            self.file_bytes,
        )
        return fields + bytes(HEADER_BYTES - len(fields))

    @classmethod
    def from_header(cls, header) -> Geometry:
        """Validate a header page and return its geometry.

        Raises:
            ValueError: short header, wrong magic/version/header size, bad
                sizes, or offsets that differ from the recomputed ones.
        """
        geometry, _, _, _ = _parse_header(header)
        return geometry


def _parse_header(header) -> tuple[Geometry, int, bytes, int]:
    if len(header) < HEADER_BYTES:
        raise ValueError(f"header has {len(header)} bytes, needs {HEADER_BYTES}")
    (
        magic,
        version,
        header_bytes,
        session_id,
        token,
        app_pid,
        command_slots,
        event_slots,
        record_size,
        socket_slots,
        socket_ring_bytes,
        *offsets,
    ) = _HEADER.unpack_from(header, 0)
    if magic != MAGIC:
        raise ValueError(f"bad magic {magic!r}: not a vfstack segment")
    if version != LAYOUT_VERSION:
        raise ValueError(f"layout version {version}, this SDK speaks {LAYOUT_VERSION}")
    if header_bytes != HEADER_BYTES:
        raise ValueError(f"header_bytes {header_bytes}, expected {HEADER_BYTES}")
    geometry = Geometry(command_slots, event_slots, socket_slots, socket_ring_bytes, record_size)
    expected = (
        geometry.command_offset,
        geometry.event_offset,
        geometry.slot_table_offset,
        geometry.socket_offset,
        geometry.file_bytes,
    )
    if tuple(offsets) != expected:
        raise ValueError(f"header offsets {tuple(offsets)} differ from the layout's {expected}")
    return geometry, session_id, token, app_pid


# -- segment -----------------------------------------------------------------

_ENDED = 120 // 4  # u32 word index of `ended` in the header
_STATE, _READINESS, _GENERATION = 0, 1, 2  # u32 word indices in an entry
_ERROR = 3  # i32 word index in an entry
_ENTRY_WORDS = SLOT_ENTRY_BYTES // 4


class Segment:
    """One session's mapped segment: rings, slot table, identity.

    `create` is the stack's side, `open` the application's; both give the
    same accessors. Socket rings are built lazily on first `rx(i)`/`tx(i)`:
    on the stack's side that call initialises the ring in memory, on the
    app's side it attaches (and raises CorruptRing if the stack has not
    initialised it). So the stack must call `rx(i)` and `tx(i)` for a slot
    before it publishes the event that hands the slot to the app (RESULT of
    SOCKET, ACCEPTED). Touching 2 x 65536 ring headers up front would
    commit a page each (512 MiB of tmpfs) and take ~1 s.

    Roles: the app produces `commands` and `tx(i)` and consumes `events`
    and `rx(i)`; the stack the reverse; only the stack calls `set_slot` and
    `set_readiness`.
    """

    __slots__ = (
        "geometry",
        "session_id",
        "token",
        "app_pid",
        "commands",
        "events",
        "_mmap",
        "_view",
        "_header",
        "_u32",
        "_i32",
        "_rx",
        "_tx",
        "_creator",
        "_fd",
    )

    def __init__(
        self,
        mm: mmap.mmap,
        geometry: Geometry,
        session_id: int,
        token,
        app_pid: int,
        creator: bool,
        fd: int,
    ) -> None:
        self._creator = creator
        self._fd = fd  # held open for the liveness lock (see `app_alive`)
        self._mmap = mm
        self._view = memoryview(mm)
        self._header = self._view[:HEADER_BYTES].cast("I")
        self.geometry = geometry
        self.session_id = session_id
        self.token = bytes(token)
        self.app_pid = app_pid
        g = geometry
        table = self._view[g.slot_table_offset : g.socket_offset]
        self._u32 = table.cast("I")
        self._i32 = table.cast("i")
        table.release()
        self.commands = RecordRing(
            self._view[g.command_offset : g.event_offset], g.command_slots, RECORD_SIZE
        )
        self.events = RecordRing(
            self._view[g.event_offset : g.slot_table_offset], g.event_slots, RECORD_SIZE
        )
        self._rx: list[ByteRing | None] = [None] * g.socket_slots
        self._tx: list[ByteRing | None] = [None] * g.socket_slots

    # -- creation / opening -------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str,
        geometry: Geometry,
        session_id: int,
        token: bytes,
        app_pid: int,
        group: int | None = None,
    ) -> Segment:
        """Stack side: create `path` (must not exist; mode 0o600, or 0o660
        owned by `group` if given), size it,
        map it, write the header, initialise the command and event rings,
        zero the slot table (socket rings: on first `rx`/`tx`, see above).

        Raises:
            FileExistsError: `path` exists.
            OSError: the file cannot be created or sized.
            ValueError: bad token.
        """
        header = geometry.header(session_id, token, app_pid)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if group is not None:
                os.fchown(fd, -1, group)
                os.fchmod(fd, 0o660)
            os.ftruncate(fd, geometry.file_bytes)
            mm = mmap.mmap(fd, geometry.file_bytes)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        seg = cls(mm, geometry, session_id, token, app_pid, True, fd)
        seg._view[0:HEADER_BYTES] = header
        seg._init_rings()
        return seg

    def _init_rings(self) -> None:
        g = self.geometry
        self.commands.init()
        self.events.init()
        self._view[g.slot_table_offset : g.socket_offset] = bytes(
            g.socket_offset - g.slot_table_offset
        )

    @classmethod
    def open(cls, path: str) -> Segment:
        """Application side: map `path`, validate the header, attach the rings.

        Raises:
            ValueError: not a regular file, truncated, bad header, or size
                or rings that disagree with the header.
            OSError: the file cannot be opened or mapped.
        """
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{path}: not a regular file")
            if st.st_size < HEADER_BYTES:
                raise ValueError(
                    f"{path}: truncated ({st.st_size} bytes, header needs {HEADER_BYTES})"
                )
            fcntl.flock(fd, fcntl.LOCK_SH)  # "I am alive" until this fd closes
            mm = mmap.mmap(fd, st.st_size)
        except BaseException:
            os.close(fd)
            raise
        try:
            with memoryview(mm) as header:
                geometry, session_id, token, app_pid = _parse_header(header)
            if st.st_size != geometry.file_bytes:
                raise ValueError(f"file has {st.st_size} bytes, header says {geometry.file_bytes}")
        except ValueError as exc:
            mm.close()
            os.close(fd)
            raise ValueError(f"{path}: {exc}") from None
        seg = cls(mm, geometry, session_id, token, app_pid, False, fd)
        try:
            seg.commands.attach()
            seg.events.attach()
        except CorruptRing as exc:
            seg.close()
            raise ValueError(f"{path}: {exc.reason}") from None
        return seg

    # -- socket rings ---------------------------------------------------------

    def rx(self, slot: int) -> ByteRing:
        """Slot's RX ring (stack -> app), built on first use.

        Raises:
            IndexError: slot out of range.
            CorruptRing: the ring header was tampered with.
        """
        if not 0 <= slot < self.geometry.socket_slots:
            raise IndexError("slot out of range")
        ring = self._rx[slot]
        if ring is None:
            ring = self._socket_ring(self.geometry.rx_offset(slot))
            self._rx[slot] = ring
        return ring

    def tx(self, slot: int) -> ByteRing:
        """Slot's TX ring (app -> stack), built on first use.

        Raises:
            IndexError: slot out of range.
            CorruptRing: the ring header was tampered with.
        """
        if not 0 <= slot < self.geometry.socket_slots:
            raise IndexError("slot out of range")
        ring = self._tx[slot]
        if ring is None:
            ring = self._socket_ring(self.geometry.tx_offset(slot))
            self._tx[slot] = ring
        return ring

    def drop_stale_rx(self, slot: int, end: int) -> int:
        """App side, on SLOT_FREED: discard what is left of the closed
        connection's bytes, i.e. up to RX index `end`, and no byte beyond,
        which may belong to a connection the slot was handed to since.

        Returns: bytes dropped (0 if `end` is not ahead of the app's index
        or beyond what is published).
        """
        rx = self.rx(slot)
        stale = end - rx.consumed
        if 0 < stale <= rx.readable():
            rx.release(stale)
            return stale
        return 0

    def _socket_ring(self, offset: int) -> ByteRing:
        size = ByteRing.region_size(self.geometry.socket_ring_bytes)
        ring = ByteRing(self._view[offset : offset + size], self.geometry.socket_ring_bytes)
        if self._creator:
            ring.init()
        else:
            ring.attach()
        return ring

    # -- slot table -----------------------------------------------------------

    def set_slot(self, slot: int, state: int, readiness: int, generation: int, error: int) -> None:
        """Stack: write a whole entry. Generation and error go first, state and
        readiness last, so an app that sees the new state also sees them."""
        base = self._entry(slot)
        self._u32[base + _GENERATION] = generation
        self._i32[base + _ERROR] = error
        self._u32[base + _STATE] = state
        self._u32[base + _READINESS] = readiness

    def set_readiness(self, slot: int, readiness: int) -> None:
        """Stack: the hot-path update, one 4-byte store."""
        self._u32[self._entry(slot) + _READINESS] = readiness

    def slot_state(self, slot: int) -> int:
        return self._u32[self._entry(slot) + _STATE]

    def readiness(self, slot: int) -> int:
        return self._u32[self._entry(slot) + _READINESS]

    def generation(self, slot: int) -> int:
        return self._u32[self._entry(slot) + _GENERATION]

    def slot_error(self, slot: int) -> int:
        return self._i32[self._entry(slot) + _ERROR]

    def _entry(self, slot: int) -> int:
        if not 0 <= slot < self.geometry.socket_slots:
            raise IndexError("slot out of range")
        return slot * _ENTRY_WORDS

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Release every view and unmap (idempotent). The file stays; the
        stack unlinks it."""
        if self._mmap.closed:
            return
        self.commands.close()
        self.events.close()
        for rings in (self._rx, self._tx):
            for ring in rings:
                if ring is not None:
                    ring.close()
        self._header.release()
        self._u32.release()
        self._i32.release()
        self._view.release()
        self._mmap.close()
        os.close(self._fd)

    def end(self) -> None:
        """Stack: the session is over (store `ended` before the app can
        see the doorbell hang up)."""
        self._header[_ENDED] = 1

    @property
    def ended(self) -> bool:
        """App: has the stack ended this session on purpose?"""
        return self._header[_ENDED] != 0

    def app_alive(self) -> bool:
        """Stack side: does some process hold the segment open through
        `Segment.open` (its shared flock)? The kernel drops the lock when
        the last descriptor of that process closes, however it dies, and
        a lock works across PID namespaces, where a pid would not.
        """
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return False

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
