# Types for arp.py, compiled (setup.py); the .py stays the source.

cimport cython

# A resolved neighbour, read on every frame sent (`lookup`).
cdef class _Neighbor:
    cdef public bytes mac
    cdef public long long expires_at
    cdef public bint used


# The cache as an extension type: the host's per-frame `output` (and its
# `lookup`) are C calls.
cdef class ArpCache:
    cdef object _announce_at, _announce_left, _directed_broadcast, _drops, _events
    cdef object _ip, _mac, _settings
    cdef bint _answers
    cdef dict _neighbors, _resolving, _probing
    cdef list _outbox

    @cython.locals(entry=_Neighbor)
    cpdef lookup(self, ip, long long now)
    cpdef bint output(self, next_hop, frame, long long now) except -1
