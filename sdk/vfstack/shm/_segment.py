"""The segment: one session's file, mapped by both sides (vfstack.shm).

`Geometry` computes the regions from the sizes and writes and checks the
header page; `Segment` maps the file and hands out the rings and the slot
table. The stack `create`s a segment, the app `open`s it.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
import struct
from dataclasses import dataclass, field

from vfstack.shm._constants import (
    HEADER_BYTES,
    LAYOUT_VERSION,
    MAGIC,
    MAX_FILE_BYTES,
    MAX_RING_SLOTS,
    MAX_SOCKET_RING_BYTES,
    MAX_SOCKET_SLOTS,
    MIN_RING_SLOTS,
    MIN_SOCKET_RING_BYTES,
    MIN_SOCKET_SLOTS,
    RECORD_SIZE,
    SLOT_ENTRY_BYTES,
    TOKEN_BYTES,
)
from vfstack.shm._rings import ByteRing, RecordRing
from vfstack.shm._violations import CorruptRing

__all__ = ["Geometry", "Segment"]

_HEADER = struct.Struct("<8sIIQ32siIIIIIQQQQQ")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


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
    same accessors. The segment is a sealed memfd (see `create`): the app
    gets it as a descriptor, never as a file it could resize or fill.
    Socket rings are built lazily on first `rx(i)`/`tx(i)`:
    on the stack's side that call initialises the ring in memory, on the
    app's side it attaches (and raises CorruptRing if the stack has not
    initialised it). So the stack must call `rx(i)` and `tx(i)` for a slot
    before it publishes the event that hands the slot to the app (RESULT of
    SOCKET, ACCEPTED). Touching 2 x 65536 ring headers up front would
    commit a page each (512 MiB) and take ~1 s.

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
        "_table",
        "_table_signed",
        "_rx",
        "_tx",
        "_creator",
        "_fd",
        "_slots",
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
        self._fd = fd  # the stack's memfd (-1 on the app's side: the mapping is enough)
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
        # Compiled, typed views of the same words (_segment.pxd): a slot's
        # state, readiness and error are read on every socket call of the
        # app and every pump of the stack, a C load each, not a memoryview
        # subscript.
        self._table = self._u32
        self._table_signed = self._i32
        table.release()
        self.commands = RecordRing(
            self._view[g.command_offset : g.event_offset], g.command_slots, RECORD_SIZE
        )
        self.events = RecordRing(
            self._view[g.event_offset : g.slot_table_offset], g.event_slots, RECORD_SIZE
        )
        self._rx: list[ByteRing | None] = [None] * g.socket_slots
        self._tx: list[ByteRing | None] = [None] * g.socket_slots
        # Checked on every slot access: compiled, a C field (_segment.pxd)
        # rather than an attribute read of the geometry.
        self._slots = g.socket_slots

    # -- creation / opening -------------------------------------------------

    @classmethod
    def create(
        cls,
        geometry: Geometry,
        session_id: int,
        token: bytes,
        app_pid: int,
        name: str = "vfstack-segment",
    ) -> Segment:
        """Stack side: a memfd (`name` shows in /proc/PID/maps), sized
        and sealed, its pages up to the socket rings preallocated, mapped,
        with the header written, the command and event rings initialised
        and the slot table zeroed (socket rings: `commit_slot`, then on
        first `rx`/`tx`, see above).

        The seals (F_SEAL_SHRINK, F_SEAL_GROW, then F_SEAL_SEAL so none can
        be added or removed) make the size final for every holder of the
        descriptor: an app can neither truncate the segment under the
        stack's mapping (its next access would be SIGBUS) nor grow it. It
        lives on the kernel's internal tmpfs, not on a shared run
        directory an app could fill. The stack preallocates what it will
        touch (`commit_slot`): a page it maps is never one the kernel has
        to find when the stack first writes it.

        Raises:
            OSError: the memfd cannot be made, sized, preallocated (ENOMEM,
                ENOSPC) or mapped.
            ValueError: bad token.
        """
        header = geometry.header(session_id, token, app_pid)
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, geometry.file_bytes)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            os.posix_fallocate(fd, 0, geometry.socket_offset)
            mm = mmap.mmap(fd, geometry.file_bytes)
        except BaseException:
            os.close(fd)
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

    @property
    def fd(self) -> int:
        """Stack side: the memfd, to hand a duplicate of it to the app."""
        return self._fd

    def commit_slot(self, slot: int) -> None:
        """Stack side: preallocate slot's RX and TX rings, before `rx(slot)`
        and `tx(slot)` touch them (idempotent).

        Raises:
            IndexError: slot out of range.
            OSError: no memory for them (ENOMEM, ENOSPC).
        """
        if not 0 <= slot < self.geometry.socket_slots:
            raise IndexError("slot out of range")
        os.posix_fallocate(self._fd, self.geometry.rx_offset(slot), self.geometry.socket_stride)

    @classmethod
    def open(cls, fd: int) -> Segment:
        """Application side: map the segment the stack handed over as `fd`
        (closed here, whatever happens: the mapping is all the app keeps),
        validate its seals and header, attach the rings.

        Raises:
            ValueError: not a sealed regular file of the size its header
                gives, bad header, or rings that disagree with the header.
            OSError: it cannot be mapped.
        """
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError("the segment is not a regular file")
            if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS != _SEALS:
                raise ValueError("the segment is not sealed: its size could change under us")
            if st.st_size < HEADER_BYTES:
                raise ValueError(
                    f"truncated segment ({st.st_size} bytes, header needs {HEADER_BYTES})"
                )
            mm = mmap.mmap(fd, st.st_size)
        finally:
            os.close(fd)
        try:
            with memoryview(mm) as header:
                geometry, session_id, token, app_pid = _parse_header(header)
            if st.st_size != geometry.file_bytes:
                raise ValueError(
                    f"segment has {st.st_size} bytes, header says {geometry.file_bytes}"
                )
        except ValueError:
            mm.close()
            raise
        seg = cls(mm, geometry, session_id, token, app_pid, False, -1)
        try:
            seg.commands.attach()
            seg.events.attach()
        except CorruptRing as exc:
            seg.close()
            raise ValueError(exc.reason) from None
        return seg

    # -- socket rings ---------------------------------------------------------

    def rx(self, slot: int) -> ByteRing:
        """Slot's RX ring (stack -> app), built on first use.

        Raises:
            IndexError: slot out of range.
            CorruptRing: the ring header was tampered with.
        """
        if not 0 <= slot < self._slots:
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
        if not 0 <= slot < self._slots:
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
        self._table[base + _GENERATION] = generation
        self._table_signed[base + _ERROR] = error
        self._table[base + _STATE] = state
        self._table[base + _READINESS] = readiness

    def set_readiness(self, slot: int, readiness: int) -> None:
        """Stack: the hot-path update, one 4-byte store."""
        self._table[self._entry(slot) + _READINESS] = readiness

    def slot_state(self, slot: int) -> int:
        return self._table[self._entry(slot) + _STATE]

    def readiness(self, slot: int) -> int:
        return self._table[self._entry(slot) + _READINESS]

    def generation(self, slot: int) -> int:
        return self._table[self._entry(slot) + _GENERATION]

    def slot_error(self, slot: int) -> int:
        return self._table_signed[self._entry(slot) + _ERROR]

    def _entry(self, slot: int) -> int:
        if not 0 <= slot < self._slots:
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
        self._table = self._table_signed = None  # compiled, typed views holding these two
        self._u32.release()
        self._i32.release()
        self._view.release()
        self._mmap.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def end(self) -> None:
        """Stack: the session is over (store `ended` before the app can
        see the doorbell hang up)."""
        self._header[_ENDED] = 1

    @property
    def ended(self) -> bool:
        """App: has the stack ended this session on purpose?"""
        return self._header[_ENDED] != 0

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
