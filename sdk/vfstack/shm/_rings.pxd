# Types for _rings.py, compiled (setup.py); the .py stays the source.

cimport cython

# The header's word indices as C globals: each index load and store is
# then one 8-byte access through the typed view below, not a Python
# subscript of a memoryview.
cdef Py_ssize_t _HEAD, _MAGIC, _CAPACITY, _RECORD_SIZE, _TAIL, _SLEEPING, _HEADER_WORDS


# The rings as extension types: the indices are C integers and the header
# a typed view of u64 words. The indices, and every index loaded from the
# other side, are unsigned 64-bit, as in the header: the checks compare
# them as the pure module compares Python ints (a hostile 2**64 - 1 is
# refused with the same words), and an index that passed them fits a
# signed count.
cdef class _Ring:
    cdef object _view, _header, _data, _fence
    cdef unsigned long long[::1] _words
    cdef long long _cap, _mask
    cdef unsigned long long _head, _tail_seen, _tail, _head_seen

    @cython.locals(head="unsigned long long")
    cpdef long long _load_head(self) except? -1
    @cython.locals(head="unsigned long long")
    cpdef long long _published(self) except? -1
    cpdef bint pending(self) except -1
    cpdef _bad_head(self, unsigned long long head)
    @cython.locals(free="long long")
    cpdef long long _grant(self, long long n) except? -1
    @cython.locals(tail="unsigned long long")
    cpdef long long _load_tail(self) except? -1
    cpdef _bad_tail(self, unsigned long long tail)
    cpdef _full_fence(self)
    cpdef bint prepare_sleep(self) except -1
    cpdef sleep_done(self)
    cpdef bint needs_wakeup(self) except -1


cdef class RecordRing(_Ring):
    cdef long long _rsize, _reserved
    cdef object _zeros

    cpdef long long reserve(self, long long n) except? -1
    cpdef long long write_offset(self, long long i) except? -1
    @cython.locals(rsize="long long", offset="long long", n="long long")
    cpdef write(self, long long i, record)
    @cython.locals(head="long long")
    cpdef publish(self, long long n)
    @cython.locals(n="long long", head="long long", rsize="long long", start="long long")
    cpdef long long push_many(self, records) except? -1
    @cython.locals(rsize="long long", first="long long", split="long long")
    cpdef _copy_in(self, blob, long long start, long long n)
    cpdef long long available(self) except? -1
    cpdef long long read_offset(self, long long i) except? -1
    @cython.locals(offset="long long")
    cpdef peek(self, long long i)
    @cython.locals(tail="long long")
    cpdef release(self, long long n)
    @cython.locals(tail="unsigned long long", head="unsigned long long", n="long long", rsize="long long", start="long long", first="long long")
    cpdef list pop_many(self, long long max_records)


cdef class ByteRing(_Ring):
    cdef long long _reserved

    cpdef long long free(self) except? -1
    @cython.locals(n="long long", head="long long", start="long long", first="long long")
    cpdef long long write(self, data) except? -1
    cpdef reserve(self, long long n)
    @cython.locals(head="unsigned long long")
    cpdef publish(self, long long n)
    cpdef long long readable(self) except? -1
    @cython.locals(n="long long", tail="long long")
    cpdef long long read_into(self, buf) except? -1
    cpdef long long peek_into(self, buf, long long offset, long long n) except? -1
    cpdef peek(self, long long n)
    @cython.locals(start="long long")
    cpdef _run(self, unsigned long long index, long long n)
    @cython.locals(avail="long long")
    cpdef long long _grant_read(self, long long n) except? -1
    @cython.locals(tail="long long")
    cpdef release(self, long long n)
    cpdef bint was_full(self, long long before, long long taken) except -1
    @cython.locals(start="long long", first="long long")
    cpdef _copy_out(self, buf, long long index, long long n)
