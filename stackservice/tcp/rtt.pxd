# Types for rtt.py, compiled (setup.py); the .py stays the source.

cimport cython

cdef long long ALPHA_SHIFT, BETA_SHIFT, K

# The estimator as an extension type: the TCB types its `rtt` with it
# (tcb.pxd), so the ACK path's sample() and on_new_ack() are C calls.
# SRTT and RTTVAR stay objects: None until the first sample.
cdef class RttEstimator:
    cdef public long long backoffs, granularity_us, initial_rto_us, max_rto_us, min_rto_us
    cdef public long long rto_us, timeouts
    cdef public object rttvar_us, srtt_us

    cpdef long long _clamp(self, long long rto)
    @cython.locals(srtt="long long", rttvar="long long", n="long long", err="long long",
                   var_den="long long", srtt_den="long long", var_term="long long")
    cpdef sample(self, long long rtt_us, long long expected_samples=*)
    cpdef on_timeout(self)
    cpdef on_new_ack(self)
    cpdef on_syn_timeout_established(self)
    cpdef tuple smoothed(self)
