"""The TCP engine's cost in instructions per segment, which a shared machine
does not blur.

On the 2-core development VM the engine's wall time per segment drifts by
half within minutes (the same build, measured back to back), more than
most changes to the engine. The instructions it executes do not drift, so
this benchmark counts them: it runs `bench._engine`'s workloads (two
engines back to back in one process, no kernel, no NIC) under valgrind's
callgrind, runs the same script once with no workload, and divides the
difference by the segments the workload sent. The figure includes
`bench._engine`'s own wiring (see `harness_us_per_segment`), the same in
every build. The `sessions` workload serves the same transactions to an
application through a shared-memory session (`bench._sessions`): the
stack's side of it (stackservice/fastpath) and the rings on both sides
come on top of the engines' work.

Compare two builds by running it in each checkout (compiled, or with
VFSTACK_NO_EXTENSIONS=1 for the pure modules). Bulk varies by about 10%
from run to run (a pass gathers as many segments as the clock lets it);
short transactions by under 1%.

    apt-get install valgrind
    python3 -m bench.engine_instructions [--quick] [--json]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

from bench import _cli as bench_cli

# (workload, size): 64 B transactions at concurrency 64, between the two
# engines or served to an app through a shared-memory session; bulk in MB.
FULL = (("transactions", 1000), ("sessions", 1000), ("bulk", 2))
QUICK = (("transactions", 100), ("sessions", 100), ("bulk", 1))
_COLLECTED = re.compile(r"Collected : (\d+)")


def _child(workload: str, size: int) -> None:
    """Run one workload (size 0: none, the baseline) and print its segments."""
    from bench._engine import engine_bulk, engine_transactions
    from bench._sessions import session_transactions

    segments = 0
    if size and workload == "bulk":
        segments = engine_bulk(size)["segments"]
    elif size:
        transactions = session_transactions if workload == "sessions" else engine_transactions
        done = transactions(size, 64)
        segments = round(done["segments_per_transaction"] * size)
    print(f"segments {segments}")


def _count(workload: str, size: int) -> tuple[int, int]:
    """(instructions, segments) of one child run under callgrind."""
    with tempfile.TemporaryDirectory(prefix="vfstack-callgrind-") as scratch:
        done = subprocess.run(
            [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={scratch}/out",
                sys.executable, "-m", "bench.engine_instructions", "--child", workload, str(size),
            ],
            capture_output=True, text=True, timeout=1800, check=True,
        )  # fmt: skip
    collected = _COLLECTED.search(done.stderr)
    if collected is None:
        raise RuntimeError(f"valgrind reported no instruction count: {done.stderr[-2000:]}")
    segments = int(done.stdout.split()[-1])
    return int(collected.group(1)), segments


def run(quick: bool, progress) -> dict:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    from vfstack import _extensions

    rows = []
    progress("baseline: the script with no workload, under callgrind ...")
    baseline, _ = _count("transactions", 0)
    for workload, size in QUICK if quick else FULL:
        unit = "MB" if workload == "bulk" else "transactions"
        progress(f"{workload} ({size} {unit}) under callgrind ...")
        instructions, segments = _count(workload, size)
        rows.append(
            {
                "workload": workload,
                "size": size,
                "segments": segments,
                "instructions": instructions - baseline,
                "instructions_per_segment": (instructions - baseline) / segments,
            }
        )
    return {"build": _extensions.build(), "baseline_instructions": baseline, "runs": rows}


def summarize(report: dict) -> list:
    return [
        {
            "workload": f"{row['workload']} {row['size']}",
            "build": report["build"],
            "segments": row["segments"],
            "instructions_per_segment": round(row["instructions_per_segment"]),
            # What the transaction workloads compare by: a session adds a segment.
            "instructions_per_transaction": (
                None if row["workload"] == "bulk" else round(row["instructions"] / row["size"])
            ),
        }
        for row in report["runs"]
    ]


def table(summary: list) -> str:
    lines = [
        f"{'workload':<18} {'build':<9} {'segments':>9} {'instructions/segment':>21} "
        f"{'instructions/transaction':>25}"
    ]
    for row in summary:
        per_transaction = row["instructions_per_transaction"]
        lines.append(
            f"{row['workload']:<18} {row['build']:<9} {row['segments']:>9} "
            f"{row['instructions_per_segment']:>21,} "
            f"{'-' if per_transaction is None else f'{per_transaction:,}':>25}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1], int(argv[2]))
        return 0
    return bench_cli.summary_main(__doc__, argv, run, summarize, table)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts in every child
    sys.exit(main())
