# Types for output.py, compiled (setup.py); the .py stays the source.

cimport cython

from stackservice.tcp.segment cimport TcpOptions, seq_add, seq_gt, seq_le, seq_lt, seq_sub
from stackservice.tcp.engine cimport TcpEngine
from stackservice.tcp.tcb cimport Tcb

cdef Py_ssize_t _RETRANSMITTED
cdef long long MAX_RUN_PAYLOAD
# Imported constants as C globals, as in input.pxd.
cdef long long ACK, FIN, PSH, RST, SYN, SYN_RECEIVED, MAX_SACK_BLOCKS_WITH_TIMESTAMPS

# Every function taking the TCB types it, so its fields are C reads and
# writes (tcb.pxd) and calls between them here are C calls.
cpdef long long timestamp_value(Tcb tcb, long long now) except -1
@cython.locals(available="long long", edge="long long", step="long long", threshold="long long", window="long long", field="long long")
cpdef long long advertise_window(Tcb tcb) except -1
@cython.locals(sack=tuple)
cpdef TcpOptions _options(Tcb tcb, long long now, bint with_sack)
@cython.locals(limit="long long", rcv_nxt="long long", blocks=tuple)
cpdef tuple _sack_blocks(Tcb tcb)
cpdef TcpOptions syn_options(TcpEngine engine, Tcb tcb, long long now, bint answering)
cpdef send_syn(TcpEngine engine, Tcb tcb, long long now)
cpdef send_ack(TcpEngine engine, Tcb tcb, long long now)
cpdef send_probe(TcpEngine engine, Tcb tcb, long long now)
cpdef send_reset(TcpEngine engine, Tcb tcb, long long now)
cpdef clear_ack(Tcb tcb)
@cython.locals(cwnd="long long", sent="long long", in_flight="long long", usable="long long", available="long long",
               fin_due=bint, length="long long", last=bint)
cpdef long long send_data(TcpEngine engine, Tcb tcb, long long now) except -1
cpdef long long _flight(Tcb tcb) except -1
cpdef bint _may_send_small(Tcb tcb, long long length, bint last, long long in_flight, bint fin_due) except -1
@cython.locals(small_end="long long")
cdef bint _short_in_flight(Tcb tcb) noexcept
@cython.locals(options=TcpOptions, seq="long long", retransmission=bint, flags="long long", window="long long",
               occupied="long long")
cpdef send_chunk(TcpEngine engine, Tcb tcb, long long now, long long length, bint fin_due)
@cython.locals(options=TcpOptions, seq="long long", option_len="long long", size="long long",
               room="long long", length="long long", rest="long long", flags="long long",
               count="long long", window="long long", offset="long long", index="long long",
               start="long long")
cpdef long long send_run(TcpEngine engine, Tcb tcb, long long now, long long available, long long usable, bint fin_due) except -1
@cython.locals(end="long long")
cdef _advance(TcpEngine engine, Tcb tcb, long long now, long long seq, long long occupied, bint timed)
@cython.locals(options=TcpOptions, seq="long long", fin_sent=bint, sent_left="long long", with_fin=bint,
               flags="long long", window="long long", occupied="long long")
cpdef long long retransmit(TcpEngine engine, Tcb tcb, long long now, long long offset, long long length) except -1
