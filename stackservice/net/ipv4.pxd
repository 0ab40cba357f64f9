# Types for ipv4.py, compiled (setup.py); the .py stays the source.

cimport cython

from stackservice.net.checksum cimport ones_complement_sum
from stackservice.net.wire cimport read16, read32, write16, write32

# The offsets table, as C constants for the getters (used by no other module).
cdef Py_ssize_t VER_IHL, DSCP_ECN, TOTAL_LEN, IDENT, FLAGS_FRAG, TTL, PROTOCOL, CHECKSUM, SRC_ADDR, DST_ADDR
cdef long long FLAG_MF, FRAG_OFFSET_MASK

# The header every sent segment gets, written into the frame in place.
@cython.locals(total_len=cython.ulonglong, total=cython.ulonglong)
cpdef void write_header(
    unsigned char[::1] buf, Py_ssize_t offset, unsigned long long src, unsigned long long dst,
    unsigned long long protocol, unsigned long long payload_len, unsigned long long ident,
    unsigned long long ttl=*, unsigned long long dscp_ecn=*, unsigned long long flags_frag=*,
) except *


# A received datagram's header, read once per frame by the host and the
# TCP engine (engine.pxd types its `ip`): getters are C calls.
cdef class Ipv4View:
    cdef readonly object buf
    cdef readonly const unsigned char[::1] octets

    cpdef long long version(self) except? -1
    cpdef long long header_len(self) except? -1
    cpdef long long dscp_ecn(self) except? -1
    cpdef long long total_len(self) except? -1
    cpdef long long ident(self) except? -1
    cpdef long long flags_frag(self) except? -1
    cpdef bint is_fragment(self) except -1
    cpdef long long ttl(self) except? -1
    cpdef long long protocol(self) except? -1
    cpdef long long checksum(self) except? -1
    cpdef long long src(self) except? -1
    cpdef long long dst(self) except? -1
    cpdef datagram(self)
    @cython.locals(start=Py_ssize_t, end=Py_ssize_t)
    cpdef payload(self)
    cpdef (Py_ssize_t, Py_ssize_t) payload_bounds(self)


cpdef bint is_host_address(unsigned long long addr) noexcept
@cython.locals(view=Ipv4View, octets="const unsigned char[::1]", available=Py_ssize_t, ver_ihl=cython.uchar, header_len=Py_ssize_t, total_len=Py_ssize_t)
cpdef Ipv4View checked_datagram(buf, bint verify_checksum)
