"""Records: the 64-byte commands (app -> stack) and events (stack -> app).

Layout (little-endian; `a64` sits at 32 so that a C struct of the same
fields has natural alignment; bytes 40-63 are zero)::

    command: 0 op u8, 1-3 zero, 4 slot u32, 8 request u32, 12 a1, 16 a2,
             20 a3, 24 a4 (u32), 28-31 zero, 32 a64 u64
    event:   0 kind u8, 1-3 zero, 4 slot u32, 8 request u32, 12 result i32,
             16 a1, 20 a2, 24 a3 (u32), 28-31 zero, 32 a64 u64

What each op and kind carries is listed with the OP_* and EVENT_* ints
(vfstack.shm._constants). The encoders write all 64 bytes with one
`pack_into` and no allocation; the decoders unpack a record ONCE into
integers (the private copy) and check only those, so a producer
scribbling on the buffer meanwhile changes nothing.
"""

from __future__ import annotations

import struct

from vfstack.shm._constants import (
    OP_BIND,
    OP_CONNECT,
    OP_LISTEN,
    OP_SHUTDOWN,
    OP_SOCKET,
    EventKind,
    Op,
)
from vfstack.shm._violations import BadRecord

__all__ = [
    "Command",
    "Event",
    "decode_command",
    "decode_event",
    "encode_command_into",
    "encode_event_into",
]

# Encoders write all 64 bytes (x = zero).
_COMMAND_OUT = struct.Struct("<B3xIIIIII4xQ24x")
_EVENT_OUT = struct.Struct("<B3xIIiIII4xQ24x")
# Decoders read every byte as integers (no bytes objects): padding included.
_COMMAND_IN = struct.Struct("<BBHIIIIIIIQQQQ")
_EVENT_IN = struct.Struct("<BBHIIiIIIIQQQQ")

# Which of a1, a2, a64 each op uses; unused ones must be zero. No v1 op
# uses a3 or a4 (they are there for later ops).
_A1, _A2, _A64 = 1, 2, 16
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
    used = _USED_BY_OP[op]
    if (a3 | a4) or (a1 and not used & _A1) or (a2 and not used & _A2) or (a64 and not used & _A64):
        raise BadRecord("unused argument not zero")
    if op == OP_SOCKET:
        if slot:
            raise BadRecord("SOCKET takes no slot")
    elif slot >= socket_slots:
        raise BadRecord("slot out of range")
    elif op == OP_CONNECT:
        if not 0 < a2 < 65536:
            raise BadRecord("port out of range")
    elif op == OP_BIND:
        if a2 >= 65536:
            raise BadRecord("port out of range")
    elif op == OP_LISTEN:
        if not 0 < a1 < 65536:
            raise BadRecord("backlog out of range")
    elif op == OP_SHUTDOWN and a1 > 2:
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
