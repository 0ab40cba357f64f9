"""Python servers as people write them, on vfstack and on kernel sockets:
the same program, same run, same wire (the test bed of `python -m bench`).

    epoll     vfstack.examples.http_server, the hand-written epoll loop
    aiohttp   vfstack.examples.aiohttp_app (aiohttp's web.run_app)
    asgi      vfstack.examples.asgi_app (Starlette on uvicorn)

each serving a 64-byte GET / to two workloads from the peer namespace:

    short       ab, one request per connection (HTTP/1.0, the server closes)
    keep-alive  wrk, HTTP/1.1, every connection kept for the whole run

    python3 -m bench.frameworks [--quick] [--json]     (as root)

Reported per framework and workload: requests/s on each side, median of
the repeats (min..max), and the stack/kernel ratio; failed requests are
counted and shown. Repeats alternate which side goes first.
"""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

from bench import _cli as bench_cli
from bench._measure import ratio_row, table
from bench.evaluation import (
    APP_PORT,
    KERNEL_ADDRESS,
    STACK_ADDRESS,
    Bed,
    ab,
    order,
    wrk,
)
from tests.support.netns import kernel_host, private_port
from tests.support.stack import running_stack

FRAMEWORKS = {"epoll": "http_server", "aiohttp": "aiohttp_app", "asgi": "asgi_app"}
CONCURRENCY = 32
KEEP_ALIVE = 10**9  # wrk closes every N-th request's connection: never


def measure(bed: Bed, server, workload: str, seconds: int) -> dict:
    if workload == "short":
        return ab(bed, server, CONCURRENCY, seconds)
    return wrk(bed, server, CONCURRENCY, seconds, KEEP_ALIVE)


def run(quick: bool, progress) -> dict:
    repeats, seconds = (1, 3) if quick else (3, 5)
    report: dict = {
        "params": {"repeats": repeats, "seconds": seconds, "concurrency": CONCURRENCY},
        "addresses": {"stack": STACK_ADDRESS, "kernel": KERNEL_ADDRESS},
        "runs": [],
    }
    knobs = argparse.Namespace(
        profile=SimpleNamespace(quiet_budget_s=0.0, idle_seconds=0.0), pin=None, no_wrk=False
    )
    with (
        private_port(vfs=1) as port,
        kernel_host(port, address=KERNEL_ADDRESS) as host_ns,
        running_stack(port.vf(0), f"{STACK_ADDRESS}/24", "vf0") as stack,
    ):
        bed = Bed(port, host_ns, stack, knobs, progress)
        for framework, example in FRAMEWORKS.items():
            with bed.servers(example, "--port", str(APP_PORT), "--size", "64") as servers:
                for workload in ("short", "keep-alive"):
                    for rep in range(repeats):
                        for side in order(rep):
                            progress(f"{framework} {workload} {side} (repeat {rep + 1}) ...")
                            figures = measure(bed, servers[side], workload, seconds)
                            report["runs"].append(
                                {"framework": framework, "workload": workload, "side": side,
                                 "repeat": rep, **figures}
                            )  # fmt: skip
        internal = stack.counters().get("internal_errors", {})
        report["internal_errors"] = sum(internal.values())
    return report


def summarize(report: dict) -> list[dict]:
    rows = []
    for framework in FRAMEWORKS:
        for workload in ("short", "keep-alive"):
            runs = [
                r for r in report["runs"]
                if r["framework"] == framework and r["workload"] == workload
            ]  # fmt: skip
            sides = ("stack", "kernel")
            rates = {s: [r["requests_per_s"] for r in runs if r["side"] == s] for s in sides}
            row = ratio_row(f"{framework} {workload}", "req/s", rates["stack"], rates["kernel"])
            failed = {s: sum(int(r["failed"]) for r in runs if r["side"] == s) for s in rates}
            if any(failed.values()):
                row["failed"] = failed
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_cli.summary_main(__doc__, argv, run, summarize, table)


if __name__ == "__main__":
    sys.exit(main())
