# Types for sack.py, compiled (setup.py); the .py stays the source.

cimport cython

cdef long long _SACKED, _LOST, _RETRANSMITTED, _EVER_RETRANSMITTED, MAX_OFFSET

# One record per segment sent, read by RACK (rack.pxd) and recovery on
# every ACK: C fields, so neither reads a dictionary or boxes a number.
cdef class SentSegment:
    cdef public long long start, end, xmit_us, flags


cdef class Scoreboard:
    cdef long long _base, _sacked, _lost, _retransmitted
    cdef list _starts
    cdef public list segments, delivered
    cdef public long long sacked_segments
    cdef public bint dsack

    cpdef reset(self)
    @cython.locals(first="long long", last="long long", recorded_end="long long", flags="long long")
    cpdef on_send(self, long long offset, long long length, long long now, bint retransmission)
    @cython.locals(seg=SentSegment, i=Py_ssize_t)
    cpdef _resent(self, long long first, long long last, long long now)
    @cython.locals(seg=SentSegment, tail=SentSegment, i=Py_ssize_t)
    cpdef _split_at(self, long long pos)
    cpdef long long on_ack(self, long long acked, list blocks, long long high_data=*) except? -1
    @cython.locals(seg=SentSegment, count=Py_ssize_t)
    cpdef _advance(self, long long base)
    @cython.locals(flags="long long")
    cpdef _forget(self, SentSegment seg, long long length, bint whole=*)
    @cython.locals(base="long long", newly="long long", first=bint, dsack=bint, left="long long", right="long long", second_left="long long", second_right="long long")
    cpdef long long _merge_blocks(self, list blocks, long long high_data) except? -1
    @cython.locals(seg=SentSegment, i=Py_ssize_t, newly="long long", length="long long")
    cpdef long long _sack(self, long long first, long long last) except? -1
    @cython.locals(flags="long long", length="long long")
    cpdef bint mark_lost(self, SentSegment seg) except -1
    @cython.locals(seg=SentSegment)
    cpdef next_lost(self)
    @cython.locals(seg=SentSegment)
    cpdef last_sent(self)
    cpdef long long pipe(self, long long high_data) noexcept
    cpdef long long sacked_bytes(self) noexcept
    cpdef long long lost_bytes(self) noexcept
    cpdef bint flagged(self) noexcept
    @cython.locals(pos="long long", i=Py_ssize_t)
    cpdef bint is_sacked(self, long long offset) except -1
    @cython.locals(seg=SentSegment)
    cpdef highest_sacked(self)
