# Types for timers.py, compiled (setup.py); the .py stays the source.

# The links every TCB carries (Tcb derives from it, tcb.pxd): an extension
# type, as a cdef class can only derive from one.
cdef class TimerEntry:
    cdef public long long wheel_deadline
    cdef public long long wheel_slot
    cdef public object wheel_prev
    cdef public object wheel_next
    cdef public object wheel_owner
    cdef public long long list_deadline
    cdef public long long list_generation
    cdef public object list_prev
    cdef public object list_next
    cdef public object list_owner
