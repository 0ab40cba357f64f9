# Types for sockets.py, compiled (setup.py); the .py stays the source.

cimport cython

from vfstack.shm._rings cimport ByteRing, RecordRing
from vfstack.shm._segment cimport Segment

from stackservice.tcp.buffers cimport ReceiveBuffer, SendBuffer
from stackservice.tcp.engine cimport TcpEngine
from stackservice.tcp.tcb cimport Tcb

# Imported constants as C globals (set when the module imports them): the
# pumps compare states and build masks with them on every slot they visit,
# and a Python global would make each of those a dictionary read and a
# boxed operation.
cdef long long EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP
cdef long long EVENT_ACCEPTED, EVENT_READY
cdef long long SLOT_CONNECTED, SLOT_CONNECTING, SLOT_FREE, SLOT_OPEN
cdef long long CLOSE_WAIT, CLOSED, ESTABLISHED, SYN_SENT
cdef Py_ssize_t _APP_RX_BYTES, _APP_TX_BYTES


# A slot's state as C fields: the pumps read them for every dirty slot.
# `public`: commands, sockopts and tests use them.
cdef class Slot:
    cdef public long long state, port, readiness, error, reuseaddr, linger
    cdef public bint eof
    cdef public object sock, options


# The table as an extension type whose pumps are C calls from the session's
# pass and from one another, and whose calls into the engine (send,
# receive_into, accept) and into the segment and its rings (vfstack.shm,
# the same compiled unit) are C calls too.
cdef class SocketTable:
    cdef public TcpEngine engine
    cdef public Segment segment
    cdef public object app_name, uid, committed, ports, _commit, _app_stats
    cdef public list slots, generation, free, out
    cdef public dict slot_of, _ready_at
    cdef public set listening, dirty
    cdef public long long now, _out_base

    cpdef on_ready(self, sock, now)
    cpdef adopt(self, Py_ssize_t slot, sock)
    cpdef disown(self, sock)
    cpdef bint has_room(self) except -1
    cpdef Py_ssize_t new_slot(self, long long state) except -1
    cpdef set_error(self, Py_ssize_t slot, Slot s, long long code)
    cpdef release_slot(self, Py_ssize_t slot)
    cpdef post(self, kind, slot, request=*, result=*, a1=*, a2=*, a3=*, a64=*)
    cpdef ready(self, slot, mask)
    @cython.locals(k=Py_ssize_t, n=Py_ssize_t, events=RecordRing, run=Py_ssize_t)
    cpdef Py_ssize_t flush_events(self, delivery) except -1
    @cython.locals(slot=Py_ssize_t)
    cpdef pump_dirty(self, long long now)
    @cython.locals(s=Slot, tcb=Tcb, seg=Segment, tx_moved="long long", rx_moved="long long", mask="long long")
    cpdef pump(self, Py_ssize_t slot, long long now)
    @cython.locals(mask="long long", state="long long", buffer=ReceiveBuffer, seg=Segment, rx_ring=ByteRing, tx_ring=ByteRing)
    cpdef long long _readiness(self, Py_ssize_t slot, Slot s, Tcb tcb) except -1
    @cython.locals(moved="long long", room="long long", n="long long", sent="long long", ring=ByteRing)
    cpdef long long pump_tx(self, Py_ssize_t slot, Slot s, Tcb tcb, long long now) except -1
    @cython.locals(buffer=SendBuffer, left="long long")
    cpdef drain_tx(self, Py_ssize_t slot, Slot s, Tcb tcb, long long now)
    @cython.locals(moved="long long", room="long long", n="long long", ring=ByteRing, engine=TcpEngine)
    cpdef long long _pump_rx(self, Py_ssize_t slot, Slot s, Tcb tcb, long long now) except -1
    @cython.locals(c=Slot, tcb=Tcb, new=Py_ssize_t)
    cpdef _accept(self, Py_ssize_t slot, Slot s, listener, long long now)
