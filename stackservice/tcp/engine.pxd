# Types for engine.py, compiled (setup.py); the .py stays the source.

cimport cython

from stackservice.net.ipv4 cimport Ipv4View
# The modules the engine drives (their .pxd cimport the engine in turn):
# its calls into them, one or more per segment, are C calls.
from stackservice.tcp cimport input as tcp_input, output, recovery
# Its `from stackservice.tcp.segment import ...` of these then binds the C
# functions: sequence compares without a Python call.
from stackservice.tcp.segment cimport TcpOptions, TcpRepr, parse_header, seq_add, seq_gt, write_segment
from stackservice.tcp.buffers cimport ReceiveBuffer
from stackservice.tcp.isn cimport IsnGenerator, tuple_hash
from stackservice.tcp.tcb cimport Tcb, flow_key
from stackservice.tcp.timers cimport DeadlineList, TimerWheel

# Imported constants as C globals (set when the module imports them), as in
# input.pxd: flag, state and readiness tests without boxing.
cdef long long ACK, RST, SYN, MAX_WINDOW_SCALE
cdef long long CLOSE_WAIT, CLOSED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, LAST_ACK, LISTEN
cdef long long SYN_RECEIVED, SYN_SENT, TIME_WAIT
cdef long long ERROR, HANGUP, READ_HANGUP, READABLE, SHUT_RD, SHUT_WR, WRITABLE

cdef Py_ssize_t _SEGMENTS_IN, _SEGMENTS_OUT

cdef long long _earlier(long long a, long long b) noexcept

# A listener's options for the connections it accepts: an extension type,
# so a connection's setup reads them in C.
cdef class SocketOptions:
    cdef public bint nodelay, keepalive
    cdef public long long keepalive_idle, keepalive_interval, keepalive_count
    cdef public long long send_buffer, receive_buffer
    cdef public object congestion_control

cdef SocketOptions _DEFAULT_OPTIONS

# The engine as an extension type: input.py, output.py and recovery.py type
# their `engine` with it, so its fields are C reads and the methods below
# C calls from there. `public`: the loop, tests and tools use the fields.
cdef class TcpEngine:
    cdef public long long local_ip
    cdef public object strict, faults, rtt_histogram, connect_histogram
    cdef public object _send_frame, _route, settings, counters, drops, state_counts
    cdef public object flows, listeners, events
    cdef public IsnGenerator _isn
    cdef public object _cookies, _challenges, _time_wait_receive
    cdef public DeadlineList _time_wait
    cdef public TimerWheel _wheel
    cdef public object buffer_memory, _control, _acks, _data, _stateless
    cdef unsigned long long _port_k0, _port_k1
    cdef public object orphans, _port_steps, _exhausted, _next_sock_id, _rcv_wscale, ports
    cdef public bint segmentation_offload

    @cython.locals(start=Py_ssize_t, end=Py_ssize_t, seg=TcpRepr, tcb=Tcb)
    cpdef on_segment(self, Ipv4View ip, long long now, bint trusted)
    cpdef drop(self, reason)
    cpdef notify(self, obj)
    cpdef set_state(self, Tcb tcb, state)
    cpdef establish(self, Tcb tcb, long long now)
    cpdef abort(self, Tcb tcb, error, bint send_rst, long long now)
    cpdef destroy(self, Tcb tcb)
    cpdef enter_time_wait(self, Tcb tcb, long long now)
    cpdef restart_time_wait(self, Tcb tcb, long long now)
    cpdef ack_now(self, Tcb tcb)
    cpdef schedule_ack(self, Tcb tcb, long long now, bint full_segment)
    cpdef challenge_ack(self, Tcb tcb, long long now)
    cpdef queue_control(self, Tcb tcb)
    cpdef queue_data(self, Tcb tcb)
    cpdef reply_reset(self, dst_ip, TcpRepr seg, data_len)
    @cython.locals(header_len=Py_ssize_t, size=Py_ssize_t, segments=Py_ssize_t)
    cpdef send_segment(self, Tcb tcb, long long now, long long seq, long long ack, long long flags, long long window, TcpOptions options, long long length, long long buffer_offset=*, long long segment_size=*)
    cpdef new_passive(self, listener, src_ip, TcpRepr seg, long long now)
    cpdef send_cookie(self, listener, src_ip, TcpRepr seg, long long now)
    cpdef cookie_ack(self, listener, src_ip, TcpRepr seg, data, long long now)
    cpdef arm_fin_wait_2(self, Tcb tcb, long long now)
    cpdef arm_rto(self, Tcb tcb, long long now)
    cpdef cancel_rto(self, Tcb tcb)
    cpdef arm_persist(self, Tcb tcb, long long now)
    @cython.locals(deadline="long long")
    cpdef rearm(self, Tcb tcb)
    # Per-connection steps of the pass (a SYN, a close, a TIME-WAIT): C
    # calls from the engine's own methods rather than Python ones.
    @cython.locals(opts=SocketOptions)
    cpdef Tcb _new_tcb(self, long long local_port, long long remote_ip, long long remote_port, long long now, options)
    cpdef bint _recycles(self, Tcb tcb, TcpRepr seg) except -1
    cpdef _raise_pending(self, Tcb tcb)
    cpdef _queue_fin(self, Tcb tcb)
    cpdef _new_sock_id(self)
    @cython.locals(digest="unsigned long long", offset="unsigned long long", bucket=Py_ssize_t)
    cpdef long long _ephemeral_port(self, unsigned long long remote_ip, unsigned long long remote_port, long long now) except -1
    cpdef _shed(self, Tcb tcb)
    cpdef _release_buffers(self, Tcb tcb)
    cpdef _window_opened(self, Tcb tcb, long long before, long long now)
    cpdef _stop_fine_timers(self, Tcb tcb)
    cpdef flush(self, long long now)
    cpdef _send_queued(self, Tcb tcb, long long now)
    # The app-facing calls the shared-memory pumps make for every slot
    # they move bytes for (stackservice/fastpath/sockets.pxd): C calls.
    cpdef accept(self, listener)
    @cython.locals(tcb=Tcb, buffer=ReceiveBuffer, mask="long long", state="long long")
    cpdef long long readiness(self, obj) except -1
    cpdef close(self, Tcb tcb, long long now)
    cpdef long long send(self, Tcb tcb, data, long long now) except -1
    @cython.locals(buffer=ReceiveBuffer, before="long long", count="long long")
    cpdef long long receive_into(self, Tcb tcb, out, long long now) except -1
    @cython.locals(buffer=ReceiveBuffer)
    cpdef bint read_would_block(self, Tcb tcb) except -1
    cpdef bint _at_eof(self, Tcb tcb) except -1
