"""What one hostile app costs the honest ones (issue 13): the same short-
transaction workload, with and without an attacker on the same instance.

The honest apps are the SDK's examples, as root: an HTTP server on 8080
(`ab -c 10`, one request per connection, from the peer namespace) and an
echo server on 7002 (64-byte round trips on one connection, for the
latency). The attacker is tests/support/hostile_app.py, as an
unprivileged member of the app group, one attack per case: `ring` (its
doorbell without pause), `resize` (truncating its segment), `scribble`
(garbage over its segment), `hog` (all the shared memory it may have),
`squat` (Attach without end) and `list` (ListConnections without pause).

    python3 -m bench.isolation [--quick] [--json]     (as root)

Reported per case: requests/s and its ratio to the run without attacker
(the acceptance bar is 0.9), and echo round-trip p50/p99.

The attacker runs at nice 19: deployed, each app has a CPU share of its
own (its container's cgroup), and on a 2-core machine its own busy loop
would otherwise be most of what the honest apps lose, which is not what
this measures. What it makes the instance do (the loop, the control
process) runs at the instance's priority, as deployed.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import _cli as bench_cli
from stackservice.nic.netconf import inside_netns
from tests.support.netns import in_netns, private_port
from tests.support.process import serving_app
from tests.support.stack import running_stack

STACK = "198.18.0.10"
ROOT = Path(__file__).resolve().parents[1]
HOSTILE_UID, APP_GID = 10002, 10001
ATTACKS = ("ring", "resize", "scribble", "hog", "squat", "list")
_RATE = re.compile(r"Requests per second:\s+([\d.]+)")
_FAILED = re.compile(r"Failed requests:\s+(\d+)")


@contextlib.contextmanager
def attacker(control: str, attack: str | None):
    if attack is None:
        yield
        return
    proc = subprocess.Popen(
        ["nice", "-n", "19", sys.executable, "-m", "tests.support.as_user", str(HOSTILE_UID),
         str(APP_GID), "tests.support.hostile_app", "--control", control, "--attack", attack,
         "--seconds", "600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    time.sleep(1.0)  # the attack under way before the workload starts
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


class Pinger:
    """64-byte echo round trips on one connection, timed, until stopped."""

    def __init__(self, netns: str) -> None:
        with inside_netns(netns):
            self.sock = socket.create_connection((STACK, 7002), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        payload = bytes(64)
        while not self._stop.is_set():
            start = time.perf_counter()
            self.sock.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(self.sock.recv(65536))
            self.samples.append(time.perf_counter() - start)
            self._stop.wait(0.001)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(30)
        self.sock.close()
        return self.samples


def ab(netns: str, requests: int) -> tuple[float, int]:
    done = in_netns(
        netns, "ab", "-q", "-n", str(requests), "-c", "10", f"http://{STACK}:8080/", timeout=600
    )
    return float(_RATE.search(done.stdout).group(1)), int(_FAILED.search(done.stdout).group(1))


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def run(quick: bool, progress) -> dict:
    requests, repeats = (1000, 1) if quick else (5000, 3)
    cases: list[str | None] = [None, *ATTACKS]
    rates: dict[str, list[float]] = {str(c or "none"): [] for c in cases}
    echo: dict[str, list[float]] = {str(c or "none"): [] for c in cases}
    failed = 0
    with (
        private_port(vfs=1) as port,
        running_stack(port.vf(0), f"{STACK}/24", "vf0", "--app-group", str(APP_GID),
                      "--app-shm-limit-mib", "32") as stack,
    ):  # fmt: skip
        control = f"unix://{stack.run_dir / 'vf0.sock'}"
        with (
            serving_app("vfstack.examples.http_server", "--control", control, "--port", "8080",
                "--size", "64", "--app", "web"),
            serving_app("vfstack.examples.echo_server", "--control", control, "--port", "7002",
                "--app", "echo"),
        ):  # fmt: skip
            ab(port.netns, 300)  # warm-up
            for rep in range(repeats):
                # Every case in each repeat: drifting machine load hits all.
                for case in cases:
                    name = case or "none"
                    progress(f"[{rep + 1}/{repeats}] {name} ...")
                    with attacker(control, case):
                        pinger = Pinger(port.netns)
                        try:
                            rate, fails = ab(port.netns, requests)
                        finally:
                            echo[name] += pinger.stop()
                    rates[name].append(rate)
                    failed += fails
    base = statistics.median(rates["none"])
    summary = [
        {
            "attack": name,
            "rps": statistics.median(values),
            "ratio": statistics.median(values) / base,
            "echo_p50_ms": _ms(echo[name], 0.5),
            "echo_p99_ms": _ms(echo[name], 0.99),
        }
        for name, values in rates.items()
    ]
    return {"requests_per_run": requests, "repeats": repeats, "samples": rates,
            "failed": failed, "summary": summary}  # fmt: skip


def table(summary: list[dict]) -> str:
    lines = [f"{'attack':<10} {'req/s':>8} {'ratio':>6} {'echo p50':>9} {'echo p99':>9}"]
    for row in summary:
        lines.append(
            f"{row['attack']:<10} {row['rps']:>8.0f} {row['ratio']:>6.2f} "
            f"{row['echo_p50_ms']:>7.2f}ms {row['echo_p99_ms']:>7.2f}ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = bench_cli.parser(__doc__).parse_args(argv)
    report = run(args.quick, bench_cli.progress)
    print(json.dumps(report, indent=2) if args.json else table(report["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
