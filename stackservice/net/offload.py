"""TCP segmentation offload between the engine and the NIC port.

A bulk sender's pass sends tens of full-sized segments of one connection
back to back. Built one by one, each costs a frame, a header, a checksum
over its payload, the host's and ARP's per-frame steps, and then a copy
into the super-frame the port hands the kernel (stackservice.nic.gso).
With offload the engine builds the run once: one frame holding one TCP
header and every segment's payload, the checksum left to the kernel (or
the NIC) to finish per segment, as Linux's own TCP does with TSO/GSO.

That frame travels the ordinary path (the host writes its IPv4 and
Ethernet headers, ARP its destination) as a `SuperFrame`, which says how
to cut it: `segment_size` payload bytes a segment, `segments` of them,
all full but maybe the last. Its IPv4 total length covers the whole run
and its TCP checksum field holds the pseudo-header sum over the whole run,
not a checksum: the kernel's segmentation (tcp_gso_segment, with the
`virtio_net_hdr` the port writes) adjusts both per segment, gives each
segment its own sequence number, leaves PSH on the last segment only and
numbers the IPv4 ids on from the frame's, so the host steps its id counter
by `segments`. The segments leave exactly as the engine would
have built them one by one; `stackservice.nic.gso.segment` cuts one in
software the same way, for a port that cannot hand it to the kernel.
"""

from __future__ import annotations

__all__ = ["MAX_IPV4_PAYLOAD", "MAX_RUN_PAYLOAD", "SuperFrame"]

# An IPv4 datagram's length field (65 535) less its header, and that less
# a TCP header without options: the most one super-frame can carry.
MAX_IPV4_PAYLOAD = 0xFFFF - 20
MAX_RUN_PAYLOAD = MAX_IPV4_PAYLOAD - 20


class SuperFrame(bytearray):
    """A frame carrying `segments` TCP segments of `segment_size` payload
    bytes each (the last may be shorter) under one header (module
    docstring)."""

    __slots__ = ("segment_size", "segments")

    def __init__(self, size: int, segment_size: int, segments: int) -> None:
        super().__init__(size)
        self.segment_size = segment_size
        self.segments = segments
