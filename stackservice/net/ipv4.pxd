# Types for ipv4.py, compiled (setup.py); the .py stays the source.

cimport cython

from stackservice.net.wire cimport write16, write32

# The header every sent segment gets, written into the frame in place.
@cython.locals(total_len=cython.ulonglong, total=cython.ulonglong)
cpdef void write_header(
    unsigned char[::1] buf, Py_ssize_t offset, unsigned long long src, unsigned long long dst,
    unsigned long long protocol, unsigned long long payload_len, unsigned long long ident,
    unsigned long long ttl=*, unsigned long long dscp_ecn=*, unsigned long long flags_frag=*,
) except *
