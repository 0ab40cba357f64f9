"""The impairing relay's capacity (tests/support/relay.py): how many frames
per second it forwards on a clean wire before the kernel drops frames it
had no time to read (overruns).

A paced sender in the peer namespace (tests/support/blast.py) offers
frames at each rate to a MAC nobody has; the relay's own counters say how
many it forwarded and how many the kernel dropped. The lossy-wire tests
and `bench.loss` send their traffic through the relay: at a rate it does
not keep up with, they would measure it, not TCP.

    python3 -m bench.relay [--quick] [--json]     (as root)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bench._cli import summary_main
from tests.support.impaired import ImpairedPort, impaired_port
from tests.support.netns import in_netns
from tests.support.stack import sample_until

RATES = (5_000, 10_000, 20_000, 40_000)  # offered frames/s
QUICK_RATES = (20_000,)
REPO = Path(__file__).resolve().parents[1]


def offer(port: ImpairedPort, rate: int, seconds: float) -> dict:
    """`rate` frames/s for `seconds` from the peer; what became of them."""
    frames = int(rate * seconds)
    before = port.stats().a_to_b
    sent = in_netns(
        port.netns, sys.executable, "-m", "tests.support.blast", port.wire, str(frames), str(rate),
        timeout=seconds * 10 + 30, cwd=REPO,
    )  # fmt: skip
    accounted = before.forwarded + before.overruns + frames
    after = sample_until(
        lambda: port.stats().a_to_b, lambda now: now.forwarded + now.overruns >= accounted, 10
    )
    forwarded = after.forwarded - before.forwarded
    overruns = after.overruns - before.overruns
    return {
        "offered_per_s": rate,
        "sent_per_s": float(sent.stdout),
        "frames": frames,
        "forwarded": forwarded,
        "overruns": overruns,
        "unaccounted": frames - forwarded - overruns,
    }


def run(quick: bool, progress) -> dict:
    rates = QUICK_RATES if quick else RATES
    repeats, seconds = (1, 1.0) if quick else (3, 3.0)
    runs: dict[str, list[dict]] = {str(rate): [] for rate in rates}
    with impaired_port(vfs=1, seed=1) as port:
        for rep in range(repeats):
            for rate in rates:
                progress(f"[{rep + 1}/{repeats}] {rate} frames/s for {seconds:.0f} s ...")
                runs[str(rate)].append(offer(port, rate, seconds))
    return {"params": {"repeats": repeats, "seconds": seconds}, "runs": runs}


def summarize(report: dict) -> list[dict]:
    rows = []
    for rate, runs in report["runs"].items():
        lost = [100 * r["overruns"] / r["frames"] for r in runs]
        rows.append(
            {
                "offered_per_s": int(rate),
                "sent_per_s": statistics.median(r["sent_per_s"] for r in runs),
                "overrun_percent": statistics.median(lost),
                "overrun_percent_max": max(lost),
                "unaccounted": sum(r["unaccounted"] for r in runs),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    head = f"{'offered/s':>10} {'sent/s':>10} {'overruns % (max)':>18} {'unaccounted':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lost = f"{r['overrun_percent']:.2f} ({r['overrun_percent_max']:.2f})"
        lines.append(
            f"{r['offered_per_s']:>10} {r['sent_per_s']:>10.0f} {lost:>18} {r['unaccounted']:>12}"
        )
    lines.append("(sent/s: what the sender achieved; overruns: frames the kernel dropped)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return summary_main(__doc__, argv, run, summarize, table)


if __name__ == "__main__":
    sys.exit(main())
