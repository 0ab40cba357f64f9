"""What watching an instance costs its data path: diag HTTP short
transactions (ab, one request per connection) with `vfstack stats --watch`
polling every 10 ms vs. without, alternating in the same run.

    python3 -m bench.control_overhead [--quick] [--json]     (as root)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

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


def run(quick: bool, progress) -> dict:
    requests, repeats = (2000, 1) if quick else (10000, 5)
    samples: dict[str, list[float]] = {"without": [], "with_watch": []}
    failed = 0
    watched_updates = 0
    with (
        private_port(vfs=1) as port,
        running_stack(port.vf(0), f"{STACK}/24", "vf0", "--diag-services") as stack,
    ):
        url = f"unix://{stack.run_dir / 'vf0.sock'}"
        ab(port.netns, 500)  # warm-up
        for rep in range(repeats):
            for case in ("without", "with_watch"):
                progress(f"[{rep + 1}/{repeats}] {case} ...")
                watcher = None
                if case == "with_watch":
                    # To a file: a pipe nobody reads during the run would fill
                    # and stall the watcher, measuring nothing.
                    log = stack.run_dir / "watch.jsonl"
                    with log.open("w") as out:
                        watcher = subprocess.Popen(
                            ["vfstack", "stats", "--watch", "0.01", "--json", "--control", url],
                            stdout=out, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                        )  # fmt: skip
                    while log.stat().st_size == 0 and watcher.poll() is None:
                        time.sleep(0.01)  # streaming before the load starts
                try:
                    rate, fails = ab(port.netns, requests)
                finally:
                    if watcher is not None:
                        watcher.terminate()
                        watcher.wait(timeout=30)
                        watched_updates += len(log.read_text().splitlines())
                samples[case].append(rate)
                failed += fails
    without = statistics.median(samples["without"])
    with_watch = statistics.median(samples["with_watch"])
    return {
        "requests_per_run": requests,
        "repeats": repeats,
        "samples": samples,
        "without_rps": without,
        "with_watch_rps": with_watch,
        "change_percent": 100 * (with_watch - without) / without,
        "failed": failed,
        "watch_updates": watched_updates,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    report = run(args.quick, lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'case':<24} {'req/s (median)':>15} {'min':>9} {'max':>9}")
    for case, label in (("without", "no watcher"), ("with_watch", "stats --watch 10 ms")):
        values = report["samples"][case]
        print(
            f"{label:<24} {statistics.median(values):>15.0f} {min(values):>9.0f} "
            f"{max(values):>9.0f}"
        )
    print(
        f"change with the watcher: {report['change_percent']:+.1f}%  "
        f"(failed requests: {report['failed']}, watch updates: {report['watch_updates']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
