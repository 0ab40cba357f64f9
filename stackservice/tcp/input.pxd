# Types for input.py, compiled (setup.py); the .py stays the source.

from stackservice.tcp.segment cimport TcpOptions, TcpRepr, seq_add, seq_ge, seq_gt, seq_le, seq_lt, seq_sub
from stackservice.tcp.engine cimport TcpEngine
from stackservice.tcp.tcb cimport Tcb

# Imported constants as C globals (set when the module imports them): the
# flag tests and state compares of every segment are then C operations,
# where a Python global would box the C field it is compared with.
cdef long long ACK, FIN, RST, SYN
cdef long long CLOSE_WAIT, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, LAST_ACK, SYN_RECEIVED, TIME_WAIT

# Every function taking the TCB types it, so its fields are C reads and
# writes (tcb.pxd) and calls between them here are C calls.
cpdef negotiate(TcpEngine engine, Tcb tcb, TcpOptions options, now, offered)
cpdef listen_input(TcpEngine engine, listener, src_ip, TcpRepr seg, data, now)
cpdef syn_sent_input(TcpEngine engine, Tcb tcb, TcpRepr seg, data, now)
cpdef _acceptable(Tcb tcb, seq, seg_len)
cpdef synchronized_input(TcpEngine engine, Tcb tcb, TcpRepr seg, data, now)
cpdef _answer_unacceptable(TcpEngine engine, Tcb tcb, TcpRepr seg, data, now)
cpdef _resends_acked(Tcb tcb, TcpRepr seg, end)
cpdef _rst_in_window(Tcb tcb, seq)
cpdef _passes_paws(TcpEngine engine, Tcb tcb, TcpRepr seg, now)
cpdef _record_timestamp(Tcb tcb, TcpRepr seg, now)
cpdef _reset_arrives(TcpEngine engine, Tcb tcb, TcpRepr seg, now)
cpdef _ack_syn_received(TcpEngine engine, Tcb tcb, TcpRepr seg, data_len, now)
cpdef _process_ack(TcpEngine engine, Tcb tcb, TcpRepr seg, data_len, now)
cpdef _is_duplicate(Tcb tcb, TcpRepr seg, data_len)
cpdef _sack_ack(TcpEngine engine, Tcb tcb, TcpRepr seg, data_len, now)
cpdef _sack_offsets(Tcb tcb, TcpRepr seg)
cpdef _acknowledge(TcpEngine engine, Tcb tcb, TcpRepr seg, now)
cpdef _new_ack(TcpEngine engine, Tcb tcb, TcpRepr seg, now)
cpdef _duplicate_ack(TcpEngine engine, Tcb tcb, TcpRepr seg, now)
cpdef _dup_threshold(Tcb tcb)
cpdef _enter_recovery(TcpEngine engine, Tcb tcb, now)
cpdef _update_window(Tcb tcb, TcpRepr seg)
cpdef _after_ack(TcpEngine engine, Tcb tcb, now)
cpdef _receive_text(TcpEngine engine, Tcb tcb, TcpRepr seg, data, now)
cpdef _fin_arrives(TcpEngine engine, Tcb tcb, now)
