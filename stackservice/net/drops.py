"""Counter indices for the L2/L3/ICMP layer.

Counters live in caller-owned integer arrays (shared memory in the stack,
plain lists in tests) indexed by these enums; a metric label is
`member.name.lower()`. Values are dense 0..N-1 so an array of
`DROP_REASON_COUNT` / `NET_EVENT_COUNT` slots holds every counter. The TCP
layer keeps its own enum: do not add transport reasons here.
"""

from __future__ import annotations

from enum import IntEnum, unique

# A caller-owned counter array: a list in tests, `memoryview.cast("Q")` over
# shared memory in the stack.
Counters = list[int] | memoryview


@unique
class DropReason(IntEnum):
    """Why a frame or packet was discarded; exactly one reason per discard."""

    # Ethernet (receive).
    FRAME_TOO_SHORT = 0  # shorter than an Ethernet header
    FRAME_TOO_LONG = 1  # longer than the configured MTU allows
    ETH_NOT_FOR_US = 2  # destination neither our MAC nor broadcast
    ETH_BAD_SOURCE = 3  # group (multicast/broadcast) source MAC
    ETH_VLAN_TAGGED = 4  # 802.1Q/802.1ad tag: the VF is expected to strip it
    ETH_IPV6 = 5
    ETH_UNSUPPORTED_ETHERTYPE = 6  # any other ethertype, or an 802.3 length field
    # ARP (receive).
    ARP_TOO_SHORT = 7
    ARP_UNSUPPORTED_FORMAT = 8  # hardware/protocol type or address length not Ethernet/IPv4
    ARP_UNSUPPORTED_OPERATION = 9  # neither request nor reply
    ARP_BAD_SENDER = 10  # group/own sender MAC, or a sender IP no host can own
    ARP_ADDRESS_CONFLICT = 11  # another MAC claims our IP address
    ARP_NOT_FOR_US = 12  # target IP is not ours (after the RFC 826 merge)
    # IPv4 (receive).
    IPV4_TOO_SHORT = 13
    IPV4_BAD_VERSION = 14
    IPV4_BAD_IHL = 15  # IHL < 5, or the header runs past the frame
    IPV4_BAD_TOTAL_LENGTH = 16  # larger than the frame or smaller than the header
    IPV4_BAD_CHECKSUM = 17
    IPV4_NOT_FOR_US = 18  # destination not our address, or sent to link broadcast
    IPV4_BAD_SOURCE = 19  # multicast, broadcast, 0/8, 127/8 or our own address
    IPV4_FRAGMENT = 20  # MF set or offset != 0: no reassembly
    IPV4_UNSUPPORTED_PROTOCOL = 21  # no handler registered (ICMP unreachable may follow)
    # ICMP (receive).
    ICMP_TOO_SHORT = 22
    ICMP_BAD_CHECKSUM = 23
    ICMP_UNSUPPORTED_TYPE = 24  # anything but echo request
    # Transmit side: packets the stack built but could not send.
    IPV4_NO_ROUTE = 25  # off-link destination and no gateway, or not a unicast address
    ARP_QUEUE_FULL = 26  # the destination's pending queue was full
    ARP_UNRESOLVED = 27  # queued packets discarded when resolution failed or was evicted


DROP_REASON_COUNT = len(DropReason)

# Reasons that count packets we generated, not frames we received: a received
# frame is counted under exactly one reason outside this set, or accepted.
TX_DROP_REASONS = frozenset(
    {DropReason.IPV4_NO_ROUTE, DropReason.ARP_QUEUE_FULL, DropReason.ARP_UNRESOLVED}
)


@unique
class NetEvent(IntEnum):
    """Non-drop counters of the L2/L3/ICMP layer."""

    # A received frame that is not dropped is counted under exactly one of the
    # four "accepted" events: ARP_REQUEST_IN, ARP_REPLY_IN,
    # ICMP_ECHO_REQUEST_IN, IPV4_DELIVERED.
    ARP_REQUEST_IN = 0  # requests for our address (each is answered)
    ARP_REPLY_IN = 1  # replies for our address
    ARP_REQUEST_OUT = 2  # resolution requests, retransmissions included
    ARP_REPLY_OUT = 3
    ARP_GRATUITOUS_OUT = 4  # announcements (RFC 5227 §2.3)
    ARP_PACKETS_QUEUED = 5  # outgoing packets that waited for resolution
    ARP_RESOLUTION_FAILED = 6  # destinations given up after the last retry
    ARP_ENTRY_EXPIRED = 7
    ARP_ENTRY_EVICTED = 8  # the cache was full
    ICMP_ECHO_REQUEST_IN = 9
    ICMP_ECHO_REPLY_OUT = 10
    ICMP_UNREACHABLE_OUT = 11
    ICMP_RATE_LIMITED = 12  # error messages suppressed by the token bucket
    IPV4_DELIVERED = 13  # datagrams handed to a registered upper-layer protocol


NET_EVENT_COUNT = len(NetEvent)

ACCEPTED_EVENTS = (
    NetEvent.ARP_REQUEST_IN,
    NetEvent.ARP_REPLY_IN,
    NetEvent.ICMP_ECHO_REQUEST_IN,
    NetEvent.IPV4_DELIVERED,
)
