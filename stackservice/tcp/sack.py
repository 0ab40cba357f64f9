"""The sender's scoreboard: one record per transmitted segment (RFC 2018 §5,
RFC 6675 §3, RFC 8985 §5.2), as Linux keeps its retransmission queue.

Each `SentSegment` is one segment as it went out: its byte range, when it
was last (re)sent, and four flags. RACK (tcp/rack.py) reads the send times
to decide what is lost; the TCB's recovery sends what is lost and not yet
resent, as far as `pipe` leaves room. A range of bytes is one thing in one
place, so what RFC 6675 spread over SACKed ranges, retransmitted ranges,
HighRxt and RescueRxt is here the flags of the segments themselves.

Positions are absolute (`_base` is SND.UNA's: the bytes acknowledged while
the board existed), so a cumulative ACK moves one integer; the interface
speaks offsets from SND.UNA, converted by the TCB with `seq_sub`.

Flags (Linux's TCPCB_SACKED_ACKED / LOST / SACKED_RETRANS / EVER_RETRANS):
- SACKED: the receiver holds it. Never lost, never in flight.
- LOST: deemed lost (by RACK, or by every segment on an RTO) and not SACKed.
- RETRANSMITTED: resent since it was last deemed lost, so in flight again;
  RACK clearing it (while LOST stays) is a lost retransmission.
- EVER_RETRANSMITTED: sent more than once, so an ACK of it is ambiguous as
  an RTT sample (RFC 8985 §6.2 step 2, Karn).

Choices:
- A SACK block marks only the segments it covers whole. Blocks never split
  a record: a receiver SACKs what it got, whole segments of ours, and a
  peer sending blocks with odd edges cannot fragment the board (Linux also
  only SACKs whole MSS units of an skb). A partly covered segment stays
  unSACKed: at worst it is resent.
- Blocks are validated against [0, high_data]: a block ending at or below
  SND.UNA is a D-SACK (RFC 2883 §4) or stale and SACKs nothing; `dsack`
  tells the TCB the first block was a D-SACK (below SND.UNA, or inside the
  second block). Blocks straddling SND.UNA, empty or inverted ones, and
  blocks beyond high_data (data never sent) are ignored, as Linux's
  tcp_is_sackblock_valid does.
- `pipe` (RFC 6675 §4 SetPipe, in Linux's form): outstanding bytes, less
  the SACKed and the lost ones, plus those resent since being lost. Kept
  as three running sums, so it is O(1) on every ACK.
- `reset()` after an RTO forgets every record (RFC 2018 §5: the receiver
  may have reneged; the SACKed bits SHOULD be turned off): the TCB resends
  everything from SND.UNA, and those resends are recorded afresh.
- Records cover what was sent since the last reset, in sequence order; a
  retransmission updates the records it covers (split at its own edges,
  which we chose, so splits are bounded by our sends).
"""

from __future__ import annotations

from bisect import bisect_right

from stackservice.net.errors import LocalProtocolError

# The flags. The module's own code uses the underscored names, which
# compiled are C globals (sack.pxd) that Python cannot see: a Python global
# would turn every flag test into Python arithmetic. The public names are
# for other modules and tests.
_SACKED = 1
_LOST = 2
_RETRANSMITTED = 4
_EVER_RETRANSMITTED = 8
SACKED, LOST, RETRANSMITTED, EVER_RETRANSMITTED = (
    _SACKED, _LOST, _RETRANSMITTED, _EVER_RETRANSMITTED,
)  # fmt: skip

MAX_OFFSET = 1 << 30  # RFC 7323 §2.3: no window, hence no flight, exceeds 2**30


class SentSegment:
    """One transmitted segment: positions [start, end), last send time (µs)."""

    __slots__ = ("end", "flags", "start", "xmit_us")

    def __init__(self, start: int, end: int, xmit_us: int, flags: int) -> None:
        self.start = start
        self.end = end
        self.xmit_us = xmit_us
        self.flags = flags

    def __repr__(self) -> str:
        return f"SentSegment({self.start}, {self.end}, xmit_us={self.xmit_us}, flags={self.flags})"


class Scoreboard:
    """What was sent, what the receiver SACKed, what is lost, what is resent.

    After `on_ack`, `delivered` holds the segments that ACK delivered (newly
    SACKed, or cumulatively acknowledged and not SACKed before), in sequence
    order, for RACK; `dsack` says whether its first block was a D-SACK.
    """

    __slots__ = (
        "_base",
        "_lost",
        "_retransmitted",
        "_sacked",
        "_starts",
        "delivered",
        "dsack",
        "sacked_segments",
        "segments",
    )

    def __init__(self) -> None:
        self._base = 0  # position of SND.UNA
        self.segments: list[SentSegment] = []  # by position, disjoint
        self._starts: list[int] = []  # segments[i].start, for bisect
        self._sacked = 0  # SACKed bytes above SND.UNA
        self._lost = 0  # LOST, not SACKed
        self._retransmitted = 0  # RETRANSMITTED, not SACKed: in flight again
        self.sacked_segments = 0  # RACK.segs_sacked (RFC 8985 §6.2 step 4)
        self.delivered: list[SentSegment] = []
        self.dsack = False

    @property
    def base(self) -> int:
        """SND.UNA's position, for comparing with `SentSegment` positions."""
        return self._base

    def reset(self) -> None:
        """Forget every record (after an RTO; RFC 2018 §5)."""
        self.segments.clear()
        self._starts.clear()
        self.delivered.clear()
        self._sacked = self._lost = self._retransmitted = 0
        self.sacked_segments = 0
        self.dsack = False

    # ------------------------------------------------------------- sending

    def on_send(self, offset: int, length: int, now: int, retransmission: bool) -> None:
        """Record that [offset, offset + length) went out at `now` (a FIN
        counts one). A range already recorded is a retransmission: its
        segments get the new send time, and the lost ones are in flight
        again. `retransmission` (below SND.MAX) marks new records as resent
        too, e.g. everything resent after an RTO.
        """
        if length <= 0:
            return
        first = self._base + offset
        last = first + length
        segments = self.segments
        recorded_end = segments[-1].end if segments else self._base
        if first < recorded_end:
            self._resent(first, min(last, recorded_end), now)
            first = recorded_end
        if first < last:
            flags = _EVER_RETRANSMITTED if retransmission else 0
            segments.append(SentSegment(first, last, now, flags))
            self._starts.append(first)

    def _resent(self, first: int, last: int, now: int) -> None:
        self._split_at(first)
        self._split_at(last)
        segments = self.segments
        i = bisect_right(self._starts, first) - 1
        if i < 0:
            i = 0
        while i < len(segments) and segments[i].start < last:
            seg = segments[i]
            i += 1
            if seg.end <= first or seg.flags & _SACKED:
                continue
            if seg.flags & _LOST and not seg.flags & _RETRANSMITTED:
                self._retransmitted += seg.end - seg.start
                seg.flags |= _RETRANSMITTED
            seg.flags |= _EVER_RETRANSMITTED
            seg.xmit_us = now

    def _split_at(self, pos: int) -> None:
        """Make `pos` a record boundary if it falls inside a record."""
        i = bisect_right(self._starts, pos) - 1
        if i < 0:
            return
        seg = self.segments[i]
        if not seg.start < pos < seg.end:
            return
        tail = SentSegment(pos, seg.end, seg.xmit_us, seg.flags)
        seg.end = pos
        self.segments.insert(i + 1, tail)
        self._starts.insert(i + 1, pos)
        if seg.flags & _SACKED:
            self.sacked_segments += 1

    # ----------------------------------------------------------- receiving

    def on_ack(self, acked: int, blocks: list[tuple[int, int]], high_data: int = MAX_OFFSET) -> int:
        """Apply an ACK: SND.UNA advanced by `acked`, then the SACK `blocks`.

        `blocks` are (left, right) offsets from the NEW SND.UNA; `high_data`
        (SND.MAX - SND.UNA, after the advance) bounds valid blocks.

        Returns:
            Newly SACKed bytes (RFC 6675 §2 "DupAck" (c)).

        Raises:
            LocalProtocolError: a negative `acked`.
        """
        if acked < 0:
            raise LocalProtocolError("negative acked byte count")
        self.delivered.clear()
        if acked:
            self._advance(self._base + acked)
        if not blocks:
            return 0
        return self._merge_blocks(blocks, high_data)

    def _advance(self, base: int) -> None:
        """Move SND.UNA to `base`: drop the records it passed, clip the one it entered."""
        self._base = base
        segments = self.segments
        count = 0
        for seg in segments:
            if seg.end > base:
                break
            count += 1
            if not seg.flags & _SACKED:
                self.delivered.append(seg)
            self._forget(seg, seg.end - seg.start)
        if count:
            del segments[:count], self._starts[:count]
        if segments and segments[0].start < base:
            # An ACK inside a segment (the receiver trimmed, or reneged on a
            # SACK): the rest of it is still outstanding.
            seg = segments[0]
            self._forget(seg, base - seg.start, whole=False)
            seg.start = self._starts[0] = base

    def _forget(self, seg: SentSegment, length: int, whole: bool = True) -> None:
        """Take `length` bytes of `seg` out of the running sums."""
        flags = seg.flags
        if flags & _SACKED:
            self._sacked -= length
            if whole:
                self.sacked_segments -= 1
            return
        if flags & _LOST:
            self._lost -= length
        if flags & _RETRANSMITTED:
            self._retransmitted -= length

    def _merge_blocks(self, blocks: list[tuple[int, int]], high_data: int) -> int:
        base = self._base
        newly = 0
        first = True
        dsack = False
        for left, right in blocks:
            if first and len(blocks) > 1:
                # RFC 2883 §4: a first block inside the second is a D-SACK.
                second_left, second_right = blocks[1]
                dsack = second_left <= left and right <= second_right
            if right <= 0:
                dsack = dsack or first  # RFC 2883 §4: D-SACK below the cumulative ACK
            elif 0 <= left < right <= high_data:
                newly += self._sack(base + left, base + right)
            first = False
        self.dsack = dsack
        if len(self.delivered) > 1:
            self.delivered.sort(key=_start)
        return newly

    def _sack(self, first: int, last: int) -> int:
        """Mark the records inside [first, last) SACKed; return the new bytes."""
        segments = self.segments
        i = bisect_right(self._starts, first) - 1
        if i < 0 or segments[i].start < first:
            i += 1  # the record containing `first` is only partly covered
        newly = 0
        while i < len(segments) and segments[i].end <= last:
            seg = segments[i]
            i += 1
            if seg.flags & _SACKED:
                continue
            length = seg.end - seg.start
            self._forget(seg, length)
            seg.flags = (seg.flags | _SACKED) & ~(_LOST | _RETRANSMITTED)
            self._sacked += length
            self.sacked_segments += 1
            self.delivered.append(seg)
            newly += length
        return newly

    # ------------------------------------------------------------- loss

    def mark_lost(self, seg: SentSegment) -> bool:
        """Deem `seg` lost (it must not be SACKed). Returns True if it was
        a retransmission that got lost (RFC 8985 §6: detected by time, no
        RTO needed); it is then due for resending again."""
        flags = seg.flags
        length = seg.end - seg.start
        if not flags & _LOST:
            self._lost += length
        lost_again = bool(flags & _RETRANSMITTED)
        if lost_again:
            self._retransmitted -= length
        seg.flags = (flags | _LOST) & ~_RETRANSMITTED
        return lost_again

    def next_lost(self) -> tuple[int, int] | None:
        """The first segment deemed lost and not resent since, as
        (offset, length), or None (RFC 6675 NextSeg (1), RACK's marks)."""
        if not self._lost or self._lost == self._retransmitted:
            return None
        base = self._base
        for seg in self.segments:
            if seg.flags & (_LOST | _RETRANSMITTED) == _LOST:
                return (seg.start - base, seg.end - seg.start)
        return None

    def last_sent(self) -> tuple[int, int] | None:
        """The highest recorded segment as (offset, length): what a tail
        loss probe resends when it has nothing new (RFC 8985 §7.3)."""
        if not self.segments:
            return None
        seg = self.segments[-1]
        return (seg.start - self._base, seg.end - seg.start)

    # ------------------------------------------------------------- queries

    def pipe(self, high_data: int) -> int:
        """RFC 6675 §4 SetPipe over offsets [0, high_data): bytes in flight."""
        return high_data - self._sacked - self._lost + self._retransmitted

    def sacked_bytes(self) -> int:
        """Bytes above SND.UNA the receiver has SACKed."""
        return self._sacked

    def lost_bytes(self) -> int:
        """Bytes deemed lost and not SACKed (resent or not)."""
        return self._lost

    def flagged(self) -> bool:
        """Anything SACKed, lost or resent: RACK has work beyond in-order ACKs."""
        return bool(self._sacked or self._lost or self._retransmitted)

    def is_sacked(self, offset: int) -> bool:
        pos = self._base + offset
        i = bisect_right(self._starts, pos) - 1
        return i >= 0 and pos < self.segments[i].end and bool(self.segments[i].flags & _SACKED)

    def highest_sacked(self) -> int | None:
        """The right edge (exclusive offset) of the highest SACKed segment, or None."""
        for seg in reversed(self.segments):
            if seg.flags & _SACKED:
                return seg.end - self._base
        return None


def _start(seg: SentSegment) -> int:
    return seg.start
