"""What the metrics cost: the loop's `Histogram.observe` (per call, on
the data path) and one Prometheus scrape of an instance's counters file
(read, build the families, render the text) in the control process, with
no app table and with a full one (256 apps).

    python3 -m bench.metrics [--quick] [--json]     (no root needed)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import timeit
from pathlib import Path

from prometheus_client import generate_latest

from bench._cli import summary_main
from stackservice.control.server import StackIdentity
from stackservice.metrics.apps import AppStatsTable
from stackservice.metrics.counters import CounterBlock
from stackservice.metrics.exporter import StackCollector, make_registry
from stackservice.metrics.layout import INSTANCE_LAYOUT

OBSERVED = (3, 57, 420, 999, 5000, 10, 100, 1)  # µs, across the buckets
IDENTITY = {
    "name": "vf0", "iface": "vfpf0v0", "mac": "02:00:00:00:00:10", "ip": "198.18.0.10/24",
    "gateway": "198.18.0.1", "mode": "emulated", "pf": "vfpf0", "vf_index": 0, "workers": 1,
    "version": "0.1.0", "started_at": 1_700_000_000.0, "congestion_control": "cubic",
    "diag_services": False, "build": "compiled",
}  # fmt: skip


def observe_us(counters: CounterBlock, calls: int, repeats: int) -> float:
    """Best µs per `observe` call over `repeats` runs of `calls` calls."""
    observe = counters.histogram("tcp_rtt_us").observe

    def run() -> None:
        for value in OBSERVED:
            observe(value)

    rounds = calls // len(OBSERVED)
    return 1e6 * min(timeit.repeat(run, number=rounds, repeat=repeats)) / (rounds * len(OBSERVED))


def scrape_ms(counters_path: Path, apps_path: Path | None, scrapes: int) -> float:
    """Mean ms per scrape (read, families, text) over `scrapes` scrapes."""
    identity = StackIdentity.from_json(json.dumps(IDENTITY))
    registry = make_registry(StackCollector(counters_path, identity, apps_path=apps_path))
    started = time.perf_counter()
    for _ in range(scrapes):
        generate_latest(registry)
    return 1e3 * (time.perf_counter() - started) / scrapes


def run(quick: bool, progress) -> dict:
    calls, scrapes, repeats = (20_000, 20, 3) if quick else (200_000, 200, 5)
    results: dict[str, list[float]] = {"observe_us": [], "scrape_ms": [], "scrape_256_apps_ms": []}
    with tempfile.TemporaryDirectory(prefix="vfstack-bench-metrics-") as tmp:
        counters_path, apps_path = Path(tmp) / "vf0.counters", Path(tmp) / "vf0.apps"
        counters = CounterBlock(INSTANCE_LAYOUT, counters_path)
        table = AppStatsTable(path=apps_path)
        for i in range(table.slots):
            table.attach(f"app{i}")
        try:
            for rep in range(repeats):
                progress(f"[{rep + 1}/{repeats}] observe, scrapes ...")
                results["observe_us"].append(observe_us(counters, calls, 3))
                results["scrape_ms"].append(scrape_ms(counters_path, None, scrapes))
                results["scrape_256_apps_ms"].append(scrape_ms(counters_path, apps_path, scrapes))
        finally:
            table.close()
            counters.close()
    params = {"observe_calls": calls, "scrapes": scrapes, "repeats": repeats, "apps": 256}
    return {"params": params, "results": results}


def summarize(report: dict) -> list[dict]:
    units = {"observe_us": "µs/call", "scrape_ms": "ms/scrape", "scrape_256_apps_ms": "ms/scrape"}
    names = {
        "observe_us": "Histogram.observe",
        "scrape_ms": "scrape, no app table",
        "scrape_256_apps_ms": "scrape, 256 apps",
    }
    return [
        {"measure": names[key], "unit": units[key], "min": min(v), "max": max(v)}
        for key, v in report["results"].items()
    ]


def table(rows: list[dict]) -> str:
    head = f"{'measure':<22} {'unit':<10} {'best':>9} {'worst':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['measure']:<22} {r['unit']:<10} {r['min']:>9.3f} {r['max']:>9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return summary_main(__doc__, argv, run, summarize, table)


if __name__ == "__main__":
    sys.exit(main())
