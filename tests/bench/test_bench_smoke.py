"""Smoke runs of the benchmarks, so they keep working. Figures are printed
by the benchmarks themselves; no test here asserts a speed."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import eval_report, loss

pytestmark = pytest.mark.root


def _run_bench(module: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", module, *(args or ["--quick"]), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert any(line.endswith(" ...") for line in done.stderr.splitlines()), (
        f"no progress shown: {done.stderr[-2000:]}"
    )
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
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


def test_engine_instructions_bench_quick_counts_every_workload():
    """Loose bounds, as everywhere here: each workload sent segments and
    cost more than a bare function call per segment and less than tens of
    milliseconds' worth of instructions; a transaction served through a
    session costs more than one between the engines alone (the same
    transactions, plus the app's commands, pumps and events)."""
    report = _run_bench("bench.engine_instructions")
    assert report["build"] in ("compiled", "pure")
    runs = {row["workload"]: row for row in report["runs"]}
    assert set(runs) == {"transactions", "sessions", "bulk"}
    for row in runs.values():
        assert row["segments"] > 0
        assert 1_000 < row["instructions_per_segment"] < 10_000_000
    engines, sessions = (runs[name] for name in ("transactions", "sessions"))
    assert sessions["instructions"] / sessions["size"] > engines["instructions"] / engines["size"]


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
            assert all(r["failed"] == 0 and r["complete"] > 0 for r in runs), runs
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


def test_relay_bench_quick_accounts_for_every_frame_offered():
    report = _run_bench("bench.relay")
    (row,) = report["summary"]
    assert row["offered_per_s"] == 20_000 and row["sent_per_s"] > 0
    for run in report["runs"]["20000"]:
        assert run["forwarded"] + run["overruns"] == run["frames"] > 0, run
    assert row["unaccounted"] == 0


def test_metrics_bench_quick_measures_observe_and_scrapes():
    report = _run_bench("bench.metrics")
    rows = {row["measure"]: row for row in report["summary"]}
    assert set(rows) == {"Histogram.observe", "scrape, no app table", "scrape, 256 apps"}
    for row in rows.values():
        assert 0 < row["min"] <= row["max"], row


def test_evaluation_smoke_writes_json_summary_and_plots(tmp_path):
    """`python -m bench --smoke`: every mTCP workload on both sides, in well
    under a minute, with its files written."""
    out = tmp_path / "eval"
    report = _run_bench("bench", "--smoke", "--out", str(out))
    assert {"machine", "versions", "commit", "placement", "profile"} <= set(report)
    assert report["profile"]["name"] == "smoke"
    figures = report["figures"]
    assert set(figures) == {
        "fig7a", "fig7b", "fig7c", "fig8", "paced", "table2", "fairness", "bulk", "cost",
    }  # fmt: skip
    for fig, points in figures.items():
        for point, by_side in points.items():
            runs = by_side["stack"] + by_side["kernel"]
            assert runs and not [r for r in runs if "error" in r], (fig, point, runs)
    for part in ("connect", "processing", "total"):
        for side in ("stack", "kernel"):
            stats = figures["table2"]["64"][side][0]["latency_ms"][part]
            assert set(stats) == {"min", "mean", "median", "p99", "max", "stdev"}
    rows = report["summary"]
    assert {row["fig"] for row in rows} == set(figures)
    # Every peak-rate run of 7a and 7b says what a transaction cost in CPU.
    cpu_rows = [row for row in rows if row["unit"] == "CPU µs/trans"]
    assert {row["fig"] for row in cpu_rows} == {"fig7a", "fig7b"}
    for fig in ("fig7a", "fig7b"):
        assert len([r for r in cpu_rows if r["fig"] == fig]) == 2 * len(figures[fig])
    for row in rows:
        if "kernel" not in row:  # the engine alone: no kernel twin
            assert row["fig"] == "cost" and row["stack"]["median"] > 0
            continue
        # Whole-machine CPU less idle can dip to zero on a shared machine:
        # then there is no ratio. Every other compared figure has one.
        if row["unit"] == "CPU-s/1000" and row["ratio"] is None:
            continue
        assert row["ratio"] > 0, row
        assert row["ratio"] == pytest.approx(row["stack"]["median"] / row["kernel"]["median"])
    outputs = report["outputs"]
    saved = json.loads(Path(outputs["json"]).read_text())
    assert saved["summary"] == rows
    summary = Path(outputs["summary"]).read_text()
    assert "| fig7a |" in summary and "stack/kernel" in summary and "python3 -m bench" in summary
    # It names itself and the folder that holds everything the run left.
    assert eval_report.written(saved) in summary and outputs["summary"] in summary
    assert {p.name for p in out.iterdir()} <= {"eval.json", "summary.md", "plots"}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "plots_skipped" in outputs
    else:
        names = {Path(p).stem for p in outputs["plots"]}
        assert names == set(eval_report.PLOT_NAMES)
        for path in outputs["plots"]:
            assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_soak_bench_quick_gives_a_verdict_naming_its_seed():
    """`python -m bench.soak --quick`: a 20 s soak. Whether the stack passes
    is tests/integration/test_soak.py's business; here the bench must run,
    report, and exit 1 exactly when a check failed, with the seed to replay."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--quick", "--json", "--seed", "7"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == (0 if report["passed"] else 1), done.stderr[-2000:]
    assert "soak: seed 7" in done.stderr
    assert report["seed"] == 7 and "--seed 7" in report["replay"]
    assert report["checks"] and {c["status"] for c in report["checks"]} <= {"pass", "FAIL", "skip"}
    assert report["passed"] == all(c["status"] != "FAIL" for c in report["checks"])
    assert {a["style"] for a in report["actors"]} == {
        "threads",
        "epoll",
        "selector",
        "asyncio",
        "kernel",
    }


def test_loss_bench_smoke_runs_every_scenario_on_both_endpoints(tmp_path):
    """`python -m bench.loss --smoke`: each scenario x workload once on the
    stack and once on Linux, each with its seed and loss-recovery counts,
    a summary row each, the files written. Verdicts are the bench's own."""
    report = _run_bench("bench.loss", "--smoke", "--out", str(tmp_path))
    runs = report["runs"]
    assert sorted((r["scenario"], r["workload"], r["endpoint"]) for r in runs) == sorted(
        itertools.product(loss.SCENARIOS, loss.WORKLOADS, loss.ENDPOINTS)
    )
    for run in runs:
        assert isinstance(run["seed"], int) and run["relay"] is not None, run
        assert set(run["recovery"]) == set(run["peer_recovery"]) == set(loss.STACK_COUNTERS)
        assert (run["recovery"]["rack_lost"] is None) == (run["endpoint"] == "linux")
        assert run["ok"] == (run["seconds"] is not None), run  # a failed run has no time
        if run["scenario"].startswith("clean"):
            assert run["ok"], run
    rows = {(row["scenario"], row["workload"]): row for row in report["summary"]}
    assert set(rows) == set(itertools.product(loss.SCENARIOS, loss.WORKLOADS))
    for (scenario, _), row in rows.items():
        for endpoint in loss.ENDPOINTS:
            side = row[endpoint]
            assert side["runs"] == 1 and set(side["recovery"]) == set(loss.STACK_COUNTERS)
            assert {"clean_s", "impaired_s", "slowdown", "completed"} <= set(side)
        judged = loss.SCENARIOS[scenario].baseline is not None
        assert judged == ("passed" in row) == ("ratio" in row), row
        assert ("stack_rto_per_10_mb" in row) == loss.SCENARIOS[scenario].rto_budget
    assert set(report["offloads"]) == {"stack", "linux", "peer"}
    saved = json.loads(Path(report["outputs"]["json"]).read_text())
    assert saved["summary"] == report["summary"]
    summary = Path(report["outputs"]["summary"]).read_text()
    assert "| scenario | workload |" in summary and "python3 -m bench.loss --smoke" in summary


def test_isolation_bench_quick_runs_every_attack():
    report = _run_bench("bench.isolation")
    rows = {row["attack"]: row for row in report["summary"]}
    assert set(rows) == {"none", "ring", "resize", "scribble", "hog", "squat", "list"}
    for row in rows.values():
        assert row["rps"] > 0 and row["echo_p99_ms"] > 0
    assert report["failed"] == 0


def test_frameworks_bench_quick_compares_each_framework_with_the_kernel():
    report = _run_bench("bench.frameworks")
    rows = {row["measure"]: row for row in report["summary"]}
    assert set(rows) == {
        f"{framework} {workload}"
        for framework in ("epoll", "aiohttp", "asgi")
        for workload in ("short", "keep-alive")
    }
    for row in rows.values():
        assert row["stack"]["median"] > 0 and row["kernel"]["median"] > 0
        assert row["ratio"] == pytest.approx(row["stack"]["median"] / row["kernel"]["median"])
    assert report["internal_errors"] == 0


def test_workers_bench_quick_compares_one_worker_with_two():
    report = _run_bench("bench.workers")
    rows = {(row["measure"], row["unit"]): row for row in report["summary"]}
    for scenario in ("diag short", "diag -k", "app short", "app -k"):
        rate = rows[(scenario, "requests/s")]
        assert rate["workers_1"]["median"] > 0 and rate["workers_2"]["median"] > 0
        assert rate["failed"] == {"1": 0, "2": 0}
        assert rows[(scenario, "stack CPU-s/1000")]["workers_2"]["median"] > 0
    for scenario in ("paced 1000/s", "paced N x"):  # the same rate, then the same per worker
        assert rows[(scenario, "stack CPU-s/1000")]["failed"] == {"1": 0, "2": 0}
        assert rows[(scenario, "passes/1000")]["workers_2"]["median"] > 0
    for scenario in ("app short", "app -k"):  # the app's CPU counts on top of the instance's
        both = rows[(scenario, "+app CPU-s/1000")]["workers_2"]["median"]
        assert both > rows[(scenario, "stack CPU-s/1000")]["workers_2"]["median"]
    assert report["worker_restarts"] == {"1": 0, "2": 0}
