"""Sans-IO Ethernet, ARP, IPv4 and ICMP for one stack instance."""

from stackservice.net.arp import ArpCache, ArpRepr, ArpSettings, ArpView
from stackservice.net.checksum import (
    checksum_adjust,
    internet_checksum,
    ones_complement_sum,
    pseudo_header_sum,
)
from stackservice.net.drops import (
    ACCEPTED_EVENTS,
    DROP_REASON_COUNT,
    NET_EVENT_COUNT,
    TX_DROP_REASONS,
    DropReason,
    NetEvent,
)
from stackservice.net.errors import LocalProtocolError, MalformedFrame, RemoteProtocolError
from stackservice.net.ethernet import EthernetRepr, EthernetView
from stackservice.net.host import FRAME_HEADROOM, Ipv4Host, UpperHandler
from stackservice.net.icmp import IcmpRepr, IcmpSettings, IcmpView
from stackservice.net.ipv4 import Ipv4Repr, Ipv4View

__all__ = [
    "ACCEPTED_EVENTS",
    "DROP_REASON_COUNT",
    "FRAME_HEADROOM",
    "NET_EVENT_COUNT",
    "TX_DROP_REASONS",
    "ArpCache",
    "ArpRepr",
    "ArpSettings",
    "ArpView",
    "DropReason",
    "EthernetRepr",
    "EthernetView",
    "IcmpRepr",
    "IcmpSettings",
    "IcmpView",
    "Ipv4Host",
    "Ipv4Repr",
    "Ipv4View",
    "LocalProtocolError",
    "MalformedFrame",
    "NetEvent",
    "RemoteProtocolError",
    "UpperHandler",
    "checksum_adjust",
    "internet_checksum",
    "ones_complement_sum",
    "pseudo_header_sum",
]
