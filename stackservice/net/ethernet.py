"""Ethernet II framing (IEEE 802.3 clause 3, DIX ethertypes)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stackservice.net.drops import DropReason
from stackservice.net.errors import MalformedFrame

# Offsets table.
DST = 0  # 6 bytes
SRC = 6  # 6 bytes
ETHERTYPE = 12  # 2 bytes
HEADER_LEN = 14

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_QINQ = 0x88A8
ETHERTYPE_QINQ_LEGACY = 0x9100  # pre-802.1ad double tagging, still seen on switches
ETHERTYPE_IPV6 = 0x86DD

BROADCAST = b"\xff\xff\xff\xff\xff\xff"
MAC_LEN = 6

_HEADER = struct.Struct("!6s6sH")


def is_group(mac: bytes | memoryview) -> bool:
    """Return True for a multicast or broadcast address (I/G bit set)."""
    return bool(mac[0] & 1)


def unsupported_ethertype_reason(ethertype: int) -> DropReason:
    """Return the drop reason for an ethertype the stack does not handle."""
    if ethertype in (ETHERTYPE_VLAN, ETHERTYPE_QINQ, ETHERTYPE_QINQ_LEGACY):
        return DropReason.ETH_VLAN_TAGGED
    if ethertype == ETHERTYPE_IPV6:
        return DropReason.ETH_IPV6
    return DropReason.ETH_UNSUPPORTED_ETHERTYPE


class EthernetView:
    """Read access to an Ethernet header over a memoryview."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf

    @classmethod
    def checked(cls, buf: memoryview) -> EthernetView:
        """Wrap `buf` after checking it holds a whole header.

        Raises:
            MalformedFrame: FRAME_TOO_SHORT.
        """
        if len(buf) < HEADER_LEN:
            raise MalformedFrame(DropReason.FRAME_TOO_SHORT)
        return cls(buf)

    def dst(self) -> memoryview:
        return self.buf[DST : DST + MAC_LEN]

    def src(self) -> memoryview:
        return self.buf[SRC : SRC + MAC_LEN]

    def ethertype(self) -> int:
        buf = self.buf
        return buf[ETHERTYPE] << 8 | buf[ETHERTYPE + 1]

    def payload(self) -> memoryview:
        return self.buf[HEADER_LEN:]


@dataclass(frozen=True, slots=True)
class EthernetRepr:
    """An Ethernet II header."""

    dst: bytes
    src: bytes
    ethertype: int

    @classmethod
    def parse(cls, view: EthernetView) -> EthernetRepr:
        return cls(bytes(view.dst()), bytes(view.src()), view.ethertype())

    def buffer_len(self) -> int:
        return HEADER_LEN

    def emit(self, buf: bytearray | memoryview) -> None:
        """Write the header into the first `buffer_len()` bytes of `buf`."""
        _HEADER.pack_into(buf, 0, self.dst, self.src, self.ethertype)
