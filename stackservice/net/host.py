"""Ipv4Host: the L2/L3 endpoint the run loop drives (RFC 1122 host rules)."""

from __future__ import annotations

from collections.abc import Callable

from stackservice.net.arp import ArpCache, ArpRepr, ArpSettings, ArpView
from stackservice.net.drops import Counters, DropReason, NetEvent
from stackservice.net.errors import LocalProtocolError, MalformedFrame
from stackservice.net.ethernet import (
    ETHERTYPE,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    MAC_LEN,
    SRC,
    is_group,
    unsupported_ethertype_reason,
)
from stackservice.net.ethernet import HEADER_LEN as ETH_HEADER_LEN
from stackservice.net.icmp import (
    ECHO_REQUEST,
    MAX_ERROR_DATAGRAM,
    IcmpRepr,
    IcmpSettings,
    IcmpView,
    TokenBucket,
    echo_reply,
)
from stackservice.net.ipv4 import HEADER_LEN as IPV4_HEADER_LEN
from stackservice.net.ipv4 import (
    LIMITED_BROADCAST,
    PROTO_ICMP,
    Ipv4View,
    checked_datagram,
    is_host_address,
    write_header,
)
from stackservice.net.offload import MAX_IPV4_PAYLOAD, SuperFrame
from stackservice.net.wire import read16, read32, write16, write32

# Bytes in front of an IPv4 payload in its frame (send_in_frame).
FRAME_HEADROOM = ETH_HEADER_LEN + IPV4_HEADER_LEN

# An upper-layer input: (checked header, now, checksum_trusted); the
# payload is the header's `payload()` / `payload_bounds()`. The view dies
# when it returns; it must not raise.
UpperHandler = Callable[[Ipv4View, int, bool], None]

# Plain int: an IntEnum index costs ~4x more on the per-datagram path.
_IPV4_DELIVERED = int(NetEvent.IPV4_DELIVERED)
_BROADCAST_MAC = 0xFFFFFFFFFFFF  # a MAC as a 48-bit integer (`_mac_at`)


def _mac_at(octets: memoryview, at: int) -> int:
    """The MAC at `octets[at:]` as a 48-bit integer: compared in one step,
    with no slice (host.pxd makes it C)."""
    return read32(octets, at) << 16 | read16(octets, at + 4)


class Ipv4Host:
    """One IPv4 address on one Ethernet interface: ARP, IPv4, ICMP.

    Frames to transmit are appended to `outbox`; the loop sends them and
    clears the list in place (the ARP cache holds the same list).
    """

    __slots__ = (
        "_directed_broadcast",
        "_drops",
        "_events",
        "_gateway",
        "_icmp_errors",
        "_ident",
        "_ip",
        "_mac",
        "_mac_word",
        "_mask",
        "_max_frame",
        "_max_payload",
        "_network",
        "_upper",
        "arp",
        "faults",
        "outbox",
        "strict",
    )

    def __init__(
        self,
        mac: bytes,
        ip: int,
        prefix_len: int,
        gateway: int | None,
        drops: Counters,
        events: Counters,
        arp_settings: ArpSettings | None = None,
        icmp_settings: IcmpSettings | None = None,
        mtu: int = 1500,
        first_ident: int = 0,
        answers_arp: bool = True,
        strict: bool = True,
    ) -> None:
        """Configure the host; `drops`/`events` are indexed by DropReason/NetEvent.

        Fault containment (docs/architecture.md principle 5), as the TCP
        engine's: with `strict` False an unexpected exception (a bug) while
        handling one frame, here or in an upper handler, drops that frame
        and is kept in `faults` as ("frame", exception) for the loop to
        count and log; strict (the default, and every test) re-raises it.

        Raises:
            ValueError: an address, prefix, gateway or MTU that cannot work.
        """
        if len(mac) != MAC_LEN or is_group(mac):
            raise ValueError("mac must be a 6-byte unicast address")
        if not is_host_address(ip) or not 1 <= prefix_len <= 32:
            raise ValueError("ip/prefix_len must be a unicast host address and 1..32")
        if not MAX_ERROR_DATAGRAM <= mtu <= 0xFFFF:
            raise ValueError("mtu must be in 576..65535")
        self._mac = bytes(mac)
        self._mac_word = int.from_bytes(mac, "big")
        self._ip = ip
        self._mask = (0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF
        self._network = ip & self._mask
        # /31 and /32 have no subnet broadcast (RFC 3021).
        self._directed_broadcast = (
            self._network | (~self._mask & 0xFFFFFFFF) if prefix_len <= 30 else LIMITED_BROADCAST
        )
        if gateway is not None and (
            gateway & self._mask != self._network or not self._is_peer(gateway)
        ):
            raise ValueError("gateway must be an on-link unicast address other than ours")
        self._gateway = gateway
        self._drops = drops
        self._events = events
        self._max_frame = ETH_HEADER_LEN + mtu
        self._max_payload = mtu - IPV4_HEADER_LEN
        self._ident = first_ident & 0xFFFF
        icmp = icmp_settings or IcmpSettings()
        self._icmp_errors = TokenBucket(icmp.error_interval, icmp.error_burst)
        self._upper: dict[int, UpperHandler] = {}
        self.strict = strict
        self.faults: list[tuple[str, Exception]] = []
        self.outbox: list[bytes | bytearray] = []
        self.arp = ArpCache(
            self._mac, ip, self._directed_broadcast, arp_settings or ArpSettings(),
            drops, events, self.outbox, answers_arp,
        )  # fmt: skip

    def register_protocol(self, protocol: int, handler: UpperHandler) -> None:
        """Deliver datagrams of IP `protocol` (e.g. 6 for TCP) to `handler`.

        Raises:
            LocalProtocolError: ICMP (handled here), out of range, or taken.
        """
        if protocol == PROTO_ICMP or not 0 <= protocol <= 255 or protocol in self._upper:
            raise LocalProtocolError("protocol cannot be registered")
        self._upper[protocol] = handler

    def route(self, dst: int) -> int | None:
        """Return the next hop for `dst`: itself on-link, else the gateway.

        Returns:
            None when `dst` is ours, a broadcast, not a unicast host address,
            or off-link without a gateway: a connect() to it should fail with
            ENETUNREACH.
        """
        if dst & self._mask == self._network:
            return dst if self._is_peer(dst) else None
        return self._gateway if is_host_address(dst) else None

    def receive(self, frame: memoryview, now: int, checksum_trusted: bool) -> None:
        """Process one received Ethernet frame, valid only during this call.

        Every frame ends as exactly one of: a drop (one DropReason counted) or
        one of the accepted NetEvents (drops.ACCEPTED_EVENTS). Never raises
        for any frame content (a bug raises only when `strict`).
        `checksum_trusted` skips IPv4 header and ICMP checksum verification
        and is passed to upper-layer handlers.
        """
        try:
            self._receive(frame, now, checksum_trusted)
        except MalformedFrame as exc:
            self._drops[exc.reason] += 1
        except Exception as exc:  # a bug this frame met: the next frames go on
            if self.strict:
                raise
            self.faults.append(("frame", exc))

    def send_ipv4(
        self, dst: int, protocol: int, payload: bytes | bytearray | memoryview, now: int
    ) -> bool:
        """Copy an IPv4 payload into a new frame and send it (send_in_frame).

        Raises:
            LocalProtocolError: the payload does not fit the MTU.
        """
        frame = bytearray(FRAME_HEADROOM + len(payload))
        frame[FRAME_HEADROOM:] = payload
        return self.send_in_frame(dst, protocol, frame, now)

    def send_in_frame(self, dst: int, protocol: int, frame: bytearray, now: int) -> bool:
        """Send an IPv4 payload already placed in its frame, at FRAME_HEADROOM:
        the Ethernet and IPv4 headers (TTL 64, DF) are written in front of it,
        so a sender that builds its payload there (the TCP engine) costs no
        copy; then the frame is sent or queued for ARP, and owned here.

        Returns:
            False if it was dropped: no route (IPV4_NO_ROUTE counted) or
            the pending ARP queue full (ARP_QUEUE_FULL counted).

        A `SuperFrame` (stackservice.net.offload) may be as long as an IPv4
        datagram allows; its segments take the IPv4 ids from this one's on.

        Raises:
            LocalProtocolError: the payload does not fit the MTU (a
                super-frame's: the IPv4 length field), or the frame has no
                room for the headers.
        """
        length = len(frame) - FRAME_HEADROOM
        segments = 1
        if type(frame) is SuperFrame:
            segments = frame.segments
            if length > MAX_IPV4_PAYLOAD:
                raise LocalProtocolError("super-frame payload longer than an IPv4 datagram holds")
        elif length > self._max_payload:
            raise LocalProtocolError("payload longer than MTU - 20")
        if length < 0:
            raise LocalProtocolError("frame shorter than its Ethernet and IPv4 headers")
        next_hop = self.route(dst)
        if next_hop is None:
            self._drops[DropReason.IPV4_NO_ROUTE] += 1
            return False
        # One typed view for both headers (host.pxd): the source MAC and
        # EtherType as word writes; the destination is ARP's to write.
        octets = frame
        mac = self._mac_word
        write16(octets, MAC_LEN, mac >> 32)
        write32(octets, MAC_LEN + 2, mac & 0xFFFFFFFF)
        write16(octets, 2 * MAC_LEN, ETHERTYPE_IPV4)
        write_header(octets, ETH_HEADER_LEN, self._ip, dst, protocol, length, self._ident)
        self._ident = (self._ident + segments) & 0xFFFF
        return self.arp.output(next_hop, frame, now)

    def announce(self, now: int) -> None:
        """Queue gratuitous ARP announcements (call once at start)."""
        self.arp.gratuitous(now)

    def poll_at(self) -> int | None:
        """Return when `on_timer` must next run, or None."""
        return self.arp.poll_at()

    def on_timer(self, now: int) -> None:
        self.arp.on_timer(now)

    def _is_peer(self, addr: int) -> bool:
        """True if `addr` can be another single host (RFC 1122 §3.2.1.3)."""
        return addr != self._ip and addr != self._directed_broadcast and is_host_address(addr)

    def _receive(self, frame: memoryview, now: int, trusted: bool) -> None:
        drops = self._drops
        length = len(frame)
        if length > self._max_frame:
            drops[DropReason.FRAME_TOO_LONG] += 1
            return
        if length < ETH_HEADER_LEN:
            raise MalformedFrame(DropReason.FRAME_TOO_SHORT)
        octets = frame  # host.pxd: a C byte array, so the header reads are C
        dst = _mac_at(octets, 0)
        link_group = octets[0] & 1
        if (dst != _BROADCAST_MAC) if link_group else (dst != self._mac_word):
            drops[DropReason.ETH_NOT_FOR_US] += 1
            return
        if octets[SRC] & 1:
            drops[DropReason.ETH_BAD_SOURCE] += 1
            return
        ethertype = read16(octets, ETHERTYPE)
        if ethertype == ETHERTYPE_IPV4:
            if link_group:
                # RFC 1122 §3.3.6: we accept no IP broadcast, so a datagram
                # sent to link broadcast is never for us.
                drops[DropReason.IPV4_NOT_FOR_US] += 1
                return
            ip = checked_datagram(frame[ETH_HEADER_LEN:], not trusted)
            self._receive_ipv4(ip, now, trusted)
        elif ethertype == ETHERTYPE_ARP:
            self.arp.receive(ArpRepr.parse(ArpView.checked(frame[ETH_HEADER_LEN:])), now)
        else:
            drops[unsupported_ethertype_reason(ethertype)] += 1

    def _receive_ipv4(self, ip: Ipv4View, now: int, trusted: bool) -> None:
        drops = self._drops
        if ip.dst() != self._ip:
            drops[DropReason.IPV4_NOT_FOR_US] += 1
            return
        src = ip.src()
        # RFC 1122 §3.2.1.3: a source that is no single host is discarded;
        # this also keeps ICMP errors from going to broadcast or multicast.
        if not self._is_peer(src):
            drops[DropReason.IPV4_BAD_SOURCE] += 1
            return
        if ip.is_fragment():
            drops[DropReason.IPV4_FRAGMENT] += 1
            return
        protocol = ip.protocol()
        if protocol == PROTO_ICMP:
            self._receive_icmp(ip, src, now, trusted)
            return
        handler = self._upper.get(protocol)
        if handler is None:
            drops[DropReason.IPV4_UNSUPPORTED_PROTOCOL] += 1
            self._send_protocol_unreachable(ip, src, now)
            return
        self._events[_IPV4_DELIVERED] += 1
        handler(ip, now, trusted)

    def _receive_icmp(self, ip: Ipv4View, src: int, now: int, trusted: bool) -> None:
        msg = IcmpView.checked(ip.payload(), not trusted)
        # RFC 1122 §3.2.2: unknown types, errors and echo replies included,
        # are silently discarded: no ICMP error ever answers an ICMP message.
        if msg.icmp_type() != ECHO_REQUEST:
            self._drops[DropReason.ICMP_UNSUPPORTED_TYPE] += 1
            return
        self._events[NetEvent.ICMP_ECHO_REQUEST_IN] += 1
        if self.send_ipv4(src, PROTO_ICMP, echo_reply(msg.buf), now):
            self._events[NetEvent.ICMP_ECHO_REPLY_OUT] += 1

    def _send_protocol_unreachable(self, ip: Ipv4View, src: int, now: int) -> None:
        """RFC 1122 §3.2.2.1, rate-limited per RFC 1812 §4.3.2.8.

        Callers have already excluded fragments, ICMP and non-unicast sources
        and destinations, the other cases where RFC 1122 §3.2.2 forbids an error.
        """
        if not self._icmp_errors.take(now):
            self._events[NetEvent.ICMP_RATE_LIMITED] += 1
            return
        rep = IcmpRepr.protocol_unreachable(ip.datagram())
        payload = bytearray(rep.buffer_len())
        rep.emit(payload)
        if self.send_ipv4(src, PROTO_ICMP, payload, now):
            self._events[NetEvent.ICMP_UNREACHABLE_OUT] += 1
