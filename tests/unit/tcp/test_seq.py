"""Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4, RFC 1982)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.tcp import seq_add, seq_ge, seq_gt, seq_le, seq_lt, seq_sub

from ._segments import CHECK

u32 = st.integers(0, 0xFFFFFFFF)
ahead = st.integers(1, 2**31 - 1)  # distances with a defined order


@pytest.mark.parametrize(
    ("a", "b"),
    [(0xFFFFFFFF, 0), (0xFFFFFFF0, 0x10), (0x7FFFFFFF, 0x80000000), (0, 1), (2**31 + 5, 0)],
)
def test_seq_lt_across_wrap_orders_by_distance(a: int, b: int) -> None:
    """RFC 9293 §3.4: comparisons use modulo-2**32 arithmetic, so 2**32-1 < 0."""
    assert seq_lt(a, b) and seq_le(a, b)
    assert seq_gt(b, a) and seq_ge(b, a)
    assert not seq_gt(a, b) and not seq_ge(a, b)
    assert not seq_lt(b, a) and not seq_le(b, a)


@CHECK
@given(u32, ahead)
def test_seq_compare_b_ahead_of_a_ordered(a: int, d: int) -> None:
    """RFC 9293 §3.4: b = a + d (mod 2**32), 0 < d < 2**31, means a < b."""
    b = (a + d) & 0xFFFFFFFF
    assert (seq_lt(a, b), seq_le(a, b), seq_gt(a, b), seq_ge(a, b)) == (True, True, False, False)
    assert (seq_lt(b, a), seq_le(b, a), seq_gt(b, a), seq_ge(b, a)) == (False, False, True, True)


@CHECK
@given(u32)
def test_seq_compare_equal_is_le_and_ge_only(a: int) -> None:
    assert (seq_lt(a, a), seq_le(a, a), seq_gt(a, a), seq_ge(a, a)) == (False, True, False, True)


@CHECK
@given(u32, u32)
def test_seq_compare_complements_always_consistent(a: int, b: int) -> None:
    """ge is not lt and le is not gt for every pair, 2**31 apart included."""
    assert seq_ge(a, b) == (not seq_lt(a, b))
    assert seq_le(a, b) == (not seq_gt(a, b))
    assert seq_le(a, b) == (seq_lt(a, b) or a == b)


def test_seq_compare_exactly_half_apart_each_less_than_other() -> None:
    """RFC 1982 §3.2: undefined; we answer as Linux before() does."""
    a, b = 5, 5 + 2**31
    assert seq_lt(a, b) and seq_lt(b, a)
    assert not seq_gt(a, b) and not seq_gt(b, a)


@CHECK
@given(u32, u32, st.integers(-3, 3), st.integers(-3, 3))
def test_seq_compare_unreduced_inputs_same_result(a: int, b: int, ka: int, kb: int) -> None:
    """Callers may pass a + len without masking: only a - b mod 2**32 matters."""
    a2, b2 = a + ka * 2**32, b + kb * 2**32
    for f in (seq_lt, seq_le, seq_gt, seq_ge):
        assert f(a2, b2) == f(a, b)


def test_seq_add_wraps_and_accepts_negative() -> None:
    """RFC 9293 §3.4: sequence numbers wrap at 2**32."""
    assert seq_add(0xFFFFFFFF, 1) == 0
    assert seq_add(0xFFFFFFF0, 0x20) == 0x10
    assert seq_add(0, -1) == 0xFFFFFFFF
    assert seq_add(7, 0) == 7


def test_seq_sub_is_forward_distance_across_wrap() -> None:
    assert seq_sub(0, 0xFFFFFFFF) == 1
    assert seq_sub(0x10, 0xFFFFFFF0) == 0x20
    assert seq_sub(5, 5) == 0
    assert seq_sub(4, 5) == 0xFFFFFFFF


@CHECK
@given(u32, u32)
def test_seq_add_sub_inverse(a: int, n: int) -> None:
    assert seq_sub(seq_add(a, n), a) == n
    assert seq_add(a, seq_sub(n, a)) == n
