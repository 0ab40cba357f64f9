"""The randomized soak, as long as you like (tests/support/soak.py says
what runs and what is checked; tests/integration/test_soak.py runs it
for 60 s).

    python3 -m bench.soak [--minutes N] [--seed S] [--json] [--quick]   (as root)

A progress line every --progress seconds on stderr (operations, bytes,
connections, failures), then a summary table (or the whole report as
JSON). Exit status 1 if a check failed: the output names the seed that
replays the run and each failed connection's plan.
"""

from __future__ import annotations

import json
import random
import sys

from bench import _cli as bench_cli
from tests.support.soak import SoakSettings, failure_text, run_soak

QUICK_SECONDS = 20.0


def _table(report: dict) -> str:
    rows = [("actor", "style", "conns", "ops", "sent MB", "recv MB", "exact MB", "failed")]
    for actor in report["actors"]:
        rows.append(
            (
                actor["actor"], actor["style"], f"{actor.get('connections', 0):,}",
                f"{actor.get('ops', 0):,}", f"{actor.get('sent', 0) / 1e6:.1f}",
                f"{actor.get('received', 0) / 1e6:.1f}", f"{actor.get('verified', 0) / 1e6:.1f}",
                str(actor.get("failures", 0)),
            )
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    totals = report["totals"]
    lines += [
        "",
        f"seed {report['seed']}, {report['elapsed_seconds']:.0f} s: {totals['connections']:,} "
        f"connections, {totals['ops']:,} operations, {totals['bytes'] / 1e6:,.1f} MB moved, "
        f"{totals['verified_bytes'] / 1e6:,.1f} MB in streams that completed (all exact)"
        if report["passed"]
        else f"seed {report['seed']}: FAILED",
        "",
        "outcomes (plan kind/outcome: connection ends):",
    ]
    lines += [f"  {name:<28} {count:>8,}" for name, count in totals["outcomes"].items()]
    lines += ["", "admin runs:"]
    lines += [f"  {name:<40} {count:>6,}" for name, count in report["admin"].items()]
    rss = report["rss_bytes"]
    lines += ["", "stack RSS: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in rss.items())]
    lines += ["", "checks:"]
    lines += [f"  {c['status']:>4}  {c['check']}" for c in report["checks"]]
    if not report["passed"]:
        lines += ["", failure_text(report)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_cli.parser(__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="how long (default 5)")
    parser.add_argument("--seed", type=int, help="the run's seed (default: a random one)")
    parser.add_argument(
        "--plan", type=int, metavar="SEED",
        help="replay one failed connection: every connection runs this plan",
    )  # fmt: skip
    parser.add_argument(
        "--progress", type=float, default=10.0, metavar="SECONDS", help="progress every (10)"
    )
    parser.add_argument(
        "--admin-interval", type=float, default=1.0, metavar="SECONDS",
        help="seconds between admin commands (default 1)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="the instance's workers (default 1)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    seconds = QUICK_SECONDS if args.quick else args.minutes * 60
    bench_cli.progress(f"soak: seed {seed}, {seconds:.0f} s, {args.workers} worker(s) ...")
    settings = SoakSettings(
        seed=seed,
        seconds=seconds,
        progress_seconds=args.progress,
        admin_interval=args.admin_interval,
        plan=args.plan,
        workers=args.workers,
    )
    report = run_soak(settings, bench_cli.progress)
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
