"""What watching an instance costs its data path: diag HTTP short
transactions (ab, one request per connection) with `vfstack stats --watch`
polling every 10 ms, with a Prometheus-style scrape of /metrics every
second, and with neither, alternating in the same run.

    python3 -m bench.control_overhead [--quick] [--json]     (as root)
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from bench import _cli as bench_cli
from tests.support.netns import in_netns, private_port
from tests.support.stack import running_stack

STACK = "198.18.0.10"
_RATE = re.compile(r"Requests per second:\s+([\d.]+)")
_FAILED = re.compile(r"Failed requests:\s+(\d+)")


def ab(netns: str, requests: int) -> tuple[float, int]:
    done = in_netns(
        netns, "ab", "-q", "-n", str(requests), "-c", "50", f"http://{STACK}/", timeout=600
    )
    return float(_RATE.search(done.stdout).group(1)), int(_FAILED.search(done.stdout).group(1))


class Watcher:
    """`vfstack stats --watch 0.01` streaming to a file (a pipe nobody reads
    during the run would fill and stall it, measuring nothing)."""

    def __init__(self, url: str, log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                ["vfstack", "stats", "--watch", "0.01", "--json", "--control", url],
                stdout=out, stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        while log.stat().st_size == 0 and self.proc.poll() is None:
            time.sleep(0.01)  # streaming before the load starts

    def stop(self) -> int:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return len(self.log.read_text().splitlines())


class Scraper:
    """A Prometheus-like scrape of /metrics every second."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.scrapes = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            with urllib.request.urlopen(self.url, timeout=5) as reply:
                reply.read()
            self.scrapes += 1
            self.done.wait(1.0)

    def stop(self) -> int:
        self.done.set()
        self.thread.join(timeout=10)
        return self.scrapes


CASES = ("without", "with_watch", "with_scrape")


def run(quick: bool, progress) -> dict:
    requests, repeats = (2000, 1) if quick else (10000, 5)
    samples: dict[str, list[float]] = {case: [] for case in CASES}
    observations = dict.fromkeys(CASES, 0)
    failed = 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    with (
        private_port(vfs=1) as port,
        running_stack(port.vf(0), f"{STACK}/24", "vf0", "--diag-services",
                      "--metrics-port", str(metrics_port)) as stack,
    ):  # fmt: skip
        url = f"unix://{stack.run_dir / 'vf0.sock'}"
        ab(port.netns, 500)  # warm-up
        for rep in range(repeats):
            # Alternating cases in each repeat: drifting machine load hits all.
            for case in CASES:
                progress(f"[{rep + 1}/{repeats}] {case} ...")
                observer = None
                if case == "with_watch":
                    observer = Watcher(url, stack.run_dir / "watch.jsonl")
                elif case == "with_scrape":
                    observer = Scraper(metrics_port)
                try:
                    rate, fails = ab(port.netns, requests)
                finally:
                    if observer is not None:
                        observations[case] += observer.stop()
                samples[case].append(rate)
                failed += fails
    without = statistics.median(samples["without"])
    return {
        "requests_per_run": requests,
        "repeats": repeats,
        "samples": samples,
        "median_rps": {case: statistics.median(samples[case]) for case in CASES},
        "change_percent": {
            case: 100 * (statistics.median(samples[case]) - without) / without for case in CASES[1:]
        },
        "failed": failed,
        "observations": observations,
    }


def main(argv: list[str] | None = None) -> int:
    args = bench_cli.parser(__doc__).parse_args(argv)
    report = run(args.quick, bench_cli.progress)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    labels = {
        "without": "no observer",
        "with_watch": "stats --watch 10 ms",
        "with_scrape": "scrape /metrics 1 s",
    }
    print(f"{'case':<22} {'req/s (median)':>15} {'min':>7} {'max':>7} {'change':>8} {'obs':>5}")
    for case in CASES:
        values = report["samples"][case]
        change = report["change_percent"].get(case)
        print(
            f"{labels[case]:<22} {statistics.median(values):>15.0f} {min(values):>7.0f} "
            f"{max(values):>7.0f} {'' if change is None else f'{change:+.1f}%':>8} "
            f"{report['observations'][case]:>5}"
        )
    print(f"failed requests: {report['failed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
