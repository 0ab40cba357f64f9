# Types for packet_io.py, compiled (setup.py); the .py stays the source.

cimport cython

from stackservice.nic.gso cimport run_length, super_frame, vnet_header, wire_length

cdef Py_ssize_t _LEN_WORD, _SNAPLEN_WORD, _MAC_HALF, _PKTTYPE_BYTE
cdef Py_ssize_t _RX_PACKETS, _RX_BYTES, _TX_PACKETS, _TX_BYTES, _RX_RING_DROPS
cdef Py_ssize_t _RX_TRUNCATED, _RX_OUTGOING, _TX_ERRORS, _TX_DEFERRED, _TX_DROPPED, _TX_GSO_SENDS

# The port as an extension type; the ring as typed views of the one
# mapping: the RX walk reads slot headers and writes the status word back
# as C loads and stores.
cdef class PacketPort:
    cdef object _arp, _arp_buffer, _backlog, _counters, _gso, _map, _ring, _sock
    cdef Py_ssize_t _backlog_limit, _frame_size, _rx_frames, _rx_head
    cdef bint _lost
    cdef unsigned int[::1] _status
    cdef unsigned short[::1] _halves
    cdef const unsigned char[::1] _octets
    cdef readonly object ifname

    @cython.locals(head=Py_ssize_t, frame_size=Py_ssize_t, frame_count=Py_ssize_t,
                   delivered=Py_ssize_t, rx_bytes=Py_ssize_t, truncated=Py_ssize_t,
                   outgoing=Py_ssize_t, seen="unsigned int", newest=Py_ssize_t,
                   full="unsigned int", offset=Py_ssize_t, word=Py_ssize_t, status="unsigned int",
                   length=Py_ssize_t, snaplen=Py_ssize_t, start=Py_ssize_t,
                   status_words="unsigned int[::1]", halves="unsigned short[::1]",
                   octets="const unsigned char[::1]")
    cpdef Py_ssize_t receive_batch(self, deliver, now, Py_ssize_t limit=*) except -1
    @cython.locals(sent=Py_ssize_t, tx_bytes=Py_ssize_t, errors=Py_ssize_t, count=Py_ssize_t,
                   index=Py_ssize_t, run=Py_ssize_t, outcome=Py_ssize_t, i=Py_ssize_t)
    cpdef Py_ssize_t transmit(self, frames) except -1
    cpdef Py_ssize_t _send_gso(self, tuple buffers) except? -2
