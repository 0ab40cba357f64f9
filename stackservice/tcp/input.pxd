# Types for input.py, compiled (setup.py); the .py stays the source.

from stackservice.tcp.segment cimport TcpOptions, TcpRepr, seq_add, seq_ge, seq_gt, seq_le, seq_lt, seq_sub
from stackservice.tcp.engine cimport TcpEngine
from stackservice.tcp.tcb cimport Tcb
from stackservice.tcp cimport output, recovery

# Imported constants as C globals (set when the module imports them): the
# flag tests and state compares of every segment are then C operations,
# where a Python global would box the C field it is compared with.
cdef long long ACK, FIN, RST, SYN
cdef long long CLOSE_WAIT, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, LAST_ACK, SYN_RECEIVED, TIME_WAIT

# Every function taking the TCB types it, so its fields are C reads and
# writes (tcb.pxd) and calls between them here are C calls.
cpdef negotiate(TcpEngine engine, Tcb tcb, TcpOptions options, long long now, bint offered)
cpdef listen_input(TcpEngine engine, listener, src_ip, TcpRepr seg, data, long long now)
cpdef syn_sent_input(TcpEngine engine, Tcb tcb, TcpRepr seg, data, long long now)
cpdef bint _acceptable(Tcb tcb, long long seq, long long seg_len) except -1
cpdef synchronized_input(TcpEngine engine, Tcb tcb, TcpRepr seg, data, long long now)
cpdef _answer_unacceptable(TcpEngine engine, Tcb tcb, TcpRepr seg, data, long long now)
cpdef bint _resends_acked(Tcb tcb, TcpRepr seg, long long end) except -1
cpdef bint _rst_in_window(Tcb tcb, long long seq) except -1
cpdef bint _passes_paws(TcpEngine engine, Tcb tcb, TcpRepr seg, long long now) except -1
cpdef _record_timestamp(Tcb tcb, TcpRepr seg, long long now)
cpdef _reset_arrives(TcpEngine engine, Tcb tcb, TcpRepr seg, long long now)
cpdef bint _ack_syn_received(TcpEngine engine, Tcb tcb, TcpRepr seg, long long data_len, long long now) except -1
cpdef bint _process_ack(TcpEngine engine, Tcb tcb, TcpRepr seg, long long data_len, long long now) except -1
cpdef bint _is_duplicate(Tcb tcb, TcpRepr seg, long long data_len) except -1
cpdef _sack_ack(TcpEngine engine, Tcb tcb, TcpRepr seg, long long data_len, long long now)
cpdef list _sack_offsets(Tcb tcb, TcpRepr seg)
cpdef long long _acknowledge(TcpEngine engine, Tcb tcb, TcpRepr seg, long long now) except -1
cpdef _new_ack(TcpEngine engine, Tcb tcb, TcpRepr seg, long long now)
cpdef _duplicate_ack(TcpEngine engine, Tcb tcb, TcpRepr seg, long long now)
cpdef long long _dup_threshold(Tcb tcb) except -1
cpdef _enter_recovery(TcpEngine engine, Tcb tcb, long long now)
cpdef _update_window(Tcb tcb, TcpRepr seg)
cpdef bint _after_ack(TcpEngine engine, Tcb tcb, long long now) except -1
cpdef _receive_text(TcpEngine engine, Tcb tcb, TcpRepr seg, data, long long now)
cpdef _fin_arrives(TcpEngine engine, Tcb tcb, long long now)
