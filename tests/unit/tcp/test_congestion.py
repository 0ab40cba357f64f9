"""Congestion window policies: NewReno (RFC 5681, RFC 3465) and CUBIC (RFC 9438)."""

from __future__ import annotations

from math import cbrt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.tcp.congestion import (
    CONGESTION_CONTROLS,
    INFINITE_SSTHRESH,
    MAX_CWND,
    CongestionControl,
    Cubic,
    NewReno,
    initial_window,
    make_congestion_control,
)
from tests.support.checks import CHECK

MSS = 1460
IW = 10 * MSS
S = 1_000_000  # microseconds per second

# RFC 9438 constants, spelled out independently of the module under test.
C = 0.4
BETA = 0.7
ALPHA = 3 * (1 - BETA) / (1 + BETA)


def ack(cc: CongestionControl, acked: int, now: int = 0, srtt: int | None = None) -> None:
    """A cwnd-limited ACK: the whole window was in flight when it arrived."""
    cc.on_ack(acked, now, srtt, cc.cwnd)


def newreno_in_ca(cwnd: int = 20 * MSS) -> NewReno:
    """NewReno at the start of congestion avoidance with cwnd == ssthresh."""
    cc = NewReno(MSS)
    cc.on_loss(0, 2 * cwnd)
    assert cc.cwnd == cc.ssthresh == cwnd
    cc.on_recovery_exit(0)
    return cc


def cubic_after_loss(w_max_segments: int = 100, now: int = 0) -> Cubic:
    """CUBIC right after recovery from a loss at cwnd = in_flight = W_max."""
    cc = Cubic(MSS)
    cc.cwnd = w_max_segments * MSS
    cc.on_loss(now, cc.cwnd)
    cc.on_recovery_exit(now)
    return cc


def ref_w_cubic(t: float, w_max_seg: float, k: float) -> float:
    """RFC 9438 Figure 1 in segments."""
    return C * (t - k) ** 3 + w_max_seg


# --- initial window, construction ---------------------------------------------


@pytest.mark.parametrize(
    ("mss", "segments", "iw"),
    [
        (536, 10, 5360),  # 10 segments
        (1460, 10, 14600),  # 10 segments
        (8960, 10, 17920),  # 2 segments: max(2*MSS, 14600)
        (536, 4, 2144),  # RFC 3390: 4 segments
        (1460, 4, 4380),  # RFC 3390: 3 segments
        (8960, 4, 17920),  # RFC 3390: 2 segments
        (1460, 1, 1460),
    ],
)
def test_initial_window_mss_formula_rfc6928(mss: int, segments: int, iw: int) -> None:
    """RFC 6928 §2: IW = min(10*MSS, max(2*MSS, 14600)); RFC 3390 §1 for 4 segments."""
    assert initial_window(mss, segments) == iw
    for cls in (NewReno, Cubic):
        cc = cls(mss, segments)
        assert cc.cwnd == iw
        assert cc.ssthresh == INFINITE_SSTHRESH  # RFC 5681 §3.1


@pytest.mark.parametrize("name", CONGESTION_CONTROLS)
def test_make_congestion_control_known_name_builds_policy(name: str) -> None:
    cc = make_congestion_control(name, MSS)
    assert cc.name == name
    assert cc.cwnd == IW


def test_make_congestion_control_unknown_name_raises_naming_choices() -> None:
    with pytest.raises(ValueError, match="cubic, newreno"):
        make_congestion_control("bbr", MSS)


@pytest.mark.parametrize(("mss", "segments"), [(0, 10), (1460, 0)])
def test_congestion_init_bad_args_raise_value_error(mss: int, segments: int) -> None:
    with pytest.raises(ValueError):
        NewReno(mss, segments)


def test_set_mss_before_any_event_rescales_iw() -> None:
    """RFC 6928 §2: the IW follows the MSS the handshake settled on."""
    cc = NewReno(536)
    cc.set_mss(8960)
    assert (cc.mss, cc.cwnd) == (8960, 17920)


def test_set_mss_after_data_keeps_cwnd_bytes() -> None:
    cc = NewReno(MSS)
    ack(cc, MSS)
    cwnd = cc.cwnd
    cc.set_mss(536)
    assert (cc.mss, cc.cwnd) == (536, cwnd)


# --- slow start ------------------------------------------------------------------


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_slow_start_ack_grows_cwnd_by_acked_bytes(cls: type[CongestionControl]) -> None:
    """RFC 5681 §3.1 (2): cwnd += min(N, SMSS) per ACK; byte counting allows up to L."""
    cc = cls(MSS)
    ack(cc, MSS)
    assert cc.cwnd == IW + MSS
    ack(cc, 100)
    assert cc.cwnd == IW + MSS + 100


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_slow_start_stretch_ack_growth_capped_at_two_mss(cls: type[CongestionControl]) -> None:
    """RFC 3465 §2.2: L = 2*SMSS."""
    cc = cls(MSS)
    ack(cc, 5 * MSS)
    assert cc.cwnd == IW + 2 * MSS


def test_slow_start_doubles_cwnd_per_round_trip() -> None:
    """RFC 5681 §3.1: one MSS per ACKed segment doubles cwnd each RTT."""
    cc = NewReno(MSS)
    for _ in range(10):  # one ACK per segment of the IW
        cc.on_ack(MSS, 0, None, IW)
    assert cc.cwnd == 2 * IW


def test_slow_start_reaching_ssthresh_stops_there_then_congestion_avoidance() -> None:
    """RFC 5681 §3.1: slow start while cwnd < ssthresh, then congestion avoidance."""
    cc = NewReno(MSS)
    cc.ssthresh = IW + MSS + 500
    ack(cc, 2 * MSS)
    assert cc.cwnd == IW + MSS + 500  # capped at ssthresh
    assert not cc.in_slow_start()
    ack(cc, 2 * MSS)
    assert cc.cwnd == IW + MSS + 500  # congestion avoidance: not yet a window of bytes


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_slow_start_app_limited_ack_does_not_grow(cls: type[CongestionControl]) -> None:
    """RFC 7661: cwnd is not validated while less than half of it is in flight."""
    cc = cls(MSS)
    cc.on_ack(MSS, 0, None, IW // 2 - 1)
    assert cc.cwnd == IW
    cc.on_ack(MSS, 0, None, IW // 2)
    assert cc.cwnd == IW + MSS


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_ack_nothing_acked_no_change(cls: type[CongestionControl]) -> None:
    cc = cls(MSS)
    ack(cc, 0)
    assert cc.cwnd == IW


# --- NewReno congestion avoidance -----------------------------------------------


def test_newreno_congestion_avoidance_window_of_acks_grows_one_mss() -> None:
    """RFC 5681 §3.1 / RFC 3465 §2.1: +1 SMSS once a cwnd of bytes is ACKed."""
    cc = newreno_in_ca(20 * MSS)
    for i in range(20):
        assert cc.cwnd == 20 * MSS, i
        ack(cc, MSS)
    assert cc.cwnd == 21 * MSS
    for _ in range(21):
        ack(cc, MSS)
    assert cc.cwnd == 22 * MSS


def test_newreno_congestion_avoidance_app_limited_ack_does_not_grow() -> None:
    """RFC 7661: an unused window is not grown."""
    cc = newreno_in_ca(20 * MSS)
    for _ in range(100):
        cc.on_ack(MSS, 0, None, 9 * MSS)
    assert cc.cwnd == 20 * MSS


def test_newreno_congestion_avoidance_stretch_ack_grows_one_mss() -> None:
    """RFC 5681 §3.1: at most one SMSS per ACK in congestion avoidance."""
    cc = newreno_in_ca(20 * MSS)
    ack(cc, 100 * MSS)
    assert cc.cwnd == 21 * MSS


# --- NewReno loss, recovery, timeout, idle -----------------------------------------


def test_newreno_loss_halves_flight_size() -> None:
    """RFC 5681 (4): ssthresh = max(FlightSize / 2, 2*SMSS); cwnd = ssthresh."""
    cc = NewReno(MSS)
    cc.on_loss(0, 30_001)
    assert (cc.ssthresh, cc.cwnd) == (15_000, 15_000)


def test_newreno_loss_small_flight_floored_at_two_mss() -> None:
    """RFC 5681 (4): the 2*SMSS floor."""
    cc = NewReno(MSS)
    cc.on_loss(0, 2000)
    assert (cc.ssthresh, cc.cwnd) == (2 * MSS, 2 * MSS)


def test_newreno_recovery_exit_full_ack_deflates_to_ssthresh() -> None:
    """RFC 6582 §3.2 step 3, option (2): cwnd = ssthresh."""
    cc = NewReno(MSS)
    cc.on_loss(0, 40 * MSS)
    cc.cwnd += 7 * MSS  # the caller's RFC 6582 inflation
    cc.on_recovery_exit(0)
    assert cc.cwnd == cc.ssthresh == 20 * MSS


def test_newreno_recovery_exit_small_flight_option_one() -> None:
    """RFC 6582 §3.2 step 3, option (1): min(ssthresh, max(FlightSize, SMSS) + SMSS)."""
    cc = NewReno(MSS)
    cc.on_loss(0, 40 * MSS)
    cc.on_recovery_exit(0, in_flight=3 * MSS)
    assert cc.cwnd == 4 * MSS
    cc.on_recovery_exit(0, in_flight=0)
    assert cc.cwnd == 2 * MSS
    cc.on_recovery_exit(0, in_flight=100 * MSS)
    assert cc.cwnd == 20 * MSS


def test_recovery_exit_without_loss_leaves_cwnd() -> None:
    cc = NewReno(MSS)
    cc.on_recovery_exit(0)
    assert cc.cwnd == IW


def test_newreno_timeout_cwnd_one_mss_ssthresh_half_flight() -> None:
    """RFC 5681 §3.1: LW = 1 SMSS; ssthresh per (4)."""
    cc = NewReno(MSS)
    cc.on_timeout(0, 40 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 20 * MSS)


def test_newreno_repeated_timeout_holds_ssthresh() -> None:
    """RFC 5681 §3.1: ssthresh held constant when the retransmission times out again."""
    cc = NewReno(MSS)
    cc.on_timeout(0, 40 * MSS)
    cc.on_timeout(1, 2 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 20 * MSS)
    ack(cc, MSS)  # progress: a later RTO is a new loss event
    cc.on_timeout(2, 10 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 5 * MSS)


def test_newreno_slow_start_after_timeout_abc_limit_one_mss() -> None:
    """RFC 3465 §2.3: L = 1*SMSS in the slow start that follows an RTO."""
    cc = NewReno(MSS)
    cc.on_timeout(0, 40 * MSS)
    ack(cc, 10 * MSS)
    assert cc.cwnd == 2 * MSS
    cc.on_loss(0, 40 * MSS)  # a later loss ends that slow start
    cc.ssthresh = INFINITE_SSTHRESH
    ack(cc, 10 * MSS)
    assert cc.cwnd == 22 * MSS


def test_newreno_idle_longer_than_rto_restarts_at_iw() -> None:
    """RFC 5681 §4.1: cwnd = min(cwnd, RW = IW); ssthresh keeps 3/4 of it (RFC 2861 §3)."""
    cc = newreno_in_ca(20 * MSS)
    cc.cwnd = 40 * MSS  # grown in congestion avoidance
    cc.on_idle(10 * S, idle_us=2 * S, rto_us=S)
    assert cc.cwnd == IW
    assert cc.ssthresh == 30 * MSS
    assert cc.in_slow_start()


def test_newreno_idle_shorter_than_rto_keeps_cwnd() -> None:
    """RFC 5681 §4.1 applies only after more than one RTO of idleness."""
    cc = newreno_in_ca(40 * MSS)
    cc.on_idle(10 * S, idle_us=S, rto_us=S)
    assert (cc.cwnd, cc.ssthresh) == (40 * MSS, 40 * MSS)


def test_newreno_idle_small_cwnd_not_raised() -> None:
    """RFC 5681 §4.1: min(cwnd, RW) never raises cwnd."""
    cc = NewReno(MSS)
    cc.on_timeout(0, 4 * MSS)
    cc.on_idle(10 * S, idle_us=5 * S, rto_us=S)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 2 * MSS)


# --- CUBIC ---------------------------------------------------------------------------


def test_cubic_loss_ssthresh_beta_flight_and_w_max_cwnd() -> None:
    """RFC 9438 §4.6: ssthresh = flight_size * 0.7, cwnd = ssthresh; W_max = cwnd."""
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.on_loss(0, 90 * MSS)
    assert cc.ssthresh == cc.cwnd == 63 * MSS
    assert cc.w_max == 100 * MSS
    assert cc.cwnd_prior == 100 * MSS


def test_cubic_loss_small_flight_floored_at_two_mss() -> None:
    """RFC 9438 §4.6: ssthresh = max(ssthresh, 2), cwnd = max(ssthresh, 2)."""
    cc = Cubic(MSS)
    cc.on_loss(0, MSS)
    assert cc.ssthresh == cc.cwnd == 2 * MSS


def test_cubic_first_ack_after_loss_epoch_k_and_w_cubic_zero() -> None:
    """RFC 9438 §4.2 Figure 2: K = cbrt((W_max - cwnd_epoch) / C); W_cubic(0) = cwnd_epoch."""
    cc = cubic_after_loss(100)
    ack(cc, MSS, now=5 * S)
    assert cc.epoch_active
    assert cc.cwnd_epoch == 70 * MSS
    assert cc.k_s == pytest.approx(cbrt(100 * (1 - BETA) / C))
    assert cc.w_cubic(0.0) == pytest.approx(70 * MSS)
    # At t = 0, W_est (cwnd_epoch plus a little) > W_cubic: the Reno-friendly
    # region of §4.3 sets cwnd = W_est.
    w_est = 70 * MSS + ALPHA * MSS * MSS / (70 * MSS)
    assert cc.w_est == pytest.approx(w_est)
    assert cc.cwnd == int(w_est)


def test_cubic_full_window_acks_follow_w_cubic_through_k() -> None:
    """RFC 9438 §4.2, §4.4, §4.5: concave up to W_max at t = K, convex beyond."""
    t0 = 5 * S
    cc = cubic_after_loss(100)
    ack(cc, MSS, now=t0)
    k = cbrt(100 * (1 - BETA) / C)
    for t, region in [(k / 2, "concave"), (k, "plateau"), (k + 1, "convex"), (k + 3, "convex")]:
        before = cc.cwnd
        ack(cc, before, now=t0 + round(t * S))  # a window of bytes: cwnd reaches target
        expected = ref_w_cubic(round(t * S) / S, 100, k) * MSS
        expected = min(max(expected, before), 1.5 * before)
        assert cc.cwnd == pytest.approx(expected, abs=2), region
    assert cc.cwnd > 100 * MSS  # past W_max
    assert cc.cwnd == pytest.approx((100 + C * 27) * MSS, abs=2)


def test_cubic_concave_region_one_mss_ack_partial_step() -> None:
    """RFC 9438 §4.4: cwnd += (target - cwnd) / cwnd per ACKed segment."""
    t0 = S
    cc = cubic_after_loss(100)
    ack(cc, MSS, now=t0)
    k = cc.k_s
    before = cc.cwnd
    ack(cc, MSS, now=t0 + S)
    target = ref_w_cubic(1.0, 100, k) * MSS
    assert cc.cwnd == pytest.approx(before + (target - before) * MSS / before, abs=1)


def test_cubic_target_uses_t_plus_srtt() -> None:
    """RFC 9438 §4.2: target = W_cubic(t + RTT)."""
    t0 = S
    cc = cubic_after_loss(100)
    ack(cc, MSS, now=t0)
    k = cc.k_s
    before = cc.cwnd
    ack(cc, before, now=t0 + S, srtt=500_000)
    assert cc.cwnd == pytest.approx(ref_w_cubic(1.5, 100, k) * MSS, abs=2)


def test_cubic_growth_within_one_rtt_capped_at_one_and_half() -> None:
    """RFC 9438 §4.2: target <= 1.5 * cwnd, even long after K."""
    cc = cubic_after_loss(100)
    ack(cc, MSS, now=0)
    before = cc.cwnd
    ack(cc, before, now=1000 * S)
    assert cc.cwnd == int(1.5 * before)
    stretch = cc.cwnd
    ack(cc, 10 * stretch, now=1000 * S)  # a stretch ACK never passes the target
    assert cc.cwnd == int(1.5 * stretch)


def test_cubic_fast_convergence_loss_below_w_max_lowers_w_max() -> None:
    """RFC 9438 §4.7: W_max = cwnd * (1 + beta) / 2 when cwnd < W_max."""
    cc = cubic_after_loss(100)
    cc.cwnd = 80 * MSS  # lost again before regaining the old W_max
    cc.on_loss(0, cc.cwnd)
    assert cc.w_max == pytest.approx(80 * MSS * (1 + BETA) / 2)
    assert cc.ssthresh == 56 * MSS


def test_cubic_fast_convergence_off_w_max_is_cwnd() -> None:
    """RFC 9438 §4.7: without fast convergence, W_max = cwnd."""
    cc = Cubic(MSS, fast_convergence=False)
    cc.cwnd = 100 * MSS
    cc.on_loss(0, cc.cwnd)
    cc.cwnd = 80 * MSS
    cc.on_loss(0, cc.cwnd)
    assert cc.w_max == 80 * MSS


def test_cubic_loss_above_w_max_sets_w_max_cwnd() -> None:
    """RFC 9438 §4.7: cwnd >= W_max, W_max = cwnd."""
    cc = cubic_after_loss(100)
    cc.cwnd = 120 * MSS
    cc.on_loss(0, cc.cwnd)
    assert cc.w_max == 120 * MSS


def test_cubic_short_rtt_reno_friendly_region_dominates() -> None:
    """RFC 9438 §4.3: while W_cubic(t) < W_est, cwnd = W_est (alpha_cubic, then 1)."""
    rtt = 1000
    cc = cubic_after_loss(10)
    w_est = float(7 * MSS)
    for i in range(50):
        before = cc.cwnd
        ack(cc, before, now=i * rtt, srtt=rtt)
        alpha = 1.0 if w_est >= 10 * MSS else ALPHA  # switches at cwnd_prior
        w_est += alpha * before * MSS / before
        assert cc.w_cubic(i * rtt / S) < w_est
        assert cc.cwnd == pytest.approx(w_est, abs=1), i
    # About 3 + 44 segments above the 7-segment start: Reno's pace, not CUBIC's.
    assert cc.cwnd > 50 * MSS
    assert cc.w_cubic(50 * rtt / S) < 8 * MSS


def test_cubic_congestion_avoidance_app_limited_time_excluded() -> None:
    """RFC 9438 §5.8: no growth while app-limited, and t skips that period."""
    cc = cubic_after_loss(100)
    ack(cc, MSS, now=S)
    cwnd = cc.cwnd
    cc.on_ack(MSS, 11 * S, None, cwnd // 4)
    assert cc.cwnd == cwnd
    assert cc.epoch_elapsed_us == 0
    ack(cc, MSS, now=11 * S + 500_000)
    assert cc.epoch_elapsed_us == 500_000


def test_cubic_short_idle_excluded_from_t() -> None:
    """RFC 9438 §5.8: idle periods are not part of t."""
    cc = cubic_after_loss(100)
    ack(cc, MSS, now=S)
    ack(cc, MSS, now=2 * S)
    cc.on_idle(2 * S + 300_000, idle_us=300_000, rto_us=S)
    ack(cc, MSS, now=2 * S + 400_000)
    assert cc.epoch_elapsed_us == S + 100_000
    assert cc.cwnd > 70 * MSS


def test_cubic_long_idle_restarts_window_and_epoch() -> None:
    """RFC 5681 §4.1 restart; the next congestion avoidance starts a new epoch."""
    cc = cubic_after_loss(100)
    ack(cc, MSS, now=S)
    cc.on_idle(10 * S, idle_us=5 * S, rto_us=S)
    assert cc.cwnd == IW
    assert not cc.epoch_active
    assert cc.ssthresh == 70 * MSS  # above 3/4 of the old cwnd: unchanged
    now = 10 * S
    while cc.in_slow_start():
        ack(cc, 2 * MSS, now=now)
    ack(cc, MSS, now=now)
    # The new epoch climbs back toward the W_max of the last loss.
    assert (cc.cwnd_epoch, cc.w_max) == (70 * MSS, 100 * MSS)
    assert cc.k_s == pytest.approx(cbrt(30 / C))


def test_cubic_timeout_resets_epoch_next_ca_k_zero() -> None:
    """RFC 9438 §4.8: after an RTO, K = 0 and W_max = W_est = cwnd when CA begins."""
    cc = cubic_after_loss(100)
    ack(cc, MSS, now=S)
    cc.on_timeout(2 * S, 70 * MSS)
    assert (cc.cwnd, cc.ssthresh, cc.epoch_active) == (MSS, 49 * MSS, False)
    now = 3 * S
    while cc.in_slow_start():
        ack(cc, MSS, now=now)
    assert cc.cwnd == 49 * MSS
    ack(cc, MSS, now=now)  # first CA ACK starts the epoch
    assert cc.k_s == 0.0
    assert cc.w_max == cc.cwnd_epoch == 49 * MSS
    assert cc.w_est >= 49 * MSS
    before = cc.cwnd
    ack(cc, before, now=now + 2 * S)
    assert cc.cwnd == pytest.approx((49 + C * 8) * MSS, abs=2)  # convex from cwnd_epoch


def test_cubic_repeated_timeout_holds_ssthresh_and_cwnd_prior() -> None:
    """RFC 5681 §3.1 (RFC 9438 §4.8 follows Reno): ssthresh held on a repeated RTO."""
    cc = Cubic(MSS)
    cc.cwnd = 50 * MSS
    cc.on_timeout(0, 50 * MSS)
    cc.on_timeout(1, 50 * MSS)
    assert (cc.cwnd, cc.ssthresh, cc.cwnd_prior) == (MSS, 35 * MSS, 50 * MSS)


# --- invariants ------------------------------------------------------------------

u24 = st.integers(0, 2**24)
ops = st.one_of(
    st.tuples(st.just("ack"), u24, st.integers(0, 10 * S), st.none() | st.integers(1, S), u24),
    st.tuples(st.just("loss"), u24),
    st.tuples(st.just("timeout"), u24),
    st.tuples(st.just("idle"), st.integers(0, 10 * S), st.integers(1, 3 * S)),
    st.tuples(st.just("exit"), st.none() | u24),
)


@CHECK
@given(
    st.sampled_from(CONGESTION_CONTROLS),
    st.sampled_from([536, 1460, 8960]),
    st.lists(ops, max_size=80),
)
def test_congestion_any_event_sequence_keeps_invariants(
    name: str, mss: int, events: list[tuple]
) -> None:
    """cwnd >= 1 MSS, ssthresh >= 2 MSS once reduced, both ints within bounds."""
    cc = make_congestion_control(name, mss)
    now = 0
    reduced = False
    for ev in events:
        kind = ev[0]
        if kind == "ack":
            now += ev[2]
            cc.on_ack(ev[1], now, ev[3], ev[4])
        elif kind == "loss":
            cc.on_loss(now, ev[1])
            reduced = True
        elif kind == "timeout":
            cc.on_timeout(now, ev[1])
            reduced = True
        elif kind == "idle":
            now += ev[1]
            cc.on_idle(now, ev[1], ev[2])
        else:
            cc.on_recovery_exit(now, ev[1])
        assert type(cc.cwnd) is int and type(cc.ssthresh) is int
        assert mss <= cc.cwnd <= MAX_CWND
        assert cc.ssthresh <= INFINITE_SSTHRESH
        if reduced:
            assert cc.ssthresh >= 2 * mss
