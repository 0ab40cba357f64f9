"""What one stack instance is told at start: validated once, then frozen."""

from __future__ import annotations

import grp
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stackservice.limits import MIB, Limits
from stackservice.tcp.portshare import MAX_WORKERS
from stackservice.tcp.settings import TcpSettings

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# After a pass that received frames the loop keeps polling the ring this long
# before it sleeps: a wake-up costs 5-45 us here, more than the next frame
# of a request/response exchange usually takes to arrive. 50 us halved the
# ICMP echo round trip (45 -> 14 us, bench.icmp_echo) at a bounded CPU cost.
DEFAULT_BUSY_POLL_US = 50
MAX_BUSY_POLL_US = 10_000
# The one home of every other default `stackservice run` documents.
DEFAULT_RUN_DIR = "/run/vfstack"
DEFAULT_CONGESTION_CONTROL = TcpSettings().congestion_control
DEFAULT_TIME_WAIT_MS = TcpSettings().time_wait_us // 1000
DEFAULT_TCP_MEMORY_MIB = TcpSettings().buffer_memory // MIB
MIN_TCP_MEMORY_MIB = TcpSettings().max_socket_buffer // MIB
MAX_TIME_WAIT_MS = 240_000  # RFC 9293 2*MSL
WORKERS = 1  # one packet loop unless told: stackservice.workers for more
DEFAULT_LIMITS = Limits()
DEFAULT_METRICS_ADDRESS = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    iface: str
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None
    mac: str | None
    name: str
    run_dir: Path
    busy_poll_us: int
    diag_services: bool
    tcp: TcpSettings
    control: Path | None  # the control API's unix socket; None: no control API
    control_tcp: str | None  # HOST:PORT for the control API over TCP, if asked
    metrics_port: int | None  # Prometheus /metrics on METRICS_ADDRESS:PORT, if asked
    app_group: int | None = None  # gid whose processes may attach; None: root only
    limits: Limits = DEFAULT_LIMITS  # what apps may take (stackservice.limits)
    # Where /metrics listens: loopback unless told, since the series name
    # apps and instances to whoever can reach it.
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    # A fault (an unexpected exception) crashes the instance instead of being
    # contained (stackservice.faults): what tests run with.
    strict: bool = False
    # Packet-loop processes (stackservice.workers), and the CPUs they are
    # pinned to, worker i to cpus[i % len(cpus)]; () leaves them unpinned.
    workers: int = WORKERS
    cpus: tuple[int, ...] = ()

    @classmethod
    def build(
        cls,
        iface: str,
        ip: str,
        gateway: str | None = None,
        mac: str | None = None,
        name: str | None = None,
        run_dir: str = DEFAULT_RUN_DIR,
        busy_poll_us: str | int = DEFAULT_BUSY_POLL_US,
        diag_services: bool = False,
        congestion_control: str = DEFAULT_CONGESTION_CONTROL,
        time_wait_ms: str | int = DEFAULT_TIME_WAIT_MS,
        tcp_memory_mib: str | int = DEFAULT_TCP_MEMORY_MIB,
        control: str | None = None,
        control_tcp: str | None = None,
        metrics_port: str | int | None = None,
        metrics_address: str = DEFAULT_METRICS_ADDRESS,
        workers: str | int = WORKERS,
        cpus: str = "",
        app_group: str | int | None = None,
        shm_limit_mib: str | int = DEFAULT_LIMITS.shm_bytes // MIB,
        app_shm_limit_mib: str | int = DEFAULT_LIMITS.app_shm_bytes // MIB,
        max_sessions: str | int = DEFAULT_LIMITS.sessions,
        max_app_sessions: str | int = DEFAULT_LIMITS.app_sessions,
        attach_timeout_ms: str | int = DEFAULT_LIMITS.attach_timeout_ms,
        privileged_port_uids: str = "",
        port_reserve_ms: str | int = DEFAULT_LIMITS.port_reserve_ms,
        strict: bool = False,
    ) -> InstanceConfig:
        """Validate raw flag values. Raises ValueError naming the bad one."""
        if not iface or len(iface) > 15 or "/" in iface:
            raise ValueError(f"--iface: not an interface name: {iface!r}")
        try:
            address = ipaddress.IPv4Interface(ip)
        except ValueError as exc:
            raise ValueError(f"--ip: {exc}") from None
        if "/" not in ip:
            raise ValueError(f"--ip: give a prefix length, e.g. {ip}/24")
        if address.network.prefixlen > 30 or address.ip in (
            address.network.network_address,
            address.network.broadcast_address,
        ):
            raise ValueError(f"--ip: {ip} is not a usable host address")
        gw = None
        if gateway:
            try:
                gw = ipaddress.IPv4Address(gateway)
            except ValueError as exc:
                raise ValueError(f"--gateway: {exc}") from None
            if gw not in address.network:
                raise ValueError(f"--gateway: {gateway} is not on {address.network}")
        if mac is not None:
            mac = mac.lower()
            if not _MAC.match(mac) or int(mac[:2], 16) & 1:
                raise ValueError(f"--mac: not a unicast MAC address: {mac}")
        name = name or iface
        if not _NAME.match(name):
            raise ValueError(f"--name: use letters, digits, '.', '_', '-': {name!r}")
        try:
            spin = int(busy_poll_us)
        except ValueError:
            spin = -1
        if not 0 <= spin <= MAX_BUSY_POLL_US:
            raise ValueError(f"--busy-poll-us: give 0..{MAX_BUSY_POLL_US} microseconds")
        try:
            time_wait = int(time_wait_ms)
        except ValueError:
            time_wait = -1
        if not 0 <= time_wait <= MAX_TIME_WAIT_MS:
            raise ValueError(f"--time-wait-ms: give 0..{MAX_TIME_WAIT_MS} (RFC 9293 2*MSL)")
        tcp_memory = _positive("--tcp-memory-mib", tcp_memory_mib)
        if tcp_memory < MIN_TCP_MEMORY_MIB:  # else TcpSettings refuses it, less plainly
            raise ValueError(
                f"--tcp-memory-mib: at least {MIN_TCP_MEMORY_MIB}, one socket's largest buffer"
            )
        try:
            tcp = TcpSettings(
                congestion_control=congestion_control,
                time_wait_us=time_wait * 1000,
                buffer_memory=tcp_memory * MIB,
            )
        except ValueError as exc:
            raise ValueError(f"--congestion-control: {exc}") from None
        run = Path(run_dir)
        worker_count = _positive("--workers", workers)
        if worker_count > MAX_WORKERS:
            raise ValueError(f"--workers: at most {MAX_WORKERS}")
        cpu_list = _cpus(cpus)
        metrics = None
        if metrics_port not in (None, "") and control == "none":
            raise ValueError(
                "--metrics-port: metrics are served beside the control API; "
                "it cannot be --control none"
            )
        if metrics_port not in (None, ""):
            metrics = int(metrics_port) if str(metrics_port).isdigit() else -1
            if not 0 < metrics < 65536:
                raise ValueError(f"--metrics-port: give 1..65535, not {metrics_port!r}")
        try:
            metrics_ip = str(ipaddress.ip_address(metrics_address))
        except ValueError:
            raise ValueError(
                f"--metrics-address: give an IP address (0.0.0.0: all), not {metrics_address!r}"
            ) from None
        gid = _group_id(app_group) if app_group not in (None, "") else None
        shm = _positive("--shm-limit-mib", shm_limit_mib)
        app_shm = _positive("--app-shm-limit-mib", app_shm_limit_mib)
        if app_shm > shm:
            raise ValueError("--app-shm-limit-mib: more than --shm-limit-mib")
        sessions = _positive("--max-sessions", max_sessions)
        app_sessions = _positive("--max-app-sessions", max_app_sessions)
        if app_sessions > sessions:
            raise ValueError("--max-app-sessions: more than --max-sessions")
        limits = Limits(
            shm_bytes=shm * MIB,
            app_shm_bytes=app_shm * MIB,
            sessions=sessions,
            app_sessions=app_sessions,
            attach_timeout_ms=_positive("--attach-timeout-ms", attach_timeout_ms),
            privileged_port_uids=_uids("--privileged-port-uids", privileged_port_uids),
            port_reserve_ms=_whole("--port-reserve-ms", port_reserve_ms),
        )
        return cls(
            iface,
            address,
            gw,
            mac,
            name,
            run,
            spin,
            diag_services,
            tcp,
            _control_path(control, run, name),
            _host_port(control_tcp),
            metrics,
            gid,
            limits,
            metrics_ip,
            strict,
            worker_count,
            cpu_list,
        )


def _positive(flag: str, value: str | int) -> int:
    number = _whole(flag, value)
    if number == 0:
        raise ValueError(f"{flag}: give a whole number above 0, not {value!r}")
    return number


def _whole(flag: str, value: str | int) -> int:
    text = str(value)
    if not text.isdigit():
        raise ValueError(f"{flag}: give a whole number, not {value!r}")
    return int(text)


def _uids(flag: str, value: str) -> frozenset[int]:
    """A comma-separated list of uids ("" for none)."""
    return frozenset(_whole(flag, item.strip()) for item in value.split(",") if item.strip())


def _cpus(value: str) -> tuple[int, ...]:
    """`--cpus 0,1`: CPUs this process may run on, each once, in order."""
    cpus = tuple(_whole("--cpus", item.strip()) for item in value.split(",") if item.strip())
    allowed = os.sched_getaffinity(0)
    for cpu in cpus:
        if cpu not in allowed:
            raise ValueError(f"--cpus: CPU {cpu} is not one this process may use {sorted(allowed)}")
    if len(set(cpus)) != len(cpus):
        raise ValueError(f"--cpus: a CPU is named twice in {value!r}")
    return cpus


def _group_id(group: str | int) -> int:
    """A group name or number as a gid."""
    text = str(group)
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"--app-group: no group named {text!r}") from None


def choose_iface(
    iface: str | None,
    pf: str | None,
    vf: str | int | None,
    resolve: Callable[[str, int], str],
) -> str:
    """The interface an instance owns: `--iface`, or VF `--vf` of PF `--pf`
    (`resolve(pf, index)` names its netdev). Exactly one way must be given.

    Raises ValueError naming the flags; `resolve` raises ValueError too.
    """
    vf_text = "" if vf is None else str(vf).strip()
    if iface and (pf or vf_text):
        raise ValueError(
            "give either --iface or --pf with --vf, not both "
            "(check VFSTACK_IFACE, VFSTACK_PF, VFSTACK_VF)"
        )
    if iface:
        return iface
    if not pf and not vf_text:
        raise ValueError("give --iface, or --pf and --vf")
    if not pf or not vf_text:
        raise ValueError("--pf and --vf go together: give both, or --iface instead")
    if len(pf) > 15 or "/" in pf:
        raise ValueError(f"--pf: not an interface name: {pf!r}")
    if not vf_text.isdigit():
        raise ValueError(f"--vf: give a VF index (0 or more), not {vf!r}")
    try:
        return resolve(pf, int(vf_text))
    except ValueError as exc:
        raise ValueError(f"--pf {pf} --vf {vf_text}: {exc}") from None


def _control_path(url: str | None, run_dir: Path, name: str) -> Path | None:
    """`--control`: unix:///abs/path (or unix:/abs/path), or none."""
    if url is None:
        return run_dir / f"{name}.sock"
    if url == "none":
        return None
    for prefix in ("unix://", "unix:"):
        if url.startswith(prefix):
            path = Path(url[len(prefix) :])
            if path.is_absolute() and path.name:
                return path
            break
    raise ValueError(f"--control: give unix:///absolute/path.sock or none, not {url!r}")


def _host_port(value: str | None) -> str | None:
    """`--control-tcp HOST:PORT`, checked so gRPC does not fail later."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--control-tcp: give HOST:PORT, not {value!r}")
    return value
