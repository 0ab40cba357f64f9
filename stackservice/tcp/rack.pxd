# Types for rack.py, compiled (setup.py); the .py stays the source.

cimport cython

# Its `from stackservice.tcp.segment import ...` of these then binds the C
# functions: sequence compares without a Python call.
from stackservice.tcp.segment cimport seq_lt
from stackservice.tcp.sack cimport Scoreboard, SentSegment

# The scoreboard's flags and "none", imported or defined as C globals: as
# Python globals every flag test would be Python arithmetic.
cdef long long EVER_RETRANSMITTED, LOST, RETRANSMITTED, SACKED, _NONE

cpdef bint sent_after(long long t1, long long end1, long long t2, long long end2) noexcept


# One connection's RACK state, run on every ACK of a SACK connection.
cdef class Rack:
    cdef public long long end, fack, min_rtt_us, reo_wnd_mult, reo_wnd_persist
    cdef public long long dsack_round, rtt_us, xmit_us
    cdef public bint reordering_seen

    @cython.locals(latest=SentSegment, seg=SentSegment, rtt="long long")
    cpdef on_ack(self, Scoreboard board, long long now, long long echoed_ms)
    cpdef on_dsack(self, long long snd_nxt_pos)
    cpdef on_una(self, long long una_pos)
    cpdef on_recovery_exit(self)
    @cython.locals(window="long long")
    cpdef long long reo_wnd(self, Scoreboard board, bint in_recovery, long long srtt_us) except? -1
    @cython.locals(oldest=SentSegment)
    cpdef bint may_have_losses(self, Scoreboard board) except -1
    @cython.locals(seg=SentSegment, timeout="long long", rack_xmit="long long", rack_end="long long",
                   deadline_base="long long", remaining="long long", flags="long long")
    cpdef long long detect_losses(self, Scoreboard board, long long now, long long reo_wnd, list lost) except? -1
