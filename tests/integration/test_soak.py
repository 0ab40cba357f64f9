"""The randomized soak (tests/support/soak.py): SDK apps of every style and
the Linux peer doing random things on one instance for a minute, operators
and Prometheus watching, then the instance's health checked. A failure
names the seed that replays it (`python -m bench.soak --minutes 1 --seed S`)
and each failed connection's plan; VFSTACK_SOAK_SEED runs another seed.

The plans' expectations are Linux's: the first test holds them to two
Linux endpoints (no root needed), so a soak failure is the stack's."""

from __future__ import annotations

import os

import pytest

from tests.support.soak import SoakSettings, failure_text, run_kernel_pair, run_soak

SEED = int(os.environ.get("VFSTACK_SOAK_SEED", "1"))


def test_plans_hold_between_two_linux_endpoints():
    result = run_kernel_pair(SEED, seconds=10)
    assert not result["problems"], result["problems"]
    assert not result["failures"], "\n\n".join(result["failures"][:5])
    for final in result["finals"]:
        assert final["connections"] > 20 and final["verified"] > 0, final


@pytest.mark.root
def test_soak_one_minute_of_everything_at_once():
    report = run_soak(SoakSettings(seed=SEED, seconds=60, progress_seconds=20))
    assert report["passed"], failure_text(report)
    totals = report["totals"]
    assert totals["connections"] > 100 and totals["verified_bytes"] > 0, totals
    outcomes = {name.split("/")[1] for name in totals["outcomes"]}
    assert {"complete", "aborted", "reset", "refused"} <= outcomes  # the misbehaviours ran
