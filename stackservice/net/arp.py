"""ARP for Ethernet/IPv4 (RFC 826) and the neighbour cache.

ArpCache keeps two dicts whose insertion order is also deadline order, so
`poll_at` is O(1) and `on_timer` pops due entries from the front, at most
`max_timer_work` per call: every deadline is set to (current now) + a fixed
interval and re-inserted at the end, and `now` never goes backwards.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from stackservice.net.drops import Counters, DropReason, NetEvent
from stackservice.net.errors import MalformedFrame
from stackservice.net.ethernet import BROADCAST, ETHERTYPE_ARP, MAC_LEN, EthernetRepr
from stackservice.net.ethernet import HEADER_LEN as ETH_HEADER_LEN
from stackservice.net.ipv4 import is_host_address

# Offsets table.
HTYPE = 0  # 2 bytes
PTYPE = 2  # 2 bytes
HLEN = 4
PLEN = 5
OPER = 6  # 2 bytes
SHA = 8  # 6 bytes
SPA = 14  # 4 bytes
THA = 18  # 6 bytes
TPA = 24  # 4 bytes
PACKET_LEN = 28

HTYPE_ETHERNET = 1
PTYPE_IPV4 = 0x0800
OP_REQUEST = 1
OP_REPLY = 2

ZERO_MAC = bytes(MAC_LEN)

_PACKET = struct.Struct("!HHBBH6sI6sI")


class ArpView:
    """Read access to an ARP packet over a memoryview."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf

    @classmethod
    def checked(cls, buf: memoryview) -> ArpView:
        """Wrap `buf` after checking it holds an Ethernet/IPv4-sized packet.

        Raises:
            MalformedFrame: ARP_TOO_SHORT.
        """
        if len(buf) < PACKET_LEN:
            raise MalformedFrame(DropReason.ARP_TOO_SHORT)
        return cls(buf)

    def htype(self) -> int:
        buf = self.buf
        return buf[HTYPE] << 8 | buf[HTYPE + 1]

    def ptype(self) -> int:
        buf = self.buf
        return buf[PTYPE] << 8 | buf[PTYPE + 1]

    def hlen(self) -> int:
        return self.buf[HLEN]

    def plen(self) -> int:
        return self.buf[PLEN]

    def operation(self) -> int:
        buf = self.buf
        return buf[OPER] << 8 | buf[OPER + 1]

    def sender_mac(self) -> memoryview:
        return self.buf[SHA : SHA + MAC_LEN]

    def sender_ip(self) -> int:
        buf = self.buf
        return buf[SPA] << 24 | buf[SPA + 1] << 16 | buf[SPA + 2] << 8 | buf[SPA + 3]

    def target_mac(self) -> memoryview:
        return self.buf[THA : THA + MAC_LEN]

    def target_ip(self) -> int:
        buf = self.buf
        return buf[TPA] << 24 | buf[TPA + 1] << 16 | buf[TPA + 2] << 8 | buf[TPA + 3]


@dataclass(frozen=True, slots=True)
class ArpRepr:
    """An Ethernet/IPv4 ARP request or reply; MACs are copied out of the frame."""

    operation: int
    sender_mac: bytes
    sender_ip: int
    target_mac: bytes
    target_ip: int

    @classmethod
    def parse(cls, view: ArpView) -> ArpRepr:
        """Validate the format fields of a checked view.

        Raises:
            MalformedFrame: ARP_UNSUPPORTED_FORMAT or ARP_UNSUPPORTED_OPERATION.
        """
        if (
            view.htype() != HTYPE_ETHERNET
            or view.ptype() != PTYPE_IPV4
            or view.hlen() != MAC_LEN
            or view.plen() != 4
        ):
            raise MalformedFrame(DropReason.ARP_UNSUPPORTED_FORMAT)
        operation = view.operation()
        if operation != OP_REQUEST and operation != OP_REPLY:
            raise MalformedFrame(DropReason.ARP_UNSUPPORTED_OPERATION)
        return cls(
            operation,
            bytes(view.sender_mac()),
            view.sender_ip(),
            bytes(view.target_mac()),
            view.target_ip(),
        )

    def buffer_len(self) -> int:
        return PACKET_LEN

    def emit(self, buf: bytearray | memoryview) -> None:
        """Write the packet into the first 28 bytes of `buf`."""
        _PACKET.pack_into(
            buf, 0, HTYPE_ETHERNET, PTYPE_IPV4, MAC_LEN, 4, self.operation,
            self.sender_mac, self.sender_ip, self.target_mac, self.target_ip,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ArpSettings:
    """Neighbour cache tuning; times in microseconds."""

    reachable_time: int = 60_000_000
    retry_interval: int = 1_000_000  # RFC 1122 §2.3.2.1: at most one request per second
    max_tries: int = 3  # requests per resolution before giving up
    max_queue: int = 16  # packets held per unresolved destination
    max_entries: int = 1024  # resolved + resolving, oldest evicted beyond
    max_timer_work: int = 64  # entries handled per on_timer call
    announce_count: int = 2  # RFC 5227 §1.1 ANNOUNCE_NUM
    announce_interval: int = 2_000_000  # RFC 5227 §1.1 ANNOUNCE_INTERVAL

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) <= 0:
                raise ValueError("ArpSettings." + name + " must be positive")


class _Neighbor:
    __slots__ = ("expires_at", "mac", "used")

    def __init__(self, mac: bytes, expires_at: int) -> None:
        self.mac = mac
        self.expires_at = expires_at
        self.used = False  # looked up since it was last confirmed


class _Probe:
    """A neighbour whose reachable time ran out while in use: still used,
    and asked for by unicast requests until it answers or gives up."""

    __slots__ = ("mac", "retry_at", "tries")

    def __init__(self, mac: bytes, retry_at: int) -> None:
        self.mac = mac
        self.retry_at = retry_at
        self.tries = 1


class _Resolution:
    __slots__ = ("mac", "queue", "retry_at", "tries")

    def __init__(self, retry_at: int) -> None:
        self.mac = BROADCAST  # asked for by broadcast until it answers
        self.queue: list[bytearray] = []
        self.retry_at = retry_at
        self.tries = 1


class ArpCache:
    """Neighbour cache and ARP protocol engine for one interface.

    Frames go to `outbox` (the host's list, cleared in place by the loop);
    counters go to the caller-owned `drops`/`events` arrays.
    """

    __slots__ = (
        "_announce_at",
        "_announce_left",
        "_answers",
        "_directed_broadcast",
        "_drops",
        "_events",
        "_ip",
        "_mac",
        "_neighbors",
        "_outbox",
        "_probing",
        "_resolving",
        "_settings",
    )

    def __init__(
        self,
        mac: bytes,
        ip: int,
        directed_broadcast: int,
        settings: ArpSettings,
        drops: Counters,
        events: Counters,
        outbox: list[bytes | bytearray],
        answers: bool = True,
    ) -> None:
        # False in every worker of an instance but the first
        # (stackservice.nic.fanout): each learns its neighbours from a copy
        # of every ARP frame, but one answers and announces for all.
        self._answers = answers
        self._mac = mac
        self._ip = ip
        self._directed_broadcast = directed_broadcast
        self._settings = settings
        self._drops = drops
        self._events = events
        self._outbox = outbox
        self._neighbors: dict[int, _Neighbor] = {}  # in expiry order
        self._resolving: dict[int, _Resolution] = {}  # in retry order
        self._probing: dict[int, _Probe] = {}  # in retry order
        self._announce_left = 0
        self._announce_at = 0

    def __len__(self) -> int:
        return len(self._neighbors) + len(self._resolving) + len(self._probing)

    def lookup(self, ip: int, now: int) -> bytes | None:
        """Return the MAC of a known neighbour, else None.

        A neighbour past its reachable time that is still in use keeps its
        MAC while unicast requests confirm it (RFC 1122 §2.3.2.1, Linux's
        STALE/PROBE): traffic never stalls behind a re-resolution.
        """
        entry = self._neighbors.get(ip)
        if entry is None:
            probe = self._probing.get(ip)
            return probe.mac if probe is not None else None
        if entry.expires_at <= now:
            del self._neighbors[ip]
            self._start_probe(ip, entry.mac, now)
        else:
            entry.used = True
        return entry.mac

    def output(self, next_hop: int, frame: bytearray, now: int) -> bool:
        """Send an Ethernet frame whose destination MAC is still to be filled.

        With `next_hop` unresolved the frame waits (in order) for the reply,
        up to `max_queue` frames; the excess is dropped as ARP_QUEUE_FULL.

        Returns:
            False if the frame was dropped, True if sent or queued.
        """
        mac = self.lookup(next_hop, now)
        if mac is not None:
            frame[0:MAC_LEN] = mac
            self._outbox.append(frame)
            return True
        pending = self._resolving.get(next_hop)
        if pending is None:
            self._make_room()
            pending = _Resolution(now + self._settings.retry_interval)
            self._resolving[next_hop] = pending
            self._send_request(next_hop)
        elif len(pending.queue) >= self._settings.max_queue:
            self._drops[DropReason.ARP_QUEUE_FULL] += 1
            return False
        pending.queue.append(frame)
        self._events[NetEvent.ARP_PACKETS_QUEUED] += 1
        return True

    def receive(self, rep: ArpRepr, now: int) -> None:
        """Process a parsed ARP packet ("Packet Reception", RFC 826).

        A probe (sender IP 0.0.0.0, RFC 5227 §2.1.1) for our address is
        answered and teaches nothing.
        """
        sender_ip = rep.sender_ip
        sender_mac = rep.sender_mac
        drops = self._drops
        if sender_mac[0] & 1 or sender_mac == self._mac:
            drops[DropReason.ARP_BAD_SENDER] += 1
            return
        if sender_ip == self._ip:
            drops[DropReason.ARP_ADDRESS_CONFLICT] += 1
            return
        probe = sender_ip == 0 and rep.operation == OP_REQUEST
        if not probe and (not is_host_address(sender_ip) or sender_ip == self._directed_broadcast):
            drops[DropReason.ARP_BAD_SENDER] += 1
            return
        merged = not probe and self._merge(sender_ip, sender_mac, now)
        if rep.target_ip != self._ip:
            drops[DropReason.ARP_NOT_FOR_US] += 1
            return
        if not merged and not probe:
            self._make_room()
            self._neighbors[sender_ip] = _Neighbor(sender_mac, now + self._settings.reachable_time)
        if rep.operation == OP_REQUEST:
            self._events[NetEvent.ARP_REQUEST_IN] += 1
            if self._answers:
                self._send(OP_REPLY, sender_mac, sender_mac, sender_ip)
                self._events[NetEvent.ARP_REPLY_OUT] += 1
        else:
            self._events[NetEvent.ARP_REPLY_IN] += 1

    def gratuitous(self, now: int) -> None:
        """Announce our address now and `announce_count - 1` more times (RFC 5227 §2.3)."""
        if not self._answers:
            return
        self._announce()
        self._announce_left = self._settings.announce_count - 1
        self._announce_at = now + self._settings.announce_interval

    def poll_at(self) -> int | None:
        """Return the earliest deadline of `on_timer`, or None if there is none."""
        at = None
        if self._resolving:
            at = next(iter(self._resolving.values())).retry_at
        if self._probing:
            retry_at = next(iter(self._probing.values())).retry_at
            if at is None or retry_at < at:
                at = retry_at
        if self._neighbors:
            expires_at = next(iter(self._neighbors.values())).expires_at
            if at is None or expires_at < at:
                at = expires_at
        if self._announce_left and (at is None or self._announce_at < at):
            at = self._announce_at
        return at

    def on_timer(self, now: int) -> None:
        """Retransmit requests, give up on resolutions, expire entries, announce.

        Handles at most `max_timer_work` entries; `poll_at` stays <= now while
        more are due.
        """
        budget = self._retry_due(
            self._resolving, now, self._settings.max_timer_work, self._resolution_failed
        )
        budget = self._retry_due(self._probing, now, budget, self._probe_failed)
        self._expire_due(now, budget)
        if self._announce_left and self._announce_at <= now:
            self._announce()
            self._announce_left -= 1
            self._announce_at = now + self._settings.announce_interval

    def _merge(self, ip: int, mac: bytes, now: int) -> bool:
        """Update an existing entry for `ip` (RFC 826 merge); True if there was one."""
        expires_at = now + self._settings.reachable_time
        neighbors = self._neighbors
        entry = neighbors.pop(ip, None)
        if entry is not None:
            entry.mac = mac
            entry.expires_at = expires_at
            neighbors[ip] = entry
            return True
        if self._probing.pop(ip, None) is not None:
            neighbors[ip] = _Neighbor(mac, expires_at)
            return True
        pending = self._resolving.pop(ip, None)
        if pending is None:
            return False
        neighbors[ip] = _Neighbor(mac, expires_at)
        outbox = self._outbox
        for frame in pending.queue:
            frame[0:MAC_LEN] = mac
            outbox.append(frame)
        return True

    def _make_room(self) -> None:
        """Evict the oldest entry if one more would exceed `max_entries`."""
        if len(self) < self._settings.max_entries:
            return
        self._events[NetEvent.ARP_ENTRY_EVICTED] += 1
        if self._neighbors:
            del self._neighbors[next(iter(self._neighbors))]
            return
        if self._probing:
            del self._probing[next(iter(self._probing))]
            return
        ip = next(iter(self._resolving))
        self._drops[DropReason.ARP_UNRESOLVED] += len(self._resolving.pop(ip).queue)

    def _retry_due(
        self,
        table: dict[int, _Resolution] | dict[int, _Probe],
        now: int,
        budget: int,
        give_up: Callable[[_Resolution | _Probe], None],
    ) -> int:
        """Ask again for due entries of `table` (by broadcast for a
        resolution, by unicast for a probe), or give up after max_tries.
        Returns the budget left."""
        settings = self._settings
        while budget and table:
            ip = next(iter(table))
            entry = table[ip]
            if entry.retry_at > now:
                break
            budget -= 1
            del table[ip]
            if entry.tries >= settings.max_tries:
                give_up(entry)
                continue
            entry.tries += 1
            entry.retry_at = now + settings.retry_interval
            table[ip] = entry
            self._send_request(ip, entry.mac)
        return budget

    def _resolution_failed(self, pending: _Resolution) -> None:
        self._drops[DropReason.ARP_UNRESOLVED] += len(pending.queue)
        self._events[NetEvent.ARP_RESOLUTION_FAILED] += 1

    def _probe_failed(self, _probe: _Probe) -> None:
        # Forgotten: the next packet for it resolves by broadcast.
        self._events[NetEvent.ARP_ENTRY_EXPIRED] += 1

    def _expire_due(self, now: int, budget: int) -> None:
        """Entries past their reachable time: probed if used, else dropped."""
        neighbors = self._neighbors
        while budget and neighbors:
            ip = next(iter(neighbors))
            entry = neighbors[ip]
            if entry.expires_at > now:
                return
            budget -= 1
            del neighbors[ip]
            if entry.used:
                self._start_probe(ip, entry.mac, now)
            else:
                self._events[NetEvent.ARP_ENTRY_EXPIRED] += 1

    def _start_probe(self, ip: int, mac: bytes, now: int) -> None:
        self._probing[ip] = _Probe(mac, now + self._settings.retry_interval)
        self._send_request(ip, mac)

    def _send_request(self, target_ip: int, eth_dst: bytes = BROADCAST) -> None:
        self._send(OP_REQUEST, eth_dst, ZERO_MAC, target_ip)
        self._events[NetEvent.ARP_REQUEST_OUT] += 1

    def _announce(self) -> None:
        # RFC 5227 §2.3: an ARP request with sender and target IP both ours.
        self._send(OP_REQUEST, BROADCAST, ZERO_MAC, self._ip)
        self._events[NetEvent.ARP_GRATUITOUS_OUT] += 1

    def _send(self, operation: int, eth_dst: bytes, target_mac: bytes, target_ip: int) -> None:
        frame = bytearray(ETH_HEADER_LEN + PACKET_LEN)
        view = memoryview(frame)
        EthernetRepr(eth_dst, self._mac, ETHERTYPE_ARP).emit(view)
        ArpRepr(operation, self._mac, self._ip, target_mac, target_ip).emit(view[ETH_HEADER_LEN:])
        self._outbox.append(frame)
