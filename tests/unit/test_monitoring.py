"""The monitoring configuration in monitoring/: generated dashboards never
drift from build.py, every query names a metric of the docs/architecture.md "Metrics"
contract (or a recording rule), and promtool accepts the Prometheus config
and rules and passes the rules' unit tests."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARDS = MONITORING / "dashboards"
RULES = MONITORING / "rules" / "vfstack.yml"
RULES_TEST = MONITORING / "rules" / "vfstack_test.yml"
PROMETHEUS = MONITORING / "prometheus.yml"
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# docs/architecture.md "Metrics": the names the exporter serves. Every series also has
# the labels instance, vf and pf; those read from the counters also worker.
COUNTERS = {
    "vfstack_rx_packets_total",
    "vfstack_rx_bytes_total",
    "vfstack_tx_packets_total",
    "vfstack_tx_bytes_total",
    "vfstack_rx_drops_total",
    "vfstack_tx_drops_total",
    "vfstack_tcp_active_opens_total",
    "vfstack_tcp_passive_opens_total",
    "vfstack_tcp_segments_in_total",
    "vfstack_tcp_segments_out_total",
    "vfstack_tcp_retransmitted_segments_total",
    "vfstack_tcp_resets_sent_total",
    "vfstack_tcp_listen_drops_total",
    "vfstack_app_bytes_total",
    "vfstack_internal_errors_total",
    "vfstack_refusals_total",
    "vfstack_loop_worker_restarts_total",
}
GAUGES = {
    "vfstack_tcp_connections",
    "vfstack_sessions",
    "vfstack_ring_occupancy_ratio",
    "vfstack_info",
    "vfstack_memory_bytes",
    "vfstack_memory_limit_bytes",
}
HISTOGRAMS = {
    "vfstack_tcp_rtt_seconds",
    "vfstack_tcp_connect_seconds",
    "vfstack_event_delivery_seconds",
    "vfstack_loop_iteration_seconds",
    "vfstack_rx_batch_packets",
}
# A classic histogram is only ever queried through its three series.
CONTRACT = COUNTERS | GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> tuple[set[str], set[str]]:
    """(vfstack_* names, level:metric:operation names) an expression reads.
    String literals (label values, `$instance`) are removed first; a name
    with a colon is a recording rule, so `instance:vfstack_rx_bits:rate1m`
    is not mistaken for a raw `vfstack_rx_bits`."""
    idents = IDENT.findall(STRING.sub('""', expr))
    recorded = {i for i in idents if ":" in i}
    raw = {i for i in idents if ":" not in i and i.startswith("vfstack_")}
    return raw, recorded


def load_build():
    spec = importlib.util.spec_from_file_location(
        "vfstack_dashboards_build", DASHBOARDS / "build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def load_dashboards() -> dict[str, dict]:
    names = sorted(p.name for p in DASHBOARDS.glob("*.json"))
    assert names == ["vfstack-apps.json", "vfstack-overview.json"]
    return {name: json.loads((DASHBOARDS / name).read_text()) for name in names}


def panels(board: dict) -> list[dict]:
    """Every panel, rows' collapsed children included, rows themselves not."""
    found = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels") or [])
        else:
            found.append(panel)
    return found


def dashboard_exprs(board: dict) -> list[str]:
    exprs = [t["expr"] for p in panels(board) for t in p["targets"]]
    exprs += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def recorded_names() -> set[str]:
    return {rule["record"] for rule in load_rules() if "record" in rule}


# -- (1) the committed JSON is what build.py generates -----------------------


def test_dashboards_json_equals_build_output():
    generated = load_build().generate()
    assert sorted(generated) == ["vfstack-apps.json", "vfstack-overview.json"]
    for name, text in generated.items():
        committed = (DASHBOARDS / name).read_text()
        assert committed == text, f"{name} is stale: run python monitoring/dashboards/build.py"


def test_build_check_mode_reports_stale_json(tmp_path, capsys):
    build = load_build()
    assert build.main(["--out", str(tmp_path)]) == 0
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "vfstack-apps.json").write_text("{}\n")
    assert build.main(["--check", "--out", str(tmp_path)]) == 1
    assert "vfstack-apps.json" in capsys.readouterr().err


# -- (2) panels, datasources and metric names --------------------------------


def test_datasource_uid_matches_provisioning():
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in provisioned] == [
        (load_build().DATASOURCE_UID, "prometheus", "http://prometheus:9090")
    ]


@pytest.mark.parametrize("name", ["vfstack-overview.json", "vfstack-apps.json"])
def test_every_panel_has_datasource_target_and_unit(name):
    board = load_dashboards()[name]
    uid = load_build().DATASOURCE_UID
    assert board["uid"] == name.removesuffix(".json")
    ids = [p["id"] for p in board["panels"]] + [
        c["id"] for p in board["panels"] for c in p.get("panels") or []
    ]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert panels(board)
    for panel in panels(board):
        where = f"{name} panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target["datasource"]["uid"] == uid, where
            assert "$instance" in target["expr"], f"{where}: not filtered by $instance"
        if panel["type"] != "table":  # the info table shows labels, no values
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid


def test_overview_templated_by_instance_and_vf():
    board = load_dashboards()["vfstack-overview.json"]
    assert [v["name"] for v in board["templating"]["list"]] == ["instance", "vf"]
    for panel in panels(board):
        for target in panel["targets"]:
            assert '$vf"' in target["expr"], f"panel {panel['id']}: not filtered by $vf"


def test_dashboard_units():
    board = load_dashboards()["vfstack-overview.json"]
    unit = {
        p["title"]: p.get("fieldConfig", {}).get("defaults", {}).get("unit") for p in panels(board)
    }
    assert unit["Bits/s RX and TX"] == "bps"
    assert unit["Packets/s RX and TX"] == "pps"
    assert unit["Retransmit ratio"] == "percentunit"
    assert unit["RTT p50 / p99"] == "s"
    assert unit["Ring occupancy"] == "percentunit"


@pytest.mark.parametrize("name", ["vfstack-overview.json", "vfstack-apps.json"])
def test_dashboard_metric_names_are_contract_or_recorded(name):
    board = load_dashboards()[name]
    recorded = recorded_names()
    for expr in dashboard_exprs(board):
        raw, rules = metric_names(expr)
        assert raw or rules, f"no vfstack metric in {expr!r}"
        assert raw <= CONTRACT, f"not in the metrics contract: {raw - CONTRACT} in {expr!r}"
        assert rules <= recorded, f"no such recording rule: {rules - recorded} in {expr!r}"


def test_rule_metric_names_are_contract_or_recorded():
    recorded = recorded_names()
    for rule in load_rules():
        raw, rules = metric_names(rule["expr"])
        assert raw <= CONTRACT, f"not in the metrics contract: {raw - CONTRACT}: {rule}"
        assert rules <= recorded, f"no such recording rule: {rules - recorded}: {rule}"
    for name in recorded:
        level, metric, operation = name.split(":")
        assert level and operation and metric.startswith("vfstack_"), name


def test_metric_names_parser():
    raw, rules = metric_names(
        'sum by (instance) (rate(vfstack_rx_drops_total{reason!~"vfstack_x|a:b"}[5m]))'
        " / instance:vfstack_rx_bits:rate1m + vfstack_sessions[$__rate_interval]"
    )
    assert raw == {"vfstack_rx_drops_total", "vfstack_sessions"}
    assert rules == {"instance:vfstack_rx_bits:rate1m"}


def test_alerts_have_for_severity_and_annotations():
    alerts = {rule["alert"]: rule for rule in load_rules() if "alert" in rule}
    assert {
        "VfstackInstanceDown",
        "VfstackHighRetransmitRatio",
        "VfstackRxDropsRising",
        "VfstackTxDropsRising",
        "VfstackRingFull",
        "VfstackListenQueueDrops",
        "VfstackInternalErrors",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule.get("for"), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_prometheus_scrapes_every_stack_instance_of_the_compose_file():
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "vfstack"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    compose = yaml.safe_load((PROMETHEUS.parents[1] / "docker-compose.yml").read_text())
    expected = []
    for name, service in sorted(compose["services"].items()):
        if name.startswith("stack-vf"):
            port = re.fullmatch(r"\$\{\w+:-(\d+)\}", service["environment"]["VFSTACK_METRICS_PORT"])
            expected.append(f"{name}:{port.group(1)}")
    assert targets == expected == ["stack-vf0:9100", "stack-vf1:9101"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["rules/vfstack.yml"]


# -- (3) promtool ------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        # CI runs as root and installs Debian's prometheus package: there a
        # missing promtool is a failure, not a skip.
        if os.geteuid() != 0:
            pytest.skip("promtool not installed (apt-get install prometheus)")
        pytest.fail("promtool not installed: apt-get install -y prometheus")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", str(PROMETHEUS)],
        ["check", "rules", str(RULES)],
        ["test", "rules", str(RULES_TEST)],
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(args):
    result = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
