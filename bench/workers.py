"""Workers: one instance with 1 and with 2 workers (`--workers`), same run.

Clients in the peer namespace against the diag HTTP server (`GET /` ->
64 B), the instance restarted between worker counts, the order
alternating between repeats:

1. short transactions: `ab -n N -c C` (one request per connection);
2. keep-alive: `ab -k`;
3. CPU-seconds per 1000 transactions at a paced rate (bench.tcp's paced
   client), of the instance's whole process tree (supervisor, workers,
   control process) and of the client, each from its own CPU time.

This machine has 2 cores, shared by the workers and the client (ab is one
process, one core at most). So every ab run also records the instance's
CPU-seconds per 1000 transactions and the client's, each from its own
processes: `stack-bound rate` is what the instance's workers could serve
with a core each and the client elsewhere (workers x 1000 / the
instance's CPU-s per 1000); `client busy` is the client's CPU-s per
second of the run (near 1.0: the client was the bottleneck, and the
measured rate says nothing about the stack).

Goals (issue: multicore): CPU-s/1000 with 2 workers within 10% of 1
worker (nothing shared), and 2 workers >= 1.8x one worker's rate where the
client is not the bottleneck.

Each worker busy-polls for `--busy-poll-us` after a pass with work, so
an idle-ish worker spins too: `--busy-poll-us 0` shows what the workers
cost without it.

    python3 -m bench.workers [--quick] [--json] [--busy-poll-us N]     (as root)
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from bench import _cli as bench_cli
from bench._measure import Progress, Quieter, fmt, spread
from bench.tcp import STACK_ADDRESS, ab, paced

WORKER_COUNTS = (1, 2)
CONCURRENCY = 64


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and all its descendants now alive, every
    thread of each: the scheduler's nanosecond run times (schedstat), since
    utime/stime come in 10 ms ticks, too coarse for a run of 1000
    transactions."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            for task in Path(f"/proc/{current}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:
            continue  # ended meanwhile
        pending += map(int, children)
    return total / 1e9


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured_ab(netns: str, stack_pid: int, count: int, keep_alive: bool) -> dict:
    """One ab run, with the instance's and the client's CPU time."""
    stack0, client0, wall0 = tree_cpu_s(stack_pid), _children_cpu_s(), time.monotonic()
    result = ab(netns, STACK_ADDRESS, count, CONCURRENCY, keep_alive)
    wall = time.monotonic() - wall0
    done = max(result["complete"], 1)
    result["stack_cpu_s_per_1000"] = 1000 * (tree_cpu_s(stack_pid) - stack0) / done
    result["client_cpu_s_per_1000"] = 1000 * (_children_cpu_s() - client0) / done
    result["client_busy"] = (_children_cpu_s() - client0) / wall
    return result


def run(quick: bool, progress: Progress, busy_poll_us: int | None = None) -> dict:
    from tests.support.netns import private_port
    from tests.support.stack import running_stack

    params = {
        "repeats": 1 if quick else 3,
        "ab_requests": 1000 if quick else 10000,
        "ab_keepalive_requests": 2000 if quick else 30000,
        "concurrency": CONCURRENCY,
        "paced_rate": 1000.0,
        "paced_seconds": 2.0 if quick else 5.0,
        "quiet_budget_s": 5.0 if quick else 120.0,
        "busy_poll_us": busy_poll_us,  # None: the instance's default
    }
    spin = () if busy_poll_us is None else ("--busy-poll-us", str(busy_poll_us))
    quieter = Quieter(params["quiet_budget_s"], progress)
    runs: dict[int, dict[str, list]] = {
        n: {"short": [], "keepalive": [], "paced": []} for n in WORKER_COUNTS
    }
    restarts = {n: 0 for n in WORKER_COUNTS}
    with private_port(vfs=1) as port:
        for rep in range(params["repeats"]):
            order = WORKER_COUNTS if rep % 2 == 0 else WORKER_COUNTS[::-1]
            for workers in order:
                step = f"[{rep + 1}/{params['repeats']}] {workers} worker(s)"
                with running_stack(
                    port.vf(0), f"{STACK_ADDRESS}/24", "vf0", "--diag-services",
                    "--workers", str(workers), *spin,
                ) as stack:  # fmt: skip
                    pid = stack.proc.pid
                    progress(f"{step}: warm-up ...")
                    ab(port.netns, STACK_ADDRESS, 300, 10, False)
                    for scenario, keep, count in (
                        ("short", False, params["ab_requests"]),
                        ("keepalive", True, params["ab_keepalive_requests"]),
                    ):
                        quieter.wait()
                        progress(f"{step}: ab {scenario} -c {CONCURRENCY} ...")
                        runs[workers][scenario].append(measured_ab(port.netns, pid, count, keep))
                    quieter.wait()
                    progress(f"{step}: paced {params['paced_rate']:.0f}/s ...")
                    stack0 = tree_cpu_s(pid)
                    result = paced(
                        port.netns, STACK_ADDRESS, params["paced_rate"], params["paced_seconds"],
                        pid,
                    )  # fmt: skip
                    done = max(result["completed"], 1)
                    result["stack_cpu_s_per_1000"] = 1000 * (tree_cpu_s(pid) - stack0) / done
                    runs[workers]["paced"].append(result)
                    restarts[workers] += stack.counters()["loop"]["worker_restarts"]
    return {
        "quick": quick,
        "params": params,
        "runs": runs,
        "worker_restarts": restarts,
        "quiet": quieter.summary(),
    }


def _row(measure: str, unit: str, values: dict[int, list[float]]) -> dict:
    row = {"measure": measure, "unit": unit}
    for workers, series in values.items():
        row[f"workers_{workers}"] = spread(series)
    one, two = (row[f"workers_{n}"]["median"] for n in WORKER_COUNTS)
    row["ratio"] = two / one if one else None
    return row


def summarize(report: dict) -> list[dict]:
    runs = {int(n): r for n, r in report["runs"].items()}
    rows = []
    for scenario, label in (("short", "ab short"), ("keepalive", "ab -k")):
        by = {n: runs[n][scenario] for n in WORKER_COUNTS}
        first = len(rows)
        for field, unit in (
            ("requests_per_s", "requests/s"),
            ("stack_cpu_s_per_1000", "stack CPU-s/1000"),
            ("client_cpu_s_per_1000", "client CPU-s/1000"),
            ("client_busy", "client busy"),
        ):
            rows.append(_row(label, unit, {n: [r[field] for r in by[n]] for n in by}))
        rows.append(
            _row(
                label,
                "stack-bound/s",
                {n: [n * 1000 / max(r["stack_cpu_s_per_1000"], 1e-9) for r in by[n]] for n in by},
            )
        )
        rows[first]["failed"] = {n: int(sum(r["failed"] for r in by[n])) for n in by}
    paced_by = {n: runs[n]["paced"] for n in WORKER_COUNTS}
    rate = report["params"]["paced_rate"]
    for field, unit in (
        ("stack_cpu_s_per_1000", "stack CPU-s/1000"),
        ("client_cpu_s_per_1000", "client CPU-s/1000"),
        ("p99_ms", "p99 ms"),
    ):
        series = {n: [r[field] for r in paced_by[n]] for n in paced_by}
        rows.append(_row(f"paced {rate:.0f}/s", unit, series))
    rows[-1]["failed"] = {n: int(sum(r["failed"] for r in paced_by[n])) for n in paced_by}
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'measure':<14} {'unit':<18} {'1 worker (min..max)':>26} "
        f"{'2 workers (min..max)':>26} {'2/1':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [
            f"{fmt(s['median'])} ({fmt(s['min'])}..{fmt(s['max'])})"
            for s in (r[f"workers_{n}"] for n in WORKER_COUNTS)
        ]
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        failed = r.get("failed")
        note = f"  failed {failed[1]}/{failed[2]}" if failed else ""
        lines.append(f"{r['measure']:<14} {r['unit']:<18} {cells[0]:>26} {cells[1]:>26} "
                     f"{ratio:>6}{note}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_cli.parser(__doc__)
    parser.add_argument(
        "--busy-poll-us", type=int, help="the instances' --busy-poll-us (default: theirs)"
    )
    args = parser.parse_args(argv)
    report = run(args.quick, bench_cli.progress, args.busy_poll_us)
    report["summary"] = summarize(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(report["summary"]))
        print(
            "stack-bound/s: workers x 1000 / stack CPU-s per 1000 (a core per worker, the "
            "client elsewhere); client busy: client CPU-s per second (1.0: ab was the "
            f"bottleneck). Worker restarts: {report['worker_restarts']}."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
