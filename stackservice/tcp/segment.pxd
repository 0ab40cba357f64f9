# Types for segment.py, compiled (setup.py); the .py stays the source.

# Sequence arithmetic as C functions: modules that cimport them (their own
# .pxd) call them directly, without a Python call or boxed integers.
cpdef bint seq_lt(long long a, long long b) noexcept
cpdef bint seq_le(long long a, long long b) noexcept
cpdef bint seq_gt(long long a, long long b) noexcept
cpdef bint seq_ge(long long a, long long b) noexcept
cpdef long long seq_add(long long a, long long n) noexcept
cpdef long long seq_sub(long long a, long long b) noexcept

# A segment's header and options, built once per segment each way: extension
# types with C fields (segment.py's frozen dataclasses), so building one
# costs no dictionary and modules that cimport them read fields in C.
cdef class TcpOptions:
    cdef readonly object mss, window_scale  # int or None
    cdef readonly bint sack_permitted
    cdef readonly object timestamps  # (TSval, TSecr) or None
    cdef readonly tuple sack_blocks


cdef class TcpRepr:
    cdef readonly long long src_port, dst_port, seq, ack, flags, window, urgent
    cdef readonly TcpOptions options
    cdef readonly long long payload_len
