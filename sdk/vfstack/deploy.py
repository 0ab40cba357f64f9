"""`vfstack deploy start|stop|list`: one stack container per VF, through the
Docker API, for hosts with more VFs than docker-compose.yml names.

Each container gets what the compose file gives `stack-vf0`: the vfstack
image, the host's network, capabilities NET_ADMIN, NET_RAW, IPC_LOCK and
SYS_NICE only, a writable /proc/sys, /run/vfstack shared with the host,
and VFSTACK_IFACE/IP/NAME/METRICS_PORT in its environment. The address
plan: VF i gets the base address + i and metrics port base + i, so
`--base-ip 198.18.0.10/24` matches the emulated port (VF i at 198.18.0.(10+i)).

Containers are found again by their labels (`io.vfstack.*`), never by name
patterns, so `stop` touches only what `start` made. Building the container
specification is plain code over a `Plan` and a `Vf` (unit-tested without
a daemon); only `start`, `stop` and `rows` talk to Docker, through the
client they are given.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfstack._steering import MAX_WORKERS

LABEL = "io.vfstack.deploy"  # value: the deployment's name (--project)
LABEL_PF = "io.vfstack.pf"
LABEL_VF = "io.vfstack.vf"
LABEL_IFACE = "io.vfstack.iface"
LABEL_IP = "io.vfstack.ip"
LABEL_METRICS = "io.vfstack.metrics-port"

# What a stack needs and nothing more (docs/architecture.md, "Known pitfalls").
CAPABILITIES = ("NET_ADMIN", "NET_RAW", "IPC_LOCK", "SYS_NICE")
# The stack writes sysctls of its VF, and Docker mounts /proc/sys read-only.
# `--security-opt systempaths=unconfined` (compose) is a CLI-side option:
# what reaches the engine is empty lists of masked and read-only paths.
UNMASKED_SYSTEM_PATHS = {"MaskedPaths": [], "ReadonlyPaths": []}
CONTAINER_RUN_DIR = "/run/vfstack"
STOP_TIMEOUT_S = 20  # the instance resets connections and removes its files
HEALTH_POLL_S = 0.5
STOP_PARALLEL = 8

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,40}$")
_SUFFIX = re.compile(r"^v(0|[1-9][0-9]{0,3})$")


@dataclass(frozen=True, slots=True)
class Vf:
    """One VF as the host shows it: its index on the PF and its netdev."""

    pf: str
    index: int
    iface: str
    kind: str  # "sriov" or "macvlan" (VMDq or emulated port)


@dataclass(frozen=True, slots=True)
class Plan:
    """How every container of one deployment is made."""

    image: str = "vfstack:local"
    base_ip: str = "198.18.0.10/24"
    metrics_port_base: int = 9100
    gateway: str | None = None
    run_dir: str = "/run/vfstack"  # on the host
    name_prefix: str = "vf"  # instance i is named <prefix><i>
    project: str = "vfstack-deploy"
    diag_services: bool = False
    app_group: str = "10001"  # the image's vfstack group (see docker-compose.yml)
    workers: int = 1  # packet loops per instance (stackservice run --workers)

    def __post_init__(self) -> None:
        if not _NAME.match(self.project):
            raise ValueError(f"--project: not a container name prefix: {self.project!r}")
        if not _NAME.match(self.name_prefix):
            raise ValueError(f"--name-prefix: not an instance name: {self.name_prefix!r}")
        if not self.run_dir.startswith("/"):
            raise ValueError(f"--run-dir: must be an absolute path, not {self.run_dir!r}")
        base = _interface(self.base_ip)
        if self.gateway is not None and ipaddress.IPv4Address(self.gateway) not in base.network:
            raise ValueError(f"--gateway: {self.gateway} is not on {base.network}")
        if not 1 <= self.metrics_port_base <= 65535:
            raise ValueError(f"--metrics-port-base: not a port: {self.metrics_port_base}")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"--workers: 1..{MAX_WORKERS}, not {self.workers}")

    def address(self, index: int) -> str:
        """VF i's address: the base address + i, same prefix length.

        Raises ValueError when it leaves the network or hits its broadcast."""
        base = _interface(self.base_ip)
        ip = base.ip + index
        net = base.network
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            raise ValueError(f"VF {index}: {base.ip} + {index} is not a host address in {net}")
        return f"{ip}/{net.prefixlen}"

    def metrics_port(self, index: int) -> int:
        port = self.metrics_port_base + index
        if port > 65535:
            raise ValueError(f"VF {index}: metrics port {port} is out of range")
        return port

    def instance(self, vf: Vf) -> str:
        return f"{self.name_prefix}{vf.index}"

    def container_name(self, vf: Vf) -> str:
        return f"{self.project}-{self.instance(vf)}"


def _interface(text: str) -> ipaddress.IPv4Interface:
    if "/" not in text:
        raise ValueError(f"--base-ip: give a prefix length, e.g. {text}/24")
    try:
        return ipaddress.IPv4Interface(text)
    except ValueError as exc:
        raise ValueError(f"--base-ip: {exc}") from None


def container_spec(plan: Plan, vf: Vf) -> dict[str, Any]:
    """How to create VF `vf`'s stack container: keyword arguments of
    docker's `APIClient.create_container()`, except `host_config`, which
    holds those of `create_host_config()`, and `host_config_extra`, host
    settings that function has no argument for."""
    address = plan.address(vf.index)
    metrics = plan.metrics_port(vf.index)
    environment = {
        "VFSTACK_IFACE": vf.iface,
        "VFSTACK_IP": address,
        "VFSTACK_NAME": plan.instance(vf),
        "VFSTACK_METRICS_PORT": str(metrics),
    }
    if plan.gateway:
        environment["VFSTACK_GATEWAY"] = plan.gateway
    if plan.diag_services:
        environment["VFSTACK_DIAG_SERVICES"] = "1"
    if plan.app_group:
        environment["VFSTACK_APP_GROUP"] = plan.app_group
    if plan.workers > 1:
        environment["VFSTACK_WORKERS"] = str(plan.workers)
    return {
        "image": plan.image,
        "name": plan.container_name(vf),
        "command": ["stackservice", "run"],
        "environment": environment,
        "labels": {
            LABEL: plan.project,
            LABEL_PF: vf.pf,
            LABEL_VF: str(vf.index),
            LABEL_IFACE: vf.iface,
            LABEL_IP: address,
            LABEL_METRICS: str(metrics),
        },
        "stop_timeout": STOP_TIMEOUT_S,
        # Exactly this environment: no proxy variables from ~/.docker/config.json.
        "use_config_proxy": False,
        "host_config": {
            "network_mode": "host",
            "cap_drop": ["ALL"],
            "cap_add": list(CAPABILITIES),
            # Without CAP_CHOWN, membership is what lets the stack give its
            # files to the apps' group (--app-group).
            "group_add": [plan.app_group] if plan.app_group else [],
            "binds": {plan.run_dir: {"bind": CONTAINER_RUN_DIR, "mode": "rw"}},
            "init": True,  # forwards SIGTERM and reaps the control process
            # As in docker-compose.yml: back after any exit but a stop
            # through the engine, however often (its apps attach again).
            "restart_policy": {"Name": "unless-stopped"},
        },
        "host_config_extra": dict(UNMASKED_SYSTEM_PATHS),
    }


def create_and_start(client: Any, spec: dict[str, Any]) -> Any:
    """Create the container `spec` describes (see `container_spec`), start
    it, and return it as a `docker.models.containers.Container`."""
    kwargs = dict(spec)
    host_config = client.api.create_host_config(**kwargs.pop("host_config"))
    host_config.update(kwargs.pop("host_config_extra"))
    created = client.api.create_container(host_config=host_config, **kwargs)
    try:
        client.api.start(created["Id"])
    except BaseException:
        client.api.remove_container(created["Id"], force=True)
        raise
    return client.containers.get(created["Id"])


# --- discovery -------------------------------------------------------------


def discover_vfs(pf: str, sysfs_root: str | Path = "/sys") -> list[Vf]:
    """The VFs of `pf` that have a netdev, by index: SR-IOV VFs when the
    port has SR-IOV, else the macvlans `<pf>v<i>` on it (VMDq ports or the
    emulated port's VFs, as `vfstack vf setup --mode vmdq` and
    `vfstack emulate up` name them).

    Raises ValueError when there is no such interface.
    """
    if not pf or len(pf) > 15 or "/" in pf or pf in (".", ".."):
        raise ValueError(f"--pf: not an interface name: {pf!r}")
    net = Path(sysfs_root) / "class" / "net" / pf
    if not net.exists():
        raise ValueError(f"--pf: no such interface: {pf}")
    if (net / "device" / "sriov_totalvfs").exists():
        from stackservice.nic.sriov import read_pf

        info = read_pf(pf, sysfs_root)
        # A VF bound to vfio-pci (or no driver) has no netdev for a stack.
        return [Vf(pf, vf.index, vf.netdev, "sriov") for vf in info.vfs if vf.netdev]
    found = []
    for link in net.glob(f"upper_{pf}v*"):
        iface = link.name[len("upper_") :]
        suffix = _SUFFIX.match(iface[len(pf) :])
        if suffix:
            found.append(Vf(pf, int(suffix[1]), iface, "macvlan"))
    return sorted(found, key=lambda vf: vf.index)


def select_vfs(vfs: list[Vf], wanted: Iterable[int] | None) -> list[Vf]:
    """`vfs` restricted to the indices in `wanted` (all when None).

    Raises ValueError naming an index that is not there."""
    if wanted is None:
        return vfs
    by_index = {vf.index: vf for vf in vfs}
    missing = sorted(set(wanted) - by_index.keys())
    if missing:
        have = ", ".join(str(i) for i in sorted(by_index)) or "none"
        raise ValueError(f"--vfs: no VF {missing[0]} (have: {have})")
    return [by_index[i] for i in sorted(set(wanted))]


# --- Docker ----------------------------------------------------------------


def docker_client() -> Any:
    """A client of the local engine (DOCKER_HOST etc. honoured).

    Raises ModuleNotFoundError without the `deploy` extra: `vfstack`'s
    main() turns it into the line saying what to install."""
    import docker

    return docker.from_env()


def _managed(client: Any, project: str | None, pf: str | None = None) -> list[Any]:
    labels = [f"{LABEL}={project}" if project else LABEL]
    if pf:
        labels.append(f"{LABEL_PF}={pf}")
    found = client.containers.list(all=True, filters={"label": labels})
    return sorted(found, key=lambda c: (c.labels.get(LABEL_PF, ""), int(c.labels[LABEL_VF])))


def start(client: Any, plan: Plan, vfs: list[Vf], say: Callable[[str], None] = print) -> list[Any]:
    """Run a stack container on each VF; one already running is kept, a
    stopped one is replaced. Returns the containers, in VF order."""
    specs = [(vf, container_spec(plan, vf)) for vf in vfs]  # raises before anything starts
    existing = {c.name: c for c in _managed(client, plan.project)}
    running = []
    for vf, spec in specs:
        old = existing.get(spec["name"])
        if old is not None and old.status == "running":
            say(f"{spec['name']}: running already ({vf.iface})")
            running.append(old)
            continue
        if old is not None:
            old.remove(force=True)
        container = create_and_start(client, spec)
        say(
            f"{spec['name']}: started on {vf.iface}, ip {spec['labels'][LABEL_IP]}, "
            f"metrics :{spec['labels'][LABEL_METRICS]}"
        )
        running.append(container)
    return running


def wait_healthy(containers: list[Any], timeout: float, say: Callable[[str], None] = print) -> None:
    """Block until every container's health check passes.

    Raises RuntimeError on a container that stops or turns unhealthy, or
    when `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    pending = list(containers)
    while pending:
        for container in list(pending):
            container.reload()
            health = container.attrs["State"].get("Health", {}).get("Status", "none")
            if container.status not in ("created", "running", "restarting"):
                raise RuntimeError(f"{container.name}: {container.status}; see docker logs")
            if health == "unhealthy":
                raise RuntimeError(f"{container.name}: unhealthy; see docker logs")
            if health == "healthy":
                say(f"{container.name}: healthy")
                pending.remove(container)
        if pending and time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            raise RuntimeError(f"not healthy after {timeout:g} s: {names}")
        if pending:
            time.sleep(HEALTH_POLL_S)


def stop(
    client: Any, project: str, pf: str | None = None, say: Callable[[str], None] = print
) -> int:
    """Stop and remove the deployment's containers (on `pf` only, if given).
    Returns how many were removed."""
    containers = _managed(client, project, pf)

    def stop_one(container: Any) -> str:
        # SIGTERM first: the instance removes its socket and shared memory.
        container.stop(timeout=STOP_TIMEOUT_S)
        container.remove()
        return container.name

    # In parallel: each instance takes about a second to wind down, and a
    # host may have dozens.
    with ThreadPoolExecutor(max_workers=STOP_PARALLEL) as pool:
        for name in pool.map(stop_one, containers):
            say(f"{name}: stopped and removed")
    if not containers:
        say("no vfstack deploy containers" + (f" on {pf}" if pf else ""))
    return len(containers)


def rows(client: Any, project: str | None) -> list[dict[str, str]]:
    """One dict per managed container: what `list` prints."""
    out = []
    for container in _managed(client, project):
        labels = container.labels
        state = container.attrs.get("State", {})
        health = state.get("Health", {}).get("Status", "")
        out.append(
            {
                "container": container.name,
                "project": labels.get(LABEL, ""),
                "pf": labels.get(LABEL_PF, ""),
                "vf": labels.get(LABEL_VF, ""),
                "iface": labels.get(LABEL_IFACE, ""),
                "ip": labels.get(LABEL_IP, ""),
                "metrics": labels.get(LABEL_METRICS, ""),
                "status": f"{container.status} ({health})" if health else container.status,
            }
        )
    return out


# --- the command -------------------------------------------------------------


def _index_list(text: str) -> list[int]:
    """The VF indices in "0,2,5-7": [0, 2, 5, 6, 7]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first:
                raise ValueError
            out.extend(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a list of VF indices like 0,2,5-7: {text!r}"
        ) from None
    return out


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return int(text)


def _run(args: argparse.Namespace) -> int:
    say = print
    try:
        import docker.errors

        docker_errors: tuple[type[BaseException], ...] = (docker.errors.DockerException,)
    except ImportError:
        docker_errors = ()
    try:
        if args.deploy_action == "list":
            table = rows(docker_client(), args.project)
            _print_table(table)
            return 0
        if args.deploy_action == "stop":
            stop(docker_client(), args.project, args.pf, say)
            return 0
        plan = Plan(
            image=args.image,
            base_ip=args.base_ip,
            metrics_port_base=args.metrics_port_base,
            gateway=args.gateway,
            run_dir=args.run_dir,
            name_prefix=args.name_prefix,
            project=args.project,
            diag_services=args.diag_services,
            app_group=args.app_group,
            workers=args.workers,
        )
        vfs = select_vfs(discover_vfs(args.pf, args.sysfs_root), args.vfs)
        if not vfs:
            raise ValueError(f"--pf {args.pf}: no VFs with a netdev found")
        containers = start(docker_client(), plan, vfs, say)
        if args.wait:
            wait_healthy(containers, args.wait, say)
        return 0
    except docker_errors as exc:
        print(f"vfstack deploy {args.deploy_action}: docker: {exc}", file=sys.stderr)
        return 1


def _print_table(table: list[dict[str, str]]) -> None:
    if not table:
        print("no vfstack deploy containers")
        return
    header = list(table[0])
    widths = [max(len(h), *(len(row[h]) for row in table)) for h in header]
    for cells in [dict(zip(header, header, strict=True)), *table]:
        line = "  ".join(cells[h].ljust(w) for h, w in zip(header, widths, strict=True))
        print(line.rstrip())


def add_deploy_command(commands: argparse._SubParsersAction) -> None:
    """The `deploy` subcommand of `vfstack` (sdk/vfstack/cli.py)."""
    deploy = commands.add_parser(
        "deploy",
        help="start, stop or list one stack container per VF (Docker API)",
        description=__doc__.split("\n\n")[0],
    )
    actions = deploy.add_subparsers(dest="deploy_action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--project",
        default="vfstack-deploy",
        help="deployment name: container name prefix and label (default vfstack-deploy)",
    )
    begin = actions.add_parser(
        "start", parents=[common], help="run a stack container on every VF of --pf"
    )
    begin.add_argument("--pf", default="vfpf0", help="the PF whose VFs get stacks (default vfpf0)")
    begin.add_argument(
        "--vfs", type=_index_list, help="only these VF indices, e.g. 0,2,5-7 (default all)"
    )
    begin.add_argument("--image", default="vfstack:local", help="default vfstack:local")
    begin.add_argument(
        "--base-ip",
        default="198.18.0.10/24",
        help="VF i gets this address + i (default 198.18.0.10/24)",
    )
    begin.add_argument("--gateway", help="next hop for off-link destinations")
    begin.add_argument(
        "--metrics-port-base",
        type=_port,
        default=9100,
        help="VF i serves /metrics on this port + i (default 9100)",
    )
    begin.add_argument(
        "--name-prefix", default="vf", help="instance i is named PREFIX<i> (default vf)"
    )
    begin.add_argument(
        "--run-dir",
        default="/run/vfstack",
        help="host directory for control sockets and shared memory (default /run/vfstack)",
    )
    begin.add_argument(
        "--app-group",
        default="10001",
        help="group whose apps may attach (default 10001, the image's vfstack group; "
        "empty: root only)",
    )
    begin.add_argument(
        "--diag-services", action="store_true", help="also serve echo, discard and HTTP"
    )
    begin.add_argument(
        "--workers", type=int, default=1, help="packet loops (cores) per instance (default 1)"
    )
    begin.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=120.0,
        metavar="SECONDS",
        help="wait until every container is healthy (default 120 s when given)",
    )
    begin.add_argument("--sysfs-root", default="/sys", help=argparse.SUPPRESS)
    end = actions.add_parser(
        "stop", parents=[common], help="stop and remove the deployment's containers"
    )
    end.add_argument("--pf", help="only the containers on this PF")
    actions.add_parser("list", parents=[common], help="the deployment's containers")
    deploy.set_defaults(run=_run)


__all__ = [
    "Plan",
    "Vf",
    "add_deploy_command",
    "container_spec",
    "create_and_start",
    "discover_vfs",
    "rows",
    "select_vfs",
    "start",
    "stop",
    "wait_healthy",
]
