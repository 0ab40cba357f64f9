"""Start, run and stop one stack instance: the wiring around the loop."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from stackservice import __version__
from stackservice.config import InstanceConfig
from stackservice.diag import DiagServices
from stackservice.loop import StackLoop
from stackservice.metrics.counters import CounterBlock, nonzero
from stackservice.metrics.layout import INSTANCE_LAYOUT
from stackservice.net.host import Ipv4Host
from stackservice.net.ipv4 import PROTO_TCP
from stackservice.nic.netconf import detect_mode, prepare_interface
from stackservice.nic.packet_io import PacketPort
from stackservice.tcp.engine import TcpEngine


def counters_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.counters"


@contextlib.contextmanager
def _instance_lock(run_dir: Path, name: str) -> Iterator[None]:
    """Hold NAME.pid locked for the instance's life: a second instance with
    the same name fails at once, and a stale file from a crash is harmless."""
    run_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
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
def _stop_on_signals() -> Iterator[int]:
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


def _say(line: str) -> None:
    # One write per line: instances sharing a terminal must not interleave.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_instance(config: InstanceConfig) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit status."""
    try:
        with _instance_lock(config.run_dir, config.name), _stop_on_signals() as stop_fd:
            return _serve(config, stop_fd)
    except (OSError, RuntimeError) as exc:
        print(f"stackservice {config.name}: {exc}", file=sys.stderr)
        return 1


class Instance:
    """One stack instance's parts, wired together: shared-memory counters,
    the IPv4 host, the TCP engine on top of it and the NIC port below."""

    __slots__ = ("config", "counters", "engine", "host", "mac", "mode", "port")

    def __init__(
        self, config: InstanceConfig, mode: str, mac: str, counters: CounterBlock, port: PacketPort
    ) -> None:
        self.config = config
        self.mode = mode
        self.mac = mac
        self.counters = counters
        self.port = port
        self.host = Ipv4Host(
            mac=bytes.fromhex(mac.replace(":", "")),
            ip=int(config.address.ip),
            prefix_len=config.address.network.prefixlen,
            gateway=int(config.gateway) if config.gateway else None,
            drops=counters.section("drops"),
            events=counters.section("events"),
        )
        self.engine = TcpEngine(
            int(config.address.ip),
            self.host.send_ipv4,
            self.host.route,
            config.tcp,
            counters.section("tcp"),
            counters.section("tcp_drops"),
            counters.section("tcp_states"),
            secret=os.urandom(32),
        )
        self.host.register_protocol(PROTO_TCP, self.engine.on_segment)

    def run(self, stop_fd: int) -> None:
        """Serve until `stop_fd` becomes readable."""
        StackLoop(
            self.port, self.host, self.engine, self.counters.section("loop"), stop_fd,
            self.config.busy_poll_us,
        ).run()  # fmt: skip


@contextlib.contextmanager
def open_instance(config: InstanceConfig) -> Iterator[Instance]:
    """Prepare the interface and build the instance; release it on exit
    (the counters file is removed)."""
    mode = detect_mode(config.iface)
    mac = prepare_interface(config.iface, config.mac)
    counters = CounterBlock(INSTANCE_LAYOUT, counters_path(config.run_dir, config.name))
    try:
        with PacketPort(config.iface, counters.section("nic")) as port:
            yield Instance(config, mode, mac, counters, port)
    finally:
        counters.close()


def _serve(config: InstanceConfig, stop_fd: int) -> int:
    with open_instance(config) as instance:
        if config.diag_services:
            DiagServices(instance.engine)
        _say(
            f"stackservice {__version__} {config.name}: iface {config.iface} "
            f"mac {instance.mac} ip {config.address} gateway {config.gateway or '-'} "
            f"mode {instance.mode}{' diag-services' if config.diag_services else ''}"
        )
        instance.run(stop_fd)
        summary = json.dumps(nonzero(instance.counters.snapshot()), separators=(",", ":"))
    _say(f"stackservice {config.name}: stopped; counters {summary}")
    return 0
