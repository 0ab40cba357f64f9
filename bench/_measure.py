"""What the stack-vs-kernel benchmarks (`bench.tcp`, `bench.evaluation`)
measure with and how they show it: CPU time from /proc/stat (the whole
machine, less an idle baseline) and per process, waiting for a quiet
machine, CPU placement, ab's figures, and rows of stack and kernel
spreads with their ratio, as a table.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable

Progress = Callable[[str], None]


# ------------------------------------------------------- rows and their table


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ratio_row(measure: str, unit: str, stack: list[float], kernel: list[float] | None) -> dict:
    row = {"measure": measure, "unit": unit, "stack": spread(stack)}
    if kernel is not None:
        row["kernel"] = spread(kernel)
        denominator = row["kernel"]["median"]
        # None only if a figure that can be zero (CPU less idle) is.
        row["ratio"] = row["stack"]["median"] / denominator if denominator else None
    return row


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}".replace(",", " ")
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.2f}"


def table(rows: list[dict]) -> str:
    head = (
        f"{'measure':<25} {'unit':<11} {'stack (min..max)':>26} "
        f"{'kernel (min..max)':>26} {'stack/kernel':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for who in ("stack", "kernel"):
            s = r.get(who)
            cells.append(f"{fmt(s['median'])} ({fmt(s['min'])}..{fmt(s['max'])})" if s else "-")
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        failed = r.get("failed")
        note = f"  failed {failed['stack']}/{failed['kernel']}" if failed else ""
        if "runs" in r:
            kind = "steady" if r["steady_only"] else "all"
            note += f"  {kind} runs: stack {r['runs']['stack']}, kernel {r['runs']['kernel']}"
        lines.append(
            f"{r['measure']:<25} {r['unit']:<11} {cells[0]:>26} {cells[1]:>26} {ratio:>12}{note}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------- ab

# What `ab` prints, the figures both benchmarks read from it.
AB_FIELDS = {
    "complete": re.compile(r"^Complete requests:\s+(\d+)", re.M),
    "failed": re.compile(r"^Failed requests:\s+(\d+)", re.M),
    "non_2xx": re.compile(r"^Non-2xx responses:\s+(\d+)", re.M),
    "requests_per_s": re.compile(r"^Requests per second:\s+([\d.]+)", re.M),
    # The first "Time per request" is the mean latency of one request.
    "mean_ms": re.compile(r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$", re.M),
}


# ---------------------------------------------------------------------- CPU

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_sample() -> tuple[float, float, float, float]:
    """(monotonic s, idle s, tick-sampled busy s, irq+softirq s), all CPUs
    (/proc/stat is not per network namespace)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    now = time.monotonic()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    busy = user + nice + system + irq + softirq
    return (
        now,
        (idle + iowait + steal) / CLOCK_TICKS,
        busy / CLOCK_TICKS,
        (irq + softirq) / CLOCK_TICKS,
    )


def machine_cpu(before: tuple, after: tuple) -> tuple[float, float, float]:
    """CPU-seconds between two samples: (busy, irq+softirq, tick-sampled busy).

    Busy is all CPUs' wall time less their idle (+iowait, steal) time. The
    idle counter is exact on a tickless kernel, while user/system/irq are
    samples taken at each tick, which miss work done in bursts shorter than a
    tick between idle periods: a 200 µs-on/800 µs-off loop read 13% low that
    way here. user+nice+system+irq+softirq is kept as `tick` for comparison.
    """
    wall = after[0] - before[0]
    busy = (os.cpu_count() or 1) * wall - (after[1] - before[1])
    return busy, after[3] - before[3], after[2] - before[2]


def idle_baseline(seconds: float) -> tuple[float, float, float]:
    """machine_cpu per second while nothing is offered."""
    before = machine_sample()
    time.sleep(seconds)
    after = machine_sample()
    return tuple(x / (after[0] - before[0]) for x in machine_cpu(before, after))


def process_cpu_s(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def charge_idle(result: dict, idle: tuple[float, float, float]) -> None:
    """CPU per 1000 transactions of a paced run, less the idle baseline:

    `cpu_s_per_1000`: whole-machine busy time (see machine_cpu).
    `tick_cpu_s_per_1000`: the same from user+nice+system+irq+softirq ticks.
    `accounted_cpu_s_per_1000`: the server and client processes' own CPU
    time plus irq+softirq time. Blind to work in other threads (ksoftirqd,
    kworkers), but not fooled by a neighbour whose load comes and goes.
    """
    result["idle_cpu_per_s"], result["idle_irq_cpu_per_s"], result["idle_tick_cpu_per_s"] = idle
    window, completed = result["window_s"], max(result["completed"], 1)
    busy = result["machine_cpu_s"] - idle[0] * window
    irq = result["machine_irq_cpu_s"] - idle[1] * window
    tick = result["machine_tick_cpu_s"] - idle[2] * window
    result["cpu_s_per_1000"] = 1000 * busy / completed
    result["tick_cpu_s_per_1000"] = 1000 * tick / completed
    accounted = result["server_process_cpu_s"] + result["client_cpu_s"] + max(irq, 0.0)
    result["accounted_cpu_s_per_1000"] = 1000 * accounted / completed


def affinity(pid: int) -> str:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    return "?"


QUIET_CPU_PER_S = 0.15  # busy CPU-s/s under which the machine counts as idle


class Quieter:
    """Waits until the machine is idle apart from us before each measurement
    (on a shared host a neighbour's load skews every figure here), within
    one waiting budget for the whole run."""

    def __init__(self, budget_s: float, progress: Progress) -> None:
        self.budget_s = budget_s
        self.progress = progress
        self.waited_s = 0.0
        self.checks = self.quiet = 0

    def wait(self) -> tuple[float, float]:
        """The last idle sample (busy, irq CPU-s/s), quiet or out of budget."""
        started = time.monotonic()
        try:
            while True:
                sample = idle_baseline(0.5)
                spent = self.waited_s + time.monotonic() - started
                if sample[0] < QUIET_CPU_PER_S or spent >= self.budget_s:
                    self.checks += 1
                    self.quiet += sample[0] < QUIET_CPU_PER_S
                    return sample
                self.progress(f"machine busy ({sample[0]:.2f} CPU-s/s without us): waiting ...")
        finally:
            self.waited_s += time.monotonic() - started

    def summary(self) -> dict:
        return {"checks": self.checks, "quiet": self.quiet, "waited_s": self.waited_s}
