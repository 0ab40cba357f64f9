# Types for counters.py, compiled (setup.py); the .py stays the source.

# The writer's histogram as an extension type: the engine observes an RTT
# sample and a connection's handshake time per connection, the loop its
# batches and passes, through a C view of the u64 slots.
cdef class Histogram:
    cdef unsigned long long[::1] _slots
    cdef tuple _bounds

    cpdef release(self)
    cpdef observe(self, value)
    cpdef observe_many(self, value, unsigned long long count)
