"""bench.loss's verdict (not a timed test: it judges saved figures)."""

from __future__ import annotations

import pytest

from bench.loss import SCENARIOS, _verdict


def row(stack_done: int, linux_done: int, stack_x: float, linux_x: float) -> dict:
    def side(done: int, slowdown: float) -> dict:
        return {"runs": 3, "completed": done, "slowdown": slowdown, "recovery": {"rto": 0}}

    stack, linux = side(stack_done, stack_x), side(linux_done, linux_x)
    return {"bytes": 1_000_000, "stack": stack, "linux": linux}


@pytest.mark.parametrize(
    ("stack_done", "linux_done", "stack_x", "expected"),
    [
        (3, 3, 250.0, True),  # every run, within 3x Linux's 100
        (2, 3, 250.0, False),  # Linux completed every run: so must the stack
        (2, 2, 250.0, True),  # Linux missed one too (its own RTO backoff)
        (1, 2, 250.0, False),
        (3, 3, 301.0, False),  # slower than 3x
        (0, 0, 0.0, None),  # nothing to compare with
    ],
)
def test_loss20_needs_as_many_completed_runs_as_linux(stack_done, linux_done, stack_x, expected):
    """And a slow-down within 3x Linux's."""
    linux_x = 100.0 if linux_done else None
    verdict = _verdict(row(stack_done, linux_done, stack_x or None, linux_x), SCENARIOS["loss20"])
    assert verdict["passed"] is expected
