"""vfstack.shm: the shared-memory format between a stack instance and an app.

The contract between two processes. The stack (stackservice.fastpath) and
the application (the vfstack SDK) both import this package, and nothing
else of each other: the layout, the numbers, the record codecs, the ring
algorithms and the doorbells are defined here once.

Version. Layout version 2 (`LAYOUT_VERSION`), in the header next to
`MAGIC` and in gRPC's `AttachResponse.layout_version`. Whatever changes an
offset, a field, an opcode, an event kind, a slot state, a value's
encoding, a ring's algorithm or how the session's memory and doorbells
reach the app makes a new version; a side that meets another version
refuses the segment (`Segment.open`), and never guesses. (Version 1
handed out file paths in the run directory; 2 hands out descriptors.)

Handoff. At Attach the stack makes, per session, a sealed memfd for the
segment (its size final for every holder: vfstack.shm._segment), a pipe
for the app's doorbell and an eventfd for the stack's. The app gets them
as descriptors over a unix socket, once, after proving the session's
token (vfstack.shm._handoff). Nothing of a session is a file an app
could truncate, fill or replace. The stack rings the app's doorbell
when the app sleeps, the app rings the stack's (vfstack.shm._doorbell).

Segment (offsets in bytes from the start of the file; every region is
64-byte aligned; `Geometry` computes them from the four sizes)::

    0                  header (4096 bytes, page 0)
    command_offset     RecordRing(command_slots, 64)    commands, app -> stack
    event_offset       RecordRing(event_slots, 64)      events, stack -> app
    slot_table_offset  socket_slots * 64-byte entries
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

Slot-table entry (64 bytes)::

    0 state u32 (SLOT_*)      4 readiness u32 (EPOLL* bits)
    8 generation u32          12 error i32 (pending errno, 0 if none)   16-63 zero

Records (64 bytes, little-endian, bytes 40-63 zero; what each op and kind
carries is listed with the OP_* and EVENT_* ints)::

    command: 0 op u8, 1-3 zero, 4 slot u32, 8 request u32, 12 a1, 16 a2,
             20 a3, 24 a4 (u32), 28-31 zero, 32 a64 u64
    event:   0 kind u8, 1-3 zero, 4 slot u32, 8 request u32, 12 result i32,
             16 a1, 20 a2, 24 a3 (u32), 28-31 zero, 32 a64 u64

A RESULT's `result` is 0 or a negative errno, as Linux numbers them; the
slot table's `error` is a positive one. Errno is the one vocabulary of
failure between the two sides (the SDK raises the `OSError` subclass
Python's own sockets raise for it).

Ring region (u64 little-endian; an index counts records or bytes ever
published or consumed, free-running; the slot of index i is
`i & (capacity - 1)`)::

    0 head (producer)   8 magic   16 capacity   24 record_size (0: ByteRing)
    64 tail (consumer)   128 consumer_sleeping (consumer)   192 data

Who writes what (each side only loads the rest):

- the stack: the header (once at attach, then `ended` once at the end),
  the slot table, the events and the event ring's head, the RX rings'
  bytes and heads, the command ring's and the TX rings' tails;
- the app: the commands and the command ring's head, the TX rings' bytes
  and heads, the event ring's and the RX rings' tails;
- each ring's `consumer_sleeping` flag: that ring's consumer.

Ordering. Every index and flag is ONE aligned store (8 bytes for a ring
word, 4 for a slot-table field or `ended`) through a cast memoryview, never
`struct.pack_into` (it zeroes before it packs: docs/architecture.md "Known
pitfalls"). A producer writes its records or bytes before the store of
`head` that publishes them; a consumer copies them out before the store of
`tail` that gives their room back. The stack stores a slot's generation
and error before its state and readiness, and `ended` before it closes its
end of the app's doorbell. Rings: vfstack.shm._rings.

Waking. A consumer about to sleep sets its ring's `consumer_sleeping` and
re-checks the ring; a producer rings the consumer's doorbell after a
publish only if the flag is set, with a full fence between each side's
store and load, so no wake-up is lost: vfstack.shm._doorbell.

Liveness, both ways, from the app's doorbell pipe: only the stack holds
its write end, only the app its read end. When the stack ends, however,
the app's end hangs up (POLLHUP); when the app's process ends, however,
the stack's end reports POLLERR at once. If `ended` is 1, the stack ended
the session on purpose (Detach, a bad record, a fault, shutdown); else
its process died.

Slots. A slot's rings are made by the stack before the event that hands
the slot to the app (RESULT of SOCKET, ACCEPTED) and live as long as the
segment: never re-initialised when the slot is reused (indices keep
running). On CLOSE the app drops what is left in RX (`SLOT_FREED.a64`
says where the old bytes end), the stack what is left in TX.

Trust. Everything one side writes is hostile to the other, the stack
above all (docs/architecture.md principle 4). Every index loaded from the
other side is checked (it never moves backwards, and
`0 <= head - tail <= capacity`), else `CorruptRing`; every record is
unpacked once into a private copy and only that copy is checked, else
`BadRecord`; the header's offsets must be exactly the ones the sizes give.
Both are a `Violation`: the stack ends that session only, the SDK raises
`SDKError`. Bytes in the byte rings are just bytes. Whether a slot belongs
to the session, or is in a state for the op, is the stack's business, not
the format's: it answers an errno.
"""

from vfstack.shm._constants import (
    EPOLLERR,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDHUP,
    EVENT_ACCEPTED,
    EVENT_READY,
    EVENT_RESULT,
    EVENT_SLOT_FREED,
    HEADER_BYTES,
    LAYOUT_VERSION,
    MAGIC,
    OP_BIND,
    OP_CLOSE,
    OP_CONNECT,
    OP_GETSOCKOPT,
    OP_LISTEN,
    OP_RX_DONE,
    OP_SETSOCKOPT,
    OP_SHUTDOWN,
    OP_SOCKET,
    OP_TX,
    RECORD_SIZE,
    SLOT_CONNECTED,
    SLOT_CONNECTING,
    SLOT_FREE,
    SLOT_LISTENING,
    SLOT_OPEN,
    EventKind,
    Op,
    SlotState,
)
from vfstack.shm._doorbell import Doorbell
from vfstack.shm._handoff import APP_BELL, HANDOFF_FDS, SEGMENT, STACK_BELL, redeem
from vfstack.shm._records import (
    Command,
    Event,
    decode_command,
    decode_event,
    encode_command_into,
    encode_event_into,
)
from vfstack.shm._rings import ByteRing, RecordRing
from vfstack.shm._segment import Geometry, Segment
from vfstack.shm._violations import BadRecord, CorruptRing, Violation

__all__ = [
    "APP_BELL",
    "EPOLLERR",
    "EPOLLHUP",
    "EPOLLIN",
    "EPOLLOUT",
    "EPOLLRDHUP",
    "EVENT_ACCEPTED",
    "EVENT_READY",
    "EVENT_RESULT",
    "EVENT_SLOT_FREED",
    "HANDOFF_FDS",
    "HEADER_BYTES",
    "LAYOUT_VERSION",
    "MAGIC",
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
    "SEGMENT",
    "SLOT_CONNECTED",
    "SLOT_CONNECTING",
    "SLOT_FREE",
    "SLOT_LISTENING",
    "SLOT_OPEN",
    "STACK_BELL",
    "BadRecord",
    "ByteRing",
    "Command",
    "CorruptRing",
    "Doorbell",
    "Event",
    "EventKind",
    "Geometry",
    "Op",
    "RecordRing",
    "Segment",
    "SlotState",
    "Violation",
    "decode_command",
    "decode_event",
    "encode_command_into",
    "encode_event_into",
    "redeem",
]
