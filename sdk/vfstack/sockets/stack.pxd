# Types for stack.py, compiled (setup.py); the .py stays the source.

from vfstack.shm._rings cimport RecordRing
from vfstack.shm._segment cimport Segment

cdef long long EVENT_ACCEPTED, EVENT_RESULT, EVENT_SLOT_FREED, OP_CLOSE, OP_RX_DONE
cdef double SPIN_SECONDS, PROBE_SECONDS
cdef object _monotonic


# A lane and the Stack as extension types: every socket call, poll and
# event dispatch reads their fields and calls their helpers, which are C
# fields and C calls from the sockets and the Epoll (same unit). `public`:
# what vfstack.aio, the selector and tests read or set.
cdef class _Lane:
    cdef public object app_bell, stack_bell, session_id, token
    cdef public RecordRing commands, events
    cdef public Segment segment
    cdef public Py_ssize_t index, count, worker, nslots

    cpdef Py_ssize_t fd(self, Py_ssize_t slot)
    cpdef bint ended(self) except -1


cdef class Stack:
    cdef public object _client, session_id, app, local_ip, network, gateway
    cdef public object _bells, _lock, _cond, _aio_driver, _ended
    cdef public list _lanes
    cdef public dict _lane_of_bell, _results, _accepts, _alias_of, _watchers, _sockets
    cdef public Py_ssize_t _workers, _next_lane
    cdef public long long _request
    cdef public bint _pumping, _driving, _closed
    cdef public double _probe_at, _spin
    cdef object __weakref__

    cpdef _check_open(self)
    cpdef _check_alive(self)
    cpdef bint _notice(self, bint force=*) except -1
    cpdef long long _submit(self, _Lane lane, long long op, long long slot=*, long long a1=*, long long a2=*, unsigned long long a64=*) except? -1
    cpdef _notify(self, _Lane lane, long long op, long long slot)
    cpdef bint _wait(self, ready, deadline) except -1
    cpdef long long _pump(self, timeout) except? -1
    cpdef long long _dispatch(self) except? -1
    cpdef bint _quiet(self) except -1
    cpdef _wake_driver(self, long long dispatched)
    cpdef bint _prepare_sleep(self) except -1
    cpdef long long _pump_events(self, timeout) except? -1
    cpdef long long _drain(self) except? -1
    cpdef long long _drain_lane(self, _Lane lane) except? -1
    cpdef _drop_stale(self, _Lane lane, long long slot, unsigned long long end)
    cpdef _close_slot(self, _Lane lane, long long slot)
    cpdef _socket_of(self, fd)
    cpdef _touch(self, long long fd)
