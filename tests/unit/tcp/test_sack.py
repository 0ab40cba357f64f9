"""The sender's SACK scoreboard: RFC 6675 IsLost, SetPipe, NextSeg; RFC 2883."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.net.errors import LocalProtocolError
from stackservice.tcp.sack import Scoreboard

from ._segments import CHECK

MSS = 1000
FLIGHT = 10 * MSS  # ten segments outstanding: offsets [0, 10000)


def seg(n: int) -> tuple[int, int]:
    """Segment n of the flight as a SACK block."""
    return (n * MSS, (n + 1) * MSS)


def scoreboard_sacking(*segments: int, high_data: int = FLIGHT) -> Scoreboard:
    """A scoreboard that received one ACK per listed segment, in order."""
    sb = Scoreboard(MSS)
    for n in segments:
        sb.on_ack(0, [seg(n)], high_data)
    return sb


# ------------------------------------------------------------ on_ack, blocks


def test_scoreboard_ack_without_blocks_returns_zero() -> None:
    sb = Scoreboard(MSS)
    assert sb.on_ack(1000, []) == 0
    assert (sb.sacked_bytes(), sb.highest_sacked()) == (0, None)


def test_scoreboard_new_block_returns_newly_sacked_bytes() -> None:
    """RFC 6675 §2 "DupAck" (c): the caller needs the newly SACKed amount."""
    sb = Scoreboard(MSS)
    assert sb.on_ack(0, [seg(2)], FLIGHT) == MSS
    assert sb.on_ack(0, [(2000, 4000)], FLIGHT) == MSS  # only seg 3 is new
    assert sb.on_ack(0, [(2000, 4000)], FLIGHT) == 0  # nothing new: no DupAck
    assert sb.on_ack(0, [(5000, 6000), (2000, 4000)], FLIGHT) == MSS
    assert (sb.sacked_bytes(), sb.highest_sacked()) == (3 * MSS, 6000)


def test_scoreboard_block_bridging_ranges_counts_only_gap() -> None:
    sb = scoreboard_sacking(2, 5)
    assert sb.on_ack(0, [(1500, 7000)], FLIGHT) == 5500 - 2 * MSS
    assert sb.sacked_bytes() == 5500
    assert [sb.is_sacked(o) for o in (1499, 1500, 6999, 7000)] == [False, True, True, False]


def test_scoreboard_cumulative_ack_shifts_offsets() -> None:
    sb = scoreboard_sacking(3, 6)
    assert sb.on_ack(2000, [], FLIGHT - 2000) == 0
    assert (sb.highest_sacked(), sb.sacked_bytes()) == (5000, 2 * MSS)
    assert sb.is_sacked(1000) and not sb.is_sacked(999) and sb.is_sacked(4000)
    # The hole at the old seg 0..2 was filled: ACK through the first range.
    assert sb.on_ack(2000, [], FLIGHT - 4000) == 0
    assert (sb.highest_sacked(), sb.sacked_bytes()) == (3000, MSS)
    assert sb.on_ack(3000, [], FLIGHT - 7000) == 0
    assert (sb.highest_sacked(), sb.sacked_bytes()) == (None, 0)


def test_scoreboard_ack_with_blocks_uses_new_snd_una() -> None:
    """Blocks come as offsets from the ACK's own cumulative point."""
    sb = scoreboard_sacking(5)
    assert sb.on_ack(1000, [(6000, 7000), (4000, 5000)], FLIGHT - 1000) == MSS
    assert sb.sacked_bytes() == 2 * MSS
    assert sb.highest_sacked() == 7000


def test_scoreboard_dsack_below_snd_una_ignored_and_flagged() -> None:
    """RFC 2883 §4: a first block below the cumulative ACK is a D-SACK; it
    reports a duplicate and SACKs nothing (ignored by the scoreboard)."""
    sb = Scoreboard(MSS)
    assert sb.on_ack(3000, [(-2000, -1000), seg(2)], FLIGHT) == MSS
    assert sb.dsack
    assert (sb.sacked_bytes(), sb.highest_sacked()) == (MSS, 3000)
    assert sb.on_ack(0, [seg(4)], FLIGHT) == MSS
    assert not sb.dsack


def test_scoreboard_dsack_inside_second_block_flagged() -> None:
    """RFC 2883 §4: a first block contained in the second is a D-SACK."""
    sb = scoreboard_sacking(2, 3)
    assert sb.on_ack(0, [seg(3), (2000, 4000)], FLIGHT) == 0
    assert sb.dsack


@pytest.mark.parametrize(
    "block",
    [(-500, 500), (0, 0), (3000, 2000), (9500, 10_500), (20_000, 21_000)],
    ids=["straddles_snd_una", "empty", "inverted", "past_high_data", "far_beyond"],
)
def test_scoreboard_impossible_block_ignored(block: tuple[int, int]) -> None:
    """A block the receiver cannot have (RFC 2018 §5: SACKs cover data sent and
    not cumulatively acknowledged) changes nothing."""
    sb = Scoreboard(MSS)
    assert sb.on_ack(0, [block], FLIGHT) == 0
    assert (sb.sacked_bytes(), sb.highest_sacked()) == (0, None)


def test_scoreboard_unconverted_old_block_ignored_by_default_bound() -> None:
    """A block below SND.UNA converted with seq_sub lands near 2**32: without a
    high_data the default bound (the largest window, RFC 7323 §2.3) drops it."""
    sb = Scoreboard(MSS)
    assert sb.on_ack(0, [(2**32 - 2000, 2**32 - 1000)]) == 0
    assert sb.highest_sacked() is None


def test_scoreboard_negative_ack_raises() -> None:
    with pytest.raises(LocalProtocolError):
        Scoreboard(MSS).on_ack(-1, [seg(1)])


def test_scoreboard_range_bound_drops_highest_range() -> None:
    sb = Scoreboard(MSS, max_ranges=3)
    for n in (1, 3, 5):
        sb.on_ack(0, [seg(n)], FLIGHT)
    assert sb.on_ack(0, [seg(7)], FLIGHT) == 0  # the new block is the highest
    assert sb.highest_sacked() == 6000
    assert sb.on_ack(0, [(2500, 2600)], FLIGHT) == 100  # evicts the highest
    assert (sb.highest_sacked(), sb.sacked_bytes()) == (4000, 2100)
    assert sb.on_ack(0, [seg(2)], FLIGHT) == 900  # merges: no range opened


def test_scoreboard_reset_forgets_everything() -> None:
    """RFC 6675 §5.1 keeps RFC 2018 §5: after an RTO, turn off SACKed bits."""
    sb = scoreboard_sacking(2, 4, 6)
    sb.mark_retransmitted(0, 1000)
    sb.reset()
    assert (sb.sacked_bytes(), sb.highest_sacked(), sb.is_lost(0)) == (0, None, False)
    assert sb.pipe(FLIGHT, 0) == FLIGHT


# ------------------------------------------------------------------- IsLost


def test_scoreboard_is_lost_two_segments_above_not_lost() -> None:
    """RFC 6675 §4 IsLost: DupThresh (3) SACKed segments needed."""
    sb = scoreboard_sacking(2, 4)
    assert not sb.is_lost(0)


def test_scoreboard_is_lost_three_discontiguous_segments_above_lost() -> None:
    sb = scoreboard_sacking(2, 4, 6)
    assert sb.is_lost(0) and sb.is_lost(1000) and sb.is_lost(1999)
    assert not sb.is_lost(2000)  # SACKed itself
    assert not sb.is_lost(3000)  # only two segments above
    assert not sb.is_lost(9000)  # nothing above


def test_scoreboard_is_lost_three_small_contiguous_segments_lost() -> None:
    """Three SACKed segments count even when they are small and contiguous:
    one per ACK, as DupThresh duplicate ACKs would (module docstring)."""
    sb = Scoreboard(MSS)
    for left in (1000, 1100, 1200):
        sb.on_ack(0, [(1000, left + 100)], FLIGHT)
    assert sb.sacked_bytes() == 300
    assert sb.is_lost(0)


def test_scoreboard_is_lost_bytes_above_threshold_lost() -> None:
    """RFC 6675 §4 IsLost: more than (DupThresh - 1) * SMSS SACKed bytes."""
    exactly = Scoreboard(MSS)
    exactly.on_ack(0, [(1000, 3000)], FLIGHT)  # one ACK, 2 * SMSS: two segments
    assert not exactly.is_lost(0)
    over = Scoreboard(MSS)
    over.on_ack(0, [(1000, 3001)], FLIGHT)
    assert over.is_lost(0)


def test_scoreboard_is_lost_dup_thresh_configurable() -> None:
    sb = Scoreboard(MSS, dup_thresh=2)
    sb.on_ack(0, [seg(3)], FLIGHT)
    assert not sb.is_lost(0)
    sb.on_ack(0, [seg(5), seg(3)], FLIGHT)
    assert sb.is_lost(0) and not sb.is_lost(4000)


# --------------------------------------------------------------------- pipe


def test_scoreboard_pipe_without_sack_counts_flight_and_retransmissions() -> None:
    """RFC 6675 §4 SetPipe with no SACK: nothing is lost, every octet counts
    once, and once more below HighRxt."""
    sb = Scoreboard(MSS)
    assert sb.pipe(FLIGHT, 0) == FLIGHT
    assert sb.pipe(FLIGHT, 1000) == FLIGHT + 1000
    assert sb.pipe(0, 0) == 0


def test_scoreboard_pipe_excludes_sacked_and_lost_bytes() -> None:
    """RFC 6675 §4 SetPipe (a): SACKed octets and lost octets are not in flight."""
    sb = scoreboard_sacking(1, 2, 4)  # seg 0 lost; seg 3 has one SACK above
    assert sb.pipe(FLIGHT, 0) == FLIGHT - 3 * MSS - MSS


def test_scoreboard_pipe_counts_retransmitted_bytes_again() -> None:
    """RFC 6675 §4 SetPipe (b): an octet below HighRxt counts (again)."""
    sb = scoreboard_sacking(1, 2, 4)
    assert sb.pipe(FLIGHT, 1000) == FLIGHT - 4 * MSS + MSS
    sb.mark_retransmitted(3000, 4000)  # e.g. a rescue, HighRxt unmoved
    assert sb.pipe(FLIGHT, 1000) == FLIGHT - 4 * MSS + 2 * MSS
    sb.mark_retransmitted(0, 4000)  # overlapping marks count once; SACKed never
    assert sb.pipe(FLIGHT, 1000) == FLIGHT - 4 * MSS + 2 * MSS


# ------------------------------------------------------------------ NextSeg


def test_scoreboard_next_seg_two_holes_repaired_in_one_rtt() -> None:
    """RFC 6675 §5: segments 0 and 3 of ten are lost. Fast retransmit sends
    0; later SACKs make 3 lost and NextSeg rule (1) returns it; nothing
    SACKed is ever returned, and no rescue fires before 0 is acknowledged."""
    sb = Scoreboard(MSS)
    newly = [sb.on_ack(0, [(1000, 2000)], FLIGHT), sb.on_ack(0, [(1000, 3000)], FLIGHT)]
    newly.append(sb.on_ack(0, [seg(4), (1000, 3000)], FLIGHT))
    assert newly == [MSS, MSS, MSS]  # three DupAcks (RFC 6675 §2)
    assert sb.is_lost(0) and not sb.is_lost(3000)
    # (4.1)-(4.3): RecoveryPoint = HighData; retransmit seg 0, HighRxt = RescueRxt.
    assert sb.next_seg(FLIGHT, 0, FLIGHT, MSS) == (0, MSS)
    sb.enter_recovery(FLIGHT, MSS)
    sb.mark_retransmitted(0, MSS)
    high_rxt = MSS
    assert sb.pipe(FLIGHT, high_rxt) == FLIGHT - 3 * MSS - MSS + MSS  # (4.4)
    # Segments 5..9 arrive; seg 3 now has six SACKed segments above it.
    for n in range(5, 10):
        sb.on_ack(0, [(4000, (n + 1) * MSS), (1000, 3000)], FLIGHT)
    assert sb.is_lost(3000)
    assert sb.next_seg(FLIGHT, high_rxt, FLIGHT, MSS, new_data=False) == (3000, MSS)
    sb.mark_retransmitted(3000, 4000)
    high_rxt = 4000  # (C.2)
    assert sb.pipe(FLIGHT, high_rxt) == 2 * MSS  # the two retransmissions
    assert sb.next_seg(FLIGHT, high_rxt, FLIGHT, MSS, new_data=False) is None
    assert sb.next_seg(FLIGHT, high_rxt, FLIGHT, MSS, new_data=True) is None
    # Seg 0's retransmission arrives: cumulative ACK to 3000; seg 3 in flight.
    sb.on_ack(3000, [(1000, 7000)], FLIGHT - 3000)
    high_data, high_rxt = FLIGHT - 3000, high_rxt - 3000
    assert sb.pipe(high_data, high_rxt) == MSS
    assert sb.next_seg(high_data, high_rxt, high_data, MSS) is None  # (2): new data
    sb.on_ack(7000, [], 0)  # seg 3's retransmission: everything acknowledged
    assert (sb.sacked_bytes(), sb.pipe(0, 0)) == (0, 0)


def test_scoreboard_next_seg_rescue_after_partial_ack_resends_highest_unsacked() -> None:
    """RFC 6675 §4 NextSeg (4), literally: once HighACK passes RescueRxt (set
    by (4.3)) and rules (1)-(3) fail without new data, one rescue covering the
    highest unSACKed octet is returned even if it was already retransmitted
    (HighRxt is not consulted), and RescueRxt = RecoveryPoint stops a second."""
    sb = scoreboard_sacking(1, 2, 4, 5, 6, 7, 8, 9)
    sb.enter_recovery(FLIGHT, MSS)
    assert sb.next_seg(FLIGHT, MSS, FLIGHT, MSS, new_data=False) == (3000, MSS)  # (1)
    sb.on_ack(3000, [(1000, 7000)], FLIGHT - 3000)  # partial ACK for seg 0
    assert sb.next_seg(7000, 1000, 7000, MSS, new_data=False) == (0, MSS)  # (4)
    assert sb.next_seg(7000, 1000, 7000, MSS, new_data=False) is None


def test_scoreboard_next_seg_lost_run_split_by_mss() -> None:
    """RFC 6675 §4 NextSeg (1): one segment of up to SMSS from S2."""
    sb = Scoreboard(MSS)
    sb.on_ack(0, [(2500, 6000)], FLIGHT)
    assert sb.next_seg(FLIGHT, 0, FLIGHT, MSS) == (0, MSS)
    assert sb.next_seg(FLIGHT, 1000, FLIGHT, MSS) == (1000, MSS)
    assert sb.next_seg(FLIGHT, 2000, FLIGHT, MSS) == (2000, 500)  # stops at SACKed data
    assert sb.next_seg(FLIGHT, 2500, FLIGHT, MSS) is None  # (2): send new data


def test_scoreboard_next_seg_skips_sacked_run_above_high_rxt() -> None:
    sb = scoreboard_sacking(1, 2, 4, 5, 6)
    assert sb.next_seg(FLIGHT, 1000, FLIGHT, MSS) == (3000, MSS)


def test_scoreboard_next_seg_no_lost_data_new_data_returns_none() -> None:
    """RFC 6675 §4 NextSeg (2) comes before (3): with new data to send, the TCB
    sends it (None) rather than retransmitting data not yet lost."""
    sb = scoreboard_sacking(2)
    assert sb.next_seg(FLIGHT, 0, FLIGHT, MSS, new_data=True) is None


def test_scoreboard_next_seg_rule_three_unsacked_below_highest_sack() -> None:
    """RFC 6675 §4 NextSeg (3): without new data, resend an unSACKed octet
    above HighRxt and below the highest SACK even though it is not lost."""
    sb = scoreboard_sacking(2)
    assert not sb.is_lost(0)
    assert sb.next_seg(FLIGHT, 0, FLIGHT, MSS, new_data=False) == (0, MSS)
    assert sb.next_seg(FLIGHT, 1000, FLIGHT, MSS, new_data=False) == (1000, MSS)
    # Above the highest SACK only the rescue (4) may resend; it is armed by
    # (4.3) until HighACK passes the first retransmission.
    sb.enter_recovery(FLIGHT, 1000)
    assert sb.next_seg(FLIGHT, 2000, FLIGHT, MSS, new_data=False) is None


def test_scoreboard_next_seg_rescue_once_per_recovery() -> None:
    """RFC 6675 §4 NextSeg (4): segments 0 and 9 (the tail) are lost, no new
    data. After seg 0's repair is acknowledged, one rescue retransmission
    covering the highest unSACKed octet; RescueRxt = RecoveryPoint then stops
    a second one until HighACK passes it."""
    sb = scoreboard_sacking(1, 2, 3, 4, 5, 6, 7, 8)
    sb.enter_recovery(FLIGHT, MSS)  # (4.3): seg 0 resent
    assert sb.next_seg(FLIGHT, MSS, FLIGHT, MSS, new_data=False) is None  # RescueRxt armed
    sb.on_ack(9000, [], 1000)  # seg 0 arrives: ACK up to the lost tail
    assert sb.next_seg(1000, 0, 1000, MSS, new_data=False) == (0, MSS)
    assert sb.next_seg(1000, 0, 1000, MSS, new_data=False) is None  # once
    sb.on_ack(1000, [], 2000)  # the rescue arrives: recovery over, new flight
    assert sb.next_seg(2000, 0, 2000, MSS, new_data=False) == (1000, MSS)


def test_scoreboard_next_seg_rescue_with_sacked_tail_covers_highest_unsacked() -> None:
    """RFC 6675 §4 NextSeg (4): the segment MUST include the highest
    outstanding unSACKed octet, here just below a SACKed tail."""
    sb = Scoreboard(MSS)
    sb.on_ack(0, [(2000, 3000)], 3000)
    assert sb.next_seg(3000, 2000, 3000, MSS, new_data=False) == (1000, MSS)


def test_scoreboard_next_seg_rescue_shorter_than_mss_stops_at_sack() -> None:
    sb = Scoreboard(MSS)
    sb.on_ack(0, [(0, 600)], 3000)  # left edge at SND.UNA is accepted
    sb.on_ack(0, [(1000, 2000), (0, 600)], 3000)
    assert sb.next_seg(3000, 2000, 3000, 2000, new_data=False) == (2000, 1000)
    assert sb.next_seg(3000, 3000, 3000, 2000, new_data=False) is None


def test_scoreboard_next_seg_bounded_by_snd_nxt() -> None:
    """Retransmissions stay below SND.NXT (after an RTO pulled it back, the
    rest is resent in order)."""
    sb = scoreboard_sacking(1, 2, 3, 6)
    assert sb.next_seg(FLIGHT, 0, FLIGHT, MSS) == (0, MSS)
    assert sb.next_seg(FLIGHT, 0, 500, MSS) == (0, 500)
    assert sb.next_seg(FLIGHT, 0, 0, MSS) is None


# ------------------------------------------------------------------ property


@st.composite
def sack_histories(draw):
    high_data = draw(st.integers(1, 60))
    blocks = []
    for _ in range(draw(st.integers(0, 12))):
        left = draw(st.integers(-5, high_data + 5))
        right = draw(st.integers(left, left + 20))
        blocks.append((left, right))
    return high_data, blocks


@CHECK
@given(sack_histories(), st.integers(1, 8), st.integers(0, 60), st.lists(st.integers(0, 60)))
def test_scoreboard_random_blocks_agree_with_octet_model(
    history: tuple[int, list[tuple[int, int]]], mss: int, high_rxt: int, marks: list[int]
) -> None:
    """SACKed set, newly-SACKed counts and SetPipe agree with an octet-by-octet
    model built on is_lost (RFC 6675 §4 SetPipe, literally)."""
    high_data, blocks = history
    sb = Scoreboard(mss)
    sacked: set[int] = set()
    for left, right in blocks:
        valid = 0 <= left < right <= high_data
        new = set(range(left, right)) - sacked if valid else set()
        assert sb.on_ack(0, [(left, right)], high_data) == len(new)
        sacked |= new
    retransmitted = set(range(min(high_rxt, high_data)))
    for a, b in zip(marks[::2], marks[1::2], strict=False):
        sb.mark_retransmitted(min(a, b), max(a, b))
        retransmitted |= set(range(min(a, b), min(max(a, b), high_data)))
    assert sb.sacked_bytes() == len(sacked)
    assert all(sb.is_sacked(o) == (o in sacked) for o in range(high_data + 2))
    expected = 0
    for octet in range(high_data):
        if octet in sacked:
            continue
        expected += 0 if sb.is_lost(octet) else 1
        expected += 1 if octet in retransmitted else 0
    assert sb.pipe(high_data, high_rxt) == expected
    found = sb.next_seg(high_data, high_rxt, high_data, mss, new_data=False)
    if found is not None:
        start, length = found
        assert 0 < length <= mss and start + length <= high_data
        assert not any(o in sacked for o in range(start, start + length))
