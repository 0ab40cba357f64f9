# Types for checksum.py, compiled (setup.py); the .py stays the source.

cimport cython

# The sums in machine words, callable from C by the modules that cimport
# them (tcp/segment.pxd, ipv4.pxd): a checksum per segment each way costs
# no Python call and no boxed integer. Buffers are read in place (a
# read-only one, bytes, is fine). 64 KiB of 0xFFFF words is under 2**32, so
# nothing overflows; `initial` is a folded sum, 0..0xFFFF.
cpdef unsigned long long ones_complement_sum(const unsigned char[::1] data, unsigned long long initial=*) except? 0
@cython.locals(total=cython.ulonglong, high=cython.ulonglong, low=cython.ulonglong, last=cython.Py_ssize_t, i=cython.Py_ssize_t)
cpdef unsigned long long _sum_by_words(const unsigned char[::1] data, unsigned long long initial) noexcept
cpdef unsigned long long _fold(unsigned long long total) noexcept
cpdef unsigned long long internet_checksum(const unsigned char[::1] data, unsigned long long initial=*) except? 0
@cython.locals(total=cython.ulonglong)
cpdef unsigned long long pseudo_header_sum(unsigned long long src_ip, unsigned long long dst_ip, unsigned long long protocol, unsigned long long length) noexcept
