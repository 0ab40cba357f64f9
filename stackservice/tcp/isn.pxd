# Types for isn.py, compiled (setup.py); the .py stays the source.

from stackservice.net.siphash cimport siphash24_words

cdef unsigned long long _MASK32, _TUPLE_LEN
cdef long long ISN_CLOCK_US

# The 4-tuple's words and hash in C: no packing, no boxed integers.
cpdef unsigned long long tuple_hash(
    unsigned long long k0, unsigned long long k1, unsigned long long local_ip,
    unsigned long long local_port, unsigned long long remote_ip, unsigned long long remote_port,
) noexcept

# An extension type: the engine (engine.pxd) calls it by C calls, twice
# per connection opened.
cdef class IsnGenerator:
    cdef unsigned long long _k0, _k1

    cpdef long long isn(self, long long now, unsigned long long local_ip, unsigned long long local_port, unsigned long long remote_ip, unsigned long long remote_port) except -1
    cpdef long long ts_offset(self, unsigned long long local_ip, unsigned long long local_port, unsigned long long remote_ip, unsigned long long remote_port) except -1
