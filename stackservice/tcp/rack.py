"""RACK: time-based loss detection over the scoreboard (RFC 8985 §6).

A segment is lost when one sent after it has been delivered and it has not,
within a reordering window: "sent after" compares send times, so a lost
retransmission or a lost tail is noticed one round trip after the fact, not
after an RTO. `Rack` holds one connection's RACK variables and works on its
`Scoreboard` (tcp/sack.py); tail loss probes, which make the ACKs RACK
needs when the tail of a flight is lost, are timers and live in the engine.

Times are µs; sequence ends are the scoreboard's absolute positions.

Choices:
- RACK.min_RTT is the smallest RTT sample RACK took on this connection,
  not a windowed minimum (Linux keeps a 5-minute window): a route that got
  longer only makes the reordering window smaller than it could be.
- Segments are walked in sequence order, not send order (Linux keeps a
  second, time-sorted list), since the walk only happens when something is
  SACKed, lost or resent, or an ACK delivered a segment sent after the
  oldest outstanding one; in-order ACKs never walk.
"""

from __future__ import annotations

from stackservice.tcp.sack import (
    EVER_RETRANSMITTED,
    LOST,
    RETRANSMITTED,
    SACKED,
    Scoreboard,
    SentSegment,
)
from stackservice.tcp.segment import seq_lt

DUP_THRESH = 3  # RFC 8985 §6.2 step 4: no reordering seen, DupThresh SACKed: no window
REO_WND_PERSIST = 16  # recoveries a DSACK-grown window lasts (RFC 8985 §6.2 step 4)
_NONE = -1


def sent_after(t1: int, end1: int, t2: int, end2: int) -> bool:
    """RFC 8985 §6.2 RACK_sent_after: sent later, or at once and ending later."""
    return t1 > t2 or (t1 == t2 and end1 > end2)


class Rack:
    """One connection's RACK state (RFC 8985 §5.2)."""

    __slots__ = (
        "end",
        "fack",
        "min_rtt_us",
        "reo_wnd_mult",
        "reo_wnd_persist",
        "dsack_round",
        "reordering_seen",
        "rtt_us",
        "xmit_us",
    )

    def __init__(self) -> None:
        self.xmit_us = _NONE  # RACK.xmit_ts: send time of the most recently sent delivered segment
        self.end = _NONE  # RACK.end_seq: its end
        self.rtt_us = 0  # RACK.rtt: the RTT measured from that segment
        self.min_rtt_us = 0  # RACK.min_RTT, 0 until the first sample
        self.fack = _NONE  # RACK.fack: highest end delivered
        self.reordering_seen = False
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = 0
        self.dsack_round = _NONE  # RACK.dsack_round, a position

    def on_ack(self, board: Scoreboard, now: int, echoed_ms: int) -> None:
        """RFC 8985 §6.2 steps 1-3 for the segments the last ACK delivered
        (`board.delivered`). `echoed_ms`: the ACK's TSecr turned back into
        our millisecond clock (now // 1000 at the echoed send), or -1
        without timestamps."""
        latest: SentSegment | None = None  # the most recently sent valid sample
        for seg in board.delivered:
            rtt = now - seg.xmit_us
            if rtt < 0:
                continue
            if seg.flags & EVER_RETRANSMITTED:
                # Step 2: an ACK of a resent segment may answer the original.
                if echoed_ms >= 0 and seq_lt(echoed_ms, seg.xmit_us // 1000):
                    continue
                if rtt < self.min_rtt_us:
                    continue
            if not self.min_rtt_us or rtt < self.min_rtt_us:
                self.min_rtt_us = max(rtt, 1)
            if latest is None or sent_after(seg.xmit_us, seg.end, latest.xmit_us, latest.end):
                latest = seg
        if latest is not None:
            self.rtt_us = now - latest.xmit_us
            if sent_after(latest.xmit_us, latest.end, self.xmit_us, self.end):
                self.xmit_us = latest.xmit_us
                self.end = latest.end
        for seg in board.delivered:  # step 3, in sequence order
            if seg.end > self.fack:
                self.fack = seg.end
            elif seg.end < self.fack and not seg.flags & EVER_RETRANSMITTED:
                self.reordering_seen = True

    def on_dsack(self, snd_nxt_pos: int) -> None:
        """A D-SACK arrived (RFC 8985 §6.2 step 4): grow the reordering
        window once per round trip in which D-SACKs come."""
        if self.dsack_round == _NONE:
            self.dsack_round = snd_nxt_pos
            self.reo_wnd_mult += 1
            self.reo_wnd_persist = REO_WND_PERSIST
        self.reordering_seen = True  # a D-SACK is a spurious retransmission

    def on_una(self, una_pos: int) -> None:
        """SND.UNA moved: a D-SACK round ends when it passes its mark."""
        if self.dsack_round != _NONE and una_pos >= self.dsack_round:
            self.dsack_round = _NONE

    def on_recovery_exit(self) -> None:
        """After 16 recoveries without a D-SACK the window shrinks back."""
        self.reo_wnd_persist -= 1
        if self.reo_wnd_persist <= 0:
            self.reo_wnd_mult = 1

    def reo_wnd(self, board: Scoreboard, in_recovery: bool, srtt_us: int) -> int:
        """RFC 8985 §6.2 step 4: how long to wait for reordering. None
        without reordering seen in recovery or once DupThresh segments are
        SACKed (DupAck-threshold speed when the path does not reorder)."""
        if not self.reordering_seen and (in_recovery or board.sacked_segments >= DUP_THRESH):
            return 0
        # Before RACK's first sample the handshake's RTT (SRTT) stands in.
        window = self.reo_wnd_mult * (self.min_rtt_us or srtt_us) // 4
        return min(window, srtt_us) if srtt_us else window

    def may_have_losses(self, board: Scoreboard) -> bool:
        """Whether `detect_losses` can find anything: something is SACKed,
        lost or resent, or the last delivered segment was sent after the
        oldest one outstanding. False on every in-order ACK."""
        if self.xmit_us == _NONE or not board.segments:
            return False
        if board.flagged():
            return True
        oldest = board.segments[0]
        return sent_after(self.xmit_us, self.end, oldest.xmit_us, oldest.end)

    def detect_losses(
        self, board: Scoreboard, now: int, reo_wnd: int, lost: list[SentSegment]
    ) -> int:
        """RFC 8985 §6.2 step 5: mark lost every outstanding segment sent
        before the RACK segment and not delivered within RACK.rtt +
        reo_wnd of its sending; append them to `lost`.

        Returns: µs until the next one would be deemed lost (arm the RACK
        reordering timer for it), or 0.
        """
        timeout = 0
        if self.xmit_us == _NONE:
            return 0
        rack_xmit, rack_end = self.xmit_us, self.end
        deadline_base = self.rtt_us + reo_wnd - now
        for seg in board.segments:
            flags = seg.flags
            if flags & SACKED or flags & (LOST | RETRANSMITTED) == LOST:
                continue  # delivered, or lost and waiting for its resend
            if not sent_after(rack_xmit, rack_end, seg.xmit_us, seg.end):
                continue
            remaining = seg.xmit_us + deadline_base
            if remaining <= 0:
                lost.append(seg)
            elif remaining > timeout:
                timeout = remaining
        return timeout


__all__ = ["DUP_THRESH", "Rack", "sent_after"]
