"""The numbers of the shared-memory format, version 2 (the contract: vfstack.shm).

Opcodes, event kinds and slot states are plain ints first, for the hot
paths of both sides (an attribute of an IntEnum class costs ~50 ns a time
in 3.11, and a compiled build makes them C constants); the IntEnums below
are made from the same ints, for names in reprs, logs and tests.
"""

from __future__ import annotations

import select
from enum import IntEnum

__all__ = [
    "EPOLLERR",
    "EPOLLHUP",
    "EPOLLIN",
    "EPOLLOUT",
    "EPOLLRDHUP",
    "EVENT_ACCEPTED",
    "EVENT_READY",
    "EVENT_RESULT",
    "EVENT_SLOT_FREED",
    "HEADER_BYTES",
    "LAYOUT_VERSION",
    "MAGIC",
    "MAX_FILE_BYTES",
    "MAX_RING_SLOTS",
    "MAX_SOCKET_RING_BYTES",
    "MAX_SOCKET_SLOTS",
    "MIN_RING_SLOTS",
    "MIN_SOCKET_RING_BYTES",
    "MIN_SOCKET_SLOTS",
    "OP_BIND",
    "OP_CLOSE",
    "OP_CONNECT",
    "OP_GETSOCKOPT",
    "OP_LISTEN",
    "OP_RX_DONE",
    "OP_SETSOCKOPT",
    "OP_SHUTDOWN",
    "OP_SOCKET",
    "OP_TX",
    "RECORD_SIZE",
    "SLOT_CONNECTED",
    "SLOT_CONNECTING",
    "SLOT_ENTRY_BYTES",
    "SLOT_FREE",
    "SLOT_LISTENING",
    "SLOT_OPEN",
    "TOKEN_BYTES",
    "EventKind",
    "Op",
    "SlotState",
]

MAGIC = b"VFSTSEG1"
LAYOUT_VERSION = 2
HEADER_BYTES = 4096
RECORD_SIZE = 64
SLOT_ENTRY_BYTES = 64
TOKEN_BYTES = 32

MIN_RING_SLOTS, MAX_RING_SLOTS = 64, 65536
MIN_SOCKET_SLOTS, MAX_SOCKET_SLOTS = 1, 65536
MIN_SOCKET_RING_BYTES, MAX_SOCKET_RING_BYTES = 4096, 16 << 20
MAX_FILE_BYTES = 4 << 30

# Readiness in the slot table: Linux's EPOLL* bits.
EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP
EPOLLRDHUP = select.EPOLLRDHUP

# Command opcodes (app -> stack). 0 is never valid: a zeroed slot is not a command.
OP_SOCKET = 1  # stack allocates a slot; RESULT.slot = it, a1 = its generation; or -EMFILE
OP_BIND = 2  # a1 ip, a2 port (0: the stack picks one); RESULT.a1 = the port
OP_LISTEN = 3  # a1 backlog 1..65535; RESULT.a1 = the port
OP_CONNECT = 4  # a1 ip, a2 port 1..65535; RESULT 0 = in progress, a1 = the local port
OP_TX = 5  # bytes were written to the slot's TX ring; no reply
OP_RX_DONE = 6  # the app freed room in a full RX ring; no reply
OP_SHUTDOWN = 7  # a1 how: SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2
OP_CLOSE = 8  # no reply; SLOT_FREED follows when the slot may be reused
OP_SETSOCKOPT = 9  # a1 level, a2 name (Linux's), a64 value (SO_LINGER: l_onoff | l_linger << 32)
OP_GETSOCKOPT = 10  # a1 level, a2 name; RESULT.a64 = the value, encoded as for SETSOCKOPT

# Event kinds (stack -> app).
EVENT_RESULT = 1  # answers `request`; result 0 or -errno
EVENT_READY = 2  # slot's readiness changed; a1 = new mask
# slot = listener, a1 = new slot, a2 = peer ip, a3 = peer port, a64 = when
# (CLOCK_MONOTONIC µs): an app of several workers' sessions keeps its
# accept queue in that order, as one kernel listener would.
EVENT_ACCEPTED = 3
EVENT_SLOT_FREED = 4  # slot may be reused; a64 = RX ring index where the old bytes end

# Slot states in the slot table (written by the stack only).
SLOT_FREE = 0
SLOT_OPEN = 1
SLOT_LISTENING = 2
SLOT_CONNECTING = 3
SLOT_CONNECTED = 4


class Op(IntEnum):
    """Command opcodes (the OP_* ints, named)."""

    SOCKET = OP_SOCKET
    BIND = OP_BIND
    LISTEN = OP_LISTEN
    CONNECT = OP_CONNECT
    TX = OP_TX
    RX_DONE = OP_RX_DONE
    SHUTDOWN = OP_SHUTDOWN
    CLOSE = OP_CLOSE
    SETSOCKOPT = OP_SETSOCKOPT
    GETSOCKOPT = OP_GETSOCKOPT


class EventKind(IntEnum):
    """Event kinds (the EVENT_* ints, named)."""

    RESULT = EVENT_RESULT
    READY = EVENT_READY
    ACCEPTED = EVENT_ACCEPTED
    SLOT_FREED = EVENT_SLOT_FREED


class SlotState(IntEnum):
    """Slot states (the SLOT_* ints, named)."""

    FREE = SLOT_FREE
    OPEN = SLOT_OPEN
    LISTENING = SLOT_LISTENING
    CONNECTING = SLOT_CONNECTING
    CONNECTED = SLOT_CONNECTED
