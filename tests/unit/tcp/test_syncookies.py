"""SYN cookies (RFC 4987 §3.6) and the options carried in TSval."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.tcp.syncookies import MSS_TABLE, TS_OPT_MASK, SynCookies, mss_index
from tests.support.checks import CHECK, ip

SECRET = b"0123456789abcdef0123456789abcdef"
LIFETIME = 120_000_000
TICK = LIFETIME // 8
T0 = 1_000_000_000_000  # an arbitrary monotonic µs clock
LOCAL = ip("198.18.0.10")
REMOTE = ip("198.18.0.1")
TUPLE = (LOCAL, 80, REMOTE, 40000)
MASK = 0xFFFFFFFF
u32 = st.integers(0, MASK)
port = st.integers(1, 0xFFFF)


def cookies() -> SynCookies:
    return SynCookies(SECRET, LIFETIME)


@pytest.mark.parametrize(
    ("peer_mss", "expected"),
    [
        (0, 536),
        (100, 536),
        (536, 536),
        (1299, 536),
        (1300, 1300),
        (1439, 1300),
        (1440, 1440),
        (1459, 1440),
        (1460, 1460),
        (9000, 1460),
    ],
)
def test_cookie_round_trip_returns_largest_table_mss_not_above_peer(
    peer_mss: int, expected: int
) -> None:
    """RFC 4987 §3.6: the MSS is encoded in the cookie (Linux msstab)."""
    sc = cookies()
    cookie = sc.make(T0, *TUPLE, 0x12345678, peer_mss)
    assert sc.check(T0 + 1000, *TUPLE, 0x12345678, cookie) == expected
    assert MSS_TABLE[mss_index(peer_mss)] == expected


@CHECK
@given(st.integers(0, 2**50), u32, port, u32, port, u32, st.integers(0, 65535))
def test_cookie_any_connection_round_trips(
    now: int, lip: int, lport: int, rip: int, rport: int, isn: int, mss: int
) -> None:
    sc = cookies()
    cookie = sc.make(now, lip, lport, rip, rport, isn, mss)
    assert 0 <= cookie <= MASK
    assert sc.check(now, lip, lport, rip, rport, isn, cookie) == MSS_TABLE[mss_index(mss)]


def test_cookie_single_bit_flip_anywhere_rejected() -> None:
    """Every single-bit change of 4-tuple, peer ISN or cookie fails the MAC
    (sampled: 400 connections x 144 bits)."""
    sc = cookies()
    rng = random.Random(7)
    for _ in range(400):
        fields = [
            rng.getrandbits(32),
            rng.getrandbits(16),
            rng.getrandbits(32),
            rng.getrandbits(16),
        ]
        isn = rng.getrandbits(32)
        now = T0 + rng.randrange(LIFETIME)
        cookie = sc.make(now, *fields, isn, rng.choice(MSS_TABLE))
        later = now + rng.randrange(TICK * 6)
        assert sc.check(later, *fields, isn, cookie) is not None
        for bit in range(32):
            assert sc.check(later, *fields, isn, cookie ^ (1 << bit)) is None
            assert sc.check(later, *fields, isn ^ (1 << bit), cookie) is None
        for i, width in enumerate((32, 16, 32, 16)):
            for bit in range(width):
                changed = list(fields)
                changed[i] ^= 1 << bit
                assert sc.check(later, *changed, isn, cookie) is None


def test_cookie_other_secret_rejected() -> None:
    cookie = cookies().make(T0, *TUPLE, 1, 1460)
    assert SynCookies(SECRET[::-1], LIFETIME).check(T0, *TUPLE, 1, cookie) is None


@pytest.mark.parametrize("phase", [0, 1, TICK // 2, TICK - 1])
def test_cookie_within_seven_eighths_of_lifetime_accepted(phase: int) -> None:
    sc = cookies()
    made = T0 + phase
    cookie = sc.make(made, *TUPLE, 99, 1460)
    for age in (0, 1, TICK, LIFETIME // 2, LIFETIME - TICK - 1):
        assert sc.check(made + age, *TUPLE, 99, cookie) == 1460, age


@pytest.mark.parametrize("phase", [0, 1, TICK // 2, TICK - 1])
def test_cookie_older_than_lifetime_rejected(phase: int) -> None:
    sc = cookies()
    made = T0 + phase
    cookie = sc.make(made, *TUPLE, 99, 1460)
    for age in (LIFETIME, LIFETIME + 1, LIFETIME + TICK, 2 * LIFETIME, 16 * TICK, 32 * TICK):
        assert sc.check(made + age, *TUPLE, 99, cookie) is None, age


def test_cookie_checked_before_made_rejected() -> None:
    """A clock that went back (or a cookie from the future) does not validate."""
    sc = cookies()
    cookie = sc.make(T0, *TUPLE, 99, 1460)
    assert sc.check(T0 - TICK, *TUPLE, 99, cookie) is None


def test_cookie_expiry_boundary_exact_for_tick_aligned_make() -> None:
    """Made at a tick start: accepted until just before the lifetime ends."""
    sc = cookies()
    made = (T0 // TICK) * TICK
    cookie = sc.make(made, *TUPLE, 5, 536)
    last_ok = made + LIFETIME - 1
    assert sc.check(last_ok, *TUPLE, 5, cookie) == 536
    assert sc.check(made + LIFETIME, *TUPLE, 5, cookie) is None


def test_cookie_short_lifetime_expires() -> None:
    sc = SynCookies(SECRET, lifetime_us=8_000)
    cookie = sc.make(40_000, *TUPLE, 5, 1460)
    assert sc.check(40_000 + 6_999, *TUPLE, 5, cookie) == 1460
    assert sc.check(40_000 + 8_000, *TUPLE, 5, cookie) is None


def test_cookie_bad_parameters_raise() -> None:
    with pytest.raises(ValueError):
        SynCookies(b"short")
    with pytest.raises(ValueError):
        SynCookies(SECRET, lifetime_us=7)


def test_cookie_other_four_tuple_in_100k_never_accepted() -> None:
    """A cookie made for one 4-tuple is refused for 100k others (forgery
    odds 2**-26 each), and cookies of distinct 4-tuples collide no more
    than 32-bit random values would (birthday bound: ~1.2 expected)."""
    sc = cookies()
    rng = random.Random(11)
    seen: set[int] = set()
    collisions = 0
    isn = 0xC0FFEE
    made = set()
    for _ in range(100_000):
        t = (rng.getrandbits(32), rng.randrange(1, 65536), rng.getrandbits(32), 443)
        if t in made:
            continue
        made.add(t)
        cookie = sc.make(T0, *t, isn, 1460)
        collisions += cookie in seen
        seen.add(cookie)
        other = (t[0], t[1], t[2] ^ (rng.getrandbits(32) or 1), t[3])
        assert sc.check(T0, *other, isn, cookie) is None
    assert collisions <= 8


@pytest.mark.parametrize("wscale", [None, 0, 1, 7, 14])
@pytest.mark.parametrize("sack", [False, True])
@pytest.mark.parametrize("tsval", [0, 1, 63, 64, 1000, 0x7FFFFFFF, MASK])
def test_ts_options_round_trip(wscale: int | None, sack: bool, tsval: int) -> None:
    """RFC 4987 §3.6: window scale and SACK-permitted ride in TSval (as Linux)."""
    sc = cookies()
    encoded = sc.encode_ts_options(tsval, wscale, sack)
    assert sc.decode_ts_options(encoded) == (wscale, sack)
    # Never ahead of the clock: RFC 7323 §5.3 (PAWS) needs TSvals to not go back.
    behind = (tsval - encoded) & MASK
    assert 0 <= behind < 64
    assert encoded & ~TS_OPT_MASK & MASK == (tsval - behind) & ~TS_OPT_MASK & MASK


def test_ts_options_plain_tsecr_without_marker_decodes_none() -> None:
    sc = cookies()
    assert sc.decode_ts_options(0) is None
    assert sc.decode_ts_options(0x1F) is None
    assert sc.decode_ts_options(0x1000) is None


def test_ts_options_window_scale_out_of_range_raises() -> None:
    """RFC 7323 §2.3: the shift is at most 14."""
    sc = cookies()
    with pytest.raises(ValueError):
        sc.encode_ts_options(100, 15, False)
    with pytest.raises(ValueError):
        sc.encode_ts_options(100, -1, False)
