"""Prometheus exposition of one instance's counters file, read at scrape time.

The loop never calls into prometheus-client: it bumps u64 slots in shared
memory (`stackservice.metrics.counters`). `StackCollector.collect` maps the
file, reads every slot once and turns them into metric families, so a scrape
costs the loop nothing and one exporter serves every worker's slots (no
prometheus-client multiprocess directory).

Names (docs/architecture.md, "Metrics"); every series also carries `instance` (the
stack's name), `vf` (VF index, "" when not a VF) and `pf`, and every series
read from the counters `worker` (the worker that counted it, "0" with one
worker; stackservice.workers): add them up by instance for the instance's
figure:

- counters `vfstack_{rx,tx}_{packets,bytes}_total` (nic);
  `vfstack_rx_drops_total{reason}`: every receive-side reason of the net and
  TCP layers plus the NIC's `rx_ring_drops`, `rx_truncated`;
  `vfstack_tx_drops_total{reason}`: `net.TX_DROP_REASONS` plus the NIC's
  `tx_errors`, `tx_dropped`; `reason` is the member name in lower case;
  `vfstack_tcp_{active_opens,passive_opens,retransmitted_segments}_total`,
  `vfstack_tcp_resets_sent_total`, `vfstack_tcp_listen_drops_total` (SYN
  queue and accept queue overflows, like Linux's ListenDrops);
  `vfstack_refusals_total{reason}`: what apps were refused to keep the
  instance within its limits (`stackservice.limits.Refusal`, and the
  control socket's `stackservice.control.gate.REFUSALS`);
  `vfstack_internal_errors_total{where}`: unexpected exceptions (bugs) the
  instance contained instead of going down (`stackservice.faults`), `where`
  the site in lower case (frame, event, timer, output, session, control,
  other);
- gauges `vfstack_tcp_connections{state}`, `vfstack_sessions`,
  `vfstack_memory_bytes{pool}` and `vfstack_memory_limit_bytes{pool}`
  (`stackservice.limits.MemoryPool`: segments, event_backlog),
  `vfstack_info{version,iface,mac,mode,build}` (always 1; `build` is
  `compiled` or `pure`, sdk/vfstack/_extensions.py);
- histograms: a layout histogram `X_us` becomes `vfstack_X_seconds` (bounds
  converted to seconds), any other `X` becomes `vfstack_X`
  (`vfstack_rx_batch_packets`);
- every other slot, generically: `vfstack_<group>_<slot>_total` for
  counters (group `events` is named `net`, `tcp.resets_in` is
  `vfstack_tcp_resets_received_total`), `vfstack_<group>_<slot>` for gauges;
- per application, from the app table (`stackservice.metrics.apps`, the
  file `<name>.apps` beside the counters): `app` is the name the
  application attached with, and the sessions sharing a name are one app.
  `vfstack_app_bytes_total{app,direction}`: `rx` counts the bytes the stack
  delivered into the app's RX rings, `tx` the bytes it took from its TX
  rings. The series stays after the app's last session ends (the stack
  keeps the name's totals, so a reattaching app continues it) until the
  slot is reused for another name. `vfstack_ring_occupancy_ratio{app,ring}`,
  `ring` in command, event, rx, tx, 0..1: only while the app has sessions;
  command and event are its fullest session's ring, rx and tx the bytes
  waiting in all its connected sockets' rings over their total size
  (`OccupancySweep` in stackservice/fastpath/occupancy.py says why).
  Without an app table, or with none readable, both families have no
  series;
- `vfstack_counters_readable` is 1 when the counters file could be read; at
  0 (the instance is gone or another version wrote it) the scrape holds only
  it, `vfstack_info` and the declared (empty) per-app families.

Prometheus sets its own `instance` target label: scrape these targets with
`honor_labels: true`, or the stack's name lands in `exported_instance`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple, Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from stackservice.faults import FaultSite
from stackservice.limits import MemoryPool, Refusal
from stackservice.metrics.apps import RINGS, AppSample, read_apps
from stackservice.metrics.counters import CounterFiles, CounterLayout, HistogramSnapshot, read_all
from stackservice.metrics.layout import INSTANCE_LAYOUT
from stackservice.net.drops import TX_DROP_REASONS, DropReason
from stackservice.tcp.drops import TcpDropReason

__all__ = ["Identity", "MetricsServer", "StackCollector", "make_registry", "metric_names"]

LABELS = ("instance", "vf", "pf")
# Every series read from the counters carries the worker that wrote it
# ("0" with one worker): dashboards add them up by instance, or show each.
WORKER = "worker"
WORKER_LABELS = (*LABELS, WORKER)
INFO_LABELS = ("version", "iface", "mac", "mode", "build")
US_SUFFIX = "_us"

Source = tuple[str, str]  # (section, slot name in lower case)


class Identity(Protocol):
    """What the exporter needs of the instance (`control.server.StackIdentity`)."""

    name: str
    iface: str
    mac: str
    mode: str
    build: str  # compiled or pure
    pf: str
    vf_index: int  # < 0: not a VF
    version: str


class _Series(NamedTuple):
    labels: tuple[str, ...]  # values of the family's own labels
    sources: tuple[Source, ...]  # slots summed into the value


class _Spec(NamedTuple):
    kind: str  # "counter" or "gauge"
    name: str  # without `_total`
    help: str
    labels: tuple[str, ...]  # the family's own labels, after LABELS
    series: tuple[_Series, ...]


class _HistogramSpec(NamedTuple):
    name: str
    help: str
    source: str  # layout histogram name
    divisor: int  # layout unit per exported unit (1e6 µs per second)


def _one(section: str, slot: str) -> tuple[_Series, ...]:
    return (_Series((), ((section, slot),)),)


def _each(section: str, enum: Iterable[IntEnum]) -> tuple[_Series, ...]:
    """A series per slot of `section`, labelled with the slot's name."""
    return tuple(_Series((m.name.lower(),), ((section, m.name.lower()),)) for m in enum)


# Counters docs/architecture.md names, each from one slot.
_NAMED_COUNTERS = (
    ("vfstack_rx_packets", "Frames received and handed to the stack.", "nic", "rx_packets"),
    ("vfstack_rx_bytes", "Bytes of received frames (no FCS).", "nic", "rx_bytes"),
    ("vfstack_tx_packets", "Frames the kernel accepted for transmission.", "nic", "tx_packets"),
    ("vfstack_tx_bytes", "Bytes of transmitted frames.", "nic", "tx_bytes"),
    (
        "vfstack_tcp_active_opens",
        "Connections opened by connect() (tcpActiveOpens).",
        "tcp",
        "active_opens",
    ),
    (
        "vfstack_tcp_passive_opens",
        "Connections created by a SYN to a listener (tcpPassiveOpens).",
        "tcp",
        "passive_opens",
    ),
    (
        "vfstack_tcp_retransmitted_segments",
        "TCP segments retransmitted.",
        "tcp",
        "retransmitted_segments",
    ),
    ("vfstack_tcp_resets_sent", "TCP segments with RST sent.", "tcp", "resets_out"),
)
# Receive-side NIC drops, next to the net and TCP layers' reasons.
_NIC_RX_DROPS = ("rx_ring_drops", "rx_truncated")
_NIC_TX_DROPS = ("tx_errors", "tx_dropped")
# Linux's ListenDrops: SYNs and handshake ACKs a listener could not take.
# (TcpCounter.LISTEN_OVERFLOWS counts the accept-queue ones a second time,
# so it is not added; it is exported on its own as
# vfstack_tcp_listen_overflows_total.)
_LISTEN_DROPS = (
    TcpDropReason.TCP_SYN_QUEUE_OVERFLOW.name.lower(),
    TcpDropReason.TCP_LISTEN_QUEUE_OVERFLOW.name.lower(),
)
# Generic names: a group's prefix when not the section's own name, and the
# odd slot whose generic name would read badly.
_GROUP_PREFIX = {"events": "net"}
_RENAMED = {("tcp", "resets_in"): "vfstack_tcp_resets_received"}
REFUSALS = "vfstack_refusals"  # the loop's by reason, and StackCollector's more_refusals

_HISTOGRAM_HELP = {
    "tcp_rtt_us": "TCP round-trip time samples (RFC 6298 measurements).",
    "tcp_connect_us": "Time from SYN to ESTABLISHED, active and passive opens.",
    "event_delivery_us": (
        "Time from the loop pass that caused an app event to its publishing on its event ring."
    ),
    "loop_iteration_us": "Busy time of one stack loop iteration.",
    "rx_batch_packets": "Frames received per non-empty batch.",
}


def _named_specs() -> list[_Spec]:
    specs = [
        _Spec("counter", name, help, (), _one(section, slot))
        for name, help, section, slot in _NAMED_COUNTERS
    ]
    rx = [("drops", r.name.lower()) for r in DropReason if r not in TX_DROP_REASONS]
    rx += [("tcp_drops", r.name.lower()) for r in TcpDropReason]
    rx += [("nic", slot) for slot in _NIC_RX_DROPS]
    tx = [("drops", r.name.lower()) for r in DropReason if r in TX_DROP_REASONS]
    tx += [("nic", slot) for slot in _NIC_TX_DROPS]
    for direction, sources in (("rx", rx), ("tx", tx)):
        specs.append(
            _Spec(
                "counter",
                f"vfstack_{direction}_drops",
                f"Frames or packets dropped on {direction}, by reason.",
                ("reason",),
                tuple(_Series((slot,), ((section, slot),)) for section, slot in sources),
            )
        )
    specs.append(
        _Spec(
            "counter",
            "vfstack_tcp_listen_drops",
            "SYNs and handshake ACKs dropped because a listen queue was full.",
            (),
            (_Series((), tuple(("tcp_drops", r) for r in _LISTEN_DROPS)),),
        )
    )
    specs.append(
        _Spec(
            "counter",
            REFUSALS,
            "What the instance refused apps to keep within its limits, by reason.",
            ("reason",),
            _each("refusals", Refusal),
        )
    )
    specs.append(
        _Spec(
            "counter",
            "vfstack_internal_errors",
            "Unexpected exceptions (bugs) contained instead of ending the instance, by site.",
            ("where",),
            _each("internal_errors", FaultSite),
        )
    )
    return specs


def _state_specs(layout: CounterLayout) -> list[_Spec]:
    states = _each("tcp_states", layout.sections["tcp_states"])
    return [
        _Spec("gauge", "vfstack_tcp_connections", "TCP connections by state.", ("state",), states),
        _Spec(
            "gauge",
            "vfstack_sessions",
            "Application sessions attached over the fast path.",
            (),
            _one("sessions", "attached"),
        ),
        _Spec(
            "gauge",
            "vfstack_memory_bytes",
            "Memory the instance holds for its apps, by pool.",
            ("pool",),
            _each("memory", MemoryPool),
        ),
        _Spec(
            "gauge",
            "vfstack_memory_limit_bytes",
            "The most each pool of vfstack_memory_bytes may hold.",
            ("pool",),
            _each("memory_limits", MemoryPool),
        ),
    ]


def _generic_specs(layout: CounterLayout, claimed: set[Source]) -> list[_Spec]:
    specs = []
    for section, enum in layout.sections.items():
        gauge = section in layout.gauges
        for member in enum:
            slot = member.name.lower()
            if (section, slot) in claimed:
                continue
            prefix = _GROUP_PREFIX.get(section, section)
            name = _RENAMED.get((section, slot), f"vfstack_{prefix}_{slot}")
            help = f"{enum.__module__}.{enum.__qualname__}.{member.name}"
            specs.append(
                _Spec("gauge" if gauge else "counter", name, help, (), _one(section, slot))
            )
    return specs


def _histogram_specs(layout: CounterLayout) -> list[_HistogramSpec]:
    specs = []
    for name in layout.histograms:
        help = _HISTOGRAM_HELP.get(name, f"Histogram {name}.")
        if name.endswith(US_SUFFIX):
            exported = f"vfstack_{name[: -len(US_SUFFIX)]}_seconds"
            specs.append(_HistogramSpec(exported, help, name, 1_000_000))
        else:
            specs.append(_HistogramSpec(f"vfstack_{name}", help, name, 1))
    return specs


class _Plan(NamedTuple):
    specs: tuple[_Spec, ...]
    histograms: tuple[_HistogramSpec, ...]


def _plan(layout: CounterLayout) -> _Plan:
    """What to export from `layout`. Raises ValueError if two families'
    samples would share a name or a named slot is missing from the layout."""
    named = _named_specs() + _state_specs(layout)
    claimed = {source for spec in named for series in spec.series for source in series.sources}
    known = {(s, m.name.lower()) for s, enum in layout.sections.items() for m in enum}
    if missing := sorted(claimed - known):
        raise ValueError(f"layout lacks slot {missing[0][0]}.{missing[0][1]}")
    plan = _Plan(tuple(named + _generic_specs(layout, claimed)), tuple(_histogram_specs(layout)))
    names = _sample_names(plan)
    if len(names) != len(set(names)):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"two metric families expose {duplicate}")
    return plan


def _sample_names(plan: _Plan) -> list[str]:
    names = ["vfstack_info", "vfstack_counters_readable", "vfstack_app_bytes_total"]
    names.append("vfstack_ring_occupancy_ratio")
    for spec in plan.specs:
        names.append(spec.name + "_total" if spec.kind == "counter" else spec.name)
    for hist in plan.histograms:
        names += [hist.name + "_bucket", hist.name + "_sum", hist.name + "_count"]
    return names


def metric_names(layout: CounterLayout = INSTANCE_LAYOUT) -> dict[str, str]:
    """Every family the collector yields: {family name: type}. Counter
    families are named without `_total`, as prometheus-client does."""
    plan = _plan(layout)
    names = {"vfstack_info": "gauge", "vfstack_counters_readable": "gauge"}
    names |= {"vfstack_app_bytes": "counter", "vfstack_ring_occupancy_ratio": "gauge"}
    names |= {spec.name: spec.kind for spec in plan.specs}
    names |= {hist.name: "histogram" for hist in plan.histograms}
    return names


def _files(paths: Path | Sequence[Path]) -> list[Path]:
    """An instance's file, or each worker's: a list either way."""
    return [paths] if isinstance(paths, Path) else list(paths)


class StackCollector(Collector):
    """Reads the counters file and the app table at scrape time and yields
    metric families."""

    def __init__(
        self,
        counters_path: CounterFiles,
        identity: Identity,
        layout: CounterLayout = INSTANCE_LAYOUT,
        apps_path: Path | Sequence[Path] | None = None,
        more_refusals: Mapping[str, int] | None = None,
    ) -> None:
        """`more_refusals`: refusals counted outside the counters file (the
        control socket's gate, stackservice.control.gate.REFUSALS), added to
        vfstack_refusals_total by reason, with no worker. `counters_path`:
        the instance's file, or each worker's in worker order; `apps_path`
        likewise (an app's series add its sessions' up over the workers)."""
        self.counters_paths = _files(counters_path)
        self._more_refusals = more_refusals or {}
        self.apps_paths = _files(apps_path or [])
        self.layout = layout
        self._plan = _plan(layout)
        vf = str(identity.vf_index) if identity.vf_index >= 0 else ""
        self._labels = [identity.name, vf, identity.pf]
        self._info = [identity.version, identity.iface, identity.mac, identity.mode, identity.build]

    def describe(self) -> Iterator[Metric]:
        """The families without samples (the registry checks names with it)."""
        yield from self._static(readable=None)
        yield from self._apps(())
        for spec in self._plan.specs:
            yield _family(spec)
        for hist in self._plan.histograms:
            yield HistogramMetricFamily(hist.name, hist.help, labels=WORKER_LABELS)

    def collect(self) -> Iterator[Metric]:
        try:
            readings = [read_all(path, self.layout) for path in self.counters_paths]
        except (OSError, ValueError):
            yield from self._static(readable=False)
            yield from self._apps(())
            return
        yield from self._static(readable=True)
        yield from self._apps(self._read_apps())
        for spec in self._plan.specs:
            yield self._collect_spec(spec, [reading.counters for reading in readings])
        for hist in self._plan.histograms:
            family = HistogramMetricFamily(hist.name, hist.help, labels=WORKER_LABELS)
            for worker, reading in enumerate(readings):
                self._add_histogram(family, worker, hist, reading.histograms[hist.source])
            yield family

    def _static(self, readable: bool | None) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "vfstack_info", "Identity of the stack instance.", labels=(*LABELS, *INFO_LABELS)
        )
        readable_family = GaugeMetricFamily(
            "vfstack_counters_readable",
            "1 when the instance's counters file could be read at this scrape.",
            labels=LABELS,
        )
        if readable is not None:
            info.add_metric(self._labels + self._info, 1)
            readable_family.add_metric(self._labels, 1 if readable else 0)
        yield info
        yield readable_family

    def _read_apps(self) -> list[AppSample]:
        samples: list[AppSample] = []
        for path in self.apps_paths:
            # Not there yet, or gone: none of its series this scrape.
            with contextlib.suppress(OSError, ValueError):
                samples += read_apps(path)
        return samples

    def _apps(self, samples: Iterable[AppSample]) -> Iterator[Metric]:
        app_bytes = CounterMetricFamily(
            "vfstack_app_bytes",
            "Bytes an application moved through its sockets, by direction.",
            labels=(*LABELS, "app", "direction"),
        )
        occupancy = GaugeMetricFamily(
            "vfstack_ring_occupancy_ratio",
            "Fill level (0..1) of an application's shared-memory rings.",
            labels=(*LABELS, "app", "ring"),
        )
        # The stack keeps one slot per name; two names that encode alike
        # (lone surrogates) must still not give a duplicate series.
        merged: dict[str, list] = {}
        for sample in samples:
            entry = merged.setdefault(sample.app, [0, 0, 0, dict.fromkeys(RINGS, 0.0)])
            entry[0] += sample.rx_bytes
            entry[1] += sample.tx_bytes
            entry[2] += sample.sessions
            for ring in RINGS:
                entry[3][ring] = max(entry[3][ring], sample.occupancy(ring))
        for app, (rx, tx, sessions, rings) in merged.items():
            app_bytes.add_metric([*self._labels, app, "rx"], rx)
            app_bytes.add_metric([*self._labels, app, "tx"], tx)
            if sessions:  # rings exist only while sessions are attached
                for ring, ratio in rings.items():
                    occupancy.add_metric([*self._labels, app, ring], ratio)
        yield app_bytes
        yield occupancy

    def _collect_spec(self, spec: _Spec, workers: list[Mapping[str, Mapping[str, int]]]) -> Metric:
        family = _family(spec)
        for worker, counters in enumerate(workers):
            for series in spec.series:
                value = 0
                for section, slot in series.sources:
                    value += counters[section][slot]
                family.add_metric([*self._labels, str(worker), *series.labels], value)
        if spec.name == REFUSALS:  # the control process's own: no worker
            for reason, value in list(self._more_refusals.items()):
                family.add_metric([*self._labels, "", reason], value)
        return family

    def _add_histogram(
        self, family: Metric, worker: int, hist: _HistogramSpec, snap: HistogramSnapshot
    ) -> None:
        buckets = []
        running = 0
        # Dividing by an exact power of ten rounds correctly: 10 µs -> 1e-05.
        for bound, count in zip(snap.bounds, snap.buckets, strict=False):
            running += count
            buckets.append((floatToGoString(bound / hist.divisor), running))
        # The +Inf bucket is `_count`: from the buckets, so the two always
        # agree even when the scrape raced an observation.
        buckets.append(("+Inf", running + snap.buckets[-1]))
        family.add_metric([*self._labels, str(worker)], buckets, snap.sum / hist.divisor)


def _family(spec: _Spec) -> Metric:
    cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
    return cls(spec.name, spec.help, labels=(*WORKER_LABELS, *spec.labels))


def make_registry(collector: Collector) -> CollectorRegistry:
    """A registry holding only `collector` (no process or platform metrics:
    they would describe the exporter's process, not the stack loop).

    Raises ValueError if its names clash with a collector already there.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class MetricsServer:
    """`/metrics` over HTTP on a thread; `stop` closes the listening socket."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        """Raises OSError when the address cannot be bound."""
        self._httpd, self._thread = start_http_server(port, host or "0.0.0.0", registry)
        self.port: int = self._httpd.server_port  # the bound port (useful with port 0)
        self._lock = threading.Lock()
        self._stopped = False

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent; blocks up to the
        server's 0.5 s poll interval)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
