# Types for segment.py, compiled (setup.py); the .py stays the source.

# Sequence arithmetic as C functions: modules that cimport them (their own
# .pxd) call them directly, without a Python call or boxed integers.
cpdef bint seq_lt(long long a, long long b) noexcept
cpdef bint seq_le(long long a, long long b) noexcept
cpdef bint seq_gt(long long a, long long b) noexcept
cpdef bint seq_ge(long long a, long long b) noexcept
cpdef long long seq_add(long long a, long long n) noexcept
cpdef long long seq_sub(long long a, long long b) noexcept
