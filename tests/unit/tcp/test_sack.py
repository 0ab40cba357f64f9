"""The sender's scoreboard: per-segment records, SACK blocks (RFC 2018,
RFC 2883), SetPipe (RFC 6675 §4), lost and resent marks (RFC 8985)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.net.errors import LocalProtocolError
from stackservice.tcp.sack import (
    EVER_RETRANSMITTED,
    LOST,
    RETRANSMITTED,
    SACKED,
    Scoreboard,
)

from ._segments import CHECK

MSS = 1000
FLIGHT = 10 * MSS  # ten segments outstanding: offsets [0, 10000)


def seg(n: int) -> tuple[int, int]:
    """Segment n of the flight as a SACK block."""
    return (n * MSS, (n + 1) * MSS)


def board_with_flight(segments: int = 10, now: int = 0) -> Scoreboard:
    """Segments 0..n-1 of MSS bytes each sent at `now` (t = 0 by default)."""
    sb = Scoreboard()
    for n in range(segments):
        sb.on_send(n * MSS, MSS, now, False)
    return sb


def sacking(*segments: int) -> Scoreboard:
    """The ten-segment flight and one ACK per listed segment, in order."""
    sb = board_with_flight()
    for n in segments:
        sb.on_ack(0, [seg(n)], FLIGHT)
    return sb


def flags(sb: Scoreboard) -> list[int]:
    return [s.flags for s in sb.segments]


# ------------------------------------------------------------ on_ack, blocks


def test_scoreboard_ack_without_blocks_returns_zero() -> None:
    sb = board_with_flight()
    assert sb.on_ack(MSS, []) == 0
    assert (sb.sacked_bytes(), sb.highest_sacked()) == (0, None)
    assert [(s.start, s.end) for s in sb.delivered] == [(0, MSS)]  # cumulatively ACKed


def test_scoreboard_new_block_returns_newly_sacked_bytes() -> None:
    """RFC 6675 §2 "DupAck" (c): the caller needs the newly SACKed amount."""
    sb = board_with_flight()
    assert sb.on_ack(0, [seg(2)], FLIGHT) == MSS
    assert sb.on_ack(0, [(2000, 4000)], FLIGHT) == MSS  # only seg 3 is new
    assert [s.start for s in sb.delivered] == [3000]
    assert sb.on_ack(0, [(2000, 4000)], FLIGHT) == 0  # nothing new: no DupAck
    assert sb.delivered == []
    assert sb.on_ack(0, [(5000, 6000), (2000, 4000)], FLIGHT) == MSS
    assert (sb.sacked_bytes(), sb.highest_sacked(), sb.sacked_segments) == (3 * MSS, 6000, 3)


def test_scoreboard_block_sacks_only_whole_segments() -> None:
    """A block covering part of a segment leaves it unSACKed (Linux SACKs
    whole MSS units): odd block edges never split the records."""
    sb = board_with_flight()
    assert sb.on_ack(0, [(1500, 7000)], FLIGHT) == 5 * MSS  # segments 2..6
    assert len(sb.segments) == 10
    assert [sb.is_sacked(o) for o in (1999, 2000, 6999, 7000)] == [False, True, True, False]


def test_scoreboard_cumulative_ack_shifts_offsets() -> None:
    sb = sacking(3, 6)
    assert sb.on_ack(2000, [], FLIGHT - 2000) == 0
    assert (sb.highest_sacked(), sb.sacked_bytes()) == (5000, 2 * MSS)
    assert sb.is_sacked(1000) and not sb.is_sacked(999) and sb.is_sacked(4000)
    # The hole below segment 3 was filled: ACK through it; only the
    # segments not SACKed before count as delivered by this ACK.
    assert sb.on_ack(2000, [], FLIGHT - 4000) == 0
    assert [s.start for s in sb.delivered] == [2000]
    assert (sb.highest_sacked(), sb.sacked_bytes(), sb.sacked_segments) == (3000, MSS, 1)
    sb.on_ack(3000, [], FLIGHT - 7000)
    assert (sb.highest_sacked(), sb.sacked_bytes(), sb.sacked_segments) == (None, 0, 0)


def test_scoreboard_ack_inside_a_segment_keeps_its_rest() -> None:
    """A cumulative ACK in the middle of a segment (the receiver trimmed it):
    the rest stays outstanding, lost mark and all."""
    sb = board_with_flight(2)
    sb.mark_lost(sb.segments[0])
    sb.on_ack(400, [], 2 * MSS - 400)
    assert [(s.start, s.end) for s in sb.segments] == [(400, 1000), (1000, 2000)]
    assert sb.lost_bytes() == 600 and sb.pipe(2 * MSS - 400) == MSS


def test_scoreboard_ack_with_blocks_uses_new_snd_una() -> None:
    """Blocks come as offsets from the ACK's own cumulative point."""
    sb = sacking(5)
    assert sb.on_ack(1000, [(6000, 7000), (4000, 5000)], FLIGHT - 1000) == MSS
    assert sb.sacked_bytes() == 2 * MSS
    assert sb.highest_sacked() == 7000


def test_scoreboard_dsack_below_snd_una_ignored_and_flagged() -> None:
    """RFC 2883 §4: a first block below the cumulative ACK is a D-SACK; it
    reports a duplicate and SACKs nothing."""
    sb = board_with_flight()
    assert sb.on_ack(3000, [(-2000, -1000), seg(2)], FLIGHT - 3000) == MSS
    assert sb.dsack
    assert (sb.sacked_bytes(), sb.highest_sacked()) == (MSS, 3000)
    assert sb.on_ack(0, [seg(4)], FLIGHT - 3000) == MSS
    assert not sb.dsack


def test_scoreboard_dsack_inside_second_block_flagged() -> None:
    """RFC 2883 §4: a first block contained in the second is a D-SACK."""
    sb = sacking(2, 3)
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
    sb = board_with_flight()
    assert sb.on_ack(0, [block], FLIGHT) == 0
    assert (sb.sacked_bytes(), sb.highest_sacked()) == (0, None)


def test_scoreboard_unconverted_old_block_ignored_by_default_bound() -> None:
    """A block below SND.UNA converted with seq_sub lands near 2**32: without a
    high_data the default bound (the largest window, RFC 7323 §2.3) drops it."""
    sb = board_with_flight()
    assert sb.on_ack(0, [(2**32 - 2000, 2**32 - 1000)]) == 0
    assert sb.highest_sacked() is None


def test_scoreboard_negative_ack_raises() -> None:
    with pytest.raises(LocalProtocolError):
        Scoreboard().on_ack(-1, [seg(1)])


def test_scoreboard_reset_forgets_everything() -> None:
    """RFC 2018 §5: after an RTO, turn off the SACKed bits; the resends are
    recorded afresh, as retransmissions."""
    sb = sacking(2, 4, 6)
    sb.mark_lost(sb.segments[0])
    sb.reset()
    assert (sb.sacked_bytes(), sb.lost_bytes(), sb.segments) == (0, 0, [])
    assert sb.pipe(FLIGHT) == FLIGHT
    sb.on_send(0, MSS, 5, True)
    assert flags(sb) == [EVER_RETRANSMITTED]


# ------------------------------------------------------ sending, loss, pipe


def test_scoreboard_pipe_excludes_sacked_and_lost_counts_resent() -> None:
    """RFC 6675 §4 SetPipe: a SACKed or lost segment is not in flight; a lost
    one resent is again."""
    sb = sacking(5, 6, 7)
    assert sb.pipe(FLIGHT) == 7 * MSS
    sb.mark_lost(sb.segments[1])
    sb.mark_lost(sb.segments[2])
    assert sb.pipe(FLIGHT) == 5 * MSS
    assert sb.next_lost() == (1000, MSS)
    sb.on_send(1000, MSS, 9, True)
    assert sb.pipe(FLIGHT) == 6 * MSS
    assert sb.next_lost() == (2000, MSS)
    assert sb.segments[1].xmit_us == 9
    assert sb.segments[1].flags == LOST | RETRANSMITTED | EVER_RETRANSMITTED


def test_scoreboard_lost_retransmission_is_due_again() -> None:
    """RFC 8985 §6: a resent segment deemed lost again is reported as such
    and is the next to resend."""
    sb = sacking(5)
    assert not sb.mark_lost(sb.segments[1])
    sb.on_send(1000, MSS, 9, True)
    assert sb.next_lost() is None
    assert sb.mark_lost(sb.segments[1])  # a lost retransmission
    assert sb.next_lost() == (1000, MSS)
    assert sb.pipe(FLIGHT) == 8 * MSS


def test_scoreboard_sacked_resent_segment_leaves_lost_and_resent_sums() -> None:
    sb = board_with_flight()
    sb.mark_lost(sb.segments[1])
    sb.on_send(1000, MSS, 9, True)
    sb.on_ack(0, [seg(1)], FLIGHT)
    assert sb.segments[1].flags == SACKED | EVER_RETRANSMITTED
    assert (sb.lost_bytes(), sb.pipe(FLIGHT), sb.flagged()) == (0, 9 * MSS, True)


def test_scoreboard_partial_resend_splits_at_its_edge() -> None:
    """A retransmission shorter than the segment (options took room) marks
    only what went out; the rest stays due."""
    sb = board_with_flight(2)
    sb.mark_lost(sb.segments[0])
    sb.on_send(0, 600, 9, True)
    assert [(s.start, s.end) for s in sb.segments] == [(0, 600), (600, 1000), (1000, 2000)]
    assert sb.next_lost() == (600, 400)
    assert sb.pipe(2 * MSS) == 1600


def test_scoreboard_last_sent_is_the_highest_segment() -> None:
    sb = board_with_flight(3)
    sb.on_send(3 * MSS, 1, 4, False)  # our FIN
    assert sb.last_sent() == (3000, 1)
    sb.on_ack(3001, [], 0)
    assert sb.last_sent() is None


@st.composite
def sack_histories(draw):
    sizes = draw(st.lists(st.integers(1, 8), min_size=1, max_size=12))
    high_data = sum(sizes)
    blocks = []
    for _ in range(draw(st.integers(0, 12))):
        left = draw(st.integers(-5, high_data + 5))
        right = draw(st.integers(left, left + 20))
        blocks.append((left, right))
    lost = draw(st.lists(st.integers(0, len(sizes) - 1), max_size=6))
    resent = draw(st.lists(st.integers(0, len(sizes) - 1), max_size=6))
    return sizes, blocks, lost, resent


@CHECK
@given(sack_histories())
def test_scoreboard_random_history_agrees_with_octet_model(history) -> None:
    """Segments of random sizes, random blocks, losses and resends: the
    SACKed set, newly SACKed counts, SetPipe and next_lost agree with an
    octet-by-octet model of RFC 6675 §4 SetPipe with RACK's marks."""
    sizes, blocks, lost_picks, resent_picks = history
    sb = Scoreboard()
    bounds, offset = [], 0
    for size in sizes:
        sb.on_send(offset, size, 0, False)
        bounds.append((offset, offset + size))
        offset += size
    high_data = offset
    sacked: set[int] = set()
    for left, right in blocks:
        covered = set()
        if 0 <= left < right <= high_data:
            for a, b in bounds:
                if left <= a and b <= right:
                    covered |= set(range(a, b))
        assert sb.on_ack(0, [(left, right)], high_data) == len(covered - sacked)
        sacked |= covered
    lost: set[int] = set()
    in_flight_again: set[int] = set()
    for pick in lost_picks:
        record = sb.segments[pick]
        if not record.flags & SACKED:
            sb.mark_lost(record)
            octets = set(range(record.start, record.end))
            lost |= octets
            in_flight_again -= octets
    for pick in resent_picks:
        a, b = bounds[pick]
        sb.on_send(a, b - a, 1, True)
        in_flight_again |= set(range(a, b)) & lost - sacked
    assert sb.sacked_bytes() == len(sacked)
    assert all(sb.is_sacked(o) == (o in sacked) for o in range(high_data))
    outstanding = [o for o in range(high_data) if o not in sacked and o not in lost]
    expected = len(outstanding) + len(in_flight_again)
    assert sb.pipe(high_data) == expected
    due = sorted(lost - sacked - in_flight_again)
    found = sb.next_lost()
    assert (found is None) == (not due)
    if found is not None:
        assert found[0] == due[0] and all(o in due for o in range(found[0], sum(found)))
