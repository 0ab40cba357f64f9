"""Start, run and stop one stack instance: the wiring around the loop."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from vfstack import _extensions

from stackservice import __version__
from stackservice.clock import monotonic_us
from stackservice.config import InstanceConfig
from stackservice.control.gate import inner_path
from stackservice.control.handoff import handoff_path
from stackservice.control.link import LinkServer, link_pair
from stackservice.control.requests import ControlRequests
from stackservice.diag import DiagServices
from stackservice.fastpath import SessionManager
from stackservice.faults import Containment
from stackservice.loop import StackLoop
from stackservice.metrics.apps import AppStatsTable
from stackservice.metrics.counters import CounterBlock, nonzero
from stackservice.metrics.layout import (
    EVENT_DELIVERY_US,
    INSTANCE_LAYOUT,
    LOOP_ITERATION_US,
    RX_BATCH_PACKETS,
    TCP_CONNECT_US,
    TCP_RTT_US,
)
from stackservice.net.host import Ipv4Host
from stackservice.net.ipv4 import PROTO_TCP
from stackservice.nic.netconf import detect_mode, prepare_interface, vf_identity
from stackservice.nic.packet_io import PacketPort
from stackservice.tcp.engine import TcpEngine
from stackservice.tcp.portshare import PortShare

log = logging.getLogger(__name__)


def counters_path(run_dir: Path, name: str, worker: int | None = None) -> Path:
    """An instance's counters file; with several workers, each one's."""
    return run_dir / (f"{name}.counters" if worker is None else f"{name}.worker{worker}.counters")


def apps_path(run_dir: Path, name: str, worker: int | None = None) -> Path:
    """The per-app counters (stackservice.metrics.apps); with several
    workers, each one's."""
    return run_dir / (f"{name}.apps" if worker is None else f"{name}.worker{worker}.apps")


@contextlib.contextmanager
def _instance_lock(run_dir: Path, name: str, app_group: int | None = None) -> Iterator[None]:
    """Hold NAME.pid locked for the instance's life: a second instance with
    the same name fails at once, and a stale file from a crash is harmless.

    With `app_group`, the run directory becomes root:app_group 0710: the
    group's apps reach the control and handoff sockets by name, and
    cannot list the directory."""
    run_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    if app_group is not None:
        os.chown(run_dir, -1, app_group)
        os.chmod(run_dir, 0o710)
    path = run_dir / f"{name}.pid"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"an instance named {name!r} is already running") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _interface_claim(iface: str) -> Iterator[None]:
    """Own `iface` for the instance's life: a second instance on it fails at
    once, whatever its name, run directory or container. The claim is an
    abstract unix socket name, which lives in the network namespace (where
    the interface is) and vanishes with the process, however it ends."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            claim.bind(f"\0vfstack/iface/{iface}")
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise RuntimeError(
                f"interface {iface} is already owned by another stack instance"
            ) from None
        yield
    finally:
        claim.close()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[int]:
    """A fd that becomes readable on SIGTERM or SIGINT, for the loop's poll."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        yield reader.fileno()
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reader.close()
        writer.close()


def say(line: str) -> None:
    # One write per line: instances sharing a terminal must not interleave.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_instance(config: InstanceConfig) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit status."""
    try:
        with (
            _interface_claim(config.iface),
            _instance_lock(config.run_dir, config.name, config.app_group),
            stop_on_signals() as stop_fd,
        ):
            if config.workers == 1:
                return _serve(config, stop_fd)
            # Deferred: stackservice.workers builds on this module.
            from stackservice.workers import serve_workers

            return serve_workers(config, stop_fd)
    except (OSError, RuntimeError) as exc:
        print(f"stackservice {config.name}: {exc}", file=sys.stderr)
        return 1


class Instance:
    """One stack instance's parts, wired together: shared-memory counters,
    the IPv4 host, the TCP engine on top of it and the NIC port below, and
    the one fault policy (`contain`) the loop, sessions and control share."""

    __slots__ = (
        "config", "contain", "counters", "engine", "fastpath", "host", "mac", "mode", "port",
    )  # fmt: skip

    def __init__(
        self,
        config: InstanceConfig,
        mode: str,
        mac: str,
        counters: CounterBlock,
        port: PacketPort,
        apps: AppStatsTable | None = None,
        worker: int = 0,
    ) -> None:
        """`worker`: which of `config.workers` this is (stackservice.workers):
        it connects from its share of the ephemeral ports, holds its share
        of the TCP memory, and only worker 0 answers ARP."""
        self.config = config
        self.mode = mode
        self.mac = mac
        self.counters = counters
        self.port = port
        self.contain = Containment(counters.section("internal_errors"), config.strict, monotonic_us)
        self.host = Ipv4Host(
            mac=bytes.fromhex(mac.replace(":", "")),
            ip=int(config.address.ip),
            prefix_len=config.address.network.prefixlen,
            gateway=int(config.gateway) if config.gateway else None,
            drops=counters.section("drops"),
            events=counters.section("events"),
            answers_arp=worker == 0,
            strict=config.strict,  # else it drops a frame that meets a bug: host.faults
        )
        tcp = config.tcp
        if config.workers > 1:
            share = max(tcp.buffer_memory // config.workers, tcp.max_socket_buffer)
            tcp = dataclasses.replace(tcp, buffer_memory=share)
        self.engine = TcpEngine(
            int(config.address.ip),
            self.host.send_in_frame,
            self.host.route,
            tcp,
            counters.section("tcp"),
            counters.section("tcp_drops"),
            counters.section("tcp_states"),
            secret=os.urandom(32),
            rtt_histogram=counters.histogram(TCP_RTT_US),
            connect_histogram=counters.histogram(TCP_CONNECT_US),
            strict=config.strict,  # else it aborts a failing connection: engine.faults
            ports=PortShare(worker, config.workers),
            segmentation_offload=port.segmentation_offload,
        )
        self.host.register_protocol(PROTO_TCP, self.engine.on_segment)
        self.fastpath = SessionManager(
            self.engine, config.name, config.limits, apps, self.contain,
            {name: counters.section(name) for name in ("memory", "memory_limits", "refusals")},
            counters.histogram(EVENT_DELIVERY_US),
        )  # fmt: skip

    def run(self, stop_fd: int, link: LinkServer | None = None) -> None:
        """Serve until `stop_fd` becomes readable; answer the control
        process on `link` between passes."""
        counters = self.counters
        StackLoop(
            self.port, self.host, self.engine, counters.section("loop"), stop_fd,
            self.config.busy_poll_us, link, counters.histogram(RX_BATCH_PACKETS),
            counters.histogram(LOOP_ITERATION_US), self.fastpath, counters.section("sessions"),
            self.contain,
        ).run()  # fmt: skip

    def info(self) -> dict:
        """Static identity for the control API's GetInfo."""
        return identity(self.config, self.mode, self.mac)


def identity(config: InstanceConfig, mode: str, mac: str) -> dict:
    """An instance's static identity, for the control API's GetInfo."""
    pf, vf_index = vf_identity(config.iface)
    return {
        "name": config.name, "iface": config.iface, "mac": mac,
        "ip": str(config.address), "gateway": str(config.gateway or ""),
        "mode": mode, "pf": pf, "vf_index": vf_index, "workers": config.workers,
        "version": __version__, "started_at": time.time(),
        "congestion_control": config.tcp.congestion_control,
        "diag_services": config.diag_services, "build": _extensions.build(),
    }  # fmt: skip


@contextlib.contextmanager
def control_process(instance: Instance) -> Iterator[LinkServer | None]:
    """Run the control API server in a process of its own (its gRPC threads
    never contend with the loop for the GIL), linked to the loop by a socket
    pair. Yields the loop's end, or None without a control API."""
    config = instance.config
    if config.control is None:
        yield None
        return
    ours, theirs = link_pair()
    counters = [counters_path(config.run_dir, config.name)]
    with control_server(config, instance.info(), [theirs], counters):
        requests = ControlRequests(instance.engine, instance.fastpath, monotonic_us)
        link = LinkServer(ours, requests, instance.contain)
        try:
            yield link
        finally:
            link.send_event("stopping")
    link.close()


@contextlib.contextmanager
def control_server(
    config: InstanceConfig, info: dict, links: list[socket.socket], counters: list[Path]
) -> Iterator[None]:
    """Start `python -m stackservice.control.server` with the control
    process's end of each loop's link (closed here once passed) and each
    loop's counters file, one per worker; on exit wait for it (a loop has
    told it "stopping" by then) and remove what it leaves."""
    argv = [sys.executable, "-m", "stackservice.control.server"]
    for link, path in zip(links, counters, strict=True):
        argv += ["--link-fd", str(link.fileno()), "--counters", str(path)]
    argv += [
        "--info",
        json.dumps(info),
        "--unix",
        str(config.control),
        "--attach-timeout-ms",
        str(config.limits.attach_timeout_ms),
    ]
    workers = [None] if config.workers == 1 else range(config.workers)
    for worker in workers:  # each loop's app table
        argv += ["--apps", str(apps_path(config.run_dir, config.name, worker))]
    if config.control_tcp:
        argv += ["--tcp", config.control_tcp]
    if config.metrics_port:
        host = config.metrics_address
        argv += ["--metrics", f"[{host}]:{config.metrics_port}" if ":" in host else
                 f"{host}:{config.metrics_port}"]  # fmt: skip
    config.control.unlink(missing_ok=True)  # a stale socket from a crash
    server = subprocess.Popen(argv, pass_fds=[link.fileno() for link in links])
    for link in links:
        link.close()
    _wait_listening(server, config.control)
    if config.app_group is not None:
        for path in (config.control, handoff_path(config.control)):
            os.chown(path, -1, config.app_group)
    try:
        yield
    finally:
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for path in (config.control, inner_path(config.control), handoff_path(config.control)):
            path.unlink(missing_ok=True)  # the control server's, if it could not


@contextlib.contextmanager
def open_instance(config: InstanceConfig) -> Iterator[Instance]:
    """Prepare the interface and build the instance; release it on exit
    (the counters and app files are removed)."""
    mode = detect_mode(config.iface)
    mac = prepare_interface(config.iface, config.mac)
    counters = CounterBlock(INSTANCE_LAYOUT, counters_path(config.run_dir, config.name))
    apps = None
    try:
        apps = AppStatsTable(path=apps_path(config.run_dir, config.name))
        with PacketPort(config.iface, counters.section("nic")) as port:
            yield Instance(config, mode, mac, counters, port, apps)
    finally:
        if apps is not None:
            apps.close()
        counters.close()


def _wait_listening(server: subprocess.Popen, path: Path, timeout: float = 20.0) -> None:
    """Block until the control server's socket exists, so the start-up line
    is printed only once the control API answers."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if server.poll() is not None:
            raise RuntimeError(f"the control server exited with status {server.returncode}")
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the control server did not listen on {path} in {timeout:.0f}s")
        time.sleep(0.02)


def _serve(config: InstanceConfig, stop_fd: int) -> int:
    with open_instance(config) as instance, control_process(instance) as link:
        if config.diag_services:
            DiagServices(instance.engine)
        say(start_line(config, instance.mac, instance.mode))
        status = run_loop(instance, stop_fd, link)
        if status:
            return status
        counters = instance.counters.snapshot()
    say(stopped_line(config, counters))
    return 0


def run_loop(instance: Instance, stop_fd: int, link: LinkServer | None) -> int:
    """Serve until `stop_fd` is readable. Returns 0, or 1 when the loop
    failed (a bug: logged with its traceback)."""
    if link is not None:
        link.send_event("ready")  # health turns SERVING: the NIC is ours
    # What exists now (modules, tables, rings) lives as long as the
    # process: out of the cyclic GC's sight, a full collection (a pause
    # of the packet loop) walks only the connections.
    gc.collect()
    gc.freeze()
    try:
        instance.run(stop_fd, link)
    except Exception:
        # A fault no containment point took (or any, when strict) is a
        # bug: its traceback goes to stderr, where run_instance would
        # make a one-line start-up error of an OSError or RuntimeError.
        log.critical("the stack loop failed", exc_info=True)
        return 1
    return 0


def start_line(config: InstanceConfig, mac: str, mode: str) -> str:
    return (
        f"stackservice {__version__} {config.name}: iface {config.iface} "
        f"mac {mac} ip {config.address} gateway {config.gateway or '-'} "
        f"mode {mode} build {_extensions.build()}"
        f"{f' workers {config.workers}' if config.workers > 1 else ''}"
        f"{' diag-services' if config.diag_services else ''}"
    )


def stopped_line(config: InstanceConfig, counters: dict[str, dict[str, int]]) -> str:
    summary = json.dumps(nonzero(counters), separators=(",", ":"))
    return f"stackservice {config.name}: stopped; counters {summary}"
