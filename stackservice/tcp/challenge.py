"""The instance-wide budget of challenge ACKs (RFC 5961 §7).

Challenge ACKs are limited twice, as Linux limits them:
- per connection, one per `TcpSettings.invalid_ack_interval_us` (Linux's
  tcp_invalid_ratelimit, 500 ms), kept on the TCB: spoofed segments aimed
  at one connection cost it at most two ACKs a second, and what one
  connection spends, no other connection notices;
- per instance, by the budget below, against a flood spread over many
  connections. A fixed budget is a side channel (CVE-2016-5696): an
  off-path attacker spends it with spoofed RSTs aimed at a guessed
  connection, then counts the challenge ACKs its own connection still
  draws in that second, and so learns whether the guess exists. Each
  second's budget is therefore drawn at random from [limit/2, 3·limit/2),
  as in Linux since 4.7, and the per-connection limit keeps what one
  guessed connection can spend (two) far below that randomness.
"""

from __future__ import annotations

import random

SECOND_US = 1_000_000


class ChallengeAckBudget:
    """`take(now)`: may the instance send one more challenge ACK in the
    current second? `limit_per_s` 0 means no instance-wide limit."""

    __slots__ = ("_left", "_limit", "_random", "_second")

    def __init__(self, limit_per_s: int, rng: random.Random) -> None:
        if limit_per_s < 0:
            raise ValueError("limit_per_s must be >= 0")
        self._limit = limit_per_s
        self._random = rng
        self._second = -1
        self._left = 0

    def take(self, now: int) -> bool:
        if not self._limit:
            return True
        second = now // SECOND_US
        if second != self._second:
            self._second = second
            self._left = self._limit // 2 + self._random.randrange(self._limit)
        if self._left <= 0:
            return False
        self._left -= 1
        return True
