# Types for timers.py, compiled (setup.py); the .py stays the source.

cimport cython

# The links every TCB carries (Tcb derives from it, tcb.pxd): an extension
# type, as a cdef class can only derive from one.
cdef class TimerEntry:
    cdef public long long wheel_deadline
    cdef public long long wheel_slot
    cdef public TimerEntry wheel_prev
    cdef public TimerEntry wheel_next
    cdef public object wheel_owner
    cdef public long long list_deadline
    cdef public long long list_generation
    cdef public TimerEntry list_prev
    cdef public TimerEntry list_next
    cdef public object list_owner


# The wheel as an extension type: the engine (engine.pxd) arms and cancels
# a TCB's one entry per segment with C calls, and the links are C fields.
cdef class TimerWheel:
    cdef long long _count, _cursor, _cursor_min, _granularity, _next, _slots
    cdef bint _next_dirty
    cdef list _sentinels, _words
    cdef object _summary

    cpdef bint is_scheduled(self, TimerEntry entry)
    @cython.locals(sentinel=TimerEntry, last=TimerEntry, tick="long long", slot="long long")
    cpdef schedule(self, TimerEntry entry, long long deadline)
    cpdef cancel(self, TimerEntry entry)
    cpdef next_deadline(self)
    cpdef list expire(self, long long now, long long limit)
    @cython.locals(sentinel=TimerEntry, entry=TimerEntry, following=TimerEntry, deadline="long long", low="long long")
    cpdef bint _visit(self, long long slot, long long now, long long limit, list out)
    @cython.locals(prev=TimerEntry, following=TimerEntry)
    cpdef _unlink(self, TimerEntry entry)
    cpdef _mark(self, long long slot)
    cpdef _unmark(self, long long slot)
    cpdef long long _distance_to_occupied(self, long long start)
    cpdef long long _lower_bound(self)


# The TIME-WAIT list as an extension type: the engine (engine.pxd) pushes
# and removes a TCB once or twice per connection by C calls, and the links
# it walks are C fields.
cdef class DeadlineList:
    cdef long long _count
    cdef TimerEntry _sentinel

    cpdef bint contains(self, TimerEntry entry)
    @cython.locals(owner=object, following=TimerEntry, after=TimerEntry)
    cpdef push(self, TimerEntry entry, long long deadline)
    cpdef remove(self, TimerEntry entry)
    @cython.locals(first=TimerEntry)
    cpdef next_deadline(self)
    @cython.locals(out=list, sentinel=TimerEntry, first=TimerEntry)
    cpdef list expire(self, long long now, long long limit)
    @cython.locals(sentinel=TimerEntry, last=TimerEntry, first=TimerEntry, entry=TimerEntry, prev=TimerEntry)
    cpdef TimerEntry _insertion_point(self, long long deadline)
    @cython.locals(prev=TimerEntry, following=TimerEntry)
    cpdef _unlink(self, TimerEntry entry)
