"""Generate the vfstack Grafana dashboards from code.

    python monitoring/dashboards/build.py          # (re)write the JSON beside this file
    python monitoring/dashboards/build.py --check  # exit 1 if the JSON is stale

The JSON files are committed (Grafana's file provider loads them, see
monitoring/grafana/provisioning/dashboards/vfstack.yml); tests/unit/
test_monitoring.py fails when they differ from what this script generates.
Edit this file, never the JSON or the Grafana UI. Metric names and labels are
the contract in docs/architecture.md "Metrics"; `instance:...` names are recording rules
from monitoring/rules/vfstack.yml. Panel ids are literals so that links and
saved panel state survive reordering.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import units
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent

# Fixed in monitoring/grafana/provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "vfstack-prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

# The overview's selector: every series carries instance, vf and pf.
SEL = 'instance=~"$instance", vf=~"$vf"'
RATE = "[$__rate_interval]"


# -- building blocks ---------------------------------------------------------


def query(expr: str, legend: str = "", ref_id: str = "A") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref_id).datasource(DATASOURCE)
    return q.legend_format(legend) if legend else q


def queries(*pairs: tuple[str, str]) -> list[prometheus.Dataquery]:
    """(expr, legend) pairs with ref ids A, B, C, ..."""
    return [query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def quantiles(metric: str, by: str, selector: str) -> list[tuple[str, str]]:
    """p50 and p99 of a histogram over the panel's rate interval."""
    return [
        (
            f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{selector}}}{RATE})))",
            f"{{{{{by}}}}} p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    ]


def last_value() -> common.ReduceDataOptions:
    return common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def red_above(value: float) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(color="green"), Threshold(value=value, color="red")])
    )


def graph(
    panel_id: int,
    title: str,
    description: str,
    unit: str,
    targets: list[prometheus.Dataquery],
    *,
    span: int = 12,
    height: int = 8,
    max_val: float | None = None,
    threshold: float | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets)
        .unit(unit)
        .min(0)
        .span(span)
        .height(height)
        .fill_opacity(10)
        .line_width(1)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
        )
        .tooltip(
            common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
        )
    )
    if max_val is not None:
        panel = panel.max(max_val)
    if threshold is not None:
        panel = panel.thresholds(red_above(threshold)).thresholds_style(
            common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE)
        )
    return panel


def row(row_id: int, title: str) -> dash.Row:
    return dash.Row(title).id(row_id)


def instance_variable(metric: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable("instance")
        .label("Instance")
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, instance)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def label_variable(name: str, label: str, metric: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f'label_values({metric}{{instance=~"$instance"}}, {name})')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def base(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["vfstack"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("browser")
        .link(
            dash.DashboardLink("vfstack")
            .type("dashboards")
            .tags(["vfstack"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


# -- vfstack overview --------------------------------------------------------


def overview() -> dash.Dashboard:
    info = (
        table.Panel()
        .id(1)
        .title("Instances")
        .description("vfstack_info: version, interface, MAC and mode of each selected instance.")
        .datasource(DATASOURCE)
        .targets([query(f"vfstack_info{{{SEL}}}").instant().format(PromQueryFormat.TABLE)])
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
                    "indexByName": {
                        "instance": 0,
                        "vf": 1,
                        "pf": 2,
                        "iface": 3,
                        "mac": 4,
                        "mode": 5,
                        "version": 6,
                    },
                },
            )
        )
        .span(16)
        .height(5)
    )
    sessions_now = (
        stat.Panel()
        .id(2)
        .title("Sessions")
        .description("vfstack_sessions: applications attached to the selected instances, now.")
        .datasource(DATASOURCE)
        .targets(queries((f"sum by (instance) (vfstack_sessions{{{SEL}}})", "{{instance}}")))
        .unit(units.Short)
        .graph_mode(BigValueGraphMode.AREA)
        .reduce_options(last_value())
        .span(8)
        .height(5)
    )

    return (
        base(
            "vfstack-overview",
            "vfstack overview",
            "One or more vfstack instances: traffic, TCP, drops and the stack's own loop.",
        )
        .with_variable(instance_variable("vfstack_info"))
        .with_variable(label_variable("vf", "VF", "vfstack_info"))
        .with_row(row(100, "Instances"))
        .with_panel(info)
        .with_panel(sessions_now)
        .with_row(row(101, "Traffic"))
        .with_panel(
            graph(
                3,
                "Bits/s RX and TX",
                "Wire bits per second received and sent by the VF (recording rules, 1m rate).",
                units.BitsPerSecondSI,
                queries(
                    (f"instance:vfstack_rx_bits:rate1m{{{SEL}}}", "{{instance}} rx"),
                    (f"instance:vfstack_tx_bits:rate1m{{{SEL}}}", "{{instance}} tx"),
                ),
            )
        )
        .with_panel(
            graph(
                4,
                "Packets/s RX and TX",
                "Frames per second received and sent by the VF (recording rules, 1m rate).",
                units.PacketsPerSecond,
                queries(
                    (f"instance:vfstack_rx_packets:rate1m{{{SEL}}}", "{{instance}} rx"),
                    (f"instance:vfstack_tx_packets:rate1m{{{SEL}}}", "{{instance}} tx"),
                ),
            )
        )
        .with_row(row(102, "TCP"))
        .with_panel(
            graph(
                5,
                "Connections by state",
                "vfstack_tcp_connections: TCP connections in each RFC 9293 state, now.",
                units.Short,
                queries(
                    (
                        f"sum by (instance, state) (vfstack_tcp_connections{{{SEL}}})",
                        "{{instance}} {{state}}",
                    )
                ),
                span=8,
            )
        )
        .with_panel(
            graph(
                6,
                "New connections/s",
                "Connections opened per second: active (connect) and passive (accepted SYN).",
                units.CountsPerSecond,
                queries(
                    (
                        f"sum by (instance) (rate(vfstack_tcp_active_opens_total{{{SEL}}}{RATE}))",
                        "{{instance}} active",
                    ),
                    (
                        f"sum by (instance) (rate(vfstack_tcp_passive_opens_total{{{SEL}}}{RATE}))",
                        "{{instance}} passive",
                    ),
                ),
                span=8,
            )
        )
        .with_panel(
            graph(
                7,
                "Retransmit ratio",
                "Retransmitted / sent TCP segments over 5m. Alert VfstackHighRetransmitRatio "
                "fires above 5%.",
                units.PercentUnit,
                queries(
                    (
                        f"instance:vfstack_tcp_retransmit_ratio:rate5m{{{SEL}}}",
                        "{{instance}}",
                    )
                ),
                span=8,
                threshold=0.05,
            )
        )
        .with_panel(
            graph(
                8,
                "RTT p50 / p99",
                "TCP round-trip time samples (vfstack_tcp_rtt_seconds) over 5m.",
                units.Seconds,
                queries(
                    (f"instance:vfstack_tcp_rtt_seconds:p50_5m{{{SEL}}}", "{{instance}} p50"),
                    (f"instance:vfstack_tcp_rtt_seconds:p99_5m{{{SEL}}}", "{{instance}} p99"),
                ),
                span=8,
            )
        )
        .with_panel(
            graph(
                9,
                "Connect time p50 / p99",
                "SYN to ESTABLISHED, active and passive opens (vfstack_tcp_connect_seconds), 5m.",
                units.Seconds,
                queries(
                    (
                        f"instance:vfstack_tcp_connect_seconds:p50_5m{{{SEL}}}",
                        "{{instance}} p50",
                    ),
                    (
                        f"instance:vfstack_tcp_connect_seconds:p99_5m{{{SEL}}}",
                        "{{instance}} p99",
                    ),
                ),
                span=8,
            )
        )
        .with_panel(
            graph(
                10,
                "Listen drops and resets sent/s",
                "Handshakes dropped at a full accept queue (alert VfstackListenQueueDrops) "
                "and RSTs sent.",
                units.PacketsPerSecond,
                queries(
                    (
                        f"sum by (instance) (rate(vfstack_tcp_listen_drops_total{{{SEL}}}{RATE}))",
                        "{{instance}} listen drops",
                    ),
                    (
                        f"sum by (instance) (rate(vfstack_tcp_resets_sent_total{{{SEL}}}{RATE}))",
                        "{{instance}} resets sent",
                    ),
                ),
                span=8,
            )
        )
        .with_row(row(103, "Drops"))
        .with_panel(
            graph(
                11,
                "RX drops by reason",
                "Received frames and segments discarded, one reason each "
                "(stackservice/net/drops.py, stackservice/tcp/drops.py).",
                units.PacketsPerSecond,
                queries(
                    (
                        f"sum by (instance, reason) (rate(vfstack_rx_drops_total{{{SEL}}}{RATE}))",
                        "{{instance}} {{reason}}",
                    )
                ),
            )
        )
        .with_panel(
            graph(
                12,
                "TX drops by reason",
                "Packets the stack built but could not send (no route, ARP, TX backlog).",
                units.PacketsPerSecond,
                queries(
                    (
                        f"sum by (instance, reason) (rate(vfstack_tx_drops_total{{{SEL}}}{RATE}))",
                        "{{instance}} {{reason}}",
                    )
                ),
            )
        )
        .with_row(row(104, "Stack loop and sessions"))
        .with_panel(
            graph(
                13,
                "Event delivery latency p50 / p99",
                "From an event's cause to its delivery to the application's event ring "
                "(vfstack_event_delivery_seconds).",
                units.Seconds,
                queries(*quantiles("vfstack_event_delivery_seconds", "instance", SEL)),
                span=8,
            )
        )
        .with_panel(
            graph(
                14,
                "Loop iteration time p50 / p99",
                "Busy time of one pass of the stack loop, sleep excluded "
                "(vfstack_loop_iteration_seconds).",
                units.Seconds,
                queries(*quantiles("vfstack_loop_iteration_seconds", "instance", SEL)),
                span=8,
            )
        )
        .with_panel(
            graph(
                15,
                "RX batch size",
                "Frames read per non-empty RX batch (vfstack_rx_batch_packets).",
                units.Short,
                queries(
                    *quantiles("vfstack_rx_batch_packets", "instance", SEL),
                    (
                        f"sum by (instance) (rate(vfstack_rx_batch_packets_sum{{{SEL}}}{RATE})) / "
                        f"sum by (instance) (rate(vfstack_rx_batch_packets_count{{{SEL}}}{RATE}))",
                        "{{instance}} mean",
                    ),
                ),
                span=8,
            )
        )
        .with_panel(
            graph(
                16,
                "Sessions",
                "vfstack_sessions: applications attached to each instance.",
                units.Short,
                queries((f"sum by (instance) (vfstack_sessions{{{SEL}}})", "{{instance}}")),
            )
        )
        .with_panel(
            graph(
                17,
                "Ring occupancy",
                "Fullest rings (vfstack_ring_occupancy_ratio); alert VfstackRingFull fires "
                "above 90% for 2m (tx rings excepted). Per-app detail: the vfstack apps dashboard.",
                units.PercentUnit,
                queries(
                    (
                        f"max by (instance, app, ring) (vfstack_ring_occupancy_ratio{{{SEL}}})",
                        "{{instance}} {{app}} {{ring}}",
                    )
                ),
                max_val=1,
                threshold=0.9,
            )
        )
        .with_row(row(105, "Limits"))
        .with_panel(
            graph(
                18,
                "Memory held for apps, of its limit",
                "vfstack_memory_bytes over vfstack_memory_limit_bytes by pool: segments "
                "(shared memory committed to sessions, --shm-limit-mib), event_backlog "
                "(events waiting for room in an app's event ring) and tcp_buffers (every "
                "connection's send and receive buffers, --tcp-memory-mib). Alert "
                "VfstackMemoryNearLimit fires above 90% for 5m.",
                units.PercentUnit,
                queries(
                    (
                        f"max by (instance, pool) (vfstack_memory_bytes{{{SEL}}}) / "
                        f"max by (instance, pool) (vfstack_memory_limit_bytes{{{SEL}}} > 0)",
                        "{{instance}} {{pool}}",
                    )
                ),
                max_val=1,
                threshold=0.9,
            )
        )
        .with_panel(
            graph(
                19,
                "Refusals",
                "What apps were refused to keep the instance within its limits "
                '(vfstack_refusals_total, by reason; README "Limits").',
                units.CountsPerSecond,
                queries(
                    (
                        f"sum by (instance, reason) (rate(vfstack_refusals_total{{{SEL}}}{RATE}))",
                        "{{instance}} {{reason}}",
                    )
                ),
            )
        )
        .with_row(row(106, "Workers (stackservice run --workers N)"))
        .with_panel(
            graph(
                20,
                "Frames received, by worker",
                "vfstack_rx_packets_total by worker: how the fanout group spreads the "
                "instance's traffic over its workers (one series with one worker).",
                units.PacketsPerSecond,
                queries(
                    (
                        f"sum by (instance, worker) "
                        f"(rate(vfstack_rx_packets_total{{{SEL}}}{RATE}))",
                        "{{instance}} worker {{worker}}",
                    )
                ),
            )
        )
        .with_panel(
            graph(
                21,
                "Worker restarts",
                "vfstack_loop_worker_restarts_total: a worker that died and was started "
                "again (its connections were reset). Alert VfstackWorkerRestarted.",
                units.Short,
                queries(
                    (
                        f"sum by (instance, worker) "
                        f"(increase(vfstack_loop_worker_restarts_total{{{SEL}}}{RATE}))",
                        "{{instance}} worker {{worker}}",
                    )
                ),
            )
        )
    )


# -- vfstack apps ------------------------------------------------------------

APP_SEL = 'instance=~"$instance", app=~"$app"'


def apps() -> dash.Dashboard:
    occupancy_now = (
        bargauge.Panel()
        .id(3)
        .title("Ring occupancy now")
        .description("Last value of each ring of the selected applications.")
        .datasource(DATASOURCE)
        .targets(
            [
                query(
                    f"max by (instance, app, ring) (vfstack_ring_occupancy_ratio{{{APP_SEL}}})",
                    "{{instance}} {{app}} {{ring}}",
                ).instant()
            ]
        )
        .reduce_options(last_value())
        .unit(units.PercentUnit)
        .min(0)
        .max(1)
        .thresholds(
            dash.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    Threshold(color="green"),
                    Threshold(value=0.7, color="yellow"),
                    Threshold(value=0.9, color="red"),
                ]
            )
        )
        .span(8)
        .height(8)
    )
    return (
        base(
            "vfstack-apps",
            "vfstack apps",
            "Applications attached to vfstack instances: bytes, rings and sessions.",
        )
        .with_variable(instance_variable("vfstack_info"))
        .with_variable(label_variable("app", "App", "vfstack_ring_occupancy_ratio"))
        .with_row(row(100, "Throughput"))
        .with_panel(
            graph(
                1,
                "Bytes/s in and out per app",
                "Application payload bytes per second through the stack, by direction "
                "(vfstack_app_bytes_total).",
                units.BytesPerSecondSI,
                queries(
                    (
                        "sum by (instance, app, direction) "
                        f"(rate(vfstack_app_bytes_total{{{APP_SEL}}}{RATE}))",
                        "{{instance}} {{app}} {{direction}}",
                    )
                ),
                span=24,
            )
        )
        .with_row(row(101, "Rings"))
        .with_panel(
            graph(
                2,
                "Ring occupancy per app and ring",
                "vfstack_ring_occupancy_ratio: command and event are the app's fullest "
                "session ring; rx and tx the bytes waiting in all its connected sockets' "
                "rings over their total size (a full tx ring alone is a bulk sender "
                "outpacing the network, so the alert skips tx). Alert VfstackRingFull fires "
                "above 90% for 2m.",
                units.PercentUnit,
                queries(
                    (
                        f"max by (instance, app, ring) (vfstack_ring_occupancy_ratio{{{APP_SEL}}})",
                        "{{instance}} {{app}} {{ring}}",
                    )
                ),
                span=16,
                max_val=1,
                threshold=0.9,
            )
        )
        .with_panel(occupancy_now)
        .with_row(row(102, "Sessions"))
        .with_panel(
            graph(
                4,
                "Sessions",
                "vfstack_sessions: applications attached to each instance.",
                units.Short,
                queries(
                    ('sum by (instance) (vfstack_sessions{instance=~"$instance"})', "{{instance}}")
                ),
            )
        )
        .with_panel(
            graph(
                5,
                "Apps with rings",
                "Distinct applications that have at least one ring on each instance.",
                units.Short,
                queries(
                    (
                        "count by (instance) (count by (instance, app) "
                        '(vfstack_ring_occupancy_ratio{instance=~"$instance"}))',
                        "{{instance}}",
                    )
                ),
            )
        )
    )


# -- output ------------------------------------------------------------------

DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "vfstack-overview.json": overview,
    "vfstack-apps.json": apps,
}


def render(builder: dash.Dashboard) -> str:
    return json.dumps(builder.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def generate() -> dict[str, str]:
    """File name -> JSON text, for every dashboard."""
    return {name: render(make()) for name, make in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generate().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
