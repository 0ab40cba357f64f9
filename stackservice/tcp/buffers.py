"""A connection's byte buffers: send (RFC 9293 §3.3.1) and receive with reassembly.

Offsets, not sequence numbers: the TCB owns SND.UNA and RCV.NXT and converts
with `seq_sub`, so nothing here knows about wrap-around. `SendBuffer` offset 0
is SND.UNA (ISS+1 before the first ACK); `ReceiveBuffer` offset 0 is RCV.NXT.

Both are rings: a bytearray, a head index and a length. Each byte is copied
once in and once out, with no allocation per segment beyond the memoryview
slice objects of the copy. Measured (CPython 3.11, 1448-byte segments,
medians): `accept` in order 0.36 µs, `read_into` 0.38 µs, `read` 0.29 µs,
`peek_into` 0.37 µs into a memoryview (0.51 µs into a bytearray, which must
be wrapped: pass memoryviews), `write` + `acknowledge` 0.37 µs. A deque of
memoryview chunks cost 1.25 µs for write + peek + ack (ring 0.86) and 3.1 µs
to peek 70 kB into the queue, as it walks chunks (ring: 0.37 µs at any
offset). A copy that wraps costs ~0.5 µs more; a ring of R bytes wraps once
every R/1448 segments, so a small ring costs ~+0.04 µs a copy at 16 KiB,
~+0.003 µs at 256 KiB (growth below keeps rings small).

The ring grows with the data, not with the capacity: `bytearray(n)` writes
every byte, so a 256 KiB ring per direction made 10 000 idle connections
resident at ~5 GiB. Policy, the same for both buffers:
- A new buffer holds no ring (a shared empty one). The first byte allocates
  `MIN_RING` (4 KiB, or the capacity if smaller).
- When the bytes to hold exceed the ring (`write`: held + new; `accept`:
  unread + offset + length, so out-of-order data far ahead grows it too),
  the ring doubles until they fit, capped at `capacity`, and is re-linearised:
  held bytes move to index 0. Growth copies fewer bytes than the ring it
  leaves, so it costs O(1) per byte held, and happens log2(capacity / 4 KiB)
  times at most per fill (6 for 256 KiB). `capacity`, `free()` and `window()`
  never depend on the ring's size: the window advertised is the capacity's.
- Shrinking: a ring of at least `SHRINK_RING` (64 KiB) that becomes empty
  (everything acknowledged, or read with no out-of-order data held) is
  released. Smaller rings are kept, so request/response traffic that fits
  in 32 KiB never reallocates.
- Refilling: the next byte after a release starts again at 4 KiB, unless
  the fill that emptied needed more than half of the released ring (its
  peak); then the next fill starts at that size, if that keeps the
  instance's rings below the pressure mark. A reader or an ACK clock
  that keeps up empties the ring every loop pass, and regrowing it from
  4 KiB each time copied ~2 bytes per byte received (4 + 8 + ... + 64 KiB
  re-linearised for a 128 KiB pass). A connection whose fills get small
  again falls back to 4 KiB after one such fill.
- `set_capacity` only reallocates to shrink a ring larger than the new
  capacity (to the smallest doubling of 4 KiB that holds the data).
- Rings are pooled (mTCP's per-core buffer pools): a ring a buffer lets go
  of (its connection closed, it grew, or it was released empty) waits in
  the instance's `BufferMemory` for the next buffer that needs that size:
  up to `SPARE_RINGS` first rings (1 MiB) and `SPARE_LARGE_BYTES` (4 MiB)
  of larger ones, not charged (no buffer holds them). A short transaction
  allocates four first rings; a fresh `bytearray(4096)` costs ~5 k
  instructions, allocation and zeroing, a pooled one none. A connection
  whose reader keeps up empties and releases its large ring every loop
  pass and regrows it in the next (4 KiB doubling to 128 KiB for a pass of
  45 segments): fresh, that zeroed 252 KiB per pass, a sixth of the
  engine's instructions per bulk segment (bench.engine_instructions).
  Reuse shows no stale byte: a buffer reads only what it wrote.

Every ring is charged to the instance's `BufferMemory` (Linux's tcp_mem):
- Above its pressure mark, a ring does not grow for out-of-order data: the
  segment is refused (`refused`), as for a missing range slot. Out-of-order
  bytes are the cheapest for a remote peer to make us hold: one byte at the
  far edge of the window grows the ring to the whole window.
- At its limit, no ring grows at all: `write` takes only what fits in the
  ring it has (the application sees EAGAIN), `accept` only what fits in
  order (the rest is dropped and comes again; nothing SACKed is reneged).
- Whatever the marks, every buffer may have a ring of MIN_RING, as Linux
  guarantees each socket tcp_rmem[0] and tcp_wmem[0] over tcp_mem: else
  a connection whose ring was released while other connections' unread
  bytes hold the memory could never take a byte again, and an app that
  reads its connections one after another would wait on itself for ever.
  So the instance may exceed its limit by MIN_RING per buffer at most.
- Near the pressure mark, the receive window offers no more than the
  memory left (`ReceiveBuffer.window`).

`ReceiveBuffer` keeps out-of-order data in place, in the ring, at its offset
from RCV.NXT, and records which byte ranges are held in a sorted list of
disjoint, non-adjacent [start, end) ranges. Choices:
- Overlaps (RFC 9293 §3.10.7.4 trims only at the window edges and leaves
  overlapping retransmissions to the implementation): bytes already held win;
  a segment only fills the gaps between held ranges. Each byte is stored once
  and never overwritten, so a later, different copy of the same sequence space
  (a forged or corrupted overlap) cannot change data already queued. Linux's
  out-of-order queue also keeps queued bytes and drops covered duplicates.
- The advertisable window is `capacity - readable`: out-of-order bytes sit
  inside it, at their final place, so they do not consume space beyond it.
  `window()` therefore never moves the right edge (RCV.NXT + window) left as
  segments arrive, in order or not (RFC 9293 §3.8.6: do not shrink the window).
  `ooo_bytes()` reports the out-of-order bytes held, for statistics.
- At most `max_ranges` (64) out-of-order ranges. A segment that would open
  one more is refused: `accept` returns 0 and sets `refused`, the caller
  counts TCP_RCV_BUFFER_FULL and still sends its duplicate ACK. A segment
  that touches or bridges held ranges is always accepted (it opens none).
  Refusing, not discarding queued data, means we never renege on data
  already SACKed (RFC 2018 §8 allows reneging but the sender then waits an RTO).
- Data beyond the ring (past RCV.NXT + window) is trimmed (RFC 9293
  §3.10.7.4 "trimmed to the window"); the caller trims first, this is a guard.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from stackservice.net.errors import LocalProtocolError

Buffer = bytes | bytearray | memoryview

MAX_OOO_RANGES = 64  # default bound on out-of-order ranges held by a ReceiveBuffer
MIN_RING = 4096  # a ring's first allocation (the capacity if smaller)
SPARE_RINGS = 256  # first rings a BufferMemory keeps for reuse
SPARE_LARGE_BYTES = 4 << 20  # and bytes of larger rings
SHRINK_RING = 64 * 1024  # an emptied ring at least this large is released

# Shared by every buffer that holds no ring: never written (zero bytes).
_NO_RING = memoryview(bytearray())


def _copy_in(ring: memoryview, size: int, pos: int, src: Buffer, start: int, n: int) -> None:
    """Copy src[start:start+n] into the ring at index `pos` (< size), wrapping."""
    first = size - pos
    if start == 0 and n == len(src) and n <= first:
        ring[pos : pos + n] = src  # the common case: a whole payload, no wrap
        return
    view = src if isinstance(src, memoryview) else memoryview(src)
    if n <= first:
        ring[pos : pos + n] = view[start : start + n]
    else:
        ring[pos:size] = view[start : start + first]
        ring[0 : n - first] = view[start + first : start + n]


def _copy_out(ring: memoryview, size: int, pos: int, out: Buffer, out_offset: int, n: int) -> None:
    """Copy n ring bytes from index `pos` (< size) into out[out_offset:], wrapping.

    A bytearray target is wrapped in a memoryview: assigning a memoryview to a
    bytearray slice makes CPython copy the source into a temporary bytearray
    first (bytearray_ass_subscript), a memoryview target copies once.
    """
    if not isinstance(out, memoryview):
        out = memoryview(out)
    first = size - pos
    if n <= first:
        out[out_offset : out_offset + n] = ring[pos : pos + n]
    else:
        out[out_offset : out_offset + first] = ring[pos:size]
        out[out_offset + first : out_offset + n] = ring[0 : n - first]


def _ring_size(size: int, need: int, capacity: int) -> int:
    """The ring size that holds `need` bytes: `size` (or MIN_RING) doubled, capped."""
    if size < MIN_RING:
        size = MIN_RING
    while size < need:
        size *= 2
    return size if size < capacity else capacity


def _relocate(
    ring: memoryview, size: int, head: int, held: int, new_size: int, memory: BufferMemory
) -> memoryview:
    """A new ring of `new_size` bytes (a spare of `memory`'s if it has one
    of that size) holding `held` bytes from `head`, at index 0."""
    if new_size == 0:
        return _NO_RING
    fresh = memory.take_ring(new_size)
    if held:
        _copy_out(ring, size, head, fresh, 0, held)
    return fresh


class BufferMemory:
    """Ring bytes held by one instance's TCP buffers, and its two marks
    (module docstring): `pressure` stops growth for out-of-order data,
    `limit` all growth. It also keeps the spare first rings (module
    docstring)."""

    __slots__ = ("_large", "_large_bytes", "_spare", "held", "limit", "pressure")

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise LocalProtocolError("buffer memory limit must be positive")
        self.limit = limit
        self.pressure = limit - limit // 4
        self.held = 0
        self._spare: list[memoryview] = []  # first rings
        self._large: dict[int, list[memoryview]] = {}  # the others, by size
        self._large_bytes = 0

    def take_ring(self, size: int) -> memoryview:
        """A ring of `size` bytes: a spare one of that size, else new."""
        if size == MIN_RING:
            if self._spare:
                return self._spare.pop()
        else:
            rings = self._large.get(size)
            if rings:
                self._large_bytes -= size
                return rings.pop()
        return memoryview(bytearray(size))

    def give_ring(self, ring: memoryview) -> None:
        """A ring no buffer uses any more: kept if the pool has room for it."""
        size = len(ring)
        if size == MIN_RING:
            if len(self._spare) < SPARE_RINGS:
                self._spare.append(ring)
        elif self._large_bytes + size <= SPARE_LARGE_BYTES:
            self._large.setdefault(size, []).append(ring)
            self._large_bytes += size

    @property
    def spare(self) -> int:
        """Spare first rings kept (introspection: tests)."""
        return len(self._spare)

    @property
    def spare_large_bytes(self) -> int:
        """Bytes of larger spare rings kept (introspection: tests)."""
        return self._large_bytes


class _Ring:
    """What both buffers share: a ring that grows on demand up to `capacity`."""

    __slots__ = ("_head", "_memory", "_peak", "_refill", "_size", "_view", "capacity")

    def release(self) -> None:
        """Give the ring back (the connection is gone); the buffer is not
        used again."""
        self._set_ring(_NO_RING, 0)
        self._head = 0

    def ring_size(self) -> int:
        """Bytes allocated for the ring now (introspection: tests, statistics)."""
        return self._size

    def _held(self) -> int:
        """Ring bytes in use from `_head`."""
        raise NotImplementedError

    def _resize(self, capacity: int) -> None:
        """New capacity, never below what is held, so no data is lost;
        growing waits for data, shrinking frees at once."""
        held = self._held()
        if capacity < held:
            capacity = held
        self.capacity = capacity
        if self._size > capacity:
            size = _ring_size(0, held, capacity) if held else 0
            self._set_ring(
                _relocate(self._view, self._size, self._head, held, size, self._memory), size
            )
            self._head = 0

    def _set_ring(self, view: memoryview, size: int) -> None:
        """Take `view` as the ring (the old one's bytes already copied out):
        the old one goes back to the pool."""
        memory = self._memory
        memory.held += size - self._size
        if self._size:
            memory.give_ring(self._view)
        self._view = view
        self._size = size

    def _emptied(self) -> None:
        """Nothing is held now: the next bytes land at the ring's start, and
        a large ring goes back to the pool (the module docstring: shrinking,
        refilling)."""
        self._head = 0
        size = self._size
        large = size >= SHRINK_RING
        self._refill = size if large and 2 * self._peak > size else 0
        if large:
            self._set_ring(_NO_RING, 0)
        self._peak = 0

    def _may_grow(self, need: int, mark: int) -> bool:
        """Whether growing to hold `need` bytes keeps the instance's rings
        within `mark` (its pressure mark or its limit); a first ring is
        granted whatever the mark (the module docstring)."""
        memory = self._memory
        size = _ring_size(self._size, need, self.capacity)
        return size <= MIN_RING or memory.held + size - self._size <= mark

    def _grow(self, need: int) -> None:
        """Grow to hold `need` bytes, or as near as the instance's limit
        allows, never below a first ring (re-linearised: head at 0); the
        caller copies what fits."""
        size = _ring_size(self._size, need, self.capacity)
        memory = self._memory
        refill = self._refill
        if size < refill <= self.capacity and memory.held + refill - self._size <= memory.pressure:
            size = refill  # the module docstring: refilling, never past the pressure mark
        room = max(memory.limit - memory.held + self._size, MIN_RING)
        if size > room:
            size = room
        if size > self._size:
            held = self._held()
            self._set_ring(
                _relocate(self._view, self._size, self._head, held, size, self._memory), size
            )
            self._head = 0

    def _append(self, used: int, data: Buffer, n: int) -> int:
        """Copy data[:n] in after the first `used` bytes from the head,
        growing the ring first if they do not fit and the instance's limit
        allows; else only what fits.

        Returns:
            The bytes copied.
        """
        size = self._size
        if used + n > self._peak:
            self._peak = used + n
        pos = self._head + used
        if pos < size:
            end = size  # free space runs to the ring's end (then wraps)
        else:
            pos -= size
            end = self._head  # used bytes wrap: free space runs to the head
        if pos + n <= end and n == len(data):
            self._view[pos : pos + n] = data  # fits, no wrap, no trim: no call
            return n
        if used + n > size:
            self._grow(used + n)
            if self._size > size:  # re-linearised: head at 0
                size = self._size
                pos = used
            if used + n > size:
                n = size - used  # the instance is at its limit: what fits
                if n <= 0:
                    return 0
        _copy_in(self._view, size, pos, data, 0, n)
        return n


class SendBuffer(_Ring):
    """Bytes the application wrote and the peer has not acknowledged.

    Offset 0 is SND.UNA. Bytes [0, snd_nxt - snd_una) are in flight, the rest
    unsent; the TCB tracks which is which. `capacity` is SO_SNDBUF: change it
    with `set_capacity`, never by assignment. The ring grows on demand up to
    `capacity` (module docstring).
    """

    __slots__ = ("_len",)

    def __init__(self, capacity: int, memory: BufferMemory | None = None) -> None:
        if capacity < 0:
            raise LocalProtocolError("negative send buffer capacity")
        self.capacity = capacity
        self._memory = memory if memory is not None else BufferMemory(1 << 62)
        self._view = _NO_RING  # allocated by the first write
        self._size = 0  # len(self._view)
        self._head = 0
        self._peak = 0  # most bytes held since the ring was last empty
        self._refill = 0  # the size the next fill starts at, 0: MIN_RING
        self._len = 0

    def set_capacity(self, capacity: int) -> None:
        """Resize (SO_SNDBUF); never below what is held, so no data is lost.

        Raises:
            LocalProtocolError: a negative capacity.
        """
        if capacity < 0:
            raise LocalProtocolError("negative send buffer capacity")
        self._resize(capacity)

    def _held(self) -> int:
        return self._len

    def __len__(self) -> int:
        """Bytes held: unacknowledged and unsent."""
        return self._len

    def free(self) -> int:
        """Bytes `write` would take now."""
        return self.capacity - self._len

    def write(self, data: Buffer) -> int:
        """Copy as much of `data` as fits (the application side).

        Returns:
            The number of bytes taken, 0 when full.
        """
        n = len(data)
        held = self._len
        room = self.capacity - held
        if n > room:
            n = room
        if n <= 0:
            return 0
        n = self._append(held, data, n)
        self._len = held + n
        return n

    def peek_into(self, offset: int, out: Buffer, out_offset: int, length: int) -> int:
        """Copy up to `length` held bytes from `offset` into out[out_offset:].

        Builds a segment's payload in place in a frame buffer; nothing is
        consumed.

        Returns:
            Bytes copied: min(length, len(self) - offset), 0 past the end.

        Raises:
            LocalProtocolError: a negative offset or length, or `out` too
                small for the bytes to copy.
        """
        if offset < 0 or length < 0 or out_offset < 0:
            raise LocalProtocolError("negative offset or length")
        n = self._len - offset
        if n > length:
            n = length
        if n <= 0:
            return 0
        if out_offset + n > len(out):
            raise LocalProtocolError("output buffer too small")
        size = self._size
        pos = self._head + offset
        if pos >= size:
            pos -= size
        _copy_out(self._view, size, pos, out, out_offset, n)
        return n

    def acknowledge(self, count: int) -> None:
        """Drop `count` bytes from the front (a cumulative ACK).

        The caller excludes SYN and FIN, which occupy sequence space but no
        buffer byte.

        Raises:
            LocalProtocolError: count is negative or exceeds what is held.
        """
        held = self._len - count
        if count < 0 or held < 0:
            raise LocalProtocolError("acknowledged bytes not in the send buffer")
        self._len = held
        if held == 0:
            self._emptied()
            return
        size = self._size
        head = self._head + count
        if head >= size:
            head -= size
        self._head = head


class ReceiveBuffer(_Ring):
    """In-order bytes the application has not read, plus out-of-order data.

    Offsets passed to `accept` and returned by `sack_blocks` are relative to
    RCV.NXT. Internally, out-of-order ranges are kept as absolute stream
    positions (`_base` is RCV.NXT's position: bytes ever made in order), so
    advancing RCV.NXT never rewrites them. `refused` tells whether the last
    `accept` left bytes out (no range slot, or no memory). The ring
    grows on demand up to `capacity` (module docstring).
    """

    __slots__ = (
        "_base",
        "_clock",
        "_ends",
        "_ooo",
        "_readable",
        "_stamps",
        "_starts",
        "max_ranges",
        "refused",
    )

    def __init__(
        self, capacity: int, max_ranges: int = MAX_OOO_RANGES, memory: BufferMemory | None = None
    ) -> None:
        if capacity < 0 or max_ranges < 1:
            raise LocalProtocolError("bad receive buffer capacity or range bound")
        self.capacity = capacity
        self._memory = memory if memory is not None else BufferMemory(1 << 62)
        self.max_ranges = max_ranges
        self.refused = False
        self._view = _NO_RING  # allocated by the first byte accepted
        self._size = 0  # len(self._view)
        self._head = 0  # ring index of the first unread byte
        self._peak = 0  # most bytes held since the ring was last empty
        self._refill = 0  # the size the next fill starts at, 0: MIN_RING
        self._readable = 0  # in-order bytes from _head
        self._base = 0  # stream position of RCV.NXT
        self._starts: list[int] = []  # out-of-order ranges, stream positions, sorted
        self._ends: list[int] = []
        self._stamps: list[int] = []  # arrival order of each range's latest segment
        self._clock = 0
        self._ooo = 0  # out-of-order bytes held

    def set_capacity(self, capacity: int) -> None:
        """Resize (SO_RCVBUF); never below the unread and out-of-order data held.

        Shrinking moves the window's right edge left: the TCB decides when
        that is allowed (RFC 9293 §3.8.6).

        Raises:
            LocalProtocolError: a negative capacity.
        """
        if capacity < 0:
            raise LocalProtocolError("negative receive buffer capacity")
        self._resize(capacity)

    def _held(self) -> int:
        """Ring bytes in use from `_head`: unread, then up to the last out-of-order byte."""
        if self._ends:
            return self._readable + self._ends[-1] - self._base
        return self._readable

    def readable(self) -> int:
        """In-order bytes the application can read."""
        return self._readable

    def window(self) -> int:
        """Bytes from RCV.NXT the ring can still hold: the window to advertise.

        Out-of-order data already sits inside this span and does not reduce
        it (see the module docstring).

        Near the instance's pressure mark it offers no more than the ring
        it has (at least MIN_RING) plus the memory left below the mark, as
        Linux clamps rcv_ssthresh under tcp_memory_pressure: a peer offered
        room the instance cannot give sends into drops and waits out
        backed-off RTOs; offered a closed window it probes, and resumes as
        soon as its application reads (a window update). Room already
        offered stays offered (the TCB never moves the right edge left);
        the quarter above the mark is for it.
        """
        room = self.capacity - self._readable
        memory = self._memory
        headroom = memory.pressure - memory.held
        if headroom < room:
            ring_room = max(self._size, MIN_RING) - self._readable + max(headroom, 0)
            if ring_room < room:
                return ring_room
        return room

    def ooo_bytes(self) -> int:
        """Out-of-order bytes held."""
        return self._ooo

    def has_out_of_order(self) -> bool:
        return len(self._starts) != 0

    def accept(self, offset: int, data: Buffer) -> int:
        """Store a segment's payload that starts `offset` bytes after RCV.NXT.

        The caller has trimmed data before RCV.NXT and beyond the window
        (RFC 9293 §3.10.7.4); bytes past the ring are trimmed here too.
        Bytes already held are kept; only gaps are filled (module docstring).

        Returns:
            How many bytes became in order: the caller advances RCV.NXT by
            exactly that. `refused` is set when not all was taken: the
            segment would open more than `max_ranges` out-of-order ranges,
            or the instance's buffer memory is short (module docstring).

        Raises:
            LocalProtocolError: a negative offset.
        """
        self.refused = False
        if offset < 0:
            raise LocalProtocolError("segment offset before RCV.NXT")
        n = len(data)
        readable = self._readable
        room = self.capacity - readable - offset
        if n > room:
            n = room
        if n <= 0:
            return 0
        if offset == 0 and not self._starts:
            # In order with no holes: the common case, one copy.
            taken = self._append(readable, data, n)
            if taken < n:
                self.refused = True  # the instance's buffer memory is short
                n = taken
            self._readable = readable + n
            self._base += n
            return n
        return self._accept_ranges(offset, data, n)

    def _accept_ranges(self, offset: int, data: Buffer, n: int) -> int:
        """`accept` when out-of-order data is held or this segment is out of order."""
        starts = self._starts
        ends = self._ends
        base = self._base
        first = base + offset
        last = first + n
        i = bisect_left(ends, first)  # first range ending at or after `first`
        j = bisect_right(starts, last)  # ranges i..j-1 overlap or touch [first, last)
        if i == j and offset and len(starts) >= self.max_ranges:
            self.refused = True  # would open one range too many
            return 0
        need = self._readable + offset + n  # the ring must reach `last`
        if need > self._peak:
            self._peak = need
        if need > self._size:
            if offset and not self._may_grow(need, self._memory.pressure):
                self.refused = True  # out of order, under pressure
                return 0
            self._grow(need)
            if need > self._size:
                self.refused = True  # in order, at the limit: what fits
                n = self._size - self._readable
                if n <= 0:
                    return 0
                last = first + n
                j = bisect_right(starts, last)
        pos = first
        for k in range(i, j):
            if starts[k] > pos:
                self._store(data, first, pos, starts[k])
            if ends[k] > pos:
                pos = ends[k]
        if pos < last:
            self._store(data, first, pos, last)
        held = 0
        if i < j:
            if starts[i] < first:
                first = starts[i]
            if ends[j - 1] > last:
                last = ends[j - 1]
            for k in range(i, j):
                held += ends[k] - starts[k]
        self._clock += 1
        if offset == 0:
            # RFC 9293 §3.10.7.4: the hole at RCV.NXT is filled; everything
            # contiguous with it becomes in order (i == 0 here).
            del starts[:j], ends[:j], self._stamps[:j]
            self._ooo -= held
            delivered = last - base
            self._readable += delivered
            self._base = last
            return delivered
        # RFC 9293 §3.10.7.4: "segments with higher beginning sequence numbers
        # SHOULD be held for later processing".
        starts[i:j] = [first]
        ends[i:j] = [last]
        self._stamps[i:j] = [self._clock]
        self._ooo += last - first - held
        return 0

    def _store(self, data: Buffer, data_pos: int, first: int, last: int) -> None:
        """Copy the stream positions [first, last) of `data` (which starts at data_pos)."""
        size = self._size
        pos = self._head + self._readable + (first - self._base)
        if pos >= size:
            pos -= size
        _copy_in(self._view, size, pos, data, first - data_pos, last - first)

    def read(self, n: int) -> bytes:
        """Remove and return up to `n` in-order bytes (the application side)."""
        k = self._readable
        if n < k:
            k = n
        if k <= 0:
            return b""
        head = self._head
        size = self._size
        view = self._view
        if head + k <= size:
            result = view[head : head + k].tobytes()
        else:
            result = view[head:size].tobytes() + view[0 : k - (size - head)].tobytes()
        self._consume(k)
        return result

    def read_into(self, out: bytearray | memoryview) -> int:
        """Move up to len(out) in-order bytes into out[0:].

        Returns:
            The number of bytes copied.
        """
        k = self._readable
        if len(out) < k:
            k = len(out)
        if k <= 0:
            return 0
        _copy_out(self._view, self._size, self._head, out, 0, k)
        self._consume(k)
        return k

    def _consume(self, k: int) -> None:
        readable = self._readable - k
        self._readable = readable
        if readable == 0 and not self._starts:
            self._emptied()
            return
        size = self._size
        head = self._head + k
        if head >= size:
            head -= size
        self._head = head

    def sack_blocks(self, max_blocks: int) -> list[tuple[int, int]]:
        """Out-of-order ranges as (left, right) offsets from the current RCV.NXT.

        RFC 2018 §4: the first block holds the most recently received
        segment; the rest repeat the most recently reported blocks. Each
        range carries the arrival order of its latest segment, so both rules
        reduce to "most recent first" (every out-of-order segment is ACKed at
        once, RFC 5681 §4.2, so each arrival was reported as a first block).

        Returns:
            At most `max_blocks` blocks; [] when nothing is out of order.
        """
        starts = self._starts
        if not starts or max_blocks <= 0:
            return []
        ends = self._ends
        stamps = self._stamps
        base = self._base
        order = sorted(range(len(starts)), key=stamps.__getitem__, reverse=True)
        return [(starts[k] - base, ends[k] - base) for k in order[:max_blocks]]
