# Types for _records.py, compiled (setup.py); the .py stays the source.

cimport cython

# Module constants as C globals (the imported op numbers included): each
# decode checks them, and a Python global is a dictionary read per use.
cdef long long OP_BIND, OP_CONNECT, OP_LISTEN, OP_SHUTDOWN, OP_SOCKET
cdef long long _A1, _A2, _A64
cdef object _COMMAND_OUT, _EVENT_OUT, _COMMAND_IN, _EVENT_IN
cdef tuple _OPS, _USED_BY_OP, _KINDS


# A decoded record per command the stack takes and per event an app
# takes: extension types with C fields, built without a dictionary.
# `readonly`: their contract is "treat as read-only", now enforced.
cdef class Command:
    cdef readonly object op
    cdef readonly long long slot, request, a1, a2, a3, a4
    cdef readonly unsigned long long a64


cdef class Event:
    cdef readonly object kind
    cdef readonly long long slot, request, result, a1, a2, a3
    cdef readonly unsigned long long a64


@cython.locals(op="long long", slot="long long", used="long long")
cpdef Command decode_command(buf, long long socket_slots, Py_ssize_t offset=*)
@cython.locals(kind="long long", slot="long long")
cpdef Event decode_event(buf, long long socket_slots, Py_ssize_t offset=*)
