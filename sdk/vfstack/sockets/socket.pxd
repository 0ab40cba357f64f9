# Types for socket.py, compiled (setup.py); the .py stays the source.

from vfstack.shm._rings cimport ByteRing
from vfstack.shm._segment cimport Segment

from vfstack.sockets.stack cimport Stack, _Lane

# Imported constants as C globals: the readiness masks and state checks of
# every send, recv and poll compare with them.
cdef long long EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP
cdef long long OP_RX_DONE, OP_TX, SLOT_CONNECTED, SLOT_CONNECTING, SLOT_LISTENING, SLOT_OPEN


# A socket as an extension type: its stack, lane, segment and rings are C
# fields, so a send or recv reaches the ring and the command queue by C
# calls. `public`: what makefile's SocketIO, the selector and tests use.
cdef class Socket:
    cdef public Stack _stack
    cdef public _Lane _lane
    cdef public Segment _seg
    cdef public ByteRing _rx, _tx
    cdef public long long _slot, _fd
    cdef public object _generation, _timeout, _local, _bound_ip, _peer, _connecting_to, _anchor
    cdef public list _siblings, _options
    cdef public bint _listening, _rd_closed, _wr_closed, _error_reported, _close_pending
    cdef public Py_ssize_t _io_refs
    cdef object __weakref__

    cpdef long long _check(self) except -1
    cpdef _deadline(self)
    cpdef _block(self, ready, deadline)
    cpdef long long _poll_mask(self) except -1
    cpdef long long _pending_error(self, bint ended) except -1
    cpdef long long _send_errno(self) except -1
    cpdef bint _send_ready(self) except -1
    cpdef long long _send_now(self, view) except -1
    cpdef bint _recv_ready(self) except -1
