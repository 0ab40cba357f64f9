# Types for siphash.py, compiled (setup.py); the .py stays the source.

cimport cython

# The state is a C tuple of four words: rounds on it run in registers, and
# unsigned arithmetic wraps modulo 2**64 as the algorithm wants.
ctypedef (unsigned long long, unsigned long long, unsigned long long, unsigned long long) SipState

cdef unsigned long long _M64, _V0, _V1, _V2, _V3

cdef unsigned long long _rotl(unsigned long long x, int b) noexcept

@cython.locals(v0=cython.ulonglong, v1=cython.ulonglong, v2=cython.ulonglong, v3=cython.ulonglong)
cdef SipState _rounds(SipState v, int count) noexcept
cdef SipState _start(unsigned long long k0, unsigned long long k1) noexcept
@cython.locals(v0=cython.ulonglong, v1=cython.ulonglong, v2=cython.ulonglong, v3=cython.ulonglong)
cdef SipState _absorb(SipState v, unsigned long long m) noexcept
@cython.locals(v0=cython.ulonglong, v1=cython.ulonglong, v2=cython.ulonglong, v3=cython.ulonglong)
cdef unsigned long long _finish(SipState v) noexcept
cpdef unsigned long long siphash24_words(unsigned long long k0, unsigned long long k1, unsigned long long m0, unsigned long long m1) noexcept
@cython.locals(v=SipState, whole=Py_ssize_t, start=Py_ssize_t)
cpdef unsigned long long siphash24(key, data) except? 0
