"""The evaluation's outputs: summary rows, the text table, the markdown
summary, the JSON file and the PNG plots (matplotlib, if installed).

Rows reuse bench.tcp's shape, from bench._measure (`measure`, `unit`,
`stack` and `kernel` as min/median/max, `ratio` = stack median / kernel
median) and its table; `better` says which way is good for that measure.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench._measure import fmt, ratio_row, table

HIGHER, LOWER = "higher", "lower"
PLOT_NAMES = ("fig7a", "fig7b", "fig7c", "fig8", "table2", "fairness", "bulk", "cost", "ratios")


def good(runs: list[dict]) -> list[dict]:
    return [r for r in runs if "error" not in r]


def values(runs: list[dict], pick) -> list[float]:
    return [pick(r) for r in good(runs)]


def row(fig: str, measure: str, unit: str, better: str, stack: list[float],
        kernel: list[float] | None, failed: dict | None = None) -> dict | None:  # fmt: skip
    """bench._measure's row (spreads, ratio) tagged with its figure; None if
    the stack side has no figure at all, so a lost run shows as a gap."""
    if not stack:
        return None
    result = ratio_row(measure, unit, stack, kernel or None)
    if kernel == []:
        result["kernel"] = None
        result["ratio"] = None
    elif kernel and min(result["stack"]["median"], result["kernel"]["median"]) <= 0:
        # Whole-machine CPU less idle can dip to or below zero when a
        # neighbour's load shifts during the window: no ratio of that.
        result["ratio"] = None
    result["fig"] = fig
    result["better"] = better
    if failed and any(failed.values()):
        result["failed"] = failed
    return result


def compare(fig: str, measure: str, unit: str, better: str, point: dict, pick) -> dict | None:
    """A row of one point's runs on both sides, `pick` choosing the figure."""
    failed = {s: int(sum(r.get("failed", 0) for r in good(runs))) for s, runs in point.items()}
    return row(fig, measure, unit, better, values(point["stack"], pick),
               values(point["kernel"], pick), failed)  # fmt: skip


def _rate(r: dict) -> float:
    return r["requests_per_s"]


def _key(key: str):
    return lambda r: r[key]


def _latency(part: str, stat: str, floor: float):
    # ab's times are whole milliseconds: 0 means under 1 ms.
    return lambda r: max(r["latency_ms"][part][stat], floor)


def _paced_rows(figures: dict, rate: float) -> list[dict | None]:
    rows = []
    for point, by in figures.get("paced", {}).items():
        # Whole-machine CPU less idle is sound only with an idle machine
        # around the run: use those runs when each side has one (bench.tcp).
        steady = {s: [r for r in good(runs) if r.get("steady")] for s, runs in by.items()}
        name = f"paced {rate:.0f}/s {point}"
        rows += [
            compare("paced", name, "CPU-s/1000", LOWER, steady if all(steady.values()) else by,
                    _key("cpu_s_per_1000")),
            compare("paced", name, "CPU-s/1000*", LOWER, by, _key("accounted_cpu_s_per_1000")),
            compare("paced", name, "p99 ms", LOWER, by, _latency("total", "p99", 1e-3)),
        ]  # fmt: skip
    return rows


def _cpu_rows(fig: str, name: str, by: dict) -> list[dict | None]:
    """Where a transaction's CPU went (evaluation.with_cpu), for the runs
    that recorded it: the server's processes, and the whole machine."""
    if not all(r.get("machine_cpu_us") for runs in by.values() for r in good(runs)):
        return []  # a report from before with_cpu, or a run that completed none
    return [
        compare(fig, f"{name}: server CPU", "CPU µs/trans", LOWER, by, _key("server_cpu_us")),
        compare(fig, f"{name}: machine CPU", "CPU µs/trans", LOWER, by, _key("machine_cpu_us")),
    ]


def _pooled(runs: list[dict], op: str) -> list[float]:
    return [x for r in good(runs) for x in r["us"][op]]


def _cost_rows(cost: dict, c: int) -> list[dict | None]:
    rows = []
    if "http kernel" in cost:
        kernel = values(cost["http kernel"]["kernel"], _rate)
        for name, label in (("http diag", "diag HTTP, no app"), ("http app", "http_server")):
            if name in cost:
                stack = values(cost[name]["stack"], _rate)
                rows.append(row("cost", f"{label}, c={c}", "trans/s", HIGHER, stack, kernel))
    for label, unit, better, pick in (
        ("engine bulk", "segments/s", HIGHER, lambda r: r["bulk"]["segments_per_s"]),
        ("engine bulk", "µs/segment", LOWER, lambda r: r["bulk"]["us_per_segment"]),
        # The engines' own share: less what the back-to-back wiring (IPv4
        # header, views) costs per segment, measured apart in the same run.
        ("engine bulk, less the wiring", "µs/segment", LOWER,
         lambda r: r["bulk"]["us_per_segment"] - r["harness_us_per_segment"]),
        # Runs sent as super-frames (stackservice.net.offload), which the
        # wiring cuts as the kernel would: that cut is the NIC's work.
        ("engine bulk, offload, less the cut", "µs/segment", LOWER,
         lambda r: r["bulk_offload"]["us_per_segment"] - r["bulk_offload"]["cut_us_per_segment"]
         if "bulk_offload" in r else None),  # (reports from before it: no figure)
        ("engine 64 B transactions", "trans/s", HIGHER,
         lambda r: r["transactions"]["transactions_per_s"]),
    ):  # fmt: skip
        if "engine" in cost:
            found = [v for v in values(cost["engine"]["stack"], pick) if v is not None]
            rows.append(row("cost", label, unit, better, found, None))
    for op, label in (("send", "send 64 B"), ("recv", "recv 64 B buffered"),
                      ("poll", "poll(0) 1 ready"), ("poll_idle", "poll(0) idle")):  # fmt: skip
        if "opcost" in cost:
            by = cost["opcost"]
            stack, kernel = _pooled(by["stack"], op), _pooled(by["kernel"], op)
            rows.append(row("cost", f"call {label}", "µs/call", LOWER, stack, kernel))
    return rows


def summarize(report: dict) -> list[dict]:
    """Every measure with both sides' spreads and the stack/kernel ratio."""
    figures = report["figures"]
    profile = report["profile"]
    c = profile["base_concurrency"]

    def points(fig: str):
        return figures.get(fig, {}).items()

    rows = [
        *(compare("fig7a", f"7a short, c={p}", "trans/s", HIGHER, by, _rate)
          for p, by in points("fig7a")),
        *(row for p, by in points("fig7a") for row in _cpu_rows("fig7a", f"7a short, c={p}", by)),
        *(compare("fig7b", f"7b {p} msg/conn, c={c}", "trans/s", HIGHER, by, _rate)
          for p, by in points("fig7b")),
        *(row for p, by in points("fig7b")
          for row in _cpu_rows("fig7b", f"7b {p} msg/conn, c={c}", by)),
        *(compare("fig7c", f"7c {p} B msg, c={c}", "trans/s", HIGHER, by, _rate)
          for p, by in points("fig7c")),
        *(compare("fig8", f"8 accept+RST, c={c}", "conn/s", HIGHER, by, _rate)
          for _, by in points("fig8")),
        *_paced_rows(figures, profile["paced_rate"]),
        *(compare("table2", f"T2 c={p} total {stat}", "ms", LOWER, by,
                  _latency("total", stat, 0.5))
          for p, by in points("table2") for stat in ("mean", "median", "p99")),
        *(compare("fairness", f"fairness {p} flows", unit, HIGHER, by, _key(key))
          for p, by in points("fairness")
          for unit, key in (("Jain index", "jain_index"), ("MB/s", "aggregate_mb_per_s"))),
        *(compare("bulk", f"bulk {p}, 1 flow", "MB/s", HIGHER, by,
                  _key("aggregate_mb_per_s" if p == "download" else "mb_per_s"))
          for p, by in points("bulk")),
        *_cost_rows(figures.get("cost", {}), c),
    ]  # fmt: skip
    return [r for r in rows if r is not None]


# ------------------------------------------------------------------- text


def _cell(s: dict | None) -> str:
    if not s:
        return "-"
    med, lo, hi = (fmt(s[k]) for k in ("median", "min", "max"))
    return med if lo == hi else f"{med} ({lo}..{hi})"


def _ratio(r: dict) -> str:
    return "-" if r.get("ratio") is None else f"{r['ratio']:.2f}"


def table2_markdown(figures: dict) -> list[str]:
    """mTCP's Table 2: response-time distribution, one line per component
    and side (medians over repeats of each statistic)."""
    lines = []
    stats = ("min", "mean", "median", "p99", "max", "stdev")
    for point, by in figures.get("table2", {}).items():
        lines += [
            f"Response times (ms, ab -g: whole milliseconds), concurrency {point}:",
            "",
            "| | | " + " | ".join(stats) + " |",
            "|---|---|" + "--:|" * len(stats),
        ]
        for part in ("connect", "processing", "total"):
            for side in ("stack", "kernel"):
                runs = good(by[side])
                if not runs:
                    continue
                cells = [statistics.median(r["latency_ms"][part][s] for r in runs) for s in stats]
                name = "vfstack" if side == "stack" else "Linux"
                lines.append(f"| {part} | {name} | " + " | ".join(f"{x:.1f}" for x in cells) + " |")
        lines.append("")
    return lines


def notes(report: dict) -> list[str]:
    p = report["placement"]
    q = report["quiet"]
    m = report["machine"]
    shared = (
        "; other jobs shared the machine: figures are noisy" if q["quiet"] < q["checks"] else ""
    )
    return [
        f"machine: {m['cpu']}, {m['nproc']} CPUs, {m['memory']}, Linux {m['kernel']}, "
        f"loadavg at start {m['loadavg']}",
        f"commit {report['commit'][:12]}, Python {report['versions']['python']}, "
        f"{report['versions']['ab']}, {report['versions']['wrk']}",
        f"placement: {'PINNED ' + str(p['pin']) if p['pinned'] else 'nothing pinned'}; "
        f"CPUs allowed: {p['cpus_allowed']}",
        f"quiet machine at {q['quiet']}/{q['checks']} checks before measuring "
        f"(waited {q['waited_s']:.0f} s){shared}",
        "paced: CPU-s/1000 = whole machine (/proc/stat) less idle, per 1000 transactions; "
        "CPU-s/1000* = server (stack + app) and client processes plus irq above idle",
        f"fig 7b client: {report['clients']['fig7b']}; run took {report['duration_s']:.0f} s",
    ]


def written(report: dict) -> str:
    """Where the run put its files, the only ones it leaves (`write`)."""
    outputs = report["outputs"]
    plots = outputs.get("plots")
    plotted = f"plots/ ({len(plots)} PNG)" if plots is not None else "no plots"
    if "plots_skipped" in outputs:
        plotted += f": {outputs['plots_skipped']}"
    return (
        f"summary: {outputs['summary']}; with it eval.json and {plotted} in "
        f"{Path(outputs['summary']).parent}/, the only files this run left"
    )


def text(report: dict) -> str:
    """The readable end of a run: bench._measure's table, then the notes."""
    return "\n".join([table(report["summary"]), "", *notes(report)])


def markdown(report: dict) -> str:
    profile = report["profile"]
    lines = [
        f"# vfstack vs. Linux kernel TCP: mTCP's evaluation ({report['started']})",
        "",
        f"`{report['command']}` (profile {profile['name']}: {profile['repeats']} repeat(s), "
        f"{profile['seconds']} s per peak run; medians with min..max)",
        "",
        "stack = the SDK example app on a vfstack instance (198.18.0.10); kernel = the same "
        "app on Linux sockets (`--kernel`, 198.18.0.50); clients in the peer namespace. "
        "Ratio = stack/kernel: above 1 is better for the stack where `better` is higher.",
        "",
        "| figure | measure | unit | stack | kernel | stack/kernel | better |",
        "|---|---|---|--:|--:|--:|---|",
    ]
    for r in report["summary"]:
        failed = r.get("failed")
        note = f" (failed {failed.get('stack', 0)}/{failed.get('kernel', 0)})" if failed else ""
        lines.append(
            f"| {r['fig']} | {r['measure']}{note} | {r['unit']} | {_cell(r['stack'])} | "
            f"{_cell(r.get('kernel'))} | {_ratio(r)} | {r['better']} |"
        )
    lines += ["", *table2_markdown(report["figures"])]
    lines += [f"- {line}" for line in notes(report)]
    plots = report.get("outputs", {}).get("plots", [])
    if plots:
        lines += ["", "Plots: " + ", ".join(f"`{Path(p).name}`" for p in plots)]
    if "outputs" in report:
        lines += ["", written(report)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ files


def write(report: dict, out: Path, plots: bool = True) -> dict:
    """eval.json, summary.md and plots/*.png in `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    outputs: dict = {"json": str(out / "eval.json"), "summary": str(out / "summary.md")}
    if plots:
        try:
            from bench import eval_plots
        except ImportError as exc:  # matplotlib is in the `bench` and `dev` extras
            outputs["plots_skipped"] = f"matplotlib not installed ({exc})"
        else:
            outputs["plots"] = eval_plots.draw(report, out / "plots")
    else:
        outputs["plots_skipped"] = "--no-plots"
    report["outputs"] = outputs
    Path(outputs["json"]).write_text(json.dumps(report, indent=2) + "\n")
    Path(outputs["summary"]).write_text(markdown(report))
    return outputs
