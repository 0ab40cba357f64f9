# Types for tcb.py, compiled (setup.py); the .py stays the source.

from stackservice.tcp.buffers cimport ReceiveBuffer, SendBuffer
from stackservice.tcp.congestion cimport CongestionControl
from stackservice.tcp.rack cimport Rack
from stackservice.tcp.rtt cimport RttEstimator
from stackservice.tcp.sack cimport Scoreboard
from stackservice.tcp.segment cimport seq_sub
from stackservice.tcp.timers cimport TimerEntry

# One connection's variables as C fields: sequence numbers, windows,
# deadlines (µs) and counters in 64 bits (signed: -1 marks "none" in
# fin_seq, peer_fin_seq, rtt_seq, tlp_end), flags as C ints, the rest as
# objects. `public`: interpreted code (and tests) reads and writes them.
cdef class Tcb(TimerEntry):
    # identity
    cdef public long long local_ip, local_port, remote_ip, remote_port
    cdef public object key
    cdef public long long state
    cdef public object listener, owner
    cdef public long long sock_id
    # send sequence space
    cdef public long long iss, snd_una, snd_nxt, snd_max, snd_wnd, max_snd_wnd
    cdef public long long snd_wl1, snd_wl2, snd_wscale, buf_seq, fin_seq
    # receive sequence space
    cdef public long long irs, rcv_nxt, rcv_adv, last_ack_sent, rcv_wscale, peer_fin_seq
    cdef public bint fin_received
    # options negotiated on the handshake
    cdef public long long mss, peer_mss
    cdef public bint ts_enabled
    cdef public long long ts_recent, ts_recent_age, ts_offset
    cdef public bint sack_enabled, ws_enabled
    # buffers, reliability, congestion
    cdef public SendBuffer send_buffer
    cdef public ReceiveBuffer receive_buffer
    cdef public RttEstimator rtt
    cdef public CongestionControl cc
    cdef public Scoreboard scoreboard
    cdef public Rack rack
    cdef public long long rtt_seq, rtt_start, small_end, dup_acks
    cdef public bint in_recovery
    cdef public long long recover, tlp_end
    cdef public bint tlp_retransmitted
    cdef public long long retransmits, retransmitted, last_receive, data_received_at
    cdef public long long invalid_ack_allowed_at
    # timers
    cdef public long long rto_deadline, delack_deadline, persist_deadline
    cdef public long long reorder_deadline, loss_probe_deadline, persist_backoff
    cdef public long long keepalive_deadline, keepalive_sent
    # ACK policy
    cdef public bint ack_pending, ack_now
    cdef public long long unacked_segments, quickack
    cdef public object dsack
    # socket options
    cdef public bint nodelay, keepalive
    cdef public long long keepalive_idle, keepalive_interval, keepalive_count
    cdef public bint linger_zero
    # membership flags
    cdef public bint on_control_list, on_ack_list, on_data_list, on_event_queue
    # application view
    cdef public long long error
    cdef public bint read_closed, write_closed, app_closed
    cdef public long long opened_at, established_at

    cpdef long long in_flight(self)
    cpdef long long sendable(self)
    cpdef long long receive_window(self)


# The flow table's key, computed per segment received: a C call. Unsigned:
# the address shifted by 32 bits does not fit a signed 64-bit integer.
cpdef unsigned long long flow_key(unsigned long long remote_ip, unsigned long long remote_port, unsigned long long local_port) noexcept
