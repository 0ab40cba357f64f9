"""Initial sequence numbers (RFC 6528, RFC 9293 §3.4.1) and TSval offsets (RFC 7323)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.tcp.isn import IsnGenerator, subkey, tuple_hash
from tests.support.checks import CHECK, ip

SECRET = bytes(range(32))
LOCAL = ip("198.18.0.10")
REMOTE = ip("198.18.0.1")
u32 = st.integers(0, 0xFFFFFFFF)
port = st.integers(1, 0xFFFF)
tuples = st.tuples(u32, port, u32, port)


def random_tuples(n: int, seed: int) -> list[tuple[int, int, int, int]]:
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        out.add((rng.getrandbits(32), rng.randrange(1, 65536), rng.getrandbits(32), 80))
    return sorted(out)


def test_isn_distinct_four_tuples_differ() -> None:
    """RFC 6528 §3: F() separates the sequence spaces of different 4-tuples."""
    gen = IsnGenerator(SECRET)
    isns = {gen.isn(0, *t) for t in random_tuples(2000, seed=1)}
    assert len(isns) >= 1999  # 32-bit values: ~5e-4 expected collisions


@pytest.mark.parametrize("field", range(4))
def test_isn_one_field_changed_differs(field: int) -> None:
    gen = IsnGenerator(SECRET)
    base = [LOCAL, 40000, REMOTE, 80]
    other = list(base)
    other[field] ^= 1
    assert gen.isn(5, *base) != gen.isn(5, *other)


@CHECK
@given(st.integers(0, 2**40), st.integers(0, 2**20), tuples)
def test_isn_later_time_advances_at_250_khz(now: int, ticks: int, t: tuple) -> None:
    """RFC 9293 §3.4.1 / RFC 6528 §3: M is a clock ticking every 4 µs."""
    gen = IsnGenerator(SECRET)
    a = gen.isn(now, *t)
    b = gen.isn(now + 4 * ticks, *t)
    assert (b - a) & 0xFFFFFFFF == ticks & 0xFFFFFFFF


def test_isn_same_four_microseconds_same_isn() -> None:
    gen = IsnGenerator(SECRET)
    t = (LOCAL, 40000, REMOTE, 80)
    assert gen.isn(400, *t) == gen.isn(403, *t) != gen.isn(404, *t)


def test_isn_clock_wraps_modulo_2_32() -> None:
    """The 4-µs clock wraps every 2**32 ticks (about 4.77 hours)."""
    gen = IsnGenerator(SECRET)
    t = (LOCAL, 40000, REMOTE, 80)
    period = 4 * 2**32
    for now in (0, 12345, period - 4, period, 10 * period + 8):
        isn = gen.isn(now, *t)
        assert 0 <= isn <= 0xFFFFFFFF
        assert isn == gen.isn(now + period, *t)
    assert (gen.isn(period, *t) - gen.isn(period - 4, *t)) & 0xFFFFFFFF == 1


def test_isn_different_secrets_differ() -> None:
    """RFC 6528 §3: the ISN depends on the secret key."""
    a = IsnGenerator(SECRET)
    b = IsnGenerator(bytes(range(1, 33)))
    sample = random_tuples(200, seed=2)
    assert sum(a.isn(0, *t) == b.isn(0, *t) for t in sample) == 0
    assert sum(a.ts_offset(*t) == b.ts_offset(*t) for t in sample) == 0


def test_isn_long_secret_accepted_short_secret_raises() -> None:
    """RFC 6528 §3: the secret should be at least 128 bits."""
    t = (LOCAL, 40000, REMOTE, 80)
    assert IsnGenerator(b"k" * 64).isn(0, *t) != IsnGenerator(b"k" * 65).isn(0, *t)
    with pytest.raises(ValueError):
        IsnGenerator(b"k" * 15)


def test_ts_offset_stable_per_tuple_distinct_across_tuples() -> None:
    """RFC 7323 §5.4, §7: a fixed random offset per connection."""
    gen = IsnGenerator(SECRET)
    sample = random_tuples(2000, seed=3)
    offsets = [gen.ts_offset(*t) for t in sample]
    assert offsets == [gen.ts_offset(*t) for t in sample]
    assert len(set(offsets)) >= 1999
    assert all(0 <= o <= 0xFFFFFFFF for o in offsets)


def test_ts_offset_independent_of_isn_hash() -> None:
    """The other half of the digest: knowing TSval - now_ms does not give F()."""
    gen = IsnGenerator(SECRET)
    sample = random_tuples(200, seed=4)
    assert sum(gen.ts_offset(*t) == gen.isn(0, *t) for t in sample) == 0


def test_a_subkey_is_fixed_per_secret_and_purpose_and_none_is_the_isn_key() -> None:
    """RFC 6056 §3.3.4 keys its port hash apart from the ISN's: a subkey
    hashes the same 4-tuples to other values than IsnGenerator does."""
    ports = subkey(SECRET, b"vfs-port")
    assert ports == subkey(SECRET, b"vfs-port")
    assert ports != subkey(SECRET, b"other")
    assert ports != subkey(bytes(reversed(SECRET)), b"vfs-port")
    assert all(0 <= k < 1 << 64 for k in ports)
    isn = IsnGenerator(SECRET)
    sample = random_tuples(200, seed=5)
    assert sum(tuple_hash(*ports, *t) >> 32 == isn.isn(0, *t) for t in sample) == 0
    with pytest.raises(ValueError):
        subkey(b"k" * 15, b"vfs-port")
