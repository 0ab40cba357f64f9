# Types for commands.py, compiled (setup.py); the .py stays the source.

cimport cython

from vfstack.shm._rings cimport ByteRing

from stackservice.fastpath.sockets cimport Slot, SocketTable
from stackservice.tcp.engine cimport TcpEngine

cdef long long EVENT_SLOT_FREED, SLOT_CONNECTED

# CLOSE, one per connection an app ends: its calls into the table, the
# engine and the rings are C calls. (`execute` stays a Python function:
# the session looks it up per pass, and the fault tests replace it.)
@cython.locals(engine=TcpEngine, tx=ByteRing, left="long long")
cpdef _close(SocketTable sockets, Py_ssize_t slot, Slot s, long long now)
