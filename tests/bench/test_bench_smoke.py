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


def test_tcp_bench_quick_measures_engine_and_compares_stack_with_kernel():
    report = _run_bench("bench.tcp")
    rows = {(row["measure"], row["unit"]): row for row in report["summary"]}
    c = report["params"]["concurrency"]
    rate = f"paced {report['params']['paced_rate']:.0f} conn/s"
    engine_rows = {
        ("engine bulk", "segments/s"),
        ("engine bulk", "MB/s"),
        ("engine bulk", "µs/segment"),
        ("engine 64 B transactions", "trans/s"),
        ("engine 64 B transactions", "µs/segment"),
    }
    compared = {
        (f"ab -c {c}", "requests/s"),
        (f"ab -c {c}", "mean ms"),
        (f"ab -c {c}", "p99 ms"),
        (f"ab -k -c {c}", "requests/s"),
        (f"ab -k -c {c}", "mean ms"),
        (f"ab -k -c {c}", "p99 ms"),
        (rate, "CPU-s/1000"),
        (rate, "CPU-s/1000*"),
        (rate, "p99 ms"),
    }
    assert set(rows) == engine_rows | compared
    for key in engine_rows:
        assert "kernel" not in rows[key] and rows[key]["stack"]["median"] > 0
    for key in compared:
        row = rows[key]
        stack, kernel = row["stack"], row["kernel"]
        for spread in (stack, kernel):
            assert spread["min"] <= spread["median"] <= spread["max"]
        # Whole-machine CPU less an idle baseline can dip to or below zero
        # when a neighbour's load shifts during the window; no other figure can.
        if key == (rate, "CPU-s/1000") and kernel["median"] == 0:
            assert row["ratio"] is None
            continue
        assert row["ratio"] == pytest.approx(stack["median"] / kernel["median"])
        if key != (rate, "CPU-s/1000"):
            assert stack["min"] > 0 and kernel["min"] > 0, key
    for by_who in report["ab"].values():
        for runs in by_who.values():
            assert all(r["failed"] >= 0 and r["complete"] > 0 for r in runs)
    for who in ("stack", "kernel"):
        assert all(r["completed"] > 0 for r in report["paced"][who])
    assert report["placement"]["nproc"] > 0


def test_control_overhead_bench_quick_measures_every_case():
    report = _run_bench("bench.control_overhead")
    rps = report["median_rps"]
    assert set(rps) == {"without", "with_watch", "with_scrape"}
    assert all(value > 0 for value in rps.values())
    assert report["failed"] == 0
    # The observers really ran during the load.
    assert report["observations"]["with_watch"] > 10
    assert report["observations"]["with_scrape"] >= 1
    for case, change in report["change_percent"].items():
        assert change == pytest.approx(100 * (rps[case] - rps["without"]) / rps["without"])


def test_rings_bench_quick_compares_with_socketpair():
    report = _run_bench("bench.rings")
    rows = report["summary"]
    assert rows, "no figures"
    for row in rows:
        assert row["rings"] > 0 and row["kernel"] > 0
        assert row["ratio"] > 0
