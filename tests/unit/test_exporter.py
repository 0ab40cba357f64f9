"""The Prometheus exporter: a counters file with known values, exposed as
text and parsed back; then `/metrics` of a running control server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stackservice.control import gate
from stackservice.control import server as control
from stackservice.control.link import link_pair
from stackservice.faults import FaultSite
from stackservice.limits import Refusal
from stackservice.metrics.apps import AppField, AppStatsTable
from stackservice.metrics.counters import CounterBlock
from stackservice.metrics.exporter import StackCollector, make_registry, metric_names
from stackservice.metrics.layout import INSTANCE_LAYOUT, TCP_RTT_US
from stackservice.net.drops import TX_DROP_REASONS, DropReason
from stackservice.nic.packet_io import NicCounter
from stackservice.tcp.drops import TcpDropReason

INFO = {
    "name": "vf0",
    "iface": "vfpf0v0",
    "mac": "02:00:00:00:00:10",
    "ip": "198.18.0.10/24",
    "gateway": "198.18.0.1",
    "mode": "emulated",
    "pf": "vfpf0",
    "vf_index": 0,
    "workers": 1,
    "version": "0.1.0",
    "started_at": 1_700_000_000.0,
    "congestion_control": "cubic",
    "diag_services": False,
    "build": "compiled",
}
IDENTITY = control.StackIdentity.from_json(json.dumps(INFO))
OURS = {"instance": "vf0", "vf": "0", "pf": "vfpf0"}

# docs/architecture.md, "Metrics": family (as the parser names it) -> type, own labels.
CONTRACT = {
    "vfstack_rx_packets": ("counter", ()),
    "vfstack_rx_bytes": ("counter", ()),
    "vfstack_tx_packets": ("counter", ()),
    "vfstack_tx_bytes": ("counter", ()),
    "vfstack_rx_drops": ("counter", ("reason",)),
    "vfstack_tcp_active_opens": ("counter", ()),
    "vfstack_tcp_passive_opens": ("counter", ()),
    "vfstack_tcp_retransmitted_segments": ("counter", ()),
    "vfstack_tcp_resets_sent": ("counter", ()),
    "vfstack_tcp_listen_drops": ("counter", ()),
    "vfstack_app_bytes": ("counter", ("app", "direction")),
    "vfstack_tcp_connections": ("gauge", ("state",)),
    "vfstack_sessions": ("gauge", ()),
    "vfstack_ring_occupancy_ratio": ("gauge", ("app", "ring")),
    "vfstack_info": ("gauge", ("version", "iface", "mac", "mode", "build")),
    "vfstack_memory_bytes": ("gauge", ("pool",)),
    "vfstack_memory_limit_bytes": ("gauge", ("pool",)),
    "vfstack_refusals": ("counter", ("reason",)),
    "vfstack_tcp_rtt_seconds": ("histogram", ()),
    "vfstack_tcp_connect_seconds": ("histogram", ()),
    "vfstack_event_delivery_seconds": ("histogram", ()),
    "vfstack_rx_batch_packets": ("histogram", ()),
}
APP_FAMILIES = {"vfstack_app_bytes", "vfstack_ring_occupancy_ratio"}


def slot_value(section: str, index: int) -> int:
    """A distinct value for every slot, so a sample names its source."""
    return 1000 * (1 + list(INSTANCE_LAYOUT.sections).index(section)) + index + 1


@pytest.fixture
def counters(tmp_path):
    block = CounterBlock(INSTANCE_LAYOUT, tmp_path / "vf0.counters")
    for section, enum in INSTANCE_LAYOUT.sections.items():
        slots = block.section(section)
        for member in enum:
            slots[member] = slot_value(section, member)
    yield block
    block.close()


@pytest.fixture
def apps(tmp_path):
    """An app table: "web" with two sessions and a ring sample, "gone"
    whose sessions all ended (bytes kept, no rings)."""
    table = AppStatsTable(8, tmp_path / "vf0.apps")
    web = table.attach("web")
    table.attach("web")
    gone = table.attach("gone")
    table.counters(web)[AppField.RX_BYTES] += 5000
    table.counters(web)[AppField.TX_BYTES] += 700
    table.counters(gone)[AppField.RX_BYTES] += 11
    table.publish(web, 16, 1024, 1024, 4096, 3 << 14, 1 << 17, 0, 1 << 17)
    table.detach(gone, now=1)
    yield table
    table.close()


def scrape(
    path: Path | list[Path], identity=IDENTITY, apps: Path | list[Path] | None = None, more=None
) -> dict:
    registry = make_registry(StackCollector(path, identity, apps_path=apps, more_refusals=more))
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(family, **labels) -> float:
    matches = [s.value for s in family.samples if labels.items() <= s.labels.items()]
    assert len(matches) == 1, (family.name, labels, family.samples)
    return matches[0]


def test_design_metrics_present_with_type_and_labels(counters, apps):
    families = scrape(counters._path, apps=apps._path)
    for name, (kind, own) in CONTRACT.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, name
        # What the counters hold is per worker; the identity and the app
        # table are the instance's.
        worker = () if name in APP_FAMILIES or name == "vfstack_info" else ("worker",)
        for sample in family.samples:
            extra = ("le",) if sample.name.endswith("_bucket") else ()
            assert set(sample.labels) == {*OURS, *own, *extra, *worker}, sample
            assert OURS.items() <= sample.labels.items(), sample
    assert set(families) == set(metric_names())


def test_each_workers_file_is_a_series_of_its_own_labelled_with_the_worker(counters, tmp_path):
    """--workers N: a counters file per worker, in worker order; every
    series read from them says whose it is, and they add up to the
    instance's figure."""
    second = CounterBlock(INSTANCE_LAYOUT, tmp_path / "vf0.worker1.counters")
    try:
        second.section("nic")[NicCounter.RX_PACKETS] = 7
        second.histogram(TCP_RTT_US).observe(300)
        families = scrape([counters._path, tmp_path / "vf0.worker1.counters"])
    finally:
        second.close()
    rx = {s.labels["worker"]: s.value for s in families["vfstack_rx_packets"].samples}
    assert rx == {"0": slot_value("nic", NicCounter.RX_PACKETS), "1": 7}
    rtt = {
        s.labels["worker"]: s.value
        for s in families["vfstack_tcp_rtt_seconds"].samples
        if s.name.endswith("_count")
    }
    assert rtt == {"0": 0, "1": 1}
    assert len(families["vfstack_info"].samples) == 1  # the instance's identity, once


def test_without_an_app_table_the_app_families_have_no_series(counters, tmp_path):
    for apps in (None, tmp_path / "missing.apps", counters._path):  # none, gone, foreign
        families = scrape(counters._path, apps=apps)
        for name in APP_FAMILIES:
            assert families[name].samples == [], (apps, name)
        assert value(families["vfstack_counters_readable"]) == 1


def test_app_bytes_per_app_and_direction_stay_after_the_sessions(counters, apps):
    families = scrape(counters._path, apps=apps._path)
    app_bytes = {
        (s.labels["app"], s.labels["direction"]): s.value
        for s in families["vfstack_app_bytes"].samples
    }
    assert app_bytes == {
        ("web", "rx"): 5000, ("web", "tx"): 700, ("gone", "rx"): 11, ("gone", "tx"): 0,
    }  # fmt: skip
    for sample in families["vfstack_app_bytes"].samples:
        assert sample.name == "vfstack_app_bytes_total"
        assert OURS.items() <= sample.labels.items()


def test_several_workers_app_tables_add_up_by_app_and_a_missing_one_is_skipped(
    counters, apps, tmp_path
):
    """With several workers each keeps an app table: an app's bytes are
    the sum over them, its rings the fullest; a worker's table that is
    not there (restarting) costs only its own series."""
    other = AppStatsTable(8, tmp_path / "vf0.worker1.apps")
    web, new = other.attach("web"), other.attach("new")
    other.counters(web)[AppField.RX_BYTES] += 1
    other.counters(new)[AppField.TX_BYTES] += 9
    other.publish(web, 512, 1024, 0, 4096, 0, 1 << 17, 0, 1 << 17)
    try:
        missing = tmp_path / "vf0.worker2.apps"
        families = scrape(counters._path, apps=[apps._path, other._path, missing])
    finally:
        other.close()
    app_bytes = {
        (s.labels["app"], s.labels["direction"]): s.value
        for s in families["vfstack_app_bytes"].samples
    }
    assert app_bytes == {
        ("web", "rx"): 5001, ("web", "tx"): 700, ("gone", "rx"): 11, ("gone", "tx"): 0,
        ("new", "rx"): 0, ("new", "tx"): 9,
    }  # fmt: skip
    command = [
        s.value
        for s in families["vfstack_ring_occupancy_ratio"].samples
        if s.labels["app"] == "web" and s.labels["ring"] == "command"
    ]
    assert command == [0.5]


def test_ring_occupancy_only_for_apps_with_sessions(counters, apps):
    families = scrape(counters._path, apps=apps._path)
    ratios = {
        (s.labels["app"], s.labels["ring"]): s.value
        for s in families["vfstack_ring_occupancy_ratio"].samples
    }
    assert ratios == {
        ("web", "command"): 16 / 1024,
        ("web", "event"): 0.25,
        ("web", "rx"): 0.375,
        ("web", "tx"): 0.0,
    }


def test_nic_tcp_and_gauge_values_equal_slots(counters):
    families = scrape(counters._path)
    expect = {
        "vfstack_rx_packets": ("nic", "RX_PACKETS"),
        "vfstack_rx_bytes": ("nic", "RX_BYTES"),
        "vfstack_tx_packets": ("nic", "TX_PACKETS"),
        "vfstack_tx_bytes": ("nic", "TX_BYTES"),
        "vfstack_tcp_active_opens": ("tcp", "ACTIVE_OPENS"),
        "vfstack_tcp_passive_opens": ("tcp", "PASSIVE_OPENS"),
        "vfstack_tcp_retransmitted_segments": ("tcp", "RETRANSMITTED_SEGMENTS"),
        "vfstack_tcp_resets_sent": ("tcp", "RESETS_OUT"),
        "vfstack_sessions": ("sessions", "ATTACHED"),
        "vfstack_tcp_timeouts": ("tcp", "TIMEOUTS"),
        "vfstack_tcp_resets_received": ("tcp", "RESETS_IN"),
        "vfstack_net_ipv4_delivered": ("events", "IPV4_DELIVERED"),
        "vfstack_loop_iterations": ("loop", "ITERATIONS"),
        "vfstack_nic_tx_deferred": ("nic", "TX_DEFERRED"),
    }
    for name, (section, member) in expect.items():
        index = INSTANCE_LAYOUT.sections[section][member]
        assert value(families[name]) == slot_value(section, index), name
    states = families["vfstack_tcp_connections"]
    for state in INSTANCE_LAYOUT.sections["tcp_states"]:
        assert value(states, state=state.name.lower()) == slot_value("tcp_states", state)
    assert value(families["vfstack_info"], **INFO_LABELS) == 1


INFO_LABELS = {
    "version": "0.1.0",
    "iface": "vfpf0v0",
    "mac": "02:00:00:00:00:10",
    "build": "compiled",
}


def test_drop_reasons_split_by_direction(counters):
    families = scrape(counters._path)
    rx = {s.labels["reason"]: s.value for s in families["vfstack_rx_drops"].samples}
    tx = {s.labels["reason"]: s.value for s in families["vfstack_tx_drops"].samples}
    expect_rx = {r.name.lower(): slot_value("drops", r) for r in DropReason}
    expect_tx = {name: expect_rx.pop(name) for name in [r.name.lower() for r in TX_DROP_REASONS]}
    expect_rx |= {r.name.lower(): slot_value("tcp_drops", r) for r in TcpDropReason}
    nic = INSTANCE_LAYOUT.sections["nic"]
    for reason, target in (("rx_ring_drops", expect_rx), ("rx_truncated", expect_rx)):
        target[reason] = slot_value("nic", nic[reason.upper()])
    for reason in ("tx_errors", "tx_dropped"):
        expect_tx[reason] = slot_value("nic", nic[reason.upper()])
    assert rx == expect_rx
    assert tx == expect_tx
    listen = value(families["vfstack_tcp_listen_drops"])
    assert listen == slot_value("tcp_drops", TcpDropReason.TCP_SYN_QUEUE_OVERFLOW) + slot_value(
        "tcp_drops", TcpDropReason.TCP_LISTEN_QUEUE_OVERFLOW
    )


def test_internal_errors_one_series_per_site_labelled_where(counters):
    """Contained faults (stackservice.faults) as one counter family, like
    the drop reasons, not a generic family per site."""
    families = scrape(counters._path)
    family = families["vfstack_internal_errors"]
    assert family.type == "counter"
    assert {s.labels["where"]: s.value for s in family.samples} == {
        site.name.lower(): slot_value("internal_errors", site) for site in FaultSite
    }
    assert not [name for name in families if name.startswith("vfstack_internal_errors_")]


def test_the_control_gates_refusals_join_the_loops_by_reason(counters):
    """The gate counts in the control process, the loop in the counters
    file: one family, one series per reason, the gate's live."""
    gate_counts = dict.fromkeys(gate.REFUSALS, 0)
    gate_counts["control_app_connections"] = 4
    family = scrape(counters._path, more=gate_counts)["vfstack_refusals"]
    reasons = {s.labels["reason"]: s.value for s in family.samples}
    assert reasons["control_app_connections"] == 4 and reasons["control_rate"] == 0
    assert set(reasons) == {r.name.lower() for r in Refusal} | set(gate.REFUSALS)
    gate_counts["control_rate"] += 2
    family = scrape(counters._path, more=gate_counts)["vfstack_refusals"]
    assert value(family, reason="control_rate") == 2


def test_every_slot_visible(counters):
    """netstat-style completeness: each slot's value is some sample's value."""
    families = scrape(counters._path)
    values = {s.value for f in families.values() if f.type != "histogram" for s in f.samples}
    for section, enum in INSTANCE_LAYOUT.sections.items():
        for member in enum:
            assert slot_value(section, member) in values, f"{section}.{member.name}"


def test_histograms_cumulative_in_seconds(counters):
    rtt = counters.histogram("tcp_rtt_us")
    for us in (10, 11, 5000, 10_000_000, 10_000_001):
        rtt.observe(us)
    counters.histogram("rx_batch_packets").observe(3)
    families = scrape(counters._path)
    samples = families["vfstack_tcp_rtt_seconds"].samples
    buckets = {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}
    assert buckets["1e-05"] == 1
    assert buckets["2e-05"] == 2
    assert buckets["0.002"] == 2
    assert buckets["0.005"] == 3
    assert buckets["10.0"] == 4
    assert buckets["+Inf"] == 5
    assert list(buckets.values()) == sorted(buckets.values())  # cumulative
    assert len(buckets) == len(INSTANCE_LAYOUT.histograms["tcp_rtt_us"]) + 1
    count = [s.value for s in samples if s.name == "vfstack_tcp_rtt_seconds_count"]
    total = [s.value for s in samples if s.name == "vfstack_tcp_rtt_seconds_sum"]
    assert count == [5]
    assert total == [pytest.approx((10 + 11 + 5000 + 10_000_000 + 10_000_001) / 1e6)]
    batch = families["vfstack_rx_batch_packets"].samples
    batch_buckets = {s.labels["le"]: s.value for s in batch if s.name.endswith("_bucket")}
    assert (batch_buckets["2.0"], batch_buckets["4.0"], batch_buckets["+Inf"]) == (0, 1, 1)
    assert [s.value for s in batch if s.name.endswith("_sum")] == [3]
    empty = families["vfstack_loop_iteration_seconds"].samples
    assert {s.value for s in empty} == {0}


def test_not_a_vf_empty_vf_label(counters):
    families = scrape(counters._path, replace(IDENTITY, vf_index=-1, pf=""))
    assert value(families["vfstack_rx_packets"]).is_integer()
    for sample in families["vfstack_rx_packets"].samples:
        assert (sample.labels["vf"], sample.labels["pf"]) == ("", "")


def test_counters_file_gone_only_identity(tmp_path):
    families = scrape(tmp_path / "missing.counters")
    assert value(families["vfstack_counters_readable"]) == 0
    assert value(families["vfstack_info"]) == 1
    assert "vfstack_rx_packets" not in families


def test_readable_gauge_one(counters):
    assert value(scrape(counters._path)["vfstack_counters_readable"]) == 1


def test_metric_names_unique_and_registry_rejects_a_second_collector(counters):
    registry = make_registry(StackCollector(counters._path, IDENTITY))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(StackCollector(counters._path, IDENTITY))
    assert metric_names()["vfstack_tcp_rtt_seconds"] == "histogram"


def test_a_full_app_table_exports_every_app(counters, tmp_path):
    """All 256 slots of a default app table: one rx and one tx series each.
    (What such a scrape costs: python -m bench.metrics.)"""
    table = AppStatsTable(path=tmp_path / "full.apps")
    for i in range(table.slots):
        table.attach(f"app{i}")
    try:
        families = scrape(counters._path, apps=table._path)
    finally:
        table.close()
    samples = families["vfstack_app_bytes"].samples
    series = {(s.labels["app"], s.labels["direction"]) for s in samples}
    assert table.slots == 256
    assert series == {(f"app{i}", d) for i in range(256) for d in ("rx", "tx")}


# -- over HTTP, from the control server ----------------------------------------


class IdleLink:
    def start(self) -> None:
        pass

    def request(self, op: str, timeout: float, **fields) -> dict:
        return {"error": "unimplemented"}


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.status, reply.read().decode()


@pytest.fixture
def socket_dir():
    with tempfile.TemporaryDirectory(prefix="vfm-") as path:
        yield Path(path)


def test_control_server_serves_metrics_and_stops_it(counters, apps, socket_dir):
    theirs, ours = link_pair()
    handle = control.serve(
        ours,
        counters._path,
        IDENTITY,
        socket_dir / "vf0.sock",
        metrics=("127.0.0.1", 0),
        apps_path=apps._path,
        link_factory=lambda sock, on_event: IdleLink(),
    )
    try:
        assert handle.metrics_port
        status, text = get(f"http://127.0.0.1:{handle.metrics_port}/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert set(CONTRACT) <= set(families)
        assert value(families["vfstack_rx_packets"]) == slot_value("nic", 0)
        assert value(families["vfstack_app_bytes"], app="web", direction="rx") == 5000
    finally:
        handle.stop()
        assert handle.wait(timeout=5)
        theirs.close()
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{handle.metrics_port}/metrics")


def test_control_server_without_metrics_has_no_port(counters, socket_dir):
    theirs, ours = link_pair()
    handle = control.serve(
        ours,
        counters._path,
        IDENTITY,
        socket_dir / "vf0.sock",
        link_factory=lambda sock, on_event: IdleLink(),
    )
    handle.stop()
    assert handle.wait(timeout=5)
    assert handle.metrics_port is None
    theirs.close()


def test_metrics_port_taken_main_status_1(counters, socket_dir, capsys):
    taken = socket.create_server(("127.0.0.1", 0))
    theirs, ours = link_pair()
    try:
        status = control.main(
            [
                "--link-fd", str(ours.detach()),  # main's socket owns it now
                "--counters", str(counters._path),
                "--info", json.dumps(INFO),
                "--unix", str(socket_dir / "s.sock"),
                "--metrics", f"127.0.0.1:{taken.getsockname()[1]}",
            ]
        )  # fmt: skip
    finally:
        taken.close()
        theirs.close()
    assert status == 1
    assert "cannot listen: metrics on 127.0.0.1:" in capsys.readouterr().err
    assert not (socket_dir / "s.sock").exists()


@pytest.mark.parametrize("metrics", ["9100", "host:", "host:port", "h:70000"])
def test_metrics_bad_address_status_2(counters, socket_dir, capsys, metrics):
    status = control.main(
        [
            "--link-fd", "0",
            "--counters", str(counters._path),
            "--info", json.dumps(INFO),
            "--unix", str(socket_dir / "s.sock"),
            "--metrics", metrics,
        ]
    )  # fmt: skip
    assert status == 2
    assert "--metrics must be HOST:PORT" in capsys.readouterr().err


def test_process_serves_metrics_until_sigterm(counters, apps, socket_dir):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    theirs, ours = link_pair()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "stackservice.control.server",
            "--link-fd", str(ours.fileno()),
            "--counters", str(counters._path),
            "--info", json.dumps(INFO),
            "--unix", str(socket_dir / "s.sock"),
            "--metrics", f"127.0.0.1:{port}",
            "--apps", str(apps._path),
        ],
        pass_fds=[ours.fileno()],
    )  # fmt: skip
    ours.close()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, text = get(f"http://127.0.0.1:{port}/metrics")
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline, "no /metrics"
                assert process.poll() is None, "the server exited"
                time.sleep(0.05)
        assert status == 200
        assert "vfstack_info{" in text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert value(families["vfstack_ring_occupancy_ratio"], app="web", ring="rx") == 0.375
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        theirs.close()
