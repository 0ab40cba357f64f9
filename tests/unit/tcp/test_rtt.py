"""Retransmission timer: RFC 6298 estimator, backoff and RFC 7323 Appendix G."""

from __future__ import annotations

from fractions import Fraction
from math import floor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.tcp.rtt import RttEstimator, expected_samples
from tests.support.checks import CHECK

MIN_RTO = 200_000
MAX_RTO = 120_000_000
G = 1_000


def round_half_up(x: Fraction) -> int:
    return floor(x + Fraction(1, 2))


def ref_update(srtt: int, rttvar: int, r: int, n: int = 1) -> tuple[int, int]:
    """RFC 6298 (2.3) with gains alpha/n, beta/n, each result rounded to nearest."""
    alpha = Fraction(1, 8 * n)
    beta = Fraction(1, 4 * n)
    new_var = round_half_up((1 - beta) * rttvar + beta * abs(srtt - r))
    new_srtt = round_half_up((1 - alpha) * srtt + alpha * r)
    return new_srtt, new_var


def ref_rto(srtt: int, rttvar: int, lo: int = MIN_RTO, hi: int = MAX_RTO, g: int = G) -> int:
    """RFC 6298 (2.3) RTO = SRTT + max(G, K*RTTVAR), then (2.4)/(2.5)."""
    return min(max(srtt + max(g, 4 * rttvar), lo), hi)


def est_with_sample(r: int = 100_000, **kw: int) -> RttEstimator:
    est = RttEstimator(**kw)
    est.sample(r)
    return est


# --- (2.1) and (2.2): before and at the first sample -------------------------


def test_rtt_new_estimator_rto_is_initial_one_second() -> None:
    """RFC 6298 (2.1): RTO = 1 s before any measurement."""
    est = RttEstimator()
    assert est.rto_us == 1_000_000
    assert est.smoothed() == (None, None)
    assert (est.srtt_us, est.rttvar_us, est.backoffs, est.timeouts) == (None, None, 0, 0)


def test_rtt_first_sample_sets_srtt_r_and_rttvar_half() -> None:
    """RFC 6298 (2.2): SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, 4*RTTVAR)."""
    est = est_with_sample(300_000)
    assert est.smoothed() == (300_000, 150_000)
    assert est.rto_us == 300_000 + 4 * 150_000


def test_rtt_first_sample_small_rto_clamped_to_min() -> None:
    """RFC 6298 (2.4), with our 200 ms Linux-like minimum."""
    est = est_with_sample(10_000)
    assert est.rto_us == MIN_RTO


def test_rtt_first_sample_min_rto_configurable_to_rfc_one_second() -> None:
    """RFC 6298 (2.4) proper: RTO rounded up to 1 s."""
    est = est_with_sample(100_000, min_rto_us=1_000_000)
    assert est.rto_us == 1_000_000


def test_rtt_first_sample_tiny_rttvar_granularity_dominates() -> None:
    """RFC 6298 (2.2): max(G, K*RTTVAR) uses G when 4*RTTVAR < G."""
    est = est_with_sample(100, min_rto_us=1)
    assert est.smoothed() == (100, 50)
    assert est.rto_us == 100 + G


def test_rtt_huge_sample_rto_clamped_to_max() -> None:
    """RFC 6298 (2.5): an upper bound on RTO."""
    est = est_with_sample(200_000_000)
    assert est.rto_us == MAX_RTO


# --- (2.3): subsequent samples -------------------------------------------------


def test_rtt_subsequent_samples_follow_2_3() -> None:
    """RFC 6298 (2.3): RTTVAR with the old SRTT first, then SRTT; alpha 1/8, beta 1/4."""
    samples = [100_000, 120_000, 80_000, 300_000, 95_000, 95_000, 101_234, 7_000]
    est = RttEstimator()
    est.sample(samples[0])
    srtt, rttvar = samples[0], samples[0] // 2
    for r in samples[1:]:
        est.sample(r)
        srtt, rttvar = ref_update(srtt, rttvar, r)
        assert est.smoothed() == (srtt, rttvar)
        assert est.rto_us == ref_rto(srtt, rttvar)


def test_rtt_steady_samples_rttvar_decays_rto_reaches_min() -> None:
    """RFC 6298 (2.3): constant R drives RTTVAR down and SRTT to R."""
    est = est_with_sample(50_000)
    for _ in range(100):
        est.sample(50_000)
    assert est.srtt_us == 50_000
    assert est.rttvar_us is not None and est.rttvar_us <= 2  # rounding's fixed point
    assert est.rto_us == MIN_RTO


@CHECK
@given(st.lists(st.integers(0, 10_000_000), min_size=1, max_size=60))
def test_rtt_any_samples_stay_near_real_recurrence(samples: list[int]) -> None:
    """Rounding keeps SRTT within 4 us and RTTVAR within 6 us of exact (2.2)/(2.3)."""
    est = RttEstimator()
    srtt = Fraction(samples[0])
    rttvar = Fraction(samples[0], 2)
    est.sample(samples[0])
    for r in samples[1:]:
        rttvar = Fraction(3, 4) * rttvar + Fraction(1, 4) * abs(srtt - r)
        srtt = Fraction(7, 8) * srtt + Fraction(1, 8) * r
        est.sample(r)
        assert est.srtt_us is not None and est.rttvar_us is not None
        assert abs(est.srtt_us - srtt) <= 4
        assert abs(est.rttvar_us - rttvar) <= 6
        assert MIN_RTO <= est.rto_us <= MAX_RTO
        assert type(est.rto_us) is int


def test_rtt_negative_sample_ignored() -> None:
    est = est_with_sample(100_000)
    before = (est.smoothed(), est.rto_us)
    est.sample(-5)
    assert (est.smoothed(), est.rto_us) == before


# --- RFC 7323 Appendix G ------------------------------------------------------


@pytest.mark.parametrize(
    ("flight", "smss", "n"),
    [(0, 1460, 1), (1, 1460, 1), (2920, 1460, 1), (2921, 1460, 2), (14600, 1460, 5), (10, 0, 1)],
)
def test_rtt_expected_samples_flight_ceiling_over_two_smss(flight: int, smss: int, n: int) -> None:
    """RFC 7323 Appendix G: ExpectedSamples = ceiling(FlightSize / (SMSS * 2))."""
    assert expected_samples(flight, smss) == n


def test_rtt_sample_with_expected_samples_scales_gains() -> None:
    """RFC 7323 Appendix G: alpha' = alpha / n, beta' = beta / n."""
    est = est_with_sample(100_000)
    srtt, rttvar = 100_000, 50_000
    for r in (200_000, 150_000, 90_000):
        est.sample(r, expected_samples=5)
        srtt, rttvar = ref_update(srtt, rttvar, r, n=5)
        assert est.smoothed() == (srtt, rttvar)
        assert est.rto_us == ref_rto(srtt, rttvar)


def test_rtt_sample_expected_samples_one_is_plain_rfc6298() -> None:
    a = est_with_sample(100_000)
    b = est_with_sample(100_000)
    a.sample(180_000, expected_samples=1)
    b.sample(180_000, expected_samples=0)  # nonsense hints mean 1
    assert a.smoothed() == b.smoothed() == ref_update(100_000, 50_000, 180_000)


# --- (5.5) backoff and Karn ---------------------------------------------------


def test_rtt_timeout_doubles_rto() -> None:
    """RFC 6298 (5.5): RTO = RTO * 2."""
    est = RttEstimator()
    est.on_timeout()
    assert (est.rto_us, est.backoffs, est.timeouts) == (2_000_000, 1, 1)
    est.on_timeout()
    assert (est.rto_us, est.backoffs, est.timeouts) == (4_000_000, 2, 2)


def test_rtt_repeated_timeouts_rto_capped_at_max() -> None:
    """RFC 6298 (5.5) bounded by (2.5)."""
    est = RttEstimator(max_rto_us=60_000_000)
    for _ in range(200):
        est.on_timeout()
    assert est.rto_us == 60_000_000
    assert est.backoffs == 200


def test_rtt_new_ack_after_timeout_keeps_backoff_clears_timeouts() -> None:
    """Karn: without a valid sample the backed-off RTO stays; progress resets the retry count."""
    est = est_with_sample(100_000)
    base = est.rto_us
    est.on_timeout()
    est.on_timeout()
    est.on_new_ack()
    assert est.rto_us == 4 * base
    assert (est.backoffs, est.timeouts) == (2, 0)


def test_rtt_valid_sample_after_timeout_collapses_rto() -> None:
    """Note after RFC 6298 (5.7): a new measurement recomputes RTO, ending the backoff."""
    est = est_with_sample(100_000)
    est.on_timeout()
    est.on_timeout()
    est.sample(100_000)
    srtt, rttvar = ref_update(100_000, 50_000, 100_000)
    assert est.rto_us == ref_rto(srtt, rttvar)
    assert est.backoffs == 0
    assert est.timeouts == 2  # only forward progress (on_new_ack) clears it


# --- (5.7) SYN timeout --------------------------------------------------------


def test_rtt_syn_timed_out_no_sample_rto_becomes_three_seconds() -> None:
    """RFC 6298 (5.7): RTO re-initialized to 3 s when data transmission begins."""
    est = RttEstimator()
    est.on_timeout()
    est.on_syn_timeout_established()
    assert (est.rto_us, est.backoffs) == (3_000_000, 0)


def test_rtt_syn_timed_out_with_timestamp_sample_keeps_estimate() -> None:
    """RFC 6298 (5.7) skipped when a valid (RFC 7323) sample exists, as Linux."""
    est = RttEstimator()
    est.on_timeout()
    est.sample(100_000)
    rto = est.rto_us
    est.on_syn_timeout_established()
    assert est.rto_us == rto


# --- construction --------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"min_rto_us": 0},
        {"min_rto_us": 2_000_000, "max_rto_us": 1_000_000},
        {"initial_rto_us": 0},
        {"granularity_us": 0},
    ],
)
def test_rtt_init_bad_bounds_raise_value_error(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RttEstimator(**kw)


def test_rtt_initial_rto_outside_bounds_is_clamped() -> None:
    """RFC 6298 (2.4)/(2.5) apply to the initial value too."""
    assert RttEstimator(initial_rto_us=50_000).rto_us == MIN_RTO
    assert RttEstimator(initial_rto_us=10**9).rto_us == MAX_RTO
