"""Single-producer/single-consumer rings in memory shared by two processes.

The lowest layer of the fast path (mTCP §3.2.2-3.2.3): an application and
its stack instance map one file per session, and every queue between them
is one of these rings over a slice of that mapping.

- `RecordRing`: fixed-size records — commands app → stack, events
  stack → app. Producers reserve, write and publish a whole batch with one
  index store; consumers see, read and release a whole batch with one.
- `ByteRing`: a byte stream per socket — RX stack → app, TX app → stack.

The region layout is in the contract (vfstack.shm "Ring region"): `head`
and `tail` each own a 64-byte cache line, and the need-wakeup flag a third,
so the producer's and the consumer's stores never share a line. At a
billion records a second a u64 index lasts 584 years, so no code handles
wrap-around of the indices themselves.

Memory ordering (the contract both sides rely on):

- Each index is written with ONE aligned 8-byte store,
  `memoryview.cast('Q')[i] = value` (CPython copies it with one `memcpy` of
  8 bytes into an aligned address: a single `mov` on x86-64), and read with
  one 8-byte load. Never `struct.pack_into`: it zeroes the field before
  packing it, so the other process sometimes reads 0 (docs/architecture.md
  "Known pitfalls on Linux"; tests/unit/test_rings.py catches it).
- The producer writes records (bytes) before the store of `head` that
  publishes them; the consumer reads them after the load of `head` that
  shows them, and stores `tail` only after it has copied them out. x86-64
  is TSO: stores become visible in program order and loads are not
  reordered with older loads, so this needs no barrier there (a compiled
  version on another architecture needs release/acquire atomics here).
- TSO does let a load pass an older store. The need-wakeup handshake is
  exactly that pattern (store my flag/index, load the other's), so
  `prepare_sleep()` and `needs_wakeup()` put a full fence between the two
  (see vfstack.shm._doorbell for the protocol and why no wake-up is lost).

Trust: the consumer (typically the stack) treats everything the producer
wrote as hostile, and the producer treats the consumer's `tail` the same.
Every index loaded from shared memory is checked — the other side's index
never moves backwards from what we saw, and `0 <= head - tail <= capacity`
— else `CorruptRing` is raised and the stack ends that session only. The
*contents* of records and bytes are the higher layers' job: lengths, socket
ids and opcodes inside a record must be bounds-checked there, and checked
on a private copy (`pop_many`, `read_into`, or one `unpack_from` into
locals), never by re-reading a `peek()` view the producer can still
scribble on.

Hot path: `__slots__`, offsets precomputed, indices through one cast('Q')
view, bytes by slice assignment (one `memcpy` each, at most two per call
because of wrap-around). Each object caches the other side's index and
reloads it only when the cache is not enough, so a producer with room
touches no line the consumer writes. Besides what the API returns, the
only allocations are temporary memoryview slices and `push_many`'s joined
batch; a compiled build turns them into `memcpy`.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

from vfstack.shm._violations import CorruptRing

__all__ = ["HEADER_SIZE", "ByteRing", "RecordRing"]

HEADER_SIZE = 192
_HEAD = 0  # word indices into the header viewed as u64
_MAGIC = 1
_CAPACITY = 2
_RECORD_SIZE = 3
_TAIL = 8
_SLEEPING = 16
_HEADER_WORDS = HEADER_SIZE // 8
_RECORD_MAGIC = int.from_bytes(b"vfsRREC1", "little")
_BYTE_MAGIC = int.from_bytes(b"vfsRBYT1", "little")


def _round64(n: int) -> int:
    return (n + 63) & ~63


def _region_view(region, size: int) -> memoryview:
    view = memoryview(region)
    if view.readonly or view.format != "B" or not view.c_contiguous:
        raise ValueError("region must be a writable, contiguous byte buffer")
    if view.nbytes < size:
        raise ValueError(f"region has {view.nbytes} bytes, the ring needs {size}")
    probe = ctypes.c_char.from_buffer(view)
    address = ctypes.addressof(probe)
    del probe  # drop the export at once, so the mmap can close later
    if address % 8:
        raise ValueError("region must start 8-byte aligned (64 is best)")
    return view[:size]


class _Ring:
    """Header handling shared by both ring kinds.

    One object plays one side; its own index is authoritative locally and
    only stored, the other side's is loaded, validated and cached.
    """

    __slots__ = (
        "_view",
        "_header",
        "_words",
        "_data",
        "_cap",
        "_mask",
        "_head",  # producer: own index, as last published
        "_tail_seen",  # producer: consumer's tail, as last validated
        "_tail",  # consumer: own index, as last released
        "_head_seen",  # consumer: producer's head, as last validated
        "_fence",
    )

    def _setup(self, region, capacity: int, data_size: int) -> None:
        if capacity <= 0 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two, not {capacity}")
        self._view = _region_view(region, HEADER_SIZE + data_size)
        self._header = self._view[:HEADER_SIZE].cast("Q")
        # The same words; compiled, a typed view of them (_rings.pxd).
        self._words = self._header
        self._data = self._view[HEADER_SIZE : HEADER_SIZE + data_size]
        self._cap = capacity
        self._mask = capacity - 1
        self._head = self._tail_seen = self._tail = self._head_seen = 0
        # An uncontended lock round trip is a locked instruction (a full
        # fence on x86): the cheapest one pure Python offers (~75 ns).
        self._fence = threading.Lock()

    def _geometry(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def init(self) -> None:
        """Creator: zero the header (empty ring, nobody asleep), write the geometry."""
        words = self._words
        for i in range(_HEADER_WORDS):
            words[i] = 0
        words[_MAGIC], words[_CAPACITY], words[_RECORD_SIZE] = self._geometry()
        self._head = self._tail_seen = self._tail = self._head_seen = 0

    def attach(self) -> None:
        """Other side: check the geometry, adopt the current indices.

        Raises:
            CorruptRing: the header describes another ring, or its indices
                are impossible.
        """
        words = self._words
        if (words[_MAGIC], words[_CAPACITY], words[_RECORD_SIZE]) != self._geometry():
            raise CorruptRing("geometry differs from the agreed layout")
        head, tail = words[_HEAD], words[_TAIL]
        if tail > head:
            raise CorruptRing("tail ahead of head")
        if head - tail > self._cap:
            raise CorruptRing("head ahead of tail by more than capacity")
        self._head = self._head_seen = head
        self._tail = self._tail_seen = tail

    def close(self) -> None:
        """Release the views on the region (the mmap can then be closed)."""
        self._words = None  # compiled, a typed view holding `_header`: dropped first
        self._header.release()
        self._data.release()
        self._view.release()

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def produced(self) -> int:
        """Producer side: its own index (everything ever published)."""
        return self._head

    @property
    def consumed(self) -> int:
        """Consumer side: its own index (everything ever released)."""
        return self._tail

    # -- validated loads of the other side's index -------------------------

    def _load_head(self) -> int:
        """Consumer: the producer's head, checked; raises CorruptRing."""
        head = self._words[_HEAD]
        if head != self._head_seen:
            if head < self._head_seen or head - self._tail > self._cap:
                raise self._bad_head(head)
            self._head_seen = head
        return head

    def _published(self) -> int:
        """Units published and not yet released: loads and checks head."""
        head = self._words[_HEAD]
        if head != self._head_seen:
            if head < self._head_seen or head - self._tail > self._cap:
                raise self._bad_head(head)
            self._head_seen = head
        return head - self._tail

    def pending(self) -> bool:
        """Consumer: has the producer published past our tail? One load,
        no check and no state: a thread that does not hold the consumer's
        lock may ask, and `available()` checks the head before use."""
        return self._words[_HEAD] != self._tail

    def _bad_head(self, head: int) -> CorruptRing:
        if head < self._tail:
            return CorruptRing("head behind tail")
        if head < self._head_seen:
            return CorruptRing("head moved backwards")
        return CorruptRing("head ahead of tail by more than capacity")

    def _grant(self, n: int) -> int:
        """Producer: how many of `n` units fit now. The consumer's tail is
        loaded (a shared-memory read, and a check) only when the tail seen
        last does not already leave room; raises CorruptRing."""
        free = self._cap - (self._head - self._tail_seen)
        if free < n:
            free = self._cap - (self._head - self._load_tail())
            if free < n:
                return free
        return n

    def _load_tail(self) -> int:
        """Producer: the consumer's tail, checked; raises CorruptRing."""
        tail = self._words[_TAIL]
        if tail != self._tail_seen:
            if tail < self._tail_seen or tail > self._head:
                raise self._bad_tail(tail)
            self._tail_seen = tail
        return tail

    def _bad_tail(self, tail: int) -> CorruptRing:
        if tail > self._head:
            return CorruptRing("tail ahead of head")
        return CorruptRing("tail moved backwards")

    # -- need-wakeup (protocol in vfstack.shm._doorbell) -------------------

    def _full_fence(self) -> None:
        fence = self._fence
        fence.acquire()
        fence.release()

    def prepare_sleep(self) -> bool:
        """Consumer: announce sleep, then re-check the ring.

        Returns:
            True if the ring is still empty: block on the doorbell now and
            call `sleep_done()` on waking. False if data arrived meanwhile
            (the flag is cleared again): consume it instead.

        Raises:
            CorruptRing: the producer's head is impossible.
        """
        words = self._words
        words[_SLEEPING] = 1
        self._full_fence()  # the flag store must be visible before the head load
        if self._load_head() != self._tail:
            words[_SLEEPING] = 0
            return False
        return True

    def sleep_done(self) -> None:
        """Consumer: awake again (after the doorbell wait, rung or timed out)."""
        self._words[_SLEEPING] = 0

    def needs_wakeup(self) -> bool:
        """Producer, after `publish`: does the consumer sleep (ring its doorbell)?

        Any non-zero flag counts: a consumer that lies only earns itself
        extra doorbells, at most one per publish batch.
        """
        self._full_fence()  # the head store must be visible before the flag load
        return self._words[_SLEEPING] != 0


class RecordRing(_Ring):
    """Fixed-size records, one producer process, one consumer process.

    Producer: `n = reserve(k)`, `write(i, rec)` or pack into
    `data[write_offset(i):]` for i < n, then `publish(n)` — one index store
    for the batch. `push_many(records)` does all three.
    Consumer: `n = available()`, `peek(i)` / `data[read_offset(i):]` for
    i < n, then `release(n)`. `pop_many(k)` copies out and releases.
    """

    __slots__ = ("_rsize", "_reserved", "_zeros")

    def __init__(self, region, slots: int, record_size: int) -> None:
        """`region`: a writable buffer of at least `region_size(...)` bytes,
        8-byte (better 64-byte) aligned. `slots`: a power of two.

        Raises:
            ValueError: bad geometry or region.
        """
        if record_size <= 0:
            raise ValueError(f"record_size must be positive, not {record_size}")
        self._setup(region, slots, slots * record_size)
        self._rsize = record_size
        self._reserved = 0
        self._zeros = memoryview(bytes(record_size))

    @staticmethod
    def region_size(slots: int, record_size: int) -> int:
        """Bytes a ring needs, rounded up to 64 so the next ring stays aligned."""
        return HEADER_SIZE + _round64(slots * record_size)

    def _geometry(self) -> tuple[int, int, int]:
        return (_RECORD_MAGIC, self._cap, self._rsize)

    @property
    def record_size(self) -> int:
        return self._rsize

    @property
    def data(self) -> memoryview:
        """The slot area, for `Struct.pack_into`/`unpack_from` at a slot offset."""
        return self._data

    # -- producer -----------------------------------------------------------

    def reserve(self, n: int) -> int:
        """Claim up to `n` free slots for writing.

        Returns:
            How many were granted (min of `n` and the free slots; may be 0).
            Slots 0 .. granted-1 are then writable; a new call replaces the
            reservation.

        Raises:
            CorruptRing: the consumer's tail is impossible.
        """
        if n < 0:
            raise ValueError("negative reservation")
        n = self._grant(n)
        self._reserved = n
        return n

    def write_offset(self, i: int) -> int:
        """Byte offset in `data` of reserved slot `i`."""
        if not 0 <= i < self._reserved:
            raise IndexError("slot not reserved")
        return ((self._head + i) & self._mask) * self._rsize

    def write(self, i: int, record) -> None:
        """Copy `record` (bytes-like, at most record_size; zero-padded) into reserved slot `i`."""
        if not 0 <= i < self._reserved:
            raise IndexError("slot not reserved")
        rsize = self._rsize
        offset = ((self._head + i) & self._mask) * rsize
        n = len(record)
        if n == rsize:
            self._data[offset : offset + rsize] = record
        elif n < rsize:
            self._data[offset : offset + n] = record
            self._data[offset + n : offset + rsize] = self._zeros[n:]
        else:
            raise ValueError(f"record of {n} bytes exceeds record_size {rsize}")

    def publish(self, n: int) -> None:
        """Hand the first `n` reserved slots to the consumer: one 8-byte store."""
        if not 0 <= n <= self._reserved:
            raise ValueError(f"cannot publish {n} of {self._reserved} reserved slots")
        self._reserved -= n
        head = self._head + n
        self._head = head
        self._words[_HEAD] = head  # the single store; the records are written already

    def push_many(self, records: Sequence) -> int:
        """Write and publish as many `records` as fit, in order, with one
        index store. Records shorter than record_size are zero-padded.

        Returns:
            How many were pushed (the first ones; 0 if the ring is full).

        Raises:
            ValueError: a record is longer than record_size.
            CorruptRing: the consumer's tail is impossible.
        """
        n = self._grant(len(records))
        if n < len(records):
            if n == 0:
                return 0
            records = records[:n]
        head = self._head
        rsize = self._rsize
        start = head & self._mask
        if n == 1:  # request/response traffic: skip the join
            record = records[0]
            if len(record) == rsize:
                self._data[start * rsize : start * rsize + rsize] = record
            else:
                self._reserved = 1
                self.write(0, record)
        else:
            for record in records:
                if len(record) != rsize:
                    self._reserved = n
                    for i in range(n):
                        self.write(i, records[i])
                    break
            else:
                self._copy_in(b"".join(records), start, n)
        head += n
        self._head = head
        self._reserved = 0
        self._words[_HEAD] = head  # the single store; the records are written already
        return n

    def _copy_in(self, blob: bytes, start: int, n: int) -> None:
        rsize, data = self._rsize, self._data
        first = self._cap - start
        if first >= n:
            data[start * rsize : (start + n) * rsize] = blob
        else:
            split = first * rsize
            data[start * rsize : start * rsize + split] = blob[:split]
            data[0 : n * rsize - split] = blob[split:]

    # -- consumer -----------------------------------------------------------

    def available(self) -> int:
        """Records published and not yet released (loads and checks head).

        Raises:
            CorruptRing: the producer's head is impossible.
        """
        return self._published()

    def read_offset(self, i: int) -> int:
        """Byte offset in `data` of available record `i` (as of the last `available()`)."""
        if not 0 <= i < self._head_seen - self._tail:
            raise IndexError("record not available")
        return ((self._tail + i) & self._mask) * self._rsize

    def peek(self, i: int) -> memoryview:
        """A view of available record `i`; valid until `release`. The producer
        may still write through it if it misbehaves: copy before checking."""
        if not 0 <= i < self._head_seen - self._tail:
            raise IndexError("record not available")
        offset = ((self._tail + i) & self._mask) * self._rsize
        return self._data[offset : offset + self._rsize]

    def release(self, n: int) -> None:
        """Give the first `n` available slots back to the producer: one 8-byte store."""
        if not 0 <= n <= self._head_seen - self._tail:
            raise ValueError(f"cannot release {n} of {self._head_seen - self._tail} records")
        tail = self._tail + n
        self._tail = tail
        self._words[_TAIL] = tail

    def pop_many(self, max_records: int) -> list[bytes]:
        """Copy out and release up to `max_records` records, oldest first.

        Raises:
            CorruptRing: the producer's head is impossible.
        """
        tail = self._tail
        head = self._words[_HEAD]
        if head != self._head_seen:
            if head < self._head_seen or head - tail > self._cap:
                raise self._bad_head(head)
            self._head_seen = head
        n = head - tail
        if n > max_records:
            n = max_records
        if n <= 0:
            return []
        rsize, data = self._rsize, self._data
        start = tail & self._mask
        if n == 1:
            out = [data[start * rsize : start * rsize + rsize].tobytes()]
        else:
            first = self._cap - start
            if first > n:
                first = n
            blob = data[start * rsize : (start + first) * rsize].tobytes()
            out = [blob[k : k + rsize] for k in range(0, first * rsize, rsize)]
            if n > first:
                blob = data[0 : (n - first) * rsize].tobytes()
                out += [blob[k : k + rsize] for k in range(0, (n - first) * rsize, rsize)]
        tail += n
        self._tail = tail
        self._words[_TAIL] = tail  # after the copies: the slots may be reused now
        return out


class ByteRing(_Ring):
    """A byte stream, one producer process, one consumer process.

    Producer: `write(data)` (as much as fits, one publish), or `reserve(n)`,
    fill the view it returns, then `publish(k)`. Consumer: `read_into(buf)`,
    or `peek_into(buf, offset, n)` or `peek(n)`, then `release(k)`.

    `reserve` and `peek` hand out the ring's own bytes, so a side whose
    other end is a buffer object copies once, not through a bounce buffer
    (the stack's TCP buffers: two copies per byte each way became one).
    A view covers the contiguous run up to the ring's end, fewer bytes
    than asked where the ring wraps: loop for the rest.
    """

    __slots__ = ("_reserved",)

    def __init__(self, region, capacity: int) -> None:
        """`region`: a writable buffer of at least `region_size(capacity)`
        bytes, 8-byte (better 64-byte) aligned. `capacity`: a power of two.

        Raises:
            ValueError: bad capacity or region.
        """
        self._setup(region, capacity, capacity)
        self._reserved = 0

    @staticmethod
    def region_size(capacity: int) -> int:
        """Bytes a ring needs, rounded up to 64 so the next ring stays aligned."""
        return HEADER_SIZE + _round64(capacity)

    def _geometry(self) -> tuple[int, int, int]:
        return (_BYTE_MAGIC, self._cap, 0)

    # -- producer -----------------------------------------------------------

    def free(self) -> int:
        """Bytes the producer may write now (loads and checks tail).

        Raises:
            CorruptRing: the consumer's tail is impossible.
        """
        return self._cap - (self._head - self._load_tail())

    def write(self, data) -> int:
        """Append as much of `data` (bytes-like, format 'B') as fits; publish once.

        Returns:
            Bytes written (0 when full).

        Raises:
            CorruptRing: the consumer's tail is impossible.
        """
        self._reserved = 0
        n = self._grant(len(data))
        if n == 0:
            return 0
        head = self._head
        buf = self._data
        start = head & self._mask
        first = self._cap - start
        if n <= first:
            if n == len(data):
                buf[start : start + n] = data
            else:
                buf[start : start + n] = memoryview(data)[:n]
        else:
            src = memoryview(data)
            buf[start : self._cap] = src[:first]
            buf[0 : n - first] = src[first:n]
        head += n
        self._head = head
        self._words[_HEAD] = head  # the single store, after the bytes
        return n

    def reserve(self, n: int) -> memoryview:
        """Up to `n` free bytes at the head, to fill and then `publish`:
        contiguous, so fewer where the ring wraps; empty when full. A later
        `reserve` or `write` replaces an unpublished reservation.

        Raises:
            ValueError: a negative `n`.
            CorruptRing: the consumer's tail is impossible.
        """
        if n < 0:
            raise ValueError("negative length")
        view = self._run(self._head, self._grant(n))
        self._reserved = len(view)
        return view

    def publish(self, n: int) -> None:
        """Make the first `n` bytes of the last `reserve` readable (one store).

        Raises:
            ValueError: `n` is negative or more than was reserved.
        """
        if n < 0 or n > self._reserved:
            raise ValueError(f"cannot publish {n} of {self._reserved} reserved bytes")
        self._reserved = 0
        head = self._head + n
        self._head = head
        self._words[_HEAD] = head

    # -- consumer -----------------------------------------------------------

    def readable(self) -> int:
        """Bytes published and not yet consumed (loads and checks head).

        Raises:
            CorruptRing: the producer's head is impossible.
        """
        return self._published()

    def read_into(self, buf) -> int:
        """Move up to len(buf) bytes into `buf` (writable, format 'B').

        Returns:
            Bytes read (0 when empty).

        Raises:
            CorruptRing: the producer's head is impossible.
        """
        n = self._grant_read(len(buf))
        if n == 0:
            return 0
        tail = self._tail
        self._copy_out(buf, tail, n)
        tail += n
        self._tail = tail
        self._words[_TAIL] = tail  # after the copy: the bytes may be overwritten now
        return n

    def peek_into(self, buf, offset: int, n: int) -> int:
        """Copy up to `n` bytes starting `offset` bytes past the read position
        into buf[0:], without consuming them.

        Returns:
            Bytes copied (less than `n` if fewer are readable or buf is short).

        Raises:
            CorruptRing: the producer's head is impossible.
        """
        if offset < 0 or n < 0:
            raise ValueError("negative offset or length")
        if n > len(buf):
            n = len(buf)
        n = self._grant_read(offset + n) - offset
        if n <= 0:
            return 0
        self._copy_out(buf, self._tail + offset, n)
        return n

    def peek(self, n: int) -> memoryview:
        """Up to `n` readable bytes at the read position, not consumed
        (`release` them once used): contiguous, so fewer where the ring
        wraps; empty when none are readable. The producer may not overwrite
        them until released.

        Raises:
            ValueError: a negative `n`.
            CorruptRing: the producer's head is impossible.
        """
        if n < 0:
            raise ValueError("negative length")
        return self._run(self._tail, self._grant_read(n))

    def _run(self, index: int, n: int) -> memoryview:
        """The ring's bytes from `index` on: `n` of them, or fewer where
        the ring's end comes first."""
        start = index & self._mask
        if n > self._cap - start:
            n = self._cap - start
        return self._data[start : start + n]

    def _grant_read(self, n: int) -> int:
        """How many of the next `n` bytes are readable now. The producer's
        head is loaded (a shared-memory read, and a check) only when the
        head seen last does not already cover them; raises CorruptRing."""
        avail = self._head_seen - self._tail
        if avail < n:
            avail = self._load_head() - self._tail
            if avail < n:
                return avail
        return n

    def release(self, n: int) -> None:
        """Consume `n` readable bytes without copying them (after `peek_into`
        or `peek`).

        Raises:
            ValueError: fewer than `n` bytes are readable.
            CorruptRing: the producer's head is impossible.
        """
        tail = self._tail
        if n < 0 or (n > self._head_seen - tail and n > self._load_head() - tail):
            raise ValueError(f"cannot release {n} of {self._head_seen - tail} bytes")
        tail += n
        self._tail = tail
        self._words[_TAIL] = tail

    def was_full(self, before: int, taken: int) -> bool:
        """Consumer, right after taking `taken` of the `before` bytes it saw
        readable: was the ring full at the old tail? A producer that found
        it full stops filling until told (the session's RX_DONE). The fence
        orders our tail store before the head load, as the producer fences
        its head store before its last tail load: one side sees the other.

        Raises:
            CorruptRing: the producer's head is impossible.
        """
        self._full_fence()
        return before >= self._cap or self._published() + taken >= self._cap

    def _copy_out(self, buf, index: int, n: int) -> None:
        data = self._data
        start = index & self._mask
        first = self._cap - start
        if n <= first:
            buf[0:n] = data[start : start + n]
        else:
            buf[0:first] = data[start : self._cap]
            buf[first:n] = data[0 : n - first]
