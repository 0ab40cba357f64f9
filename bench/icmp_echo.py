"""ICMP echo round trips per second: a stack instance vs. the Linux kernel.

Both responders sit behind the same emulated wire (veth + macvlan), in the
same run: VF0 is owned by a stack instance (198.18.0.10); another macvlan of
the PF, in a namespace of its own, by the kernel (198.18.0.50). The kernel
peer floods each with `ping -f` (one request in flight per pinger: a round-trip rate) and, with
several pingers at once, measures answered echoes per second.

    python3 -m bench.icmp_echo [--quick] [--json]     (as root)
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time

from bench._cli import summary_main
from tests.support.netns import KERNEL_HOST_ADDRESS, in_netns, kernel_host, private_port
from tests.support.stack import running_stack

STACK_ADDRESS = "198.18.0.10"
KERNEL_ADDRESS = KERNEL_HOST_ADDRESS
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received.*time (\d+)ms")
_RTT = re.compile(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def flood(netns: str, address: str, pingers: int, count: int) -> dict[str, float]:
    """Run `pingers` concurrent `ping -f -c count`; answered echoes/s and rtt."""
    procs = [
        subprocess.Popen(
            ["ip", "netns", "exec", netns, "ping", "-n", "-q", "-f", "-c", str(count), address],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(pingers)
    ]
    start = time.monotonic()
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    elapsed = time.monotonic() - start
    received, rtts = 0, []
    for out in outputs:
        summary, rtt = _SUMMARY.search(out), _RTT.search(out)
        if not summary or not rtt:
            raise RuntimeError(f"unexpected ping output: {out!r}")
        received += int(summary.group(2))
        rtts.append(float(rtt.group(2)))
    return {
        "echoes_per_s": received / elapsed,
        "lost": pingers * count - received,
        "rtt_avg_us": 1000 * statistics.fmean(rtts),
    }


def run(quick: bool, progress) -> dict:
    count = 2000 if quick else 20000
    repeats = 1 if quick else 3
    scenarios = [("1 pinger", 1), ("4 pingers", 4)]
    results: dict[str, dict[str, list[dict]]] = {
        name: {"stack": [], "kernel": []} for name, _ in scenarios
    }
    with (
        private_port(vfs=1) as port,
        kernel_host(port),
        running_stack(port.vf(0), f"{STACK_ADDRESS}/24"),
    ):
        for target in (STACK_ADDRESS, KERNEL_ADDRESS):  # warm-up, ARP
            in_netns(port.netns, "ping", "-c", "3", "-i", "0.01", target)
        for rep in range(repeats):
            for name, pingers in scenarios:
                # Alternate responders so drifting machine load hits both.
                for who, address in (("stack", STACK_ADDRESS), ("kernel", KERNEL_ADDRESS)):
                    progress(f"[{rep + 1}/{repeats}] {name}: {who} ...")
                    results[name][who].append(flood(port.netns, address, pingers, count))
    return {"count_per_pinger": count, "repeats": repeats, "results": results}


def summarize(report: dict) -> list[dict]:
    rows = []
    for name, by_who in report["results"].items():
        stack = [r["echoes_per_s"] for r in by_who["stack"]]
        kernel = [r["echoes_per_s"] for r in by_who["kernel"]]
        rows.append(
            {
                "scenario": name,
                "stack_echoes_per_s": statistics.median(stack),
                "kernel_echoes_per_s": statistics.median(kernel),
                "ratio": statistics.median(stack) / statistics.median(kernel),
                "stack_rtt_us": statistics.median(r["rtt_avg_us"] for r in by_who["stack"]),
                "kernel_rtt_us": statistics.median(r["rtt_avg_us"] for r in by_who["kernel"]),
                "lost": sum(r["lost"] for w in by_who.values() for r in w),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'scenario':<10} {'stack/s':>9} {'kernel/s':>9} {'ratio':>6} "
        f"{'stack rtt':>10} {'kernel rtt':>10} {'lost':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['scenario']:<10} {r['stack_echoes_per_s']:>9.0f} {r['kernel_echoes_per_s']:>9.0f} "
            f"{r['ratio']:>6.2f} {r['stack_rtt_us']:>8.0f}us {r['kernel_rtt_us']:>8.0f}us "
            f"{r['lost']:>5}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return summary_main(__doc__, argv, run, summarize, table)


if __name__ == "__main__":
    sys.exit(main())
