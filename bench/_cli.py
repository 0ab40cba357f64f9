"""The command line every benchmark shares: `--quick`, `--json`, progress
lines on stderr, a table for people and JSON for machines."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable


def parser(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def summary_main(
    doc: str,
    argv: list[str] | None,
    run: Callable[[bool, Callable[[str], None]], dict],
    summarize: Callable[[dict], list],
    table: Callable[[list], str],
) -> int:
    """Run, summarize, and print the summary as a table or the report as JSON."""
    args = parser(doc).parse_args(argv)
    report = run(args.quick, progress)
    report["summary"] = summarize(report)
    print(json.dumps(report, indent=2) if args.json else table(report["summary"]))
    return 0
