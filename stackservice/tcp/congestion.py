"""Congestion window policy: NewReno (RFC 5681) and CUBIC (RFC 9438).

The connection owns loss detection and recovery (duplicate-ACK counting,
RFC 6582 partial ACKs, RFC 6675 pipe/NextSeg) and tells the policy what
happened through five hooks, as smoltcp's congestion-control trait does:
`on_ack` (new data cumulatively acknowledged outside loss recovery),
`on_loss` (entering fast recovery), `on_recovery_exit` (the full ACK),
`on_timeout` (RTO) and `on_idle` (sending resumes after a quiet period).
Windows are in bytes and always ints; `now` is an int of microseconds.

Decisions shared by both policies:
- IW (RFC 6928 §2): min(10*MSS, max(2*MSS, 14600)); `initial_window()`.
- ssthresh starts "infinite" (RFC 5681 §3.1): INFINITE_SSTHRESH = 2**31 - 1,
  which also caps cwnd.
- Slow start uses Appropriate Byte Counting (RFC 3465 §2.2) with
  L = 2*SMSS, and L = 1*SMSS in the slow start that follows an RTO
  (RFC 3465 §2.3: the ACK of a retransmission may cover a whole window).
  It stops at ssthresh (as Linux's tcp_slow_start); the rest of that ACK is
  not carried into congestion avoidance.
- Congestion avoidance for NewReno counts bytes (RFC 3465 §2.1, allowed by
  RFC 5681 §3.1): one SMSS each time a cwnd's worth of bytes is acknowledged,
  exact in integers.
- Application-limited ACKs do not grow cwnd: `in_flight` (bytes outstanding
  when the ACK arrived, before it was applied) below cwnd/2 means the
  window is not being used, RFC 7661's validated-window test
  (pipeACK >= cwnd/2). RFC 9438 §5.8 requires the same of CUBIC and that
  its t not count such periods.
- On loss, ssthresh = max(FlightSize / 2, 2*SMSS) (RFC 5681 (4)) for NewReno,
  max(FlightSize * 0.7, 2*SMSS) for CUBIC (RFC 9438 §4.6); cwnd = ssthresh.
  The caller adds RFC 6582 inflation or RFC 6675 pipe logic on top.
- On RTO, cwnd = LW = 1*SMSS (RFC 5681 §3.1); ssthresh as on loss, but held
  constant when the timer expires again before any new data is acknowledged
  (RFC 5681 §3.1, the note after (4)).
- After an idle period longer than the RTO, cwnd = min(cwnd, RW = IW)
  (RFC 5681 §4.1); ssthresh first becomes max(ssthresh, 3/4 cwnd) so slow
  start climbs back to the old operating point (RFC 2861 §3, as Linux's
  tcp_cwnd_restart).
- Out of scope: HyStart (RFC 9438 §4.10 allows it; not done), undoing
  spurious reductions (RFC 9438 §4.9), ECN.
"""

from __future__ import annotations

from math import cbrt

INFINITE_SSTHRESH = 2**31 - 1  # RFC 5681 §3.1 "arbitrarily high"; also the cwnd cap
MAX_CWND = INFINITE_SSTHRESH
IW_SEGMENTS = 10  # RFC 6928
IW_BYTES_PER_SEGMENT = 1460  # RFC 6928 §2: 14600 = 10 * 1460
RFC3390_IW_BYTES = 4380  # RFC 3390 §1, for a 4-segment IW
ABC_L_SEGMENTS = 2  # RFC 3465 §2.2

# RFC 9438 §4.1-§4.3 constants.
CUBIC_C = 0.4  # segments / s**3
BETA_CUBIC_NUM = 7  # beta_cubic = 0.7, kept as a fraction for exact int ssthresh
BETA_CUBIC_DEN = 10
BETA_CUBIC = BETA_CUBIC_NUM / BETA_CUBIC_DEN
ALPHA_CUBIC = 3.0 * (1.0 - BETA_CUBIC) / (1.0 + BETA_CUBIC)  # RFC 9438 §4.3
CUBIC_MAX_GROWTH = 1.5  # RFC 9438 §4.2: target <= 1.5 * cwnd
US_PER_S = 1_000_000.0

CONGESTION_CONTROLS: tuple[str, ...] = ("cubic", "newreno")


def initial_window(mss: int, segments: int = IW_SEGMENTS) -> int:
    """The initial window in bytes for `segments` (RFC 6928 §2 for 10).

    Returns:
        min(n*MSS, max(2*MSS, n*1460)); for n = 4 the RFC 3390 §1 bound
        min(4*MSS, max(2*MSS, 4380)). Never less than 1 MSS.
    """
    cap = RFC3390_IW_BYTES if segments == 4 else segments * IW_BYTES_PER_SEGMENT
    floor = 2 * mss
    if cap < floor:
        cap = floor
    iw = segments * mss
    if iw > cap:
        iw = cap
    return iw if iw > mss else mss


class CongestionControl:
    """Window policy of one connection; subclasses NewReno and Cubic.

    Attributes:
        cwnd: congestion window, bytes (>= 1 MSS).
        ssthresh: slow-start threshold, bytes (INFINITE_SSTHRESH until the
            first loss, >= 2 MSS after it).
        mss: the sender's maximum segment size (SMSS), bytes.
    """

    __slots__ = (
        "_after_rto",
        "_rto_held",
        "_untouched",
        "cwnd",
        "initial_window_segments",
        "mss",
        "ssthresh",
    )

    name = "base"

    def __init__(self, mss: int, initial_window_segments: int = IW_SEGMENTS) -> None:
        """Raises:
        ValueError: mss or initial_window_segments below 1.
        """
        if mss < 1 or initial_window_segments < 1:
            raise ValueError("mss and initial_window_segments must be positive")
        self.mss: int = mss
        self.initial_window_segments: int = initial_window_segments
        self.cwnd: int = initial_window(mss, initial_window_segments)
        self.ssthresh: int = INFINITE_SSTHRESH
        self._untouched: bool = True  # no event yet: set_mss may rescale the IW
        self._rto_held: bool = False  # RTO fired, no new data ACKed since
        self._after_rto: bool = False  # slow start following an RTO

    def set_mss(self, mss: int) -> None:
        """Set SMSS once the handshake has fixed it.

        Before any event the window is recomputed as the IW for the new MSS
        (RFC 6928 §2); later, cwnd and ssthresh keep their bytes but stay at
        least 1 and 2 MSS.

        Raises:
            ValueError: mss below 1.
        """
        if mss < 1:
            raise ValueError("mss must be positive")
        self.mss = mss
        if self._untouched:
            self.cwnd = initial_window(mss, self.initial_window_segments)
        elif self.cwnd < mss:
            self.cwnd = mss
        if self.ssthresh < 2 * mss:
            self.ssthresh = 2 * mss

    def in_slow_start(self) -> bool:
        """Returns: True while cwnd < ssthresh (RFC 5681 §3.1)."""
        return self.cwnd < self.ssthresh

    def on_ack(self, acked_bytes: int, now: int, srtt_us: int | None, in_flight: int) -> None:
        """New data cumulatively acknowledged while not in loss recovery.

        `in_flight` is the flight size when the ACK arrived (before it took
        `acked_bytes` out); `srtt_us` the current smoothed RTT, if any.
        """
        if acked_bytes <= 0:
            return
        self._untouched = False
        self._rto_held = False
        if in_flight * 2 < self.cwnd:
            # RFC 7661 validated-window test; RFC 9438 §5.8 for CUBIC's t.
            self._app_limited(now)
            return
        if self.cwnd < self.ssthresh:
            self._slow_start(acked_bytes)
        else:
            self._congestion_avoidance(acked_bytes, now, srtt_us)

    def _slow_start(self, acked_bytes: int) -> None:
        # RFC 5681 §3.1 with RFC 3465 §2.2 (L = 2*SMSS) / §2.3 (L = 1*SMSS after an RTO).
        limit = self.mss if self._after_rto else ABC_L_SEGMENTS * self.mss
        cwnd = self.cwnd + (acked_bytes if acked_bytes < limit else limit)
        if cwnd >= self.ssthresh:
            cwnd = self.ssthresh
            self._after_rto = False
        self.cwnd = cwnd

    def _app_limited(self, now: int) -> None:
        """An ACK that does not grow cwnd because the window was not used."""

    def _congestion_avoidance(self, acked_bytes: int, now: int, srtt_us: int | None) -> None:
        raise NotImplementedError

    def _reduced_ssthresh(self, in_flight: int) -> int:
        raise NotImplementedError

    def on_loss(self, now: int, in_flight: int) -> None:
        """Loss detected by duplicate ACKs or SACK: entering recovery.

        ssthresh from `in_flight` (FlightSize at detection), cwnd = ssthresh.
        """
        self._untouched = False
        self._rto_held = False
        self._after_rto = False
        self.ssthresh = self._reduced_ssthresh(in_flight)
        self.cwnd = self.ssthresh

    def on_recovery_exit(self, now: int, in_flight: int | None = None) -> None:
        """The full ACK ended recovery (RFC 6582 §3.2 step 3).

        cwnd = ssthresh (option 2); given `in_flight` (FlightSize after the
        ACK), cwnd = min(ssthresh, max(in_flight, SMSS) + SMSS) (option 1,
        which avoids a burst when little is outstanding).
        """
        self._untouched = False
        ssthresh = self.ssthresh
        if ssthresh >= INFINITE_SSTHRESH:
            return  # no reduction happened: nothing to deflate to
        if in_flight is None:
            self.cwnd = ssthresh
            return
        cwnd = (in_flight if in_flight > self.mss else self.mss) + self.mss
        self.cwnd = cwnd if cwnd < ssthresh else ssthresh

    def on_timeout(self, now: int, in_flight: int) -> None:
        """The retransmission timer expired: cwnd = LW = 1*SMSS (RFC 5681 §3.1)."""
        self._untouched = False
        if not self._rto_held:
            # RFC 5681 §3.1: ssthresh per (4), held on a repeated RTO.
            self.ssthresh = self._reduced_ssthresh(in_flight)
            self._rto_held = True
        self._after_rto = True
        self.cwnd = self.mss

    def on_idle(self, now: int, idle_us: int, rto_us: int) -> None:
        """Sending resumes at `now` after `idle_us` with nothing outstanding."""
        self._untouched = False
        if idle_us <= rto_us:
            self._idle_kept(now)
            return
        rw = initial_window(self.mss, self.initial_window_segments)
        cwnd = self.cwnd
        if cwnd <= rw:
            self._idle_kept(now)
            return
        # RFC 2861 §3 (Linux tcp_cwnd_restart): remember 3/4 of the old window.
        kept = (cwnd * 3) >> 2
        if self.ssthresh < kept:
            self.ssthresh = kept
        # RFC 5681 §4.1: cwnd = min(cwnd, RW) with RW = IW.
        self.cwnd = rw
        self._idle_restarted()

    def _idle_kept(self, now: int) -> None:
        """An idle period that left cwnd as it was."""

    def _idle_restarted(self) -> None:
        """An idle period that restarted the window."""


class NewReno(CongestionControl):
    """RFC 5681 slow start and congestion avoidance; RFC 6582 recovery is the caller's."""

    __slots__ = ("_bytes_acked",)

    name = "newreno"

    def __init__(self, mss: int, initial_window_segments: int = IW_SEGMENTS) -> None:
        CongestionControl.__init__(self, mss, initial_window_segments)
        self._bytes_acked: int = 0  # RFC 3465 §2.1 counter

    def _congestion_avoidance(self, acked_bytes: int, now: int, srtt_us: int | None) -> None:
        # RFC 3465 §2.1: cwnd += SMSS once bytes_acked reaches cwnd.
        counted = self._bytes_acked + acked_bytes
        cwnd = self.cwnd
        if counted >= cwnd:
            counted -= cwnd
            cwnd += self.mss
            self.cwnd = cwnd if cwnd < MAX_CWND else MAX_CWND
            if counted >= self.cwnd:
                counted = 0  # a stretch ACK grows cwnd by one SMSS at most
        self._bytes_acked = counted

    def _reduced_ssthresh(self, in_flight: int) -> int:
        # RFC 5681 (4): ssthresh = max(FlightSize / 2, 2*SMSS).
        half = in_flight >> 1
        floor = 2 * self.mss
        return half if half > floor else floor

    def on_loss(self, now: int, in_flight: int) -> None:
        CongestionControl.on_loss(self, now, in_flight)
        self._bytes_acked = 0

    def on_timeout(self, now: int, in_flight: int) -> None:
        CongestionControl.on_timeout(self, now, in_flight)
        self._bytes_acked = 0

    def _idle_restarted(self) -> None:
        self._bytes_acked = 0


class Cubic(CongestionControl):
    """CUBIC (RFC 9438), windows in bytes; W_cubic is evaluated in segments.

    Attributes (floats in bytes unless noted, for tests and `ss`-like output):
        w_max: window before the last reduction (after fast convergence).
        k_s: K of the current epoch, seconds.
        w_est: the Reno-friendly estimate (§4.3).
        cwnd_prior: cwnd when ssthresh was last set (int bytes).
        cwnd_epoch: cwnd when the current epoch began (int bytes).
        epoch_active: a congestion-avoidance epoch is running.
        epoch_elapsed_us: t of §4.2 in microseconds: time in congestion
            avoidance, minus application-limited and idle periods (§5.8).
    The epoch begins at the first ACK processed in congestion avoidance
    (as Linux's bictcp_update), so after recovery or an RTO-triggered slow
    start it starts where cwnd growth resumes.
    """

    __slots__ = (
        "_last_ack_us",
        "cwnd_epoch",
        "cwnd_prior",
        "epoch_active",
        "epoch_elapsed_us",
        "fast_convergence",
        "k_s",
        "w_est",
        "w_max",
    )

    name = "cubic"

    def __init__(
        self, mss: int, initial_window_segments: int = IW_SEGMENTS, fast_convergence: bool = True
    ) -> None:
        CongestionControl.__init__(self, mss, initial_window_segments)
        self.fast_convergence: bool = fast_convergence  # RFC 9438 §4.7
        self.w_max: float = 0.0  # 0: unset, taken from cwnd at the next epoch (§4.8)
        self.k_s: float = 0.0
        self.w_est: float = 0.0
        self.cwnd_prior: int = 0
        self.cwnd_epoch: int = 0
        self.epoch_active: bool = False
        self.epoch_elapsed_us: int = 0
        self._last_ack_us: int = 0

    def w_cubic(self, t_s: float) -> float:
        """RFC 9438 §4.2 Figure 1, W_cubic(t) = C*(t-K)**3 + W_max, in bytes."""
        d = t_s - self.k_s
        return CUBIC_C * d * d * d * self.mss + self.w_max

    def _start_epoch(self, now: int) -> None:
        cwnd = self.cwnd
        self.epoch_active = True
        self.epoch_elapsed_us = 0
        self._last_ack_us = now
        self.cwnd_epoch = cwnd
        if self.w_max > cwnd:
            # RFC 9438 §4.2 Figure 2: K = cbrt((W_max - cwnd_epoch) / C), in segments.
            self.k_s = cbrt((self.w_max - cwnd) / self.mss / CUBIC_C)
        else:
            # RFC 9438 §4.8 (after an RTO), and any epoch starting at or above
            # W_max: K = 0 and W_max = cwnd at the start of the epoch.
            self.k_s = 0.0
            self.w_max = float(cwnd)
        # RFC 9438 §4.3: W_est starts at cwnd_epoch.
        self.w_est = float(cwnd)

    def _congestion_avoidance(self, acked_bytes: int, now: int, srtt_us: int | None) -> None:
        if not self.epoch_active:
            self._start_epoch(now)
        else:
            dt = now - self._last_ack_us
            if dt > 0:
                self.epoch_elapsed_us += dt
            self._last_ack_us = now
        cwnd = self.cwnd
        mss = self.mss
        # RFC 9438 §4.3 Figure 4; alpha_cubic becomes 1 once W_est >= cwnd_prior.
        # A stretch ACK counts one window at most, as NewReno's one SMSS per ACK.
        alpha = 1.0 if self.w_est >= self.cwnd_prior else ALPHA_CUBIC
        counted = acked_bytes if acked_bytes < cwnd else cwnd
        self.w_est += alpha * counted * mss / cwnd
        # RFC 9438 §4.2: target = W_cubic(t + RTT) clamped to [cwnd, 1.5*cwnd].
        t_s = self.epoch_elapsed_us / US_PER_S
        rtt_s = srtt_us / US_PER_S if srtt_us is not None and srtt_us > 0 else 0.0
        target = self.w_cubic(t_s + rtt_s)
        if target < cwnd:
            target = float(cwnd)
        elif target > CUBIC_MAX_GROWTH * cwnd:
            target = CUBIC_MAX_GROWTH * cwnd
        # RFC 9438 §4.4/§4.5: cwnd += (target - cwnd) / cwnd per acked segment,
        # never past target (a stretch ACK covering more than cwnd).
        grown = cwnd + int((target - cwnd) * acked_bytes / cwnd)
        if grown > target:
            grown = int(target)
        # RFC 9438 §4.3: in the Reno-friendly region (W_cubic(t) < W_est), cwnd = W_est.
        if self.w_cubic(t_s) < self.w_est and self.w_est > grown:
            grown = int(self.w_est)
        self.cwnd = grown if grown < MAX_CWND else MAX_CWND

    def _app_limited(self, now: int) -> None:
        # RFC 9438 §5.8: t must not include application-limited periods.
        if self.epoch_active:
            self._last_ack_us = now

    def _reduced_ssthresh(self, in_flight: int) -> int:
        # RFC 9438 §4.6: ssthresh = max(flight_size * beta_cubic, 2*SMSS).
        reduced = in_flight * BETA_CUBIC_NUM // BETA_CUBIC_DEN
        floor = 2 * self.mss
        return reduced if reduced > floor else floor

    def on_loss(self, now: int, in_flight: int) -> None:
        cwnd = self.cwnd
        # RFC 9438 §4.7 Figure 6: fast convergence.
        if self.fast_convergence and cwnd < self.w_max:
            self.w_max = cwnd * (1.0 + BETA_CUBIC) / 2.0
        else:
            self.w_max = float(cwnd)
        self.cwnd_prior = cwnd  # RFC 9438 §4.6 Figure 5
        CongestionControl.on_loss(self, now, in_flight)
        self.epoch_active = False

    def on_recovery_exit(self, now: int, in_flight: int | None = None) -> None:
        CongestionControl.on_recovery_exit(self, now, in_flight)
        self.epoch_active = False  # a new epoch starts with the next ACK (§4.2)

    def on_timeout(self, now: int, in_flight: int) -> None:
        if not self._rto_held:
            self.cwnd_prior = self.cwnd  # ssthresh is about to be set
        CongestionControl.on_timeout(self, now, in_flight)
        # RFC 9438 §4.8: the next epoch has K = 0 and W_max = W_est = cwnd at
        # its start (see _start_epoch).
        self.w_max = 0.0
        self.epoch_active = False

    def _idle_kept(self, now: int) -> None:
        # RFC 9438 §5.8: t must not include the idle period.
        if self.epoch_active:
            self._last_ack_us = now

    def _idle_restarted(self) -> None:
        self.epoch_active = False


def make_congestion_control(
    name: str, mss: int, initial_window_segments: int = IW_SEGMENTS
) -> CongestionControl:
    """Build the policy called `name` (one of CONGESTION_CONTROLS).

    Raises:
        ValueError: an unknown name (the message lists the valid ones), or a
            bad mss / initial_window_segments.
    """
    if name == "cubic":
        return Cubic(mss, initial_window_segments)
    if name == "newreno":
        return NewReno(mss, initial_window_segments)
    choices = ", ".join(CONGESTION_CONTROLS)
    raise ValueError(f"unknown congestion control {name!r}; choose one of: {choices}")
