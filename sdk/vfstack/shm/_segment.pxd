# Types for _segment.py, compiled (setup.py); the .py stays the source.

cimport cython

from vfstack.shm._rings cimport ByteRing, RecordRing

cdef Py_ssize_t _ENDED, _STATE, _READINESS, _GENERATION, _ERROR, _ENTRY_WORDS


# The segment as an extension type: the stack's pumps (stackservice/
# fastpath/sockets.pxd) and the SDK's sockets reach a slot's rings and its
# slot-table entry by C calls, several times per transaction. `public`:
# what the SDK, the stack and tests read (hostile-app tests write through
# `_view`).
cdef class Segment:
    cdef public object geometry, session_id, token, app_pid, _view
    cdef public RecordRing commands, events
    cdef object _mmap, _header, _u32, _i32
    cdef unsigned int[::1] _table
    cdef int[::1] _table_signed
    cdef list _rx, _tx
    cdef bint _creator
    cdef long long _fd
    cdef Py_ssize_t _slots

    cpdef ByteRing rx(self, Py_ssize_t slot)
    cpdef ByteRing tx(self, Py_ssize_t slot)
    cpdef ByteRing _socket_ring(self, offset)
    @cython.locals(base=Py_ssize_t)
    cpdef set_slot(self, Py_ssize_t slot, state, readiness, generation, error)
    cpdef set_readiness(self, Py_ssize_t slot, readiness)
    cpdef long long slot_state(self, Py_ssize_t slot) except? -1
    cpdef long long readiness(self, Py_ssize_t slot) except? -1
    cpdef long long generation(self, Py_ssize_t slot) except? -1
    cpdef long long slot_error(self, Py_ssize_t slot) except? -1
    cpdef Py_ssize_t _entry(self, Py_ssize_t slot) except -1
