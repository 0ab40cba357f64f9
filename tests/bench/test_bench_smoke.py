"""Smoke runs of the benchmarks, so they keep working. Figures are printed
by the benchmarks themselves; no test here asserts a speed."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root


def _run_bench(module: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "..." in done.stderr or done.stderr.strip(), "no progress shown"
    return json.loads(done.stdout)


def test_icmp_echo_bench_quick_compares_stack_with_kernel():
    report = _run_bench("bench.icmp_echo")
    rows = {row["scenario"]: row for row in report["summary"]}
    assert set(rows) == {"1 pinger", "4 pingers"}
    for row in rows.values():
        assert row["stack_echoes_per_s"] > 0 and row["kernel_echoes_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["stack_echoes_per_s"] / row["kernel_echoes_per_s"])


def test_packet_io_bench_quick_measures_every_path():
    report = _run_bench("bench.packet_io")
    assert set(report["latency_us"]) == {"v2", "v3", "recv_into"}
    assert all(d["frames_per_s"] > 0 for d in report["drain"].values())
    assert set(report["transmit_us_per_frame"]) == {"1", "4", "32", "256"}
