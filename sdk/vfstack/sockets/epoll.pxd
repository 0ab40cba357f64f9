# Types for epoll.py, compiled (setup.py); the .py stays the source.

cimport cython

from vfstack.sockets.socket cimport Socket
from vfstack.sockets.stack cimport Stack

cdef long long _ET, _ONESHOT, _ALWAYS, _DISABLED


# The Epoll as an extension type: a poll reaches the stack's pump and each
# listed socket's mask by C calls.
cdef class Epoll:
    cdef public Stack _stack
    cdef public dict _interest, _ready
    cdef public bint _closed
    cdef object __weakref__

    cpdef _check_open(self)
    @cython.locals(sock=Socket, mask="long long", events="long long")
    cpdef list _collect(self, Py_ssize_t maxevents)
    cpdef _touch(self, long long fd)
    cpdef _forget(self, long long fd)
