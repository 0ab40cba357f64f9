# Types for recovery.py, compiled (setup.py); the .py stays the source.

cimport cython

from stackservice.tcp cimport output

cdef long long WORST_CASE_DELAYED_ACK_US, TLP_MIN_US
from stackservice.tcp.segment cimport TcpRepr, seq_ge, seq_le, seq_sub
from stackservice.tcp.engine cimport TcpEngine
from stackservice.tcp.tcb cimport Tcb

# Every function taking the TCB types it, so its fields are C reads and
# writes (tcb.pxd) and calls between them here are C calls.
cpdef on_ack(TcpEngine engine, Tcb tcb, TcpRepr seg, long long acked, long long now)
@cython.locals(deadline="long long")
cpdef detect_losses(TcpEngine engine, Tcb tcb, long long now)
cpdef _enter_recovery(TcpEngine engine, Tcb tcb, long long now)
cpdef on_full_ack(TcpEngine engine, Tcb tcb, long long now)
cpdef resend_lost(TcpEngine engine, Tcb tcb, long long now)
@cython.locals(deadline="long long", pto="long long")
cpdef schedule_loss_probe(TcpEngine engine, Tcb tcb, long long now)
cpdef _cancel_loss_probe(TcpEngine engine, Tcb tcb)
cpdef send_loss_probe(TcpEngine engine, Tcb tcb, long long now)
cpdef _probe_answered(TcpEngine engine, Tcb tcb, bint dsack, long long now)
cpdef on_timeout(Tcb tcb)
