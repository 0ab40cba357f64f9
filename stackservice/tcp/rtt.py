"""Round-trip time estimation and the retransmission timeout (RFC 6298).

`RttEstimator` keeps SRTT and RTTVAR in integer microseconds and derives the
RTO from them. It never reads a clock: the caller measures each RTT sample
(now - send time, or now - the send time of the echoed TSecr) and reports
timer expirations.

Decisions:
- alpha = 1/8, beta = 1/4, K = 4 (RFC 6298 §2), G = `granularity_us`
  (1 ms default: our timer wheel's tick).
- Minimum RTO: RFC 6298 (2.4) says 1 s; we default to 200 ms as Linux does
  (TCP_RTO_MIN), configurable through `min_rto_us`. The maximum, (2.5),
  defaults to 120 s (Linux TCP_RTO_MAX; the RFC asks for at least 60 s).
- Integer arithmetic rounds each update to the nearest microsecond; with
  the plain gains SRTT stays within 4 us and RTTVAR within 6 us of the
  real-valued recurrence (each step adds at most 1/2 us of rounding and
  keeps 7/8 resp. 3/4 of the old error).
- Karn's algorithm (RFC 6298 §3) is the caller's: it must not sample a
  retransmitted segment unless timestamps make the sample unambiguous
  (RFC 7323 §4). Backoff follows Karn and the note after RFC 6298 (5.7): the
  doubled RTO of (5.5) is kept until the next valid sample, which recomputes
  the RTO from SRTT/RTTVAR and so "collapses" it; an ACK of new data alone
  (`on_new_ack`) does not clear it, since without a sample the path may
  still be as slow as the timeouts suggested. Linux does the same
  (tcp_ack_update_rtt resets icsk_backoff only on a valid measurement).
  `on_new_ack` clears `timeouts`, the count of consecutive expirations
  without forward progress, which the connection compares with its R1/R2
  thresholds (RFC 9293 §3.8.3, RFC 1122 §4.2.3.5).
- Sampling every ACK (RFC 7323 §4): with many samples per round trip, the
  fixed gains forget the history within a fraction of an RTT and RTTVAR
  shrinks, inviting spurious timeouts. RFC 7323 Appendix G (informative)
  scales the gains by ExpectedSamples = ceil(FlightSize / (2 * SMSS)):
  alpha' = alpha / n, beta' = beta / n. `sample(rtt_us, expected_samples=n)`
  implements it; `expected_samples()` computes n. The default n = 1 is plain
  RFC 6298, right for one timed segment per RTT (no timestamps).
- A negative sample (a clock or echo bug upstream) is ignored rather than
  raised: the estimator sits on the per-ACK path.
"""

from __future__ import annotations

# RFC 6298 §2: alpha = 1/8, beta = 1/4, K = 4.
ALPHA_SHIFT = 3  # 1 / alpha
BETA_SHIFT = 2  # 1 / beta
K = 4

DEFAULT_MIN_RTO_US = 200_000  # Linux TCP_RTO_MIN; RFC 6298 (2.4) says 1 s
DEFAULT_MAX_RTO_US = 120_000_000  # Linux TCP_RTO_MAX; RFC 6298 (2.5): at least 60 s
DEFAULT_INITIAL_RTO_US = 1_000_000  # RFC 6298 (2.1)
DEFAULT_GRANULARITY_US = 1_000
SYN_FALLBACK_RTO_US = 3_000_000  # RFC 6298 (5.7)


def expected_samples(flight_size: int, smss: int) -> int:
    """RFC 7323 Appendix G: ExpectedSamples = ceiling(FlightSize / (SMSS * 2)).

    Returns:
        The number of RTT samples a window is expected to yield, at least 1
        (the factor 2 accounts for delayed ACKs).
    """
    if smss <= 0 or flight_size <= 0:
        return 1
    n = -(-flight_size // (2 * smss))
    return n if n > 1 else 1


class RttEstimator:
    """SRTT, RTTVAR and RTO of one connection (RFC 6298).

    Attributes (read them, do not write them):
        srtt_us, rttvar_us: the smoothed RTT and its variation in
            microseconds, None before the first sample.
        rto_us: the current retransmission timeout, backoff included,
            within [min_rto_us, max_rto_us].
        backoffs: doublings (5.5) applied since the last valid sample.
        timeouts: consecutive expirations since new data was last
            acknowledged (for the R1/R2 abort thresholds).
    """

    __slots__ = (
        "backoffs",
        "granularity_us",
        "initial_rto_us",
        "max_rto_us",
        "min_rto_us",
        "rto_us",
        "rttvar_us",
        "srtt_us",
        "timeouts",
    )

    def __init__(
        self,
        min_rto_us: int = DEFAULT_MIN_RTO_US,
        max_rto_us: int = DEFAULT_MAX_RTO_US,
        initial_rto_us: int = DEFAULT_INITIAL_RTO_US,
        granularity_us: int = DEFAULT_GRANULARITY_US,
    ) -> None:
        """Raises:
        ValueError: a non-positive bound or min_rto_us > max_rto_us.
        """
        if min_rto_us <= 0 or max_rto_us < min_rto_us or initial_rto_us <= 0:
            raise ValueError("need 0 < min_rto_us <= max_rto_us and initial_rto_us > 0")
        if granularity_us <= 0:
            raise ValueError("granularity_us must be positive")
        self.min_rto_us: int = min_rto_us
        self.max_rto_us: int = max_rto_us
        self.initial_rto_us: int = initial_rto_us
        self.granularity_us: int = granularity_us
        self.srtt_us: int | None = None
        self.rttvar_us: int | None = None
        self.backoffs: int = 0
        self.timeouts: int = 0
        # RFC 6298 (2.1): until a sample arrives, RTO is the initial value.
        self.rto_us: int = self._clamp(initial_rto_us)

    def _clamp(self, rto: int) -> int:
        # RFC 6298 (2.4) lower bound (configurable, see module doc) and (2.5) upper bound.
        if rto < self.min_rto_us:
            return self.min_rto_us
        if rto > self.max_rto_us:
            return self.max_rto_us
        return rto

    def sample(self, rtt_us: int, expected_samples: int = 1) -> None:
        """Fold in one valid RTT measurement R (caller applies Karn's rule).

        `expected_samples` > 1 divides alpha and beta by it (RFC 7323
        Appendix G) when the caller samples every ACK with timestamps.
        """
        if rtt_us < 0:
            return
        if self.srtt_us is None or self.rttvar_us is None:
            # RFC 6298 (2.2): first measurement.
            srtt = rtt_us
            rttvar = rtt_us >> 1
        else:
            srtt = self.srtt_us
            rttvar = self.rttvar_us
            n = expected_samples if expected_samples > 1 else 1
            # RFC 6298 (2.3), RTTVAR first (it uses the old SRTT); each
            # division rounds to nearest: (x + d/2) // d.
            err = srtt - rtt_us if srtt >= rtt_us else rtt_us - srtt
            var_den = n << BETA_SHIFT
            rttvar = (rttvar * (var_den - 1) + err + (var_den >> 1)) // var_den
            srtt_den = n << ALPHA_SHIFT
            srtt = (srtt * (srtt_den - 1) + rtt_us + (srtt_den >> 1)) // srtt_den
        self.srtt_us = srtt
        self.rttvar_us = rttvar
        # RFC 6298 (2.2)/(2.3): RTO = SRTT + max(G, K*RTTVAR), then (2.4)/(2.5).
        var_term = K * rttvar
        if var_term < self.granularity_us:
            var_term = self.granularity_us
        self.rto_us = self._clamp(srtt + var_term)
        # Karn / note after RFC 6298 (5.7): a valid sample ends the backoff.
        self.backoffs = 0

    def on_timeout(self) -> None:
        """The retransmission timer expired: RFC 6298 (5.5), RTO = RTO * 2, capped (2.5)."""
        rto = self.rto_us << 1
        self.rto_us = rto if rto < self.max_rto_us else self.max_rto_us
        self.backoffs += 1
        self.timeouts += 1

    def on_new_ack(self) -> None:
        """New data was acknowledged: forward progress, clears `timeouts`.

        The backoff stays until a valid sample arrives (Karn; module doc).
        """
        self.timeouts = 0

    def on_syn_timeout_established(self) -> None:
        """The handshake completed after the SYN (or SYN-ACK) timer expired.

        RFC 6298 (5.7): an RTO below 3 s is re-initialized to 3 s when data
        transmission begins. Applied only when no valid sample exists (as
        Linux's tcp_init_transfer/TCP_TIMEOUT_FALLBACK): a timestamp-based
        sample of the handshake is better information than the fallback.
        """
        if self.srtt_us is not None or self.initial_rto_us >= SYN_FALLBACK_RTO_US:
            return
        self.rto_us = self._clamp(SYN_FALLBACK_RTO_US)
        self.backoffs = 0

    def smoothed(self) -> tuple[int | None, int | None]:
        """Returns:
        (srtt_us, rttvar_us), None before the first sample (for `ss`-like output).
        """
        return self.srtt_us, self.rttvar_us
