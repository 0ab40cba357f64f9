"""The instance-wide challenge-ACK budget (tcp/challenge.py): random per
second, so an off-path attacker cannot read another connection's use of it
(CVE-2016-5696)."""

from __future__ import annotations

import random

import pytest

from stackservice.tcp.challenge import SECOND_US, ChallengeAckBudget


def spent_in_second(budget: ChallengeAckBudget, second: int, tries: int = 10_000) -> int:
    start = second * SECOND_US
    return sum(budget.take(start + i) for i in range(tries))


def test_each_seconds_budget_is_drawn_from_half_to_one_and_a_half_the_limit() -> None:
    budget = ChallengeAckBudget(1000, random.Random(7))
    spent = [spent_in_second(budget, second) for second in range(50)]
    assert all(500 <= n < 1500 for n in spent)
    # Random, not fixed: a fixed budget is the side channel itself.
    assert len(set(spent)) > 40
    assert max(spent) - min(spent) > 500


def test_what_a_guessed_connection_can_spend_is_lost_in_the_noise() -> None:
    """The attack: in one second, make the guessed connection spend its
    share (at most 2, the per-connection limit), then count the challenge
    ACKs left for the attacker's own connection. With a fixed budget a hit
    always leaves 2 fewer; here the counts with and without a hit overlap."""
    hits, misses = set(), set()
    for seed in range(200):
        budget = ChallengeAckBudget(1000, random.Random(seed))
        budget.take(0)
        budget.take(1)  # the guessed connection's two
        hits.add(spent_in_second(budget, 0))
        misses.add(spent_in_second(ChallengeAckBudget(1000, random.Random(seed + 1000)), 0))
    assert min(hits) < max(misses) and min(misses) < max(hits)


def test_no_limit_when_zero_and_no_negative_limit() -> None:
    assert spent_in_second(ChallengeAckBudget(0, random.Random(1)), 0) == 10_000
    with pytest.raises(ValueError):
        ChallengeAckBudget(-1, random.Random(1))
