"""Workers: one instance with 1 and with 2 workers (`--workers`), same run.

Clients in the peer namespace against two servers of `GET /` -> 64 B:
the in-stack diag HTTP server, and the SDK example `http_server` (one
Python process, attached to every worker through one `Stack`); the
instance restarted between worker counts, the order alternating between
repeats:

1. short transactions: `ab -n N -c C` (one request per connection);
2. keep-alive: `ab -k`;
3. (diag only) CPU-seconds per 1000 transactions at a paced rate
   (bench.tcp's paced client): the same rate for both worker counts, and
   the same rate *per worker* (N x the rate), which is the comparison
   where nothing shared means the same cost per transaction: a load split
   over more workers gives each fewer frames per pass, and the loop's
   fixed costs per pass weigh more (see passes/1000).

CPU is the server side's whole process tree (supervisor, workers,
control process; and the app, for `http_server`) and the client's, each
from its own CPU time.

This machine has 2 cores, shared by the workers and the client (ab is one
process, one core at most). So every ab run also records the instance's
CPU-seconds per 1000 transactions and the client's, each from its own
processes: `stack-bound rate` is what the instance's workers could serve
with a core each and the client elsewhere (workers x 1000 / the
instance's CPU-s per 1000, the app's CPU left out); `client busy` is the
client's CPU-s per second of the run (near 1.0: the client was the
bottleneck, and the measured rate says nothing about the stack), `app
busy` the app's (near 1.0: the single-process app was). `passes/1000`,
`sleeps/1000` and `frames/RX batch` come from the workers' loop counters,
added up: each pass pays the loop's fixed costs, so fewer frames per
pass (the same load split over more workers) cost more per transaction.

Goals (issue: multicore): CPU-s/1000 with 2 workers within 10% of 1
worker (nothing shared), and 2 workers >= 1.8x one worker's rate where the
client is not the bottleneck.

Each worker busy-polls for `--busy-poll-us` after a pass with work, so
an idle-ish worker spins too: `--busy-poll-us 0` shows what the workers
cost without it.

    python3 -m bench.workers [--quick] [--json] [--busy-poll-us N]     (as root)
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import _cli as bench_cli
from bench._measure import Progress, Quieter, fmt, spread
from bench.tcp import STACK_ADDRESS, ab, paced
from tests.support.process import stop as stop_process

WORKER_COUNTS = (1, 2)
CONCURRENCY = 64
APP_PORT = 8000
SERVERS = ("diag", "app")  # the in-stack diag HTTP server, the SDK's http_server
SCENARIOS = ("short", "keepalive")


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


def loop_figures(counters: Callable[[], dict]) -> Callable[[int], dict]:
    """The workers' loop counters now; call the result with the
    transactions done since, for their passes per 1000 of them (where a
    per-worker cost would show: each pass pays the loop's fixed costs)."""

    def sample() -> tuple[int, int, int, int]:
        now = counters()
        loop = now["loop"]
        return loop["iterations"], loop["sleeps"], loop["rx_batches"], now["nic"]["rx_packets"]

    before = sample()

    def since(done: int) -> dict:
        passes, sleeps, batches, frames = (b - a for a, b in zip(before, sample(), strict=True))
        return {
            "passes_per_1000": 1000 * passes / done,
            "sleeps_per_1000": 1000 * sleeps / done,
            "frames_per_rx_batch": frames / max(batches, 1),
        }

    return since


def measured_ab(
    netns: str, target: str, stack, app_pid: int | None, count: int, keep_alive: bool
) -> dict:
    """One ab run at `target` (host[:port]), with the CPU time of the
    instance, of the app (if any) and of the client, and the workers'
    passes."""
    stack_pid = stack.proc.pid

    def app_cpu_s() -> float:
        return 0.0 if app_pid is None else tree_cpu_s(app_pid)

    stack0, app0, client0 = tree_cpu_s(stack_pid), app_cpu_s(), _children_cpu_s()
    loop = loop_figures(stack.counters)
    wall0 = time.monotonic()
    result = ab(netns, target, count, CONCURRENCY, keep_alive)
    wall = time.monotonic() - wall0
    done = max(result["complete"], 1)
    stack_s, app_s = tree_cpu_s(stack_pid) - stack0, app_cpu_s() - app0
    result["stack_cpu_s_per_1000"] = 1000 * stack_s / done
    result["server_cpu_s_per_1000"] = 1000 * (stack_s + app_s) / done
    result["client_cpu_s_per_1000"] = 1000 * (_children_cpu_s() - client0) / done
    result["client_busy"] = (_children_cpu_s() - client0) / wall
    result["app_busy"] = app_s / wall
    result.update(loop(done))
    return result


def measured_paced(netns: str, stack, rate: float, seconds: float) -> dict:
    """One paced-client run against the diag server, with the instance's
    CPU time and the workers' passes."""
    pid = stack.proc.pid
    stack0 = tree_cpu_s(pid)
    loop = loop_figures(stack.counters)
    result = paced(netns, STACK_ADDRESS, rate, seconds, pid)
    done = max(result["completed"], 1)
    result["stack_cpu_s_per_1000"] = 1000 * (tree_cpu_s(pid) - stack0) / done
    result.update(loop(done))
    return result


@contextlib.contextmanager
def http_app(control: str) -> Iterator[int]:
    """The SDK example http_server attached to the instance, until the
    block ends. Yields: its pid."""
    argv = [sys.executable, "-m", "vfstack.examples.http_server", "--control", control]
    argv += ["--app", "bench-workers", "--port", str(APP_PORT), "--size", "64"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"http_server did not start: {line}{proc.stderr.read()}")
        yield proc.pid
    finally:
        stop_process(proc, timeout=15)


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
        n: {f"{server} {scenario}": [] for server in SERVERS for scenario in SCENARIOS}
        for n in WORKER_COUNTS
    }
    for n in WORKER_COUNTS:
        runs[n]["paced"], runs[n]["paced per worker"] = [], []
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
                    with http_app(f"unix://{stack.run_dir / 'vf0.sock'}") as app_pid:
                        for server, target, app in (
                            ("diag", STACK_ADDRESS, None),
                            ("app", f"{STACK_ADDRESS}:{APP_PORT}", app_pid),
                        ):
                            progress(f"{step}: {server} warm-up ...")
                            ab(port.netns, target, 300, 10, False)
                            for scenario, keep, count in (
                                ("short", False, params["ab_requests"]),
                                ("keepalive", True, params["ab_keepalive_requests"]),
                            ):
                                quieter.wait()
                                progress(f"{step}: {server} ab {scenario} -c {CONCURRENCY} ...")
                                runs[workers][f"{server} {scenario}"].append(
                                    measured_ab(port.netns, target, stack, app, count, keep)
                                )
                    for scenario, rate in (
                        ("paced", params["paced_rate"]),
                        ("paced per worker", params["paced_rate"] * workers),
                    ):
                        quieter.wait()
                        progress(f"{step}: paced {rate:.0f}/s ...")
                        runs[workers][scenario].append(
                            measured_paced(port.netns, stack, rate, params["paced_seconds"])
                        )
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
    for scenario, label in (
        ("diag short", "diag short"), ("diag keepalive", "diag -k"),
        ("app short", "app short"), ("app keepalive", "app -k"),
    ):  # fmt: skip
        by = {n: runs[n][scenario] for n in WORKER_COUNTS}
        first = len(rows)
        fields = [
            ("requests_per_s", "requests/s"),
            ("stack_cpu_s_per_1000", "stack CPU-s/1000"),
            ("client_cpu_s_per_1000", "client CPU-s/1000"),
            ("client_busy", "client busy"),
            ("passes_per_1000", "passes/1000"),
            ("sleeps_per_1000", "sleeps/1000"),
            ("frames_per_rx_batch", "frames/RX batch"),
        ]
        if scenario.startswith("app"):
            fields[2:2] = [("server_cpu_s_per_1000", "+app CPU-s/1000")]
            fields.append(("app_busy", "app busy"))
        for field, unit in fields:
            rows.append(_row(label, unit, {n: [r[field] for r in by[n]] for n in by}))
        rows.append(
            _row(
                label,
                "stack-bound/s",
                {n: [n * 1000 / max(r["stack_cpu_s_per_1000"], 1e-9) for r in by[n]] for n in by},
            )
        )
        rows[first]["failed"] = {n: int(sum(r["failed"] for r in by[n])) for n in by}
    rate = report["params"]["paced_rate"]
    for scenario, label in (("paced", f"paced {rate:.0f}/s"), ("paced per worker", "paced N x")):
        paced_by = {n: runs[n][scenario] for n in WORKER_COUNTS}
        first = len(rows)
        for field, unit in (
            ("stack_cpu_s_per_1000", "stack CPU-s/1000"),
            ("client_cpu_s_per_1000", "client CPU-s/1000"),
            ("p99_ms", "p99 ms"),
            ("passes_per_1000", "passes/1000"),
            ("sleeps_per_1000", "sleeps/1000"),
        ):
            series = {n: [r[field] for r in paced_by[n]] for n in paced_by}
            rows.append(_row(label, unit, series))
        rows[first]["failed"] = {n: int(sum(r["failed"] for r in paced_by[n])) for n in paced_by}
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'measure':<12} {'unit':<18} {'1 worker (min..max)':>26} "
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
        lines.append(f"{r['measure']:<12} {r['unit']:<18} {cells[0]:>26} {cells[1]:>26} "
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
