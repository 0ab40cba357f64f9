# Types for segment.py, compiled (setup.py); the .py stays the source.

cimport cython

from stackservice.net.checksum cimport internet_checksum, ones_complement_sum, pseudo_header_sum
from stackservice.net.wire cimport read16, read32, write16, write32

cdef long long _MASK, _HALF

# Sequence arithmetic as C functions: modules that cimport them (their own
# .pxd) call them directly, without a Python call or boxed integers.
cpdef bint seq_lt(long long a, long long b) noexcept
cpdef bint seq_le(long long a, long long b) noexcept
cpdef bint seq_gt(long long a, long long b) noexcept
cpdef bint seq_ge(long long a, long long b) noexcept
cpdef long long seq_add(long long a, long long n) noexcept
cpdef long long seq_sub(long long a, long long b) noexcept

# A received segment, wrapped once per segment by the engine: getters are
# C calls from modules that type it.
cdef class TcpView:
    cdef readonly object buf

    cpdef long long src_port(self) except? -1
    cpdef long long dst_port(self) except? -1
    cpdef long long seq(self) except? -1
    cpdef long long ack(self) except? -1
    cpdef long long data_offset(self) except? -1
    cpdef long long header_len(self) except? -1
    cpdef long long flags(self) except? -1
    cpdef long long window(self) except? -1
    cpdef long long checksum(self) except? -1
    cpdef long long urgent(self) except? -1
    cpdef options(self)
    cpdef payload(self)


# A segment's header and options, built once per segment each way: extension
# types with C fields (segment.py's frozen dataclasses), so building one
# costs no dictionary and modules that cimport them read fields in C.
cdef class TcpOptions:
    cdef readonly object mss, window_scale  # int or None
    cdef readonly bint sack_permitted
    cdef readonly object timestamps  # (TSval, TSecr) or None
    cdef readonly tuple sack_blocks

    cpdef long long buffer_len(self) except -1
    @cython.locals(pos=Py_ssize_t)
    cpdef long long emit(self, unsigned char[::1] buf, Py_ssize_t offset) except -1


cdef class TcpRepr:
    cdef readonly long long src_port, dst_port, seq, ack, flags, window, urgent
    cdef readonly TcpOptions options
    cdef readonly long long payload_len

    cpdef long long segment_len(self) noexcept


# Parse and write on the buffer in place: byte reads and writes in C, the
# checksum summed by C calls (net/checksum.pxd).
@cython.locals(available=Py_ssize_t, header_len=Py_ssize_t)
cpdef Py_ssize_t _checked_header_len(const unsigned char[::1] buf) except -1
cpdef bint _checksum_ok(const unsigned char[::1] buf, unsigned long long src_ip, unsigned long long dst_ip) except -1
@cython.locals(i=Py_ssize_t, kind=cython.uchar, length=Py_ssize_t, shift=cython.uchar)
cpdef TcpOptions _parse_options(const unsigned char[::1] data, Py_ssize_t start, Py_ssize_t end)
cpdef tuple _sack_blocks(const unsigned char[::1] data, Py_ssize_t start, Py_ssize_t end)
@cython.locals(header_len=Py_ssize_t, segment_len=Py_ssize_t, end=Py_ssize_t)
cpdef long long write_segment(
    unsigned char[::1] buf, Py_ssize_t offset, unsigned long long src_ip,
    unsigned long long dst_ip, unsigned long long src_port, unsigned long long dst_port,
    unsigned long long seq, unsigned long long ack, unsigned long long flags,
    unsigned long long window, TcpOptions options, Py_ssize_t payload_len,
    const unsigned char[::1] payload=*, unsigned long long urgent=*, bint checksum_offload=*,
) except -1
@cython.locals(src_port=cython.ulonglong, dst_port=cython.ulonglong, flags=cython.uchar,
               control=cython.uchar, header_len=Py_ssize_t, options=TcpOptions)
cpdef TcpRepr parse_header(const unsigned char[::1] buf, unsigned long long src_ip, unsigned long long dst_ip, bint checksum_trusted)
