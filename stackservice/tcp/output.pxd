# Types for output.py, compiled (setup.py); the .py stays the source.

from stackservice.tcp.segment cimport seq_add, seq_gt, seq_le, seq_lt, seq_sub
from stackservice.tcp.engine cimport TcpEngine
from stackservice.tcp.tcb cimport Tcb

cdef Py_ssize_t _RETRANSMITTED
# Imported constants as C globals, as in input.pxd.
cdef long long ACK, FIN, PSH, RST, SYN, SYN_RECEIVED, MAX_SACK_BLOCKS_WITH_TIMESTAMPS

# Every function taking the TCB types it, so its fields are C reads and
# writes (tcb.pxd) and calls between them here are C calls. Left out:
# _sack_blocks (a generator expression, which a cpdef function cannot hold).
cpdef timestamp_value(Tcb tcb, now)
cpdef advertise_window(Tcb tcb)
cpdef _options(Tcb tcb, now, with_sack)
cpdef syn_options(TcpEngine engine, Tcb tcb, now, answering)
cpdef send_syn(TcpEngine engine, Tcb tcb, now)
cpdef send_ack(TcpEngine engine, Tcb tcb, now)
cpdef send_probe(TcpEngine engine, Tcb tcb, now)
cpdef send_reset(TcpEngine engine, Tcb tcb, now)
cpdef clear_ack(Tcb tcb)
cpdef send_data(TcpEngine engine, Tcb tcb, now)
cpdef _flight(Tcb tcb)
cpdef _may_send_small(Tcb tcb, length, last, in_flight, fin_due)
cpdef send_chunk(TcpEngine engine, Tcb tcb, now, length, fin_due)
cpdef retransmit(TcpEngine engine, Tcb tcb, now, offset, length)
