"""The fault containment policy (stackservice.faults): count by site, log a
few tracebacks per site and window then how many were left out, re-raise
when strict."""

from __future__ import annotations

import logging

import pytest

from stackservice.faults import Containment, FaultSite
from stackservice.metrics.counters import CounterBlock
from stackservice.metrics.layout import INSTANCE_LAYOUT

SECOND = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 5 * SECOND

    def __call__(self) -> int:
        return self.now


def boom(message: str = "boom") -> ValueError:
    """An exception with a traceback, as a containment point catches it."""
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def contain(clock: Clock) -> Containment:
    return Containment(strict=False, clock=clock, burst=2, window_us=60 * SECOND)


def test_strict_reraises_the_same_exception_and_counts_nothing():
    contain = Containment()  # strict unless told
    exc = boom()
    with pytest.raises(ValueError) as raised:
        contain.fault(FaultSite.FRAME, exc, "the frame is dropped")
    assert raised.value is exc
    assert contain.count(FaultSite.FRAME) == 0


def test_non_strict_needs_a_clock():
    with pytest.raises(ValueError):
        Containment(strict=False)


def test_fault_is_counted_at_its_site_and_logged_with_traceback(contain, caplog):
    contain.fault(FaultSite.SESSION, boom("bad slot"), "session 3 (web) ends")
    assert contain.count(FaultSite.SESSION) == 1
    assert all(contain.count(s) == 0 for s in FaultSite if s != FaultSite.SESSION)
    (record,) = tracebacks(caplog)
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert "where=session" in message and "session 3 (web) ends" in message
    assert "bad slot" in message
    assert "Traceback" in caplog.text and "in boom" in caplog.text


def test_tracebacks_are_rate_limited_per_site_then_the_rest_told_in_one_line(
    contain, clock, caplog
):
    for _ in range(5):
        contain.fault(FaultSite.FRAME, boom(), "the frame is dropped")
    contain.fault(FaultSite.CONTROL, boom(), "request 'x' fails")  # its own budget
    assert contain.count(FaultSite.FRAME) == 5
    assert [r.getMessage().split(")")[0] for r in tracebacks(caplog)] == [
        "internal error (where=frame",
        "internal error (where=frame",
        "internal error (where=control",
    ]
    assert len(caplog.records) == 3  # nothing yet about the three left out

    clock.now += 59 * SECOND  # the frame window is not over
    assert clock.now < contain.report_at
    contain.report(clock.now)
    assert len(caplog.records) == 3

    clock.now += SECOND
    assert clock.now >= contain.report_at
    contain.report(clock.now)
    (summary,) = caplog.records[3:]
    assert summary.getMessage() == (
        "internal error (where=frame): 3 more in 60 s, tracebacks not logged"
    )
    assert summary.exc_info is None
    contain.report(clock.now + 120 * SECOND)  # told once
    assert len(caplog.records) == 4


def test_a_new_window_tells_the_last_ones_left_out_and_logs_tracebacks_again(
    contain, clock, caplog
):
    for _ in range(3):
        contain.fault(FaultSite.TIMER, boom(), "the connection is aborted")
    clock.now += 61 * SECOND
    contain.fault(FaultSite.TIMER, boom(), "the connection is aborted")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[2] == "internal error (where=timer): 1 more in 60 s, tracebacks not logged"
    assert len(tracebacks(caplog)) == 3
    assert contain.count(FaultSite.TIMER) == 4


def test_engine_faults_are_drained_by_their_site(contain, caplog):
    faults = [("timer", boom()), ("output", boom()), ("event", boom()), ("rack", boom())]
    contain.drain(faults, "the connection is aborted")
    assert faults == []
    counts = {site.name.lower(): contain.count(site) for site in FaultSite}
    assert counts == {
        "frame": 0, "event": 1, "timer": 1, "output": 1, "session": 0, "control": 0, "other": 1,
    }  # fmt: skip
    assert "the connection is aborted (rack)" in caplog.records[-1].getMessage()


def test_counts_land_in_the_instance_internal_errors_section(clock):
    block = CounterBlock(INSTANCE_LAYOUT)
    try:
        contain = Containment(block.section("internal_errors"), strict=False, clock=clock)
        contain.fault(FaultSite.OUTPUT, boom(), "this pass's frames are dropped")
        contain.fault(FaultSite.OUTPUT, boom(), "this pass's frames are dropped")
        assert block.snapshot()["internal_errors"] == {
            "frame": 0, "event": 0, "timer": 0, "output": 2, "session": 0, "control": 0,
            "other": 0,
        }  # fmt: skip
    finally:
        block.close()
