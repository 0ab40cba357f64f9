"""Send and receive buffers (RFC 9293 §3.3.1, §3.10.7.4; RFC 2018 §4)."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.net.errors import LocalProtocolError
from stackservice.tcp.buffers import (
    MIN_RING,
    SHRINK_RING,
    SPARE_LARGE_BYTES,
    SPARE_RINGS,
    BufferMemory,
    ReceiveBuffer,
    SendBuffer,
)

from ._segments import CHECK

# ---------------------------------------------------------------- SendBuffer


def send_buffer_wrapped(capacity: int = 10, head: int = 7, held: bytes = b"") -> SendBuffer:
    """A SendBuffer whose ring head sits at `head`, holding `held`."""
    sb = SendBuffer(capacity)
    sb.write(b"\0" * head)
    sb.write(held[: capacity - head])
    sb.acknowledge(head)
    sb.write(held[capacity - head :])
    assert len(sb) == len(held)
    return sb


def peek(sb: SendBuffer, offset: int, length: int) -> bytes:
    out = bytearray(length)
    n = sb.peek_into(offset, out, 0, length)
    return bytes(out[:n])


def test_send_buffer_write_with_room_returns_count() -> None:
    sb = SendBuffer(8)
    assert sb.write(b"abc") == 3
    assert (len(sb), sb.free()) == (3, 5)
    assert peek(sb, 0, 3) == b"abc"


def test_send_buffer_write_when_full_returns_zero() -> None:
    sb = SendBuffer(4)
    assert sb.write(b"abcdef") == 4
    assert sb.write(b"x") == 0
    assert (len(sb), sb.free()) == (4, 0)
    assert peek(sb, 0, 10) == b"abcd"


def test_send_buffer_write_across_ring_end_wraps() -> None:
    sb = send_buffer_wrapped(10, head=7, held=b"0123456")
    assert peek(sb, 0, 7) == b"0123456"
    assert peek(sb, 2, 3) == b"234"  # inside the tail part
    assert peek(sb, 3, 4) == b"3456"  # after the wrap


def test_send_buffer_acknowledge_drops_front_bytes() -> None:
    sb = send_buffer_wrapped(10, head=7, held=b"0123456")
    sb.acknowledge(4)
    assert (len(sb), peek(sb, 0, 10)) == (3, b"456")
    assert sb.write(b"abcdefgh") == 7
    assert peek(sb, 0, 10) == b"456abcdefg"


def test_send_buffer_acknowledge_all_restarts_at_ring_start() -> None:
    sb = send_buffer_wrapped(10, head=7, held=b"012")
    sb.acknowledge(3)
    sb.write(b"abcdefghij")
    assert peek(sb, 0, 10) == b"abcdefghij"


def test_send_buffer_acknowledge_more_than_held_raises() -> None:
    sb = SendBuffer(10)
    sb.write(b"abc")
    with pytest.raises(LocalProtocolError):
        sb.acknowledge(4)
    with pytest.raises(LocalProtocolError):
        sb.acknowledge(-1)


def test_send_buffer_peek_into_frame_offset_copies_in_place() -> None:
    """A segment's payload is copied straight behind its headers."""
    sb = send_buffer_wrapped(10, head=6, held=b"ABCDEFGH")
    frame = memoryview(bytearray(b"h" * 5 + b"." * 6))
    assert sb.peek_into(2, frame, 5, 6) == 6
    assert bytes(frame) == b"hhhhhCDEFGH"


def test_send_buffer_peek_past_end_returns_short_count() -> None:
    sb = SendBuffer(10)
    sb.write(b"abcdef")
    out = bytearray(8)
    assert sb.peek_into(4, out, 0, 8) == 2
    assert sb.peek_into(6, out, 0, 8) == 0
    assert sb.peek_into(9, out, 0, 8) == 0
    assert len(sb) == 6  # nothing consumed


def test_send_buffer_peek_into_short_output_raises() -> None:
    sb = SendBuffer(10)
    sb.write(b"abcdef")
    out = bytearray(4)
    with pytest.raises(LocalProtocolError):
        sb.peek_into(0, out, 2, 4)
    assert out == bytearray(4)  # a bytearray target never grows
    with pytest.raises(LocalProtocolError):
        sb.peek_into(-1, out, 0, 1)


def test_send_buffer_set_capacity_grow_keeps_wrapped_data() -> None:
    sb = send_buffer_wrapped(10, head=7, held=b"0123456")
    sb.set_capacity(16)
    assert (sb.capacity, sb.free(), peek(sb, 0, 16)) == (16, 9, b"0123456")
    assert sb.write(b"abcdefghijk") == 9
    assert peek(sb, 0, 16) == b"0123456abcdefghi"


def test_send_buffer_set_capacity_below_held_clamps_to_held() -> None:
    sb = send_buffer_wrapped(10, head=7, held=b"0123456")
    sb.set_capacity(2)
    assert (sb.capacity, sb.free(), peek(sb, 0, 10)) == (7, 0, b"0123456")
    assert sb.write(b"x") == 0
    sb.acknowledge(5)
    assert sb.write(b"xyz") == 3  # room reopens after ACKs
    assert peek(sb, 0, 10) == b"56xyz"


def test_send_buffer_negative_capacity_raises() -> None:
    with pytest.raises(LocalProtocolError):
        SendBuffer(-1)
    with pytest.raises(LocalProtocolError):
        SendBuffer(4).set_capacity(-1)


_send_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.binary(min_size=0, max_size=40)),
        st.tuples(st.just("ack"), st.integers(0, 40)),
        st.tuples(st.just("peek"), st.integers(0, 40)),
        st.tuples(st.just("resize"), st.integers(0, 64)),
    ),
    max_size=60,
)


@CHECK
@given(st.integers(1, 48), _send_ops)
def test_send_buffer_random_operations_match_bytes_model(capacity: int, ops: list) -> None:
    """Any mix of writes, ACKs, peeks and resizes behaves as a plain byte string."""
    sb = SendBuffer(capacity)
    model = b""
    cap = capacity
    for op, arg in ops:
        if op == "write":
            taken = sb.write(arg)
            assert taken == min(len(arg), cap - len(model))
            model += arg[:taken]
        elif op == "ack":
            count = min(arg, len(model))
            sb.acknowledge(count)
            model = model[count:]
        elif op == "peek":
            assert peek(sb, arg, 20) == model[arg : arg + 20]
        else:
            sb.set_capacity(arg)
            cap = max(arg, len(model))
            assert sb.capacity == cap
        assert len(sb) == len(model)
        assert peek(sb, 0, cap) == model


# ------------------------------------------------- ring growth: SendBuffer

KIB = 1024


def test_new_buffers_allocate_no_ring() -> None:
    """A 256 KiB buffer pair costs a few hundred bytes until data arrives,
    not 512 KiB: 10 000 idle connections must not pin gigabytes."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pairs = [(SendBuffer(256 * KIB), ReceiveBuffer(256 * KIB)) for _ in range(100)]
        per_pair = (tracemalloc.get_traced_memory()[0] - before) / len(pairs)
    finally:
        tracemalloc.stop()
    assert per_pair < 1024
    sb, rb = pairs[0]
    assert (sb.ring_size(), sb.free(), sb.capacity) == (0, 256 * KIB, 256 * KIB)
    assert (rb.ring_size(), rb.window(), rb.capacity) == (0, 256 * KIB, 256 * KIB)


def test_send_buffer_first_write_allocates_min_ring() -> None:
    sb = SendBuffer(256 * KIB)
    assert sb.write(b"x") == 1
    assert sb.ring_size() == MIN_RING
    small = SendBuffer(100)  # never more than the capacity
    small.write(b"x")
    assert small.ring_size() == 100


def test_send_buffer_grows_by_doubling_up_to_capacity() -> None:
    sb = SendBuffer(20 * KIB)
    sizes = []
    for _ in range(20):
        sb.write(bytes(KIB))
        sizes.append(sb.ring_size())
    assert sorted(set(sizes)) == [4 * KIB, 8 * KIB, 16 * KIB, 20 * KIB]
    assert (sb.free(), sb.write(b"x")) == (0, 0)


def test_send_buffer_growth_across_wrap_keeps_data_in_order() -> None:
    """A wrapped ring is re-linearised on growth: offsets still map to bytes."""
    data = random.Random(1).randbytes(12 * KIB)
    sb = SendBuffer(64 * KIB)
    sb.write(bytes(3 * KIB))
    sb.acknowledge(3 * KIB)  # empty: head back at 0
    sb.write(bytes(3 * KIB))
    sb.write(data[:KIB])  # 4 KiB ring, full
    sb.acknowledge(3 * KIB)  # head at 3 KiB
    sb.write(data[KIB : 4 * KIB])  # wraps
    assert sb.ring_size() == 4 * KIB
    assert sb.write(data[4 * KIB :]) == 8 * KIB  # grows twice, from a wrapped ring
    assert sb.ring_size() == 16 * KIB
    assert peek(sb, 0, len(data)) == data
    assert peek(sb, 5000, 1448) == data[5000:6448]


def test_send_buffer_emptied_large_ring_is_released() -> None:
    """Released when emptied; the next fill starts at its size if the last
    one needed more than half of it, else at MIN_RING (the module
    docstring: refilling)."""
    sb = SendBuffer(256 * KIB)
    sb.write(bytes(100 * KIB))
    assert sb.ring_size() == 128 * KIB
    sb.acknowledge(100 * KIB - 1)
    assert sb.ring_size() == 128 * KIB  # not empty yet
    sb.acknowledge(1)
    assert (sb.ring_size(), len(sb), sb.free()) == (0, 0, 256 * KIB)
    sb.write(b"abc")  # the last fill held 100 of 128 KiB: no regrowing
    assert (sb.ring_size(), peek(sb, 0, 3)) == (128 * KIB, b"abc")
    sb.acknowledge(3)
    assert sb.ring_size() == 0
    sb.write(b"de")  # the last fill held 3 bytes: a first ring again
    assert (sb.ring_size(), peek(sb, 0, 2)) == (MIN_RING, b"de")


def test_send_buffer_refill_copies_nothing_a_pass() -> None:
    """A sender whose ACKs keep up empties its ring every pass: each fill
    after the first lands in one ring of the size the first grew to, so no
    byte is copied to re-linearise (from 4 KiB it was 4 + 8 + ... + 64 KiB
    copied per 100 KiB sent), and the ring is the pool's, not a new one."""
    memory = BufferMemory(1 << 30)
    sb = SendBuffer(256 * KIB, memory)
    chunk = bytes(range(256)) * 4
    for fill in range(3):
        sizes = set()
        for _ in range(100):
            assert sb.write(chunk) == KIB
            sizes.add(sb.ring_size() // KIB)
        assert peek(sb, 99 * KIB, KIB) == chunk
        sb.acknowledge(100 * KIB)
        assert sizes == ({4, 8, 16, 32, 64, 128} if fill == 0 else {128})
    assert memory.spare_large_bytes == (8 + 16 + 32 + 64 + 128) * KIB


def test_send_buffer_emptied_small_ring_is_kept() -> None:
    """Below SHRINK_RING an emptied ring stays: request/response traffic of a
    few segments reallocates nothing (no grow/shrink thrash)."""
    sb = SendBuffer(256 * KIB)
    for _ in range(3):
        sb.write(bytes(SHRINK_RING // 2))
        sb.acknowledge(SHRINK_RING // 2)
        assert sb.ring_size() == SHRINK_RING // 2


def test_send_buffer_set_capacity_shrinks_ring_grows_lazily() -> None:
    sb = SendBuffer(256 * KIB)
    sb.write(bytes(40 * KIB))
    assert sb.ring_size() == 64 * KIB
    sb.set_capacity(1024 * KIB)
    assert sb.ring_size() == 64 * KIB  # growing waits for data
    sb.acknowledge(35 * KIB)
    sb.set_capacity(10 * KIB)
    assert (sb.capacity, sb.ring_size(), sb.free()) == (10 * KIB, 8 * KIB, 5 * KIB)
    assert peek(sb, 0, 10 * KIB) == bytes(5 * KIB)
    sb.acknowledge(5 * KIB)
    sb.set_capacity(2 * KIB)
    assert sb.ring_size() == 0  # empty and larger than the capacity: released


_sizes = st.one_of(
    st.sampled_from([1, 536, 1448, 4 * KIB, 9000, 30 * KIB]), st.integers(0, 70 * KIB)
)
_growing_send_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), _sizes),
        st.tuples(st.just("ack"), _sizes),
        st.tuples(st.just("ack_all"), st.just(0)),
        st.tuples(st.just("peek"), st.integers(0, 100 * KIB)),
        st.tuples(st.just("resize"), st.integers(0, 300 * KIB)),
    ),
    min_size=20,
    max_size=80,
)


@CHECK
@given(
    st.one_of(st.sampled_from([5000, 20 * KIB, 100 * KIB, 256 * KIB]), st.integers(1, 300 * KIB)),
    _growing_send_ops,
    st.integers(0, 2**32 - 1),
)
def test_send_buffer_growth_random_operations_match_bytes_model(
    capacity: int, ops: list, seed: int
) -> None:
    """Writes, ACKs, peeks and resizes at sizes that grow, wrap, release and
    regrow the ring behave as a plain byte string, and the ring never
    exceeds the capacity."""
    rng = random.Random(seed)
    sb = SendBuffer(capacity)
    model = b""
    cap = capacity
    for op, arg in ops:
        if op == "write":
            data = rng.randbytes(arg)
            taken = sb.write(data)
            assert taken == min(arg, cap - len(model))
            model += data[:taken]
        elif op in ("ack", "ack_all"):
            count = len(model) if op == "ack_all" else min(arg, len(model))
            sb.acknowledge(count)
            model = model[count:]
        elif op == "peek":
            assert peek(sb, arg, 1448) == model[arg : arg + 1448]
        else:
            sb.set_capacity(arg)
            cap = max(arg, len(model))
        assert (len(sb), sb.free(), sb.capacity) == (len(model), cap - len(model), cap)
        assert len(model) <= sb.ring_size() <= cap
        assert peek(sb, 0, len(model) + 1) == model


# ------------------------------------------------------------- ReceiveBuffer


def drain(rb: ReceiveBuffer) -> bytes:
    return rb.read(rb.readable())


def test_receive_buffer_in_order_segment_returns_its_length() -> None:
    """RFC 9293 §3.10.7.4: in-order text advances RCV.NXT by its length."""
    rb = ReceiveBuffer(16)
    assert rb.accept(0, b"hello") == 5
    assert rb.accept(0, b" world") == 6
    assert (rb.readable(), rb.window(), rb.has_out_of_order()) == (11, 5, False)
    assert rb.read(5) == b"hello"
    assert rb.window() == 10
    assert drain(rb) == b" world"


def test_receive_buffer_empty_segment_returns_zero() -> None:
    rb = ReceiveBuffer(16)
    assert rb.accept(0, b"") == 0
    assert rb.accept(3, b"") == 0
    assert not rb.has_out_of_order()


def test_receive_buffer_out_of_order_then_hole_filled_returns_whole_run() -> None:
    """RFC 9293 §3.10.7.4: held segments become in order once the hole fills."""
    rb = ReceiveBuffer(32)
    assert rb.accept(3, b"def") == 0
    assert rb.accept(9, b"jk") == 0
    assert rb.accept(6, b"ghi") == 0
    assert (rb.readable(), rb.ooo_bytes()) == (0, 8)
    assert rb.accept(0, b"abc") == 11
    assert (rb.readable(), rb.ooo_bytes(), rb.has_out_of_order()) == (11, 0, False)
    assert drain(rb) == b"abcdefghijk"


def test_receive_buffer_hole_filled_partly_returns_up_to_next_hole() -> None:
    rb = ReceiveBuffer(32)
    rb.accept(4, b"ef")
    rb.accept(10, b"kl")
    assert rb.accept(0, b"abcd") == 6
    assert rb.sack_blocks(4) == [(4, 6)]  # offsets now from the new RCV.NXT
    assert rb.accept(2, b"ijkl") == 0  # overlaps the held range's start
    assert rb.sack_blocks(4) == [(2, 6)]
    assert rb.accept(0, b"gh") == 6
    assert drain(rb) == b"abcdefghijkl"


# Held ranges are "x" bytes at [4, 8) and [12, 16) (offsets from RCV.NXT); a
# new segment of "n" bytes arrives. Bytes already held must stay "x".
OVERLAPS = {
    "inside_held": (5, 2, "....xxxx....xxxx", [(4, 8), (12, 16)]),
    "equal_to_held": (4, 4, "....xxxx....xxxx", [(4, 8), (12, 16)]),
    "left_overlap": (2, 4, "..nnxxxx....xxxx", [(2, 8), (12, 16)]),
    "right_overlap": (6, 4, "....xxxxnn..xxxx", [(4, 10), (12, 16)]),
    "touching_left": (2, 2, "..nnxxxx....xxxx", [(2, 8), (12, 16)]),
    "touching_right": (8, 1, "....xxxxn...xxxx", [(4, 9), (12, 16)]),
    "bridging_gap": (8, 4, "....xxxxnnnnxxxx", [(4, 16)]),
    "spanning_both": (2, 16, "..nnxxxxnnnnxxxxnn", [(2, 18)]),
    "covering_one": (3, 7, "...nxxxxnn..xxxx", [(3, 10), (12, 16)]),
    "disjoint_between": (9, 2, "....xxxx.nn.xxxx", [(4, 8), (9, 11), (12, 16)]),
}


def receive_buffer_with_two_holes() -> ReceiveBuffer:
    rb = ReceiveBuffer(32)
    rb.accept(4, b"xxxx")
    rb.accept(12, b"xxxx")
    return rb


def held_view(rb: ReceiveBuffer, length: int) -> str:
    """The first `length` bytes from RCV.NXT, '.' where nothing is held:
    filling from RCV.NXT with dots stores dots only in the holes."""
    assert rb.accept(0, b"." * length) == length
    return drain(rb).decode()


@pytest.mark.parametrize("case", sorted(OVERLAPS))
def test_receive_buffer_overlapping_segment_keeps_held_bytes(case: str) -> None:
    """RFC 9293 §3.10.7.4 leaves overlaps to us: first-arrived bytes win and
    every byte is stored once (module docstring of buffers.py)."""
    offset, length, expected, blocks = OVERLAPS[case]
    rb = receive_buffer_with_two_holes()
    assert rb.accept(offset, b"n" * length) == 0
    assert sorted(rb.sack_blocks(64)) == blocks
    assert rb.ooo_bytes() == sum(right - left for left, right in blocks)
    assert held_view(rb, len(expected)) == expected


def test_receive_buffer_duplicate_out_of_order_segment_changes_nothing() -> None:
    rb = receive_buffer_with_two_holes()
    assert rb.accept(12, b"yyyy") == 0
    assert (rb.ooo_bytes(), sorted(rb.sack_blocks(4))) == (8, [(4, 8), (12, 16)])
    assert held_view(rb, 16) == "....xxxx....xxxx"


def test_receive_buffer_in_order_segment_over_held_data_keeps_held_bytes() -> None:
    rb = receive_buffer_with_two_holes()
    assert rb.accept(0, b"abcdefghij") == 10
    assert drain(rb) == b"abcdxxxxij"
    assert rb.sack_blocks(4) == [(2, 6)]


def test_receive_buffer_unread_data_shrinks_window() -> None:
    rb = ReceiveBuffer(20)
    rb.accept(0, b"abcde")
    assert rb.window() == 15
    rb.read(2)
    assert rb.window() == 17


def test_receive_buffer_out_of_order_data_keeps_window_right_edge() -> None:
    """Out-of-order bytes lie inside the advertised window: RCV.NXT + window
    never moves left (RFC 9293 §3.8.6) while segments arrive."""
    rb = ReceiveBuffer(20)
    rb.accept(0, b"ab")  # RCV.NXT = 2
    edge = 2 + rb.window()
    rb.accept(6, b"ijkl")
    assert (rb.window(), rb.ooo_bytes()) == (18, 4)
    assert rb.accept(0, b"cdefgh") == 10  # RCV.NXT = 12
    assert 12 + rb.window() == edge


def test_receive_buffer_data_beyond_ring_is_trimmed() -> None:
    """RFC 9293 §3.10.7.4: text beyond the window is trimmed (a guard: the
    caller trims first)."""
    rb = ReceiveBuffer(8)
    rb.accept(0, b"ab")
    assert rb.accept(2, b"efghij") == 0
    assert rb.sack_blocks(4) == [(2, 6)]  # "ij" did not fit
    assert rb.accept(0, b"cdXYZ") == 6  # "XYZ" overlaps held bytes: dropped
    assert drain(rb) == b"abcdefgh"
    assert rb.accept(9, b"z") == 0
    assert rb.accept(0, b"0123456789") == 8
    assert drain(rb) == b"01234567"


def test_receive_buffer_negative_offset_raises() -> None:
    with pytest.raises(LocalProtocolError):
        ReceiveBuffer(8).accept(-1, b"a")


def test_receive_buffer_sack_blocks_most_recent_first() -> None:
    """RFC 2018 §4: the first block holds the segment that triggered the ACK,
    then the most recently reported blocks."""
    rb = ReceiveBuffer(64)
    rb.accept(10, b"k")
    rb.accept(20, b"u")
    rb.accept(30, b"E")
    assert rb.sack_blocks(4) == [(30, 31), (20, 21), (10, 11)]
    rb.accept(11, b"l")  # extends the oldest block: it becomes the first
    assert rb.sack_blocks(4) == [(10, 12), (30, 31), (20, 21)]
    assert rb.sack_blocks(2) == [(10, 12), (30, 31)]
    assert rb.sack_blocks(0) == []


def test_receive_buffer_duplicate_segment_reports_its_block_first() -> None:
    """RFC 2018 §4: the first block contains the segment that triggered the ACK,
    even when that segment was a duplicate."""
    rb = ReceiveBuffer(64)
    rb.accept(10, b"k")
    rb.accept(20, b"u")
    rb.accept(10, b"k")
    assert rb.sack_blocks(4) == [(10, 11), (20, 21)]


def test_receive_buffer_sack_blocks_after_rcv_nxt_advances_shift_left() -> None:
    """RFC 2018 §4: blocks are reported relative to the current RCV.NXT, and a
    segment that advanced RCV.NXT is not a block."""
    rb = ReceiveBuffer(64)
    rb.accept(10, b"k")
    rb.accept(20, b"u")
    assert rb.accept(0, b"0123") == 4
    assert rb.sack_blocks(4) == [(16, 17), (6, 7)]
    rb.read(4)
    assert rb.sack_blocks(4) == [(16, 17), (6, 7)]  # reading does not move RCV.NXT


def test_receive_buffer_hole_bound_refuses_new_range() -> None:
    """The out-of-order structure is bounded: a segment opening one range too
    many is refused (counted TCP_RCV_BUFFER_FULL by the TCB)."""
    rb = ReceiveBuffer(64, max_ranges=3)
    for offset in (2, 6, 10):
        assert rb.accept(offset, b"x") == 0 and not rb.refused
    assert rb.accept(14, b"y") == 0 and rb.refused
    assert rb.accept(4, b"z") == 0 and rb.refused
    assert (rb.ooo_bytes(), len(rb.sack_blocks(8))) == (3, 3)
    assert rb.accept(7, b"y") == 0 and not rb.refused  # touches a range: accepted
    assert rb.accept(3, b"yyy") == 0 and not rb.refused  # bridges two ranges
    assert sorted(rb.sack_blocks(8)) == [(2, 8), (10, 11)]
    assert rb.accept(0, b"ab") == 8 and not rb.refused


def test_receive_buffer_set_capacity_grow_keeps_unread_and_held_data() -> None:
    rb = ReceiveBuffer(10)
    rb.accept(0, b"abcdefg")
    rb.read(6)  # head near the ring end
    rb.accept(0, b"hij")
    rb.accept(2, b"mn")  # wraps
    rb.set_capacity(20)
    assert (rb.capacity, rb.window(), rb.sack_blocks(4)) == (20, 16, [(2, 4)])
    assert rb.accept(0, b"kl") == 4
    assert drain(rb) == b"ghijklmn"


def test_receive_buffer_set_capacity_below_held_clamps() -> None:
    rb = ReceiveBuffer(20)
    rb.accept(0, b"abc")
    rb.accept(2, b"fg")
    rb.set_capacity(1)
    assert (rb.capacity, rb.window()) == (7, 4)
    assert rb.accept(0, b"de") == 4
    assert drain(rb) == b"abcdefg"


def test_receive_buffer_read_into_across_wrap_copies_in_order() -> None:
    rb = ReceiveBuffer(8)
    rb.accept(0, b"012345")
    assert rb.read(5) == b"01234"
    rb.accept(0, b"6789ab")
    out = bytearray(4)
    assert rb.read_into(out) == 4 and out == b"5678"
    view = memoryview(bytearray(10))
    assert rb.read_into(view) == 3 and bytes(view[:3]) == b"9ab"
    assert rb.read_into(view) == 0 and rb.read(4) == b""


def segmentations(draw, data: bytes) -> list[tuple[int, bytes]]:
    segments = []
    pos = 0
    while pos < len(data):
        n = draw(st.integers(1, 40))
        segments.append((pos, data[pos : pos + n]))
        pos += n
    return segments


@CHECK
@given(st.data(), st.binary(min_size=1, max_size=600), st.integers(0, 2**32 - 1))
def test_receive_buffer_random_order_with_duplicates_reassembles_exactly(
    data: st.DataObject, payload: bytes, seed: int
) -> None:
    """Any segmentation, in any order, with duplicates and re-segmented
    overlapping copies: the reader gets exactly the stream, and the returned
    in-order counts add up to its length (RCV.NXT ends at the stream's end)."""
    segments = segmentations(data.draw, payload)
    rng = random.Random(seed)
    copies = [seg for seg in segments if rng.random() < 0.3]
    for _ in range(rng.randrange(4)):  # overlapping re-segmented copies
        a = rng.randrange(len(payload))
        b = min(len(payload), a + rng.randrange(1, 60))
        copies.append((a, payload[a:b]))
    arrivals = segments + copies
    rng.shuffle(arrivals)
    rb = ReceiveBuffer(len(payload) + rng.randrange(3))
    rcv_nxt = 0
    total = 0
    received = bytearray()
    for position, chunk in arrivals:
        if position + len(chunk) <= rcv_nxt:
            continue  # the TCB drops wholly old data
        if position < rcv_nxt:  # and trims the front of a straddling one
            chunk = chunk[rcv_nxt - position :]
            position = rcv_nxt
        got = rb.accept(position - rcv_nxt, chunk)
        assert got >= 0 and not rb.refused
        rcv_nxt += got
        total += got
        if rng.random() < 0.5:
            received += rb.read(rng.randrange(1, 50))
    received += drain(rb)
    assert bytes(received) == payload
    assert total == len(payload)
    assert not rb.has_out_of_order() and rb.ooo_bytes() == 0


# ---------------------------------------------- ring growth: ReceiveBuffer


def test_receive_buffer_first_byte_allocates_min_ring() -> None:
    rb = ReceiveBuffer(256 * KIB)
    assert rb.accept(0, b"a") == 1
    assert (rb.ring_size(), rb.window()) == (MIN_RING, 256 * KIB - 1)


def test_receive_buffer_out_of_order_far_ahead_grows_ring() -> None:
    """A segment far inside the window needs the ring to reach its end; the
    window (from the capacity) is what was advertised, so it is accepted."""
    stream = random.Random(2).randbytes(200 * KIB)
    rb = ReceiveBuffer(256 * KIB)
    rb.accept(0, stream[:1000])
    rb.read(600)  # head off index 0
    far = 150 * KIB
    assert rb.accept(far - 1000, stream[far : far + 1448]) == 0
    assert rb.ring_size() == 256 * KIB  # 400 + 150 KiB + 1448 > 128 KiB
    assert rb.sack_blocks(4) == [(far - 1000, far - 1000 + 1448)]
    assert (rb.window(), rb.ooo_bytes()) == (256 * KIB - 400, 1448)
    assert rb.accept(0, stream[1000:far]) == far + 1448 - 1000  # hole filled
    assert rb.read(far + 1448) == stream[600 : far + 1448]
    assert rb.ring_size() == 0  # emptied and large: released


def test_receive_buffer_growth_across_wrap_keeps_unread_and_held_data() -> None:
    stream = random.Random(3).randbytes(16 * KIB)
    rb = ReceiveBuffer(64 * KIB)
    rb.accept(0, stream[:3000])
    rb.read(3000)  # empty: head back at 0
    rb.accept(0, stream[3000:6000])
    rb.read(2500)  # head at 2500 of 4096
    rb.accept(0, stream[6000:7000])  # wraps
    rb.accept(1500, stream[8500:9000])  # out of order, wrapped too
    assert rb.ring_size() == 4 * KIB
    assert rb.accept(3000, stream[10000:12000]) == 0  # grows: re-linearised
    assert rb.ring_size() == 8 * KIB
    assert rb.accept(0, stream[7000:10000]) == 5000
    assert rb.read(6500) == stream[5500:12000]


def test_receive_buffer_refused_segment_does_not_grow_ring() -> None:
    rb = ReceiveBuffer(256 * KIB, max_ranges=1)
    rb.accept(10, b"x")
    assert rb.accept(200 * KIB, b"y") == 0 and rb.refused
    assert rb.ring_size() == MIN_RING


def test_receive_buffer_emptied_ring_released_only_when_large() -> None:
    rb = ReceiveBuffer(256 * KIB)
    rb.accept(0, bytes(20 * KIB))
    rb.read(20 * KIB)
    assert rb.ring_size() == 32 * KIB  # empty but below SHRINK_RING: kept
    rb.accept(0, bytes(50 * KIB))
    rb.accept(10 * KIB, b"z")
    rb.read(50 * KIB)
    assert (rb.ring_size(), rb.readable()) == (64 * KIB, 0)  # "z" still held
    assert rb.accept(0, bytes(10 * KIB)) == 10 * KIB + 1
    assert rb.read(20 * KIB) == bytes(10 * KIB) + b"z"
    assert (rb.ring_size(), rb.readable(), rb.window()) == (0, 0, 256 * KIB)
    # That fill reached 60 KiB + 1 of 64: the next starts there, and the
    # one after that small fill at a first ring again.
    assert (rb.accept(0, b"q"), rb.ring_size(), rb.read(2)) == (1, 64 * KIB, b"q")
    assert (rb.accept(0, b"r"), rb.ring_size(), rb.read(2)) == (1, MIN_RING, b"r")


def test_receive_buffer_set_capacity_shrinks_ring_grows_lazily() -> None:
    rb = ReceiveBuffer(256 * KIB)
    rb.accept(0, b"abc")
    rb.accept(10 * KIB, b"z")
    assert rb.ring_size() == 16 * KIB
    rb.set_capacity(512 * KIB)
    assert rb.ring_size() == 16 * KIB
    rb.set_capacity(12 * KIB)
    assert (rb.capacity, rb.ring_size()) == (12 * KIB, 12 * KIB)
    assert rb.sack_blocks(1) == [(10 * KIB, 10 * KIB + 1)]
    assert rb.accept(0, bytes(10 * KIB)) == 10 * KIB + 1
    assert rb.read(3) == b"abc"


@CHECK
@given(
    st.one_of(st.sampled_from([5000, 40 * KIB, 150 * KIB]), st.integers(1, 150 * KIB)),
    st.sampled_from([536, 1448, 9000]),
    st.sampled_from([0, 3, 20, 1000]),
    st.floats(0, 1),
    st.integers(0, 2**32 - 1),
)
def test_receive_buffer_growth_random_order_reassembles_exactly(
    length: int, mss: int, spread: int, read_chance: float, seed: int
) -> None:
    """Segments of a stream larger than the first ring arrive reordered by up
    to `spread` segments, some twice, with reads (sometimes draining) in
    between; refused ones (too many holes) are retransmitted later. The
    reader gets exactly the stream, and the ring grows within the capacity,
    across wraps, and is released and regrown."""
    rng = random.Random(seed)
    payload = rng.randbytes(length)
    segments = [(pos, payload[pos : pos + mss]) for pos in range(0, length, mss)]
    arrivals = segments + [seg for seg in segments if rng.random() < 0.2]
    arrivals.sort(key=lambda seg: seg[0] + rng.uniform(0, spread * mss))
    rb = ReceiveBuffer(length + rng.randrange(3 * KIB))
    rcv_nxt = 0
    received = bytearray()
    while arrivals:
        position, chunk = arrivals.pop(0)
        if position + len(chunk) <= rcv_nxt:
            continue
        if position < rcv_nxt:
            chunk = chunk[rcv_nxt - position :]
            position = rcv_nxt
        rcv_nxt += rb.accept(position - rcv_nxt, chunk)
        if rb.refused:
            arrivals.append((position, chunk))  # the peer retransmits it
        assert rb.ring_size() <= rb.capacity
        assert rb.window() == rb.capacity - rb.readable()
        if rng.random() < read_chance:
            received += rb.read(rng.choice([1, mss, 3 * mss, 1 << 30]))
    received += drain(rb)
    assert bytes(received) == payload and rcv_nxt == length
    assert not rb.has_out_of_order() and rb.ooo_bytes() == 0


# ------------------------------------------------------------ BufferMemory


def test_buffer_memory_holds_every_ring_byte_from_growth_to_release() -> None:
    memory = BufferMemory(1 << 30)
    sb, rb = SendBuffer(256 * 1024, memory), ReceiveBuffer(256 * 1024, memory=memory)
    sb.write(bytes(100_000))
    rb.accept(0, bytes(5000))
    rb.accept(150_000, b"x")  # out of order: the ring reaches it
    assert memory.held == sb.ring_size() + rb.ring_size() > 250_000
    sb.acknowledge(100_000)  # a large ring, emptied: released
    assert memory.held == rb.ring_size()
    rb.set_capacity(8192)  # never below what is held: nothing freed yet
    assert memory.held == rb.ring_size()
    rb.release()
    sb.release()
    assert memory.held == 0


def test_a_closed_connections_first_rings_serve_the_next_without_its_bytes() -> None:
    """The pool (module docstring): the next buffer's first ring is the one
    given back, it is not charged while spare, and the new buffer shows
    only its own bytes, however the old ones lie in the reused ring."""
    memory = BufferMemory(1 << 30)
    old_send, old_receive = SendBuffer(65536, memory), ReceiveBuffer(65536, memory=memory)
    old_send.write(b"secret" * 100)
    old_receive.accept(0, b"private" * 100)
    old_receive.accept(200, b"z")  # out of order, kept in the ring
    old_send.release()
    old_receive.release()
    assert memory.spare == 2 and memory.held == 0
    new_send, new_receive = SendBuffer(65536, memory), ReceiveBuffer(65536, memory=memory)
    assert new_send.write(b"hello") == 5
    assert new_receive.accept(0, b"world") == 5
    assert memory.spare == 0 and memory.held == 2 * MIN_RING
    out = bytearray(64)
    assert new_send.peek_into(0, out, 0, 64) == 5 and out[:5] == b"hello"
    assert not new_receive.has_out_of_order()
    assert new_receive.read(64) == b"world"


def test_a_ring_that_grows_gives_its_first_ring_back_and_the_pool_is_bounded() -> None:
    memory = BufferMemory(1 << 30)
    buffers = [SendBuffer(1 << 20, memory) for _ in range(SPARE_RINGS + 10)]
    for buffer in buffers:
        buffer.write(bytes(MIN_RING))
    assert memory.spare == 0
    buffers[0].write(b"more")  # grows to 8 KiB: the 4 KiB ring is spare now
    assert memory.spare == 1 and buffers[0].ring_size() == 2 * MIN_RING
    for buffer in buffers:
        buffer.release()
    assert memory.spare == SPARE_RINGS  # the other first rings are freed
    assert memory.spare_large_bytes == 2 * MIN_RING  # the 8 KiB ring waits for a grower
    assert memory.held == 0


def test_an_emptied_large_ring_serves_the_next_fill_without_its_bytes() -> None:
    """A reader that keeps up empties a large ring every pass: released, it
    waits in the pool, and the next fill takes it from there (not
    allocated, so not zeroed), showing only its own bytes."""
    memory = BufferMemory(1 << 30)
    rb = ReceiveBuffer(256 * 1024, memory=memory)
    assert rb.accept(0, b"a" * 100_000) == 100_000
    assert rb.ring_size() == 128 * 1024 and memory.spare_large_bytes == 0
    assert rb.read(100_000) == b"a" * 100_000
    assert rb.ring_size() == 0 and memory.held == 0
    assert memory.spare_large_bytes == 128 * 1024
    assert rb.accept(0, b"b" * 40_000) == 40_000  # the spare 128 KiB ring
    assert rb.ring_size() == 128 * 1024 and memory.spare_large_bytes == 0
    assert rb.accept(0, b"c" * 60_000) == 60_000
    assert rb.read(100_000) == b"b" * 40_000 + b"c" * 60_000


def test_the_large_ring_pool_is_bounded_and_serves_by_size() -> None:
    memory = BufferMemory(1 << 30)
    ring = memory.take_ring(64 * 1024)
    memory.give_ring(ring)
    assert memory.take_ring(32 * 1024) is not ring  # another size: a new one
    assert memory.take_ring(64 * 1024) is ring
    for _ in range(2 * SPARE_LARGE_BYTES // (256 * 1024)):
        memory.give_ring(memoryview(bytearray(256 * 1024)))
    assert memory.spare_large_bytes == SPARE_LARGE_BYTES  # the rest were freed


def test_under_pressure_out_of_order_data_does_not_grow_a_ring() -> None:
    """One byte at the far edge of the window would grow the ring to the
    whole window: above the pressure mark (3/4) it is refused instead, as
    for a missing range slot; in-order data still grows the ring."""
    memory = BufferMemory(1 << 20)
    hog = SendBuffer(1 << 20, memory)
    hog.write(bytes(600_000))  # a 1 MiB ring: above 768 KiB
    rb = ReceiveBuffer(256 * 1024, memory=memory)
    memory.held -= hog.ring_size() - 800_000  # pressure, with room below the limit
    assert rb.accept(200_000, b"x") == 0 and rb.refused
    assert rb.ring_size() == 0 and not rb.has_out_of_order()
    assert rb.accept(0, bytes(3000)) == 3000 and not rb.refused
    assert rb.accept(1000, b"y") == 0 and rb.has_out_of_order()  # inside the ring: kept


def test_past_the_pressure_mark_a_refill_starts_small_again() -> None:
    """A fill that needed a large ring hands its size to the next one
    (the module docstring: refilling), but not past the pressure mark:
    there the next fill starts at a first ring and grows as needed."""
    memory = BufferMemory(1 << 20)  # pressure mark 768 KiB
    rb = ReceiveBuffer(256 * 1024, memory=memory)
    assert rb.accept(0, bytes(100_000)) == 100_000
    assert rb.read(100_000) == bytes(100_000) and rb.ring_size() == 0
    memory.held += 700_000  # the others' rings: 128 KiB more would pass the mark
    assert rb.accept(0, b"a") == 1
    assert rb.ring_size() == MIN_RING
    assert rb.read(1) == b"a"
    memory.held -= 700_000
    assert rb.accept(0, bytes(100_000)) == 100_000  # regrown from 4 KiB
    assert rb.read(100_000) == bytes(100_000)
    assert rb.accept(0, b"b") == 1 and rb.ring_size() == 128 * 1024


def test_near_the_pressure_mark_the_window_offers_only_what_the_memory_has() -> None:
    """Linux's tcp_memory_pressure clamp: past the mark the window is the
    ring's free room (at least MIN_RING), plus what is left below the mark;
    once memory frees, the whole window again."""
    memory = BufferMemory(1 << 20)  # pressure mark 768 KiB
    rb = ReceiveBuffer(256 * 1024, memory=memory)
    assert rb.window() == 256 * 1024
    rb.accept(0, bytes(10_000))  # a 16 KiB ring, 10 000 unread
    memory.held += 700_000  # the others' rings
    headroom = memory.pressure - memory.held
    assert rb.window() == 16384 - 10_000 + headroom
    memory.held += headroom + 50_000  # past the mark
    assert rb.window() == 16384 - 10_000
    fresh = ReceiveBuffer(256 * 1024, memory=memory)
    assert fresh.window() == MIN_RING  # a new connection is offered one ring
    memory.held -= 500_000
    assert rb.window() == 256 * 1024 - 10_000


def test_at_the_limit_rings_take_only_what_fits() -> None:
    memory = BufferMemory(64 * 1024)
    sb = SendBuffer(256 * 1024, memory)
    assert sb.write(bytes(100_000)) == 64 * 1024  # the ring grew to the limit, no further
    assert sb.write(b"more") == 0  # the app sees EAGAIN
    rb = ReceiveBuffer(256 * 1024, memory=memory)
    assert rb.accept(0, bytes(5000)) == MIN_RING  # a first ring, whatever the limit
    assert memory.held == 64 * 1024 + MIN_RING
    assert rb.accept(0, bytes(1000)) == 0  # no more (RCV.NXT moved): dropped, comes again
    assert rb.refused
    sb.acknowledge(64 * 1024)
    assert memory.held == MIN_RING
    assert rb.accept(0, bytes(1000)) == 1000


def test_a_first_ring_is_granted_whatever_the_marks() -> None:
    """Linux's tcp_rmem[0]/tcp_wmem[0] guarantee: a buffer with no ring may
    always take MIN_RING, or its connection could wait for ever on memory
    other connections hold; out of order too, within that ring."""
    memory = BufferMemory(64 * 1024)
    hog = SendBuffer(256 * 1024, memory)
    hog.write(bytes(100_000))
    sb, rb = SendBuffer(256 * 1024, memory), ReceiveBuffer(256 * 1024, memory=memory)
    assert sb.write(bytes(10_000)) == MIN_RING
    assert rb.accept(100, b"x") == 0 and rb.has_out_of_order()
    assert rb.accept(5000, b"y") == 0 and rb.refused  # past the first ring
    assert memory.held == 64 * 1024 + 2 * MIN_RING
