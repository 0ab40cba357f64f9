"""The NIC port of one stack instance: AF_PACKET on one interface.

Receive walks a TPACKET_V2 ring mapped into the process: one wake-up reads
every frame that is ready, with no system call per frame. Transmit sends a
batch of whole Ethernet frames with one `send()` each, once per loop
iteration.

Measured with `python3 -m bench.packet_io` (2-vCPU development VM, kernel
6.18, emulated port; medians of 3 interleaved runs of 2000 round trips, and
of 9 bursts of 3000 64-byte frames):

====================  ===================  ==========  ======================
RX path               RTT p50 / p99 (µs)   ping -f     burst drain
====================  ===================  ==========  ======================
TPACKET_V2 ring       23 / 63              18 µs       0.55 µs/frame (1.8M/s)
TPACKET_V3, tov 1 ms  991 / 1063           984 µs      0.56 µs/frame (1.8M/s)
recv_into per frame   23 / 68              19 µs       2.18 µs/frame (0.46M/s)
====================  ===================  ==========  ======================

RTT: a Python raw-ICMP client in the peer namespace against a minimal
ARP/echo responder on the port, woken by poll(); `ping -f` is the kernel's
ping (average). Drain: a burst already waiting, delivered in one call to a
callback that unpacks the Ethernet header.

V3 hands a block to user space only when a frame no longer fits in it or
its retire timer (`tp_retire_blk_tov`, whole milliseconds) fires, and only
then wakes the reader (`prb_close_block` is V3's only `sk_data_ready`; poll()
reports a block only once it is closed). At low rates every frame waits for
the timer: ~1 ms per round trip, fatal for short TCP transactions. No
poll()/recv() call closes a block early (the bench wakes with poll(), and
sees the full millisecond), and small blocks do not help (a block closes
when the *next* frame does not fit). V2 marks each frame ready as it lands
and wakes the reader at once, yet one wake-up still walks every ready frame:
V3's drain rate at recv_into's latency.

================  ===================================================
TX, µs per frame  batch of 1 / 4 / 32 / 256 64-byte frames
================  ===================================================
send() per frame  2.86 / 2.24 / 2.34 / 2.29   (this module)
+ QDISC_BYPASS    2.48 / 2.21 / 2.27 / 2.31
PACKET_TX_RING    4.18 / 1.98 / 1.78 / 1.74   (one kick per batch)
================  ===================================================

The TX ring saves ~0.5 µs per frame in large batches but costs ~1.3 µs more
for a lone frame, the common batch of a request/response exchange, and its
errors surface per kick rather than per frame: `send()` it is. A bulk
sender's batch is mostly runs of one flow's segments, and those leave as
GSO super-frames (stackservice.nic.gso), one `send()` per run of up to
64 KiB: the in-stack diag server's 200 MB download went out as 138 126
frames in 3 078 sends. With segmentation offload the engine builds most
runs whole (a `SuperFrame`, stackservice.net.offload), and they go out
with no copy here. Revisit when
the hot path is compiled and batches are large (the bench keeps the ring).
PACKET_QDISC_BYPASS gains nothing beyond noise on macvlan (noqueue) and
would hide the stack's frames from tcpdump on the interface: off.

Ring memory is shared with the kernel: read a frame's status before its
bytes, and hand the slot back after delivery with one aligned 4-byte store
of TP_STATUS_KERNEL. x86 keeps loads and stores in program order, which is
all this needs; a weakly ordered CPU would want a read fence after the
status load, which Python cannot express (compiled code can).

Compiled (packet_io.pxd), the walk reads each slot's header through typed
views of the ring (32- and 16-bit words, bytes) and hands the frame to
`deliver` without a Python frame of its own: the loop passes the host's
`receive` itself.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from enum import IntEnum

from stackservice.net.offload import SuperFrame
from stackservice.nic.fanout import join_fanout
from stackservice.nic.gso import MIN_RUN, run_length, segment, super_frame, vnet_header, wire_length

__all__ = ["DEFAULT_RX_LIMIT", "NicCounter", "PacketPort"]


class NicCounter(IntEnum):
    """Slots of the caller-owned counter array a PacketPort updates."""

    RX_PACKETS = 0  # frames delivered to the stack
    RX_BYTES = 1  # their length on the wire (without FCS)
    TX_PACKETS = 2  # frames the kernel accepted
    TX_BYTES = 3
    RX_RING_DROPS = 4  # frames the kernel dropped because the RX ring was full
    RX_TRUNCATED = 5  # frames longer than an RX slot: counted and dropped
    RX_OUTGOING = 6  # outgoing frames seen on the RX ring and skipped
    TX_ERRORS = 7  # frames dropped: send() failed for good (ENETDOWN, EMSGSIZE, ...)
    TX_DEFERRED = 8  # frames the kernel pushed back (EAGAIN, ENOBUFS), kept for later
    TX_DROPPED = 9  # frames dropped because the TX backlog was full
    TX_GSO_SENDS = 10  # super-frames sent (stackservice.nic.gso), each of 2+ frames


# The hot path indexes counters with plain ints: an IntEnum member costs a
# class attribute lookup and an __index__ call (4x a list index on 3.11).
_RX_PACKETS = int(NicCounter.RX_PACKETS)
_RX_BYTES = int(NicCounter.RX_BYTES)
_TX_PACKETS = int(NicCounter.TX_PACKETS)
_TX_BYTES = int(NicCounter.TX_BYTES)
_RX_RING_DROPS = int(NicCounter.RX_RING_DROPS)
_RX_TRUNCATED = int(NicCounter.RX_TRUNCATED)
_RX_OUTGOING = int(NicCounter.RX_OUTGOING)
_TX_ERRORS = int(NicCounter.TX_ERRORS)
_TX_DEFERRED = int(NicCounter.TX_DEFERRED)
_TX_DROPPED = int(NicCounter.TX_DROPPED)
_TX_GSO_SENDS = int(NicCounter.TX_GSO_SENDS)

# <linux/if_packet.h>, <linux/if_ether.h>, <asm-generic/socket.h>
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_VNET_HDR = 15
# What a device or kernel that cannot take a super-frame answers
# (virtio_net_hdr_to_skb, packet_snd): GSO is then off for the port.
_GSO_REFUSED = frozenset((errno.EINVAL, errno.EMSGSIZE, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT))
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23  # Linux >= 4.20
TPACKET_V2 = 1
ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
PACKET_OUTGOING = 4
SO_SNDBUFFORCE = 32  # not in Python's socket module

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1 << 0
TP_STATUS_LOSING = 1 << 2
TP_STATUS_CSUMNOTREADY = 1 << 3  # built on this host, checksum left to offload
TP_STATUS_CSUM_VALID = 1 << 7  # checksum verified by the NIC
_CSUM_TRUSTED = TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID

# struct tpacket2_hdr (32 bytes, then struct sockaddr_ll at TPACKET_ALIGN(32)),
# in native byte order: tp_status u32 @0, tp_len u32 @4, tp_snaplen u32 @8,
# tp_mac u16 @12, ..., sll_pkttype u8 @32+10. The walk reads them as words
# of the ring: status, length and snaplen at word (slot offset / 4) + 0, 1,
# 2; tp_mac at half-word (slot offset / 2) + 6; pkttype at byte + 42.
_LEN_WORD = 1
_SNAPLEN_WORD = 2
_MAC_HALF = 6
_PKTTYPE_BYTE = 42
# Where the kernel puts an Ethernet frame in a slot (tp_mac):
# TPACKET_ALIGN(TPACKET2_HDRLEN + 14) - 14 = 66.
_RX_MAC_OFFSET = 66
_TPACKET_REQ = struct.Struct("=IIII")  # block_size, block_nr, frame_size, frame_nr
_TPACKET_STATS = struct.Struct("=II")  # tp_packets, tp_drops (reset on read)

DEFAULT_FRAME_SIZE = 2048  # one slot: holds 66 + 1514 bytes
DEFAULT_RING_FRAMES = 4096  # 8 MiB, ~6 ms of frames at the stack's pace
DEFAULT_BLOCK_SIZE = 1 << 16  # one contiguous kernel allocation
DEFAULT_RX_LIMIT = 1024  # ring slots one receive_batch() call walks at most
DEFAULT_TX_BACKLOG = 1024  # frames kept when the kernel pushes back
_ARP_PER_BATCH = 64  # ARP copies one receive_batch() call takes at most
# Deep enough that a loop's batch is not refused while the driver still
# holds the previous one (skbs count against it until TX completion).
DEFAULT_SNDBUF = 4 << 20


class PacketPort:
    """AF_PACKET socket with a TPACKET_V2 RX ring, bound to one interface.

    `counters` is any integer array indexable by NicCounter (the stack
    passes a `memoryview.cast("Q")` over shared memory); the port adds to it
    once per batch. With `fanout` (group, worker, workers), the port
    receives only the frames the group steers to `worker`
    (stackservice.nic.fanout); workers must open their ports in order.
    Every worker but the first also hears a copy of every ARP frame on a
    socket of its own (`arp_fileno`), to learn its neighbours: the group
    steers ARP to the first worker only. The copies are not counted as
    received: the first worker counts the frame.
    The RX ring has `ring_frames` slots of `frame_size`
    bytes; `block_size` is the kernel's unit of contiguous allocation.
    With `gso`, runs of consecutive segments of one TCP flow in a batch
    leave as one super-frame each (stackservice.nic.gso) on a second,
    transmit-only socket with PACKET_VNET_HDR.

    Raises OSError when the interface does not exist or the ring cannot be
    set up (e.g. without CAP_NET_RAW), ValueError for a bad ring geometry.
    """

    __slots__ = (
        "_arp",
        "_arp_buffer",
        "_backlog",
        "_backlog_limit",
        "_counters",
        "_frame_size",
        "_gso",
        "_lost",
        "_map",
        "_halves",
        "_octets",
        "_ring",
        "_rx_frames",
        "_rx_head",
        "_sock",
        "_status",
        "ifname",
    )

    def __init__(
        self,
        ifname: str,
        counters: memoryview | list[int],
        ring_frames: int = DEFAULT_RING_FRAMES,
        frame_size: int = DEFAULT_FRAME_SIZE,
        block_size: int = DEFAULT_BLOCK_SIZE,
        tx_backlog: int = DEFAULT_TX_BACKLOG,
        fanout: tuple[int, int, int] | None = None,
        gso: bool = True,
    ) -> None:
        _check_geometry(ring_frames, frame_size, block_size)
        self.ifname = ifname
        self._counters = counters
        self._frame_size = frame_size
        self._rx_frames = ring_frames
        self._rx_head = 0
        self._lost = False  # where the kernel writes next is unknown: `recover`
        self._backlog: deque[bytes] = deque()
        self._arp: socket.socket | None = None
        self._arp_buffer = memoryview(bytearray(frame_size))
        self._backlog_limit = tx_backlog
        # Protocol 0 until bind(): an ETH_P_ALL socket would otherwise take
        # frames from every interface while the ring is being set up.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            _configure(sock)
            blocks = ring_frames * frame_size // block_size
            req = _TPACKET_REQ.pack(block_size, blocks, frame_size, ring_frames)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._map = mmap.mmap(sock.fileno(), ring_frames * frame_size)
            sock.bind((ifname, ETH_P_ALL))
            if fanout is not None:
                group, worker, workers = fanout
                join_fanout(sock, group, workers, first=worker == 0)
                if worker:
                    self._arp = _arp_listener(ifname)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._gso: socket.socket | None = None
        if gso:
            # Without PACKET_VNET_HDR (an old kernel): one frame per send.
            with contextlib.suppress(OSError):
                self._gso = _gso_sender(ifname)
        self._ring = memoryview(self._map)
        # Typed views of the same memory (packet_io.pxd): slot headers read
        # as C words, no unpack per frame.
        self._status = self._ring.cast("I")
        self._halves = self._ring.cast("H")
        self._octets = self._ring

    @property
    def segmentation_offload(self) -> bool:
        """True when super-frames (stackservice.net.offload) go to the
        kernel whole; transmit() cuts them up itself otherwise."""
        return self._gso is not None

    def fileno(self) -> int:
        """The socket's fd: POLLIN when a frame is ready in the ring."""
        return self._sock.fileno()

    def arp_fileno(self) -> int:
        """The ARP listener's fd (POLLIN when a copy waits), or -1."""
        return -1 if self._arp is None else self._arp.fileno()

    def receive_batch(
        self, deliver: Callable[[memoryview, int, bool], None], now: int,
        limit: int = DEFAULT_RX_LIMIT,
    ) -> int:  # fmt: skip
        """Deliver every ready frame, oldest first, walking at most `limit` slots.

        `deliver(frame, now, checksum_trusted)` gets a memoryview of the
        frame that is valid only during the call (the slot goes back to the
        kernel right after): copy what you keep. `now` is handed through,
        so `deliver` can be the host's `receive` itself. `checksum_trusted`
        is True when the NIC verified the checksums, or the frame was built
        on this host with checksums left to offload (there is nothing to
        verify). Outgoing and truncated frames are counted and skipped.

        Returns the number of frames delivered.
        """
        if self._lost and not self._find_head():
            return 0
        status_words = self._status
        halves = self._halves
        octets = self._octets
        ring = self._ring
        frame_size = self._frame_size
        frame_count = self._rx_frames
        head = self._rx_head
        delivered = 0
        rx_bytes = 0
        truncated = 0
        outgoing = 0
        seen = 0
        # A full ring is the one state in which the kernel drops: if the
        # newest slot is ready too, read its drop count after the walk, so
        # a burst that overflowed is counted even if nothing follows it.
        newest = (head if head else frame_count) - 1
        full = status_words[(newest * frame_size) >> 2] & TP_STATUS_USER
        try:
            for _ in range(limit):
                offset = head * frame_size
                word = offset >> 2
                status = status_words[word]
                if not status & TP_STATUS_USER:
                    break
                seen |= status
                length = status_words[word + _LEN_WORD]
                snaplen = status_words[word + _SNAPLEN_WORD]
                try:
                    if snaplen < length:
                        truncated += 1
                    elif octets[offset + _PKTTYPE_BYTE] == PACKET_OUTGOING:
                        outgoing += 1
                    else:
                        delivered += 1
                        rx_bytes += length
                        start = offset + halves[(offset >> 1) + _MAC_HALF]
                        deliver(ring[start : start + snaplen], now, (status & _CSUM_TRUSTED) != 0)
                finally:
                    # Also when deliver() raised: a frame that breaks the
                    # stack goes back to the kernel, never to the stack again.
                    status_words[word] = TP_STATUS_KERNEL
                    head += 1
                    if head == frame_count:
                        head = 0
        finally:
            self._rx_head = head
            self._count_rx(delivered, rx_bytes, truncated, outgoing)
            # Frames stored after a drop carry TP_STATUS_LOSING.
            if full or seen & TP_STATUS_LOSING:
                self.collect_drops()
        if self._arp is not None:
            self._receive_arp(deliver, now)
        return delivered

    def _receive_arp(self, deliver: Callable[[memoryview, int, bool], None], now: int) -> None:
        buffer = self._arp_buffer
        recv_into = self._arp.recv_into
        for _ in range(_ARP_PER_BATCH):
            try:
                length = recv_into(buffer)
            except BlockingIOError:
                return
            deliver(buffer[:length], now, False)

    def recover(self) -> None:
        """Take the ring over from a reader that died (a worker restarted
        on its port, stackservice.workers), whose position is lost with
        it: the walk resumes at the oldest frame it left unread, or where
        the kernel writes next, which only the next frame shows
        (`_find_head`). Frames of its connections get resets from the
        successor, as any segment of an unknown connection does."""
        self._lost = True

    def _find_head(self) -> bool:
        """After `recover`: the kernel fills slots in order and the reader
        hands them back in order, so the oldest frame is the first ready
        slot after one that is not. False while no frame is ready."""
        status_words = self._status
        step = self._frame_size >> 2
        count = self._rx_frames
        previous = status_words[(count - 1) * step] & TP_STATUS_USER
        for slot in range(count):
            ready = status_words[slot * step] & TP_STATUS_USER
            if ready and not previous:
                self._rx_head = slot
                self._lost = False
                return True
            previous = ready
        if previous:  # every slot is ready: any is as old as another
            self._rx_head = 0
            self._lost = False
        return not self._lost

    def _count_rx(self, delivered: int, rx_bytes: int, truncated: int, outgoing: int) -> None:
        counters = self._counters
        if delivered:
            counters[_RX_PACKETS] += delivered
            counters[_RX_BYTES] += rx_bytes
        if truncated:
            counters[_RX_TRUNCATED] += truncated
        if outgoing:
            counters[_RX_OUTGOING] += outgoing

    def collect_drops(self) -> int:
        """Add the kernel's RX ring drops since the last call to RX_RING_DROPS.

        receive_batch calls it when it finds the ring full or a frame
        carries TP_STATUS_LOSING; call it also now and then (e.g. before
        exporting metrics) for drops that happened while receive_batch was
        emptying the ring and that no later frame reported.
        Returns the drops added.
        """
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
        drops = _TPACKET_STATS.unpack(raw)[1]
        if drops:
            self._counters[_RX_RING_DROPS] += drops
        return drops

    def transmit(self, frames: Sequence[bytes | bytearray | memoryview]) -> int:
        """Send whole Ethernet frames, in order, after any deferred ones.

        Never raises for a bad frame or a busy kernel:

        - a frame the kernel refuses for good (interface down, longer than
          MTU + 14, shorter than 14 bytes, ...) is dropped and counted
          (TX_ERRORS);
        - when the kernel pushes back (EAGAIN: send buffer full; ENOBUFS:
          qdisc or driver queue full), that frame and all that follow are
          copied into a bounded backlog (TX_DEFERRED), so the caller may
          reuse its buffers at once, and go first in the next call; frames
          beyond the bound are dropped (TX_DROPPED). While `tx_pending` is
          True, call transmit() in every loop iteration, with an empty list
          if there is nothing new.

        Returns the number of frames the kernel accepted in this call.
        """
        earlier = self._send_backlog() if self._backlog else 0
        if self._backlog:
            self._defer(frames, 0)
            return earlier
        send = self._sock.send
        sent = 0
        tx_bytes = 0
        errors = 0
        count = len(frames)
        index = 0
        while index < count:
            frame = frames[index]
            if type(frame) is SuperFrame:
                outcome = (
                    self._send_gso((vnet_header(frame), frame)) if self._gso is not None else 0
                )
                if outcome < 0:
                    self._defer(frames, index)
                    break
                if outcome:
                    sent += frame.segments
                    tx_bytes += wire_length(frame)
                    index += 1
                    continue
                # No GSO here (any more): its segments go one by one.
                frames = [*frames[:index], *segment(frame), *frames[index + 1 :]]
                count = len(frames)
                continue
            run = run_length(frames, index) if self._gso is not None else 1
            if run >= MIN_RUN:
                outcome = self._send_gso((super_frame(frames, index, run),))
                if outcome < 0:  # pushed back: it and the rest wait
                    self._defer(frames, index)
                    break
                if outcome:
                    sent += run
                    for i in range(index, index + run):
                        tx_bytes += len(frames[i])
                    index += run
                    continue
                # refused: the device takes no super-frames, so one by one
            try:
                send(frame)
            except OSError as exc:
                if exc.errno == errno.EAGAIN or exc.errno == errno.ENOBUFS:
                    self._defer(frames, index)
                    break
                errors += 1
            else:
                sent += 1
                tx_bytes += len(frame)
            index += 1
        self._count_tx(sent, tx_bytes, errors)
        return earlier + sent

    def _send_gso(self, buffers: tuple) -> int:
        """Send one super-frame, its `virtio_net_hdr` first (gso.py), the
        buffers gathered by the kernel: 1 when sent, -1 when the kernel
        pushed back, 0 when it refused the super-frame (the caller then
        sends its frames one by one, which count their own errors). Only a
        refusal of the super-frame itself turns GSO off for the port; an
        interface that is down is no reason to."""
        try:
            self._gso.sendmsg(buffers)
        except OSError as exc:
            if exc.errno == errno.EAGAIN or exc.errno == errno.ENOBUFS:
                return -1
            if exc.errno in _GSO_REFUSED:
                self._gso.close()
                self._gso = None
            return 0
        self._counters[_TX_GSO_SENDS] += 1
        return 1

    @property
    def tx_pending(self) -> bool:
        """True when deferred frames wait for the next transmit() call."""
        return len(self._backlog) > 0

    def _send_backlog(self) -> int:
        backlog = self._backlog
        send = self._sock.send
        sent = 0
        tx_bytes = 0
        errors = 0
        while backlog:
            frame = backlog[0]
            try:
                send(frame)
            except OSError as exc:
                if exc.errno == errno.EAGAIN or exc.errno == errno.ENOBUFS:
                    break
                errors += 1
            else:
                sent += 1
                tx_bytes += len(frame)
            backlog.popleft()
        self._count_tx(sent, tx_bytes, errors)
        return sent

    def _defer(self, frames: Sequence[bytes | bytearray | memoryview], start: int) -> None:
        backlog = self._backlog
        # The backlog holds plain frames: a super-frame waits as its segments.
        waiting = [
            piece
            for frame in frames[start:]
            for piece in (segment(frame) if type(frame) is SuperFrame else (frame,))
        ]
        offered = len(waiting)
        keep = min(offered, self._backlog_limit - len(backlog))
        for index in range(keep):
            backlog.append(bytes(waiting[index]))
        counters = self._counters
        if keep:
            counters[_TX_DEFERRED] += keep
        if offered > keep:
            counters[_TX_DROPPED] += offered - keep

    def _count_tx(self, sent: int, tx_bytes: int, errors: int) -> None:
        counters = self._counters
        if sent:
            counters[_TX_PACKETS] += sent
            counters[_TX_BYTES] += tx_bytes
        if errors:
            counters[_TX_ERRORS] += errors

    def close(self) -> None:
        """Close the socket and unmap the ring. Idempotent."""
        if self._sock.fileno() < 0:
            return
        # The typed views hold exports of the map too (compiled): dropped
        # first, so it can close.
        self._status = self._halves = self._octets = None
        self._ring.release()
        self._sock.close()
        if self._gso is not None:
            self._gso.close()
        if self._arp is not None:
            self._arp.close()
        # BufferError: the caller kept a frame view past deliver(); the
        # mapping then goes when that view does.
        with contextlib.suppress(BufferError):
            self._map.close()

    def __enter__(self) -> PacketPort:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_geometry(frames: int, frame_size: int, block_size: int) -> None:
    if frame_size < _RX_MAC_OFFSET + 60 or frame_size % 16:
        raise ValueError("frame_size must be a multiple of 16 that holds a minimal frame")
    if block_size % mmap.PAGESIZE or block_size % frame_size:
        raise ValueError("block_size must be a multiple of the page size and of frame_size")
    if frames <= 0 or frames * frame_size % block_size:
        raise ValueError("a ring must be whole blocks of frames")


def _gso_sender(ifname: str) -> socket.socket:
    """A transmit-only socket whose frames start with a virtio_net_hdr."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        _set_sndbuf(sock)
        sock.bind((ifname, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _arp_listener(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # nothing until bind()
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.bind((ifname, ETH_P_ARP))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _configure(sock: socket.socket) -> None:
    # The kernel never echoes a frame to the socket that sent it; this also
    # hides frames other local senders put on the interface (the
    # PACKET_OUTGOING check in receive_batch covers kernels before 4.20).
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError as exc:
        if exc.errno != errno.ENOPROTOOPT:
            raise
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    _set_sndbuf(sock)


def _set_sndbuf(sock: socket.socket) -> None:
    # FORCE needs CAP_NET_ADMIN, which the stack has; SO_SNDBUF is capped
    # at net.core.wmem_max.
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, DEFAULT_SNDBUF)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DEFAULT_SNDBUF)
