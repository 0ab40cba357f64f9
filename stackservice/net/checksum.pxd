# Types for checksum.py, compiled (setup.py); the .py stays the source.

cimport cython

# The word loop in C: the buffer's bytes read in place (a read-only buffer,
# bytes, is fine), the sum in a machine word. 64 KiB of 0xFFFF words is
# under 2**32, so nothing overflows; `initial` is a folded sum, 0..0xFFFF.
@cython.locals(total=cython.ulonglong, last=cython.Py_ssize_t, i=cython.Py_ssize_t)
cpdef _sum_by_words(const unsigned char[::1] data, unsigned long long initial)
