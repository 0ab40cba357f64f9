# Types for host.py, compiled (setup.py); the .py stays the source.

cimport cython

from stackservice.net.arp cimport ArpCache
from stackservice.net.ipv4 cimport Ipv4View, checked_datagram, is_host_address, write_header
from stackservice.net.wire cimport read16, read32, write16, write32

cdef Py_ssize_t _IPV4_DELIVERED, MAX_IPV4_PAYLOAD
cdef unsigned long long _BROADCAST_MAC

cdef unsigned long long _mac_at(const unsigned char[::1] octets, Py_ssize_t at) except? 0

# The host as an extension type: a frame's way from `receive` to the upper
# handler, and a datagram's from `send_ipv4` to the ARP cache, are C calls
# on C fields. `readonly`: the loop and the engine's owner use them.
cdef class Ipv4Host:
    cdef unsigned long long _ip, _mask, _network, _directed_broadcast, _mac_word, _ident
    cdef object _gateway, _drops, _events, _icmp_errors
    cdef bytes _mac
    cdef Py_ssize_t _max_frame, _max_payload
    cdef dict _upper
    cdef readonly ArpCache arp
    cdef readonly list outbox, faults
    cdef public bint strict

    cpdef route(self, unsigned long long dst)
    cpdef receive(self, frame, long long now, bint checksum_trusted)
    @cython.locals(frame=bytearray)
    cpdef bint send_ipv4(self, unsigned long long dst, unsigned long long protocol, payload, long long now) except -1
    @cython.locals(length=Py_ssize_t, segments="unsigned long long", next_hop=object,
                   octets="unsigned char[::1]", mac="unsigned long long")
    cpdef bint send_in_frame(self, unsigned long long dst, unsigned long long protocol, frame, long long now) except -1
    cpdef bint _is_peer(self, unsigned long long addr)
    @cython.locals(octets="const unsigned char[::1]", length=Py_ssize_t, dst="unsigned long long",
                   link_group=bint, ethertype="unsigned long long", ip=Ipv4View)
    cpdef _receive(self, frame, long long now, bint trusted)
    @cython.locals(src="unsigned long long", protocol="long long")
    cpdef _receive_ipv4(self, Ipv4View ip, long long now, bint trusted)
