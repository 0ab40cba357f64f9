"""PNG plots of the evaluation, one per mTCP figure (matplotlib, Agg).

Each point is the median over repeats, with a bar from min to max.
Importing this module needs matplotlib (the `bench` and `dev` extras).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.eval_report import good, values

COLOR = {"stack": "tab:blue", "kernel": "tab:orange", "diag": "tab:green"}
LABEL = {"stack": "vfstack", "kernel": "Linux kernel", "diag": "vfstack diag (no app)"}


def _line(ax, fig: dict, side: str, pick, scale: float = 1.0) -> None:
    """One side's median vs. x with min..max error bars."""
    xs, med, lo, hi = [], [], [], []
    for point, by in fig.items():
        found = [v * scale for v in values(by[side], pick)]
        if not found:
            continue
        xs.append(float(point))
        m = statistics.median(found)
        med.append(m)
        lo.append(m - min(found))
        hi.append(max(found) - m)
    if xs:
        ax.errorbar(
            xs, med, yerr=[lo, hi], marker="o", capsize=3, color=COLOR[side], label=LABEL[side]
        )


def _bars(ax, groups: list[str], series: dict[str, list[list[float]]], ylabel: str) -> None:
    """Grouped bars (median, min..max whiskers): series[side][group] = values."""
    width = 0.8 / max(len(series), 1)
    for i, (side, per_group) in enumerate(series.items()):
        xs, med, lo, hi = [], [], [], []
        for g, found in enumerate(per_group):
            if found:
                m = statistics.median(found)
                xs.append(g + (i - (len(series) - 1) / 2) * width)
                med.append(m)
                lo.append(m - min(found))
                hi.append(max(found) - m)
        ax.bar(xs, med, width, yerr=[lo, hi], capsize=3, color=COLOR[side], label=LABEL[side])
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend()


def _rate(r: dict) -> float:
    return r["requests_per_s"]


def _sweep(fig: dict, title: str, xlabel: str, ylabel: str, path: Path, extra=None) -> None:
    ncols = 2 if extra else 1
    f, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.2), squeeze=False)
    ax = axes[0][0]
    for side in ("stack", "kernel"):
        _line(ax, fig, side, _rate)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if extra:
        extra(axes[0][1])
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def _paced(report: dict, prefix: str):
    """A second panel: CPU-s/1000 at the fixed rate for the paced points."""
    paced = {k: v for k, v in report["figures"].get("paced", {}).items() if k.startswith(prefix)}
    if not paced:
        return None

    def draw(ax) -> None:
        groups = list(paced)
        series = {
            side: [values(paced[g][side], lambda r: r["accounted_cpu_s_per_1000"]) for g in groups]
            for side in ("stack", "kernel")
        }
        _bars(ax, groups, series, "CPU-s per 1000 (server + client processes + irq)")
        ax.set_title(f"CPU at a fixed {report['profile']['paced_rate']:.0f} transactions/s")

    return draw


def _fig7c_gbps(report: dict):
    fig = report["figures"]["fig7c"]

    def draw(ax) -> None:
        for side in ("stack", "kernel"):
            xs, ys = [], []
            for point, by in fig.items():
                found = values(by[side], _rate)
                if found:
                    xs.append(float(point))
                    ys.append(statistics.median(found) * float(point) * 8 / 1e9)
            ax.plot(xs, ys, marker="o", color=COLOR[side], label=LABEL[side])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("response body bytes")
        ax.set_ylabel("goodput, Gbit/s (bodies only)")
        ax.set_title("Message size: goodput")
        ax.grid(alpha=0.3)
        ax.legend()

    return draw


def _simple(path: Path, title: str, panels) -> None:
    """One figure of panels, side by side (two rows from four on)."""
    rows = 2 if len(panels) >= 4 else 1
    cols = -(-len(panels) // rows)
    f, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        panel(ax)
    f.suptitle(title)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def _fig8(report: dict, path: Path) -> None:
    fig = report["figures"]["fig8"]["accept"]
    panels = [
        lambda ax: _bars(
            ax,
            ["accept + close"],
            {s: [values(fig[s], _rate)] for s in ("stack", "kernel")},
            "connections/s",
        )
    ]
    extra = _paced(report, "accept")
    if extra:
        panels.append(extra)
    _simple(path, "Fig. 8: connection accept rate (server closes with RST)", panels)


def _table2(report: dict, path: Path) -> None:
    point, by = next(iter(report["figures"]["table2"].items()))
    parts = ("connect", "processing", "total")

    def panel(stat: str):
        def draw(ax) -> None:
            series = {
                side: [values(by[side], lambda r, p=p: r["latency_ms"][p][stat]) for p in parts]
                for side in ("stack", "kernel")
            }
            _bars(ax, list(parts), series, f"{stat}, ms")
            ax.set_title(stat)

        return draw

    _simple(
        path,
        f"Table 2: response times at concurrency {point} (ab, ms)",
        [panel(s) for s in ("median", "mean", "p99", "max")],
    )


def _fairness(report: dict, path: Path) -> None:
    point, by = next(iter(report["figures"]["fairness"].items()))

    def flows(ax) -> None:
        for side in ("stack", "kernel"):
            runs = good(by[side])
            if runs:
                rates = sorted(runs[-1]["flow_mb_per_s"], reverse=True)
                jain = statistics.median(r["jain_index"] for r in runs)
                ax.plot(
                    range(1, len(rates) + 1),
                    rates,
                    marker=".",
                    color=COLOR[side],
                    label=f"{LABEL[side]}, Jain {jain:.3f}",
                )
        ax.set_xlabel("flow (sorted, last repeat)")
        ax.set_ylabel("MB/s per flow")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()

    _simple(path, f"Fairness: {point} parallel downloads (§5.2)", [flows])


def _bulk(report: dict, path: Path) -> None:
    bulk = report["figures"]["bulk"]
    keys = {"download": "aggregate_mb_per_s", "echo": "mb_per_s"}
    groups = [g for g in keys if g in bulk]
    series = {
        side: [values(bulk[g][side], lambda r, k=keys[g]: r[k]) for g in groups]
        for side in ("stack", "kernel")
    }
    _simple(path, "Bulk throughput, one flow", [lambda ax: _bars(ax, groups, series, "MB/s")])


def _cost(report: dict, path: Path) -> None:
    cost = report["figures"]["cost"]
    panels = []
    if "opcost" in cost:
        ops = ("send", "recv", "poll", "poll_idle")
        series = {
            side: [[x for r in good(cost["opcost"][side]) for x in r["us"][op]] for op in ops]
            for side in ("stack", "kernel")
        }
        panels.append(lambda ax: _bars(ax, list(ops), series, "µs per call"))
    http = {k[5:]: v for k, v in cost.items() if k.startswith("http ")}
    if http:
        names = [n for n in ("diag", "app", "kernel") if n in http]
        rates = {
            ("stack" if n == "app" else n): [values(http[n]["kernel" if n == "kernel" else "stack"],
                                                    _rate)]
            for n in names
        }  # fmt: skip
        panels.append(lambda ax: _bars(ax, ["64 B short transactions"], rates, "transactions/s"))
    if panels:
        _simple(path, "The stack's own cost", panels)


def _ratios(report: dict, path: Path) -> None:
    rows = [r for r in report["summary"] if r.get("ratio")]
    f, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.2))
    names = [f"{r['measure']} [{r['unit']}]" for r in rows]
    colors = [
        "tab:green" if (r["ratio"] >= 1) == (r["better"] == "higher") else "tab:red" for r in rows
    ]
    ax.barh(range(len(rows)), [r["ratio"] for r in rows], color=colors)
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("vfstack / kernel (green: vfstack better, red: kernel better)")
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def draw(report: dict, folder: Path) -> list[str]:
    """Every plot whose figure is in the report; returns the PNG paths."""
    folder.mkdir(parents=True, exist_ok=True)
    figures = report["figures"]
    made = []

    def save(name: str, make) -> None:
        path = folder / f"{name}.png"
        make(path)
        if path.exists():
            made.append(str(path))

    if "fig7a" in figures:
        save(
            "fig7a",
            lambda p: _sweep(
                figures["fig7a"],
                "Fig. 7a: short transactions (64 B)",
                "concurrent connections",
                "transactions/s",
                p,
            ),
        )
    if "fig7b" in figures:
        save(
            "fig7b",
            lambda p: _sweep(
                figures["fig7b"],
                "Fig. 7b: messages per connection",
                "messages per connection",
                "transactions/s",
                p,
                _paced(report, "mpc"),
            ),
        )
    if "fig7c" in figures:
        save(
            "fig7c",
            lambda p: _sweep(
                figures["fig7c"],
                "Fig. 7c: message size (1 per conn.)",
                "response body bytes",
                "transactions/s",
                p,
                _fig7c_gbps(report),
            ),
        )
    if "fig8" in figures:
        save("fig8", lambda p: _fig8(report, p))
    if "table2" in figures:
        save("table2", lambda p: _table2(report, p))
    if "fairness" in figures:
        save("fairness", lambda p: _fairness(report, p))
    if "bulk" in figures:
        save("bulk", lambda p: _bulk(report, p))
    if "cost" in figures:
        save("cost", lambda p: _cost(report, p))
    if report["summary"]:
        save("ratios", lambda p: _ratios(report, p))
    return made
