# Types for buffers.py, compiled (setup.py); the .py stays the source.

cimport cython

# The buffers as extension types with C fields: the TCB's fields are typed
# with them (tcb.pxd), so input and output reach accept(), window(),
# peek_into() and acknowledge() by C calls, once or more per segment.

cpdef _copy_in(ring, long long size, long long pos, src, long long start, long long n)
cpdef _copy_out(ring, long long size, long long pos, out, long long out_offset, long long n)
cpdef long long _ring_size(long long size, long long need, long long capacity)


cdef class BufferMemory:
    cdef public long long held, limit, pressure
    cdef list _spare
    cdef dict _large
    cdef long long _large_bytes

    cpdef take_ring(self, long long size)
    cpdef give_ring(self, ring)


cpdef _relocate(ring, long long size, long long head, long long held, long long new_size, BufferMemory memory)


cdef class _Ring:
    cdef public long long capacity
    cdef long long _head, _size, _peak, _refill
    cdef BufferMemory _memory
    cdef object _view

    cpdef release(self)
    cpdef long long ring_size(self)
    cpdef long long _held(self)
    cpdef _resize(self, long long capacity)
    cpdef _set_ring(self, view, long long size)
    cpdef _emptied(self)
    cpdef bint _may_grow(self, long long need, long long mark)
    @cython.locals(size="long long", refill="long long", room="long long", memory=BufferMemory)
    cpdef _grow(self, long long need)
    cpdef long long _append(self, long long used, data, long long n)


cdef class SendBuffer(_Ring):
    cdef long long _len

    cpdef set_capacity(self, long long capacity)
    cpdef long long free(self)
    cpdef long long write(self, data)
    cpdef long long peek_into(self, long long offset, out, long long out_offset, long long length)
    cpdef acknowledge(self, long long count)


cdef class ReceiveBuffer(_Ring):
    cdef long long _base, _clock, _ooo, _readable
    cdef list _starts, _ends, _stamps
    cdef public long long max_ranges
    cdef public bint refused

    cpdef set_capacity(self, long long capacity)
    cpdef long long readable(self)
    cpdef long long window(self)
    cpdef long long ooo_bytes(self)
    cpdef bint has_out_of_order(self)
    cpdef long long accept(self, long long offset, data)
    cpdef long long _accept_ranges(self, long long offset, data, long long n)
    cpdef _store(self, data, long long data_pos, long long first, long long last)
    cpdef bytes read(self, long long n)
    cpdef long long read_into(self, out)
    cpdef _consume(self, long long k)
    cpdef list sack_blocks(self, long long max_blocks)
