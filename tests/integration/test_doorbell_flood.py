"""An app ringing the stack's doorbell without pause (issue 13, the `ring`
attack of tests/support/hostile_app.py, through its real eventfd): each
ring used to wake the loop for a whole pass, some 13 000 empty passes and
a third of a core a second here, taken from the honest apps on 2 cores.
The stack mutes a doorbell rung again and again for nothing
(stackservice.fastpath.backoff): the loop's CPU time stays small while the
attack runs, an honest app keeps its low latency, and an honest app under
load is never muted itself."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest

from tests.integration.test_isolation import (
    APP_GID,
    VF0,
    control_of,
    echo_server,
    hostile,
    peer_connection,
    round_trip,
)
from tests.support.stack import running_stack, wait_until

pytestmark = pytest.mark.root

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system time of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def loop_cost(instance, seconds: float) -> tuple[float, float]:
    """The loop's CPU seconds and sleeps (passes that blocked) per second."""
    cpu, sleeps = cpu_seconds(instance.proc.pid), instance.counters()["loop"]["sleeps"]
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(instance.proc.pid) - cpu
    sleeps = instance.counters()["loop"]["sleeps"] - sleeps
    return cpu / elapsed, sleeps / elapsed


def round_trips(sock, count: int, pause: float = 0.0) -> list[float]:
    """`count` 64-byte echoes, each checked; their times in seconds."""
    times = []
    for _ in range(count):
        payload = os.urandom(64)
        start = time.perf_counter()
        assert round_trip(sock, payload) == payload
        times.append(time.perf_counter() - start)
        time.sleep(pause)
    return times


def p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100)[98]


def test_a_doorbell_flood_costs_the_loop_little_and_the_honest_app_nothing(emulated_port):
    with running_stack(
        emulated_port.vf(0), f"{VF0}/24", "vf0", "--app-group", str(APP_GID)
    ) as instance:
        control = control_of(instance)
        floods = lambda: instance.counters()["refusals"]["doorbell_flood"]  # noqa: E731
        with echo_server(control, 7002, "honest"):
            client = peer_connection(emulated_port.netns, VF0, 7002)
            client.settimeout(30)  # bounds a broken stack only
            # An honest app under load rings its doorbell for every command
            # it publishes to a sleeping stack: never muted.
            round_trips(client, 2000)
            assert floods() == 0
            quiet = p99(round_trips(client, 500, pause=0.002))
            attacker = hostile(control, "ring", 60)
            try:
                assert wait_until(lambda: floods() > 0, timeout=10)
                cpu, sleeps = loop_cost(instance, 3.0)
                # One pass a millisecond at most; unmuted, every ring was a
                # pass (13 000 sleeps and 0.34 CPU seconds a second here).
                assert sleeps < 2500, sleeps
                assert cpu < 0.15, cpu
                times = round_trips(client, 500, pause=0.002)
                assert attacker.poll() is None, "the attack ended before it was measured"
            finally:
                attacker.kill()
                attacker.communicate(timeout=60)
            print(f"loop {cpu:.3f} CPU s/s, {sleeps:.0f} sleeps/s; p99 {quiet * 1e3:.2f} ms quiet, "
                  f"{p99(times) * 1e3:.2f} ms attacked")  # fmt: skip
            # Issue 13's bar is 10 ms; a loaded machine adds its own delays.
            assert p99(times) < max(0.010, 2 * quiet), (p99(times), quiet)
            client.close()
        assert instance.proc.poll() is None, "the stack died"
