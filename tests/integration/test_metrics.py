"""Metrics of a live instance: a real Prometheus (Debian's) scrapes it
while the Linux peer drives load, through the diag services and through an
SDK application attached to the instance, then every dashboard panel's
expression is evaluated through Prometheus' HTTP API."""

import contextlib
import json
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import vfstack
from prometheus_client.parser import text_string_to_metric_families
from vfstack._extensions import build

from tests.support.netns import in_netns, kernel_peer
from tests.support.process import stop
from tests.support.stack import StackProcess, running_stack, sample_until, wait_until

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
STACK = "198.18.0.10"
APP = "metrics-echo"
ECHO_PORT = 8080
RINGS = {"command", "event", "rx", "tx"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read().decode()


def _scrape(port: int, by: tuple[str, ...] = ()) -> dict[str, float]:
    """name{labels} -> value of every sample on /metrics, the instance's:
    the series of its workers added up, as dashboards do, unless `by`
    names "worker"."""
    samples: dict[str, float] = {}
    hidden = {"instance", "vf", "pf", "worker"} - set(by)
    for family in text_string_to_metric_families(_get(f"http://127.0.0.1:{port}/metrics")):
        for sample in family.samples:
            labels = ",".join(
                f"{k}={v}" for k, v in sorted(sample.labels.items()) if k not in hidden
            )
            key = f"{sample.name}{{{labels}}}"
            samples[key] = samples.get(key, 0) + sample.value
    return samples


def _panel_exprs() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every target of every panel."""
    found = []
    for path in sorted((ROOT / "monitoring" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        panels = list(dashboard.get("panels", []))
        while panels:
            panel = panels.pop()
            panels.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((path.stem, panel.get("title", ""), target["expr"]))
    return found


def _concrete(expr: str) -> str:
    """Grafana variables replaced as Grafana would with 'All' selected."""
    for name in ("instance", "vf", "app"):
        expr = expr.replace(f"${name}", ".*").replace(f"${{{name}}}", ".*")
    return expr.replace("$__rate_interval", "20s").replace("$__interval", "5s")


class EchoApp:
    """An SDK application attached to the instance as `APP`: a listener on
    ECHO_PORT and a thread echoing the connections it accepts, one after
    another, until `close` (which detaches the session)."""

    def __init__(self, instance: StackProcess) -> None:
        self.stack = vfstack.connect(f"unix://{instance.run_dir / 'vf0.sock'}", app=APP)
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._listener = self.stack.socket()
        self._listener.setsockopt(vfstack.SOL_SOCKET, vfstack.SO_REUSEADDR, 1)
        self._listener.bind(("0.0.0.0", ECHO_PORT))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.settimeout(30)
                    while data := conn.recv(65536):
                        conn.sendall(data)
        except BaseException as exc:  # reported by the test thread
            self.errors.append(exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._listener.close()
        self.stack.close()
        assert not self._thread.is_alive()
        assert self.errors == []


@contextlib.contextmanager
def echo_app(instance: StackProcess) -> Iterator[EchoApp]:
    app = EchoApp(instance)
    try:
        yield app
    finally:
        app.close()


def echo_through_app(netns: str, size: int, seed: int = 1) -> None:
    """The kernel peer sends `size` bytes to the SDK app and reads them back."""
    result = kernel_peer(
        netns, "echo", "--host", STACK, "--port", str(ECHO_PORT), "--bytes", str(size),
        "--seed", str(seed), timeout=60,
    )  # fmt: skip
    assert result.get("bytes") == size, result
    assert result["received_sha256"] == result["sent_sha256"]


@pytest.fixture
def metrics_stack(emulated_port, tmp_path):
    port = _free_port()
    with running_stack(
        emulated_port.vf(0), f"{STACK}/24", "vf0", "--diag-services", "--metrics-port", str(port)
    ) as stack:
        yield emulated_port, stack, port


def test_known_workload_counted_exactly(metrics_stack):
    """N connections moving M bytes each: opens, connection states and
    bytes match what the test put on the wire."""
    netns_port, _, port = metrics_stack
    before = _scrape(port)
    n, size = 20, 100_000
    for _ in range(n):
        done = in_netns(
            netns_port.netns,
            sys.executable,
            "-m",
            "tests.support.kernel_peer",
            "fetch",
            "--host",
            STACK,
            "--port",
            "80",
            "--bytes",
            str(size),
        )
        assert json.loads(done.stdout)["body_ok"]

    def grew(after: dict[str, float], key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    # Until the last connection is in TIME-WAIT: its client has returned,
    # the stack may still be taking the final ACK.
    after = sample_until(
        lambda: _scrape(port), lambda now: now["vfstack_tcp_connections{state=time_wait}"] == n
    )
    assert grew(after, "vfstack_tcp_passive_opens_total{}") == n
    assert grew(after, "vfstack_tcp_active_opens_total{}") == 0
    assert grew(after, "vfstack_tx_bytes_total{}") >= n * size
    assert grew(after, "vfstack_tcp_connect_seconds_count{}") == n
    assert after["vfstack_tcp_rtt_seconds_count{}"] > before.get(
        "vfstack_tcp_rtt_seconds_count{}", 0
    )
    assert after.get("vfstack_tcp_connections{state=established}", 0) == 0
    # The server closes first (HTTP/1.0): each connection ends in TIME_WAIT.
    assert after["vfstack_tcp_connections{state=time_wait}"] == n
    info = f"vfstack_info{{build={build()},iface={netns_port.vf(0)},mac=02:00:00:00:00:10,"
    assert after[f"{info}mode=emulated,version={_version()}}}"] == 1


def test_app_bytes_equal_the_bytes_echoed_through_the_sdk_app(metrics_stack):
    """M bytes each way through an SDK app, over several connections: the
    app's rx and tx counters are exactly M; the sessions gauge follows the
    attach and detach; the rings are sampled while the app is attached and
    the byte counter outlives its session."""
    netns_port, instance, port = metrics_stack
    assert _scrape(port)["vfstack_sessions{}"] == 0
    sizes = (1, 65_536, 1_000_003)  # one byte, exactly one socket ring, odd and large
    with echo_app(instance):
        assert wait_until(lambda: _scrape(port)["vfstack_sessions{}"] == 1)
        before = _scrape(port)
        assert before[f"vfstack_app_bytes_total{{app={APP},direction=rx}}"] == 0
        assert before[f"vfstack_app_bytes_total{{app={APP},direction=tx}}"] == 0
        for seed, size in enumerate(sizes):
            echo_through_app(netns_port.netns, size, seed)
        during = _scrape(port)
        occupancy = {
            key: value for key, value in during.items()
            if key.startswith("vfstack_ring_occupancy_ratio{")
        }  # fmt: skip
        assert set(occupancy) == {
            f"vfstack_ring_occupancy_ratio{{app={APP},ring={ring}}}" for ring in RINGS
        }
        assert all(0 <= value <= 1 for value in occupancy.values())
    total = sum(sizes)
    assert during[f"vfstack_app_bytes_total{{app={APP},direction=rx}}"] == total
    # Every event the app was handed was timed on its way.
    delivered = "vfstack_event_delivery_seconds_count{}"
    assert during[delivered] > before.get(delivered, 0)
    assert during[f"vfstack_app_bytes_total{{app={APP},direction=tx}}"] == total
    assert wait_until(lambda: _scrape(port)["vfstack_sessions{}"] == 0)
    after = _scrape(port)
    assert after[f"vfstack_app_bytes_total{{app={APP},direction=rx}}"] == total
    assert not [key for key in after if key.startswith("vfstack_ring_occupancy_ratio{")]


def _version() -> str:
    from stackservice import __version__

    return __version__


def test_every_dashboard_panel_returns_data_from_real_prometheus(metrics_stack, tmp_path):
    netns_port, instance, metrics_port = metrics_stack
    prom_port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{ROOT / "monitoring" / "rules" / "vfstack.yml"}"]
scrape_configs:
  - job_name: vfstack
    honor_labels: true
    static_configs: [{{targets: ["127.0.0.1:{metrics_port}"]}}]
""")
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    try:
        assert wait_until(lambda: _answers(f"http://127.0.0.1:{prom_port}/-/ready"), 60)
        # The SDK app stays attached while Prometheus scrapes and is queried,
        # with bytes flowing through it next to ab's load on the diag HTTP.
        with echo_app(instance), app_traffic(netns_port.netns) as echoed:
            load = subprocess.Popen(
                [
                    "ip", "netns", "exec", netns_port.netns,
                    "ab", "-q", "-t", "60", "-n", "2000000", "-c", "20", f"http://{STACK}/",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                # Under load, until every panel has data (rates need a few
                # scrapes) or the load is over.
                empty = sample_until(
                    lambda: _empty_panels(api),
                    lambda empty: not empty or load.poll() is not None,
                    timeout=90,
                    interval=1,
                )
            finally:
                stop(load)
            assert empty == []
            up = json.loads(_get(f"{api}/query?query=up"))["data"]["result"]
            assert [series["value"][1] for series in up] == ["1"]
            query = urllib.parse.urlencode({"query": "vfstack_app_bytes_total"})
            moved = json.loads(_get(f"{api}/query?{query}"))["data"]["result"]
            assert {s["metric"]["app"] for s in moved} == {APP}
            assert {s["metric"]["direction"] for s in moved} == {"rx", "tx"}
            assert all(float(s["value"][1]) > 0 for s in moved), moved
        assert echoed() > 0
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


def _answers(url: str) -> bool:
    """Prometheus listens and says it is ready (it takes a moment to start)."""
    try:
        _get(url)
    except OSError:
        return False
    return True


def _empty_panels(api: str) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every panel Prometheus has no data for."""
    empty = []
    for dashboard, title, expr in _panel_exprs():
        query = urllib.parse.urlencode({"query": _concrete(expr)})
        reply = json.loads(_get(f"{api}/query?{query}"))
        assert reply["status"] == "success", (title, expr, reply)
        if not reply["data"]["result"]:
            empty.append((dashboard, title, expr))
    return empty


@contextlib.contextmanager
def app_traffic(netns: str) -> Iterator:
    """Keep echoing 256 KiB through the SDK app, connection after
    connection, for the block; yields a function that returns how many
    echoes completed (raising what the traffic thread met)."""
    stop = threading.Event()
    done: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            while not stop.is_set():
                echo_through_app(netns, 256 << 10, seed=len(done) + 1)
                done.append(1)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    def echoed() -> int:
        if errors:
            raise errors[0]
        return len(done)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield echoed
    finally:
        stop.set()
        thread.join(timeout=90)
