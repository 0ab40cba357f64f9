# Types for congestion.py, compiled (setup.py); the .py stays the source.

cimport cython

# The policies' own constants as C globals (nothing imports them): as
# Python globals, CUBIC's per-ACK arithmetic would be Python's.
cdef long long ABC_L_SEGMENTS, BETA_CUBIC_NUM, BETA_CUBIC_DEN
cdef double CUBIC_C, BETA_CUBIC, ALPHA_CUBIC, CUBIC_MAX_GROWTH, US_PER_S


# The window policy as extension types: the TCB's `cc` (tcb.pxd) calls
# its hooks per ACK by C calls, and the windows are C fields.
cdef class CongestionControl:
    cdef public long long cwnd, ssthresh, mss, initial_window_segments
    cdef bint _after_rto, _rto_held, _untouched

    cpdef set_mss(self, long long mss)
    cpdef bint in_slow_start(self) noexcept
    cpdef on_ack(self, long long acked_bytes, long long now, srtt_us, long long in_flight)
    @cython.locals(limit="long long", cwnd="long long")
    cpdef _slow_start(self, long long acked_bytes)
    cpdef _app_limited(self, long long now)
    cpdef _congestion_avoidance(self, long long acked_bytes, long long now, srtt_us)
    cpdef long long _reduced_ssthresh(self, long long in_flight) except? -1
    cpdef on_loss(self, long long now, long long in_flight)
    @cython.locals(ssthresh="long long", cwnd="long long")
    cpdef on_recovery_exit(self, long long now, in_flight=*)
    cpdef on_timeout(self, long long now, long long in_flight)
    @cython.locals(rw="long long", cwnd="long long", kept="long long")
    cpdef on_idle(self, long long now, long long idle_us, long long rto_us)
    cpdef _idle_kept(self, long long now)
    cpdef _idle_restarted(self)


cdef class NewReno(CongestionControl):
    cdef long long _bytes_acked

    @cython.locals(counted="long long", cwnd="long long")
    cpdef _congestion_avoidance(self, long long acked_bytes, long long now, srtt_us)
    @cython.locals(half="long long", floor="long long")
    cpdef long long _reduced_ssthresh(self, long long in_flight) except? -1
    cpdef on_loss(self, long long now, long long in_flight)
    cpdef on_timeout(self, long long now, long long in_flight)
    cpdef _idle_restarted(self)


cdef class Cubic(CongestionControl):
    cdef public bint fast_convergence, epoch_active
    cdef public double w_max, k_s, w_est
    cdef public long long cwnd_prior, cwnd_epoch, epoch_elapsed_us
    cdef long long _last_ack_us

    @cython.locals(d=cython.double)
    cpdef double w_cubic(self, double t_s) noexcept
    @cython.locals(cwnd="long long")
    cpdef _start_epoch(self, long long now)
    @cython.locals(dt="long long", cwnd="long long", mss="long long", alpha=cython.double,
                   counted="long long", t_s=cython.double, rtt_s=cython.double,
                   target=cython.double, grown="long long")
    cpdef _congestion_avoidance(self, long long acked_bytes, long long now, srtt_us)
    cpdef _app_limited(self, long long now)
    @cython.locals(reduced="long long", floor="long long")
    cpdef long long _reduced_ssthresh(self, long long in_flight) except? -1
    @cython.locals(cwnd="long long")
    cpdef on_loss(self, long long now, long long in_flight)
    cpdef on_recovery_exit(self, long long now, in_flight=*)
    cpdef on_timeout(self, long long now, long long in_flight)
    cpdef _idle_kept(self, long long now)
    cpdef _idle_restarted(self)
