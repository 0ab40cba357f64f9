# Types for gso.py, compiled (setup.py); the .py stays the source.

cimport cython

from stackservice.net.checksum cimport internet_checksum, pseudo_header_sum
from stackservice.net.wire cimport read16, read32, write16, write32

cdef Py_ssize_t _ETHERTYPE, _IP, _IP_TOTAL_LEN, _IP_ID, _IP_FLAGS_FRAG, _IP_CHECKSUM, _TCP, _TCP_SEQ
cdef Py_ssize_t _TCP_OFFSET, _TCP_FLAGS, _TCP_CHECKSUM_FIELD, _TCP_CHECKSUM
cdef long long _ETHERTYPE_IPV4, _PROTO_TCP, _IP_MF_OR_OFFSET, _ACK, _PSH, _FIN

@cython.locals(datagram=Py_ssize_t, headers=Py_ssize_t)
cdef Py_ssize_t _payload_size(const unsigned char[::1] frame) except -1
@cython.locals(i=Py_ssize_t)
cdef bint _same(const unsigned char[::1] a, const unsigned char[::1] b, Py_ssize_t start, Py_ssize_t end) noexcept
@cython.locals(first="const unsigned char[::1]", frame="const unsigned char[::1]", size=Py_ssize_t,
               headers=Py_ssize_t, datagram=Py_ssize_t, seq="unsigned long long", count=Py_ssize_t,
               index=Py_ssize_t, length=Py_ssize_t)
cpdef Py_ssize_t run_length(frames, Py_ssize_t start) except -1
@cython.locals(size=Py_ssize_t, headers=Py_ssize_t, total=Py_ssize_t, base=Py_ssize_t, at=Py_ssize_t,
               index=Py_ssize_t, length=Py_ssize_t, src="unsigned long long", dst="unsigned long long",
               partial="unsigned long long")
cpdef bytearray super_frame(frames, Py_ssize_t start, Py_ssize_t run)
cdef bytes _vnet_header(Py_ssize_t headers, Py_ssize_t size)
cdef Py_ssize_t _headers_len(const unsigned char[::1] frame) except -1
cpdef bytes vnet_header(frame)
cpdef Py_ssize_t wire_length(frame) except -1
@cython.locals(headers=Py_ssize_t, size=Py_ssize_t, end=Py_ssize_t, ident="unsigned long long",
               seq="unsigned long long", flags="unsigned char", src="unsigned long long",
               dst="unsigned long long", start=Py_ssize_t, length=Py_ssize_t, piece=bytearray,
               initial="unsigned long long")
cpdef list segment(frame)
