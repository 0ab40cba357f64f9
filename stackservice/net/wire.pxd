# Types for wire.py, compiled (setup.py); the .py stays the source.

cimport cython

# C functions on typed buffers: a caller that cimports them passes its own
# typed buffer, so a field costs no Python call, no boxing and no new view.
cpdef unsigned long long read16(const unsigned char[::1] buf, Py_ssize_t at) except? 0
@cython.locals(value=cython.ulonglong)
cpdef unsigned long long read32(const unsigned char[::1] buf, Py_ssize_t at) except? 0
cpdef void write16(unsigned char[::1] buf, Py_ssize_t at, unsigned long long value) except *
cpdef void write32(unsigned char[::1] buf, Py_ssize_t at, unsigned long long value) except *
