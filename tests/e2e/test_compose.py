"""End to end: `docker compose up` on the emulated port, as a user runs it.

The compose file is built and started under a project name of its own
(settings from .env.example, the host's run directory replaced by a
private one, metrics on free ports), then reached the way users reach it:
HTTP and echo from the kernel peer in namespace vfstack-peer, /metrics
from the host, the control API through the shared run directory. A
`vfstack deploy` container on a third VF covers start/stop through the
Docker API. Then `kill -9` of stack-vf0's stackservice process: the
engine restarts it and app-http answers again by itself (the time it took
is printed with the others). Last, `docker compose down` must leave no
container, no file in the run directory, no interface and no namespace.

The example apps (app-http on VF0, app-echo on VF1) are checked when
sdk/vfstack/examples/http_server.py exists; otherwise the stacks' own
diagnostic services (HTTP 80, echo 7) stand in for them.

Needs root, a Docker engine, Compose v2 and the base image: .ci/run gets
them (docker/setup-host.sh). Without them the module is skipped, unless
VFSTACK_REQUIRE_DOCKER=1 (set by .ci/run) turns that into a failure.
The emulated port's names (vfstack-peer, vfpf0) are global: the module
is skipped when they exist already.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEER_NS = "vfstack-peer"
PF = "vfpf0"
VF0_IP, VF1_IP, VF2_IP = "198.18.0.10", "198.18.0.11", "198.18.0.12"
HTTP_SIZE = 64
UP_TIMEOUT_S = 300  # a cold build installs grpcio & co. from PyPI
RECOVERY_BOUND_S = 90  # a functional bound; the time measured is printed
# The Dockerfile's two targets and, of these modules, what each must hold:
# the app image is the SDK alone (its wheel has the daemon's modules too,
# not their dependencies).
STACK_IMAGE, APP_IMAGE = "vfstack:local", "vfstack-app:local"
MODULES = ("vfstack", "grpc", "stackservice", "pyroute2", "prometheus_client", "grpc_health")
IMAGES = {
    STACK_IMAGE: "vfstack grpc stackservice pyroute2 prometheus_client grpc_health",
    APP_IMAGE: "vfstack grpc stackservice",
}

pytestmark = [pytest.mark.root, pytest.mark.timeout(1200)]

TIMES: dict[str, float] = {}


def _unavailable(reason: str) -> None:
    if os.environ.get("VFSTACK_REQUIRE_DOCKER") == "1":
        pytest.fail(f"VFSTACK_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _base_image() -> str:
    return os.environ.get("BASE_IMAGE") or "vfstack-base:local"


@pytest.fixture(scope="module")
def docker_client():
    """The engine through the docker package, or a skip saying what is missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, capabilities)")
    try:
        import docker
    except ImportError:
        _unavailable("the docker package is not installed (pip install -e '.[dev]')")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        _unavailable(f"no Docker engine answers ({exc}); run docker/setup-host.sh")
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        _unavailable("`docker compose` (Compose v2) is missing; run docker/setup-host.sh")
    try:
        client.images.get(_base_image())
    except docker.errors.ImageNotFound:
        _unavailable(f"base image {_base_image()} is missing; run docker/setup-host.sh")
    if _netns_exists(PEER_NS) or Path(f"/sys/class/net/{PF}").exists():
        _unavailable(f"the emulated port is in use ({PEER_NS} or {PF} exists): take it down first")
    try:
        yield client
    finally:
        client.close()


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("0.0.0.0", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class Project:
    """One compose project: its name, settings and CLI."""

    def __init__(self) -> None:
        self.name = f"vfstack-e2e-{secrets.token_hex(3)}"
        self.run_dir = Path(f"/run/{self.name}")
        self.metrics = _free_ports(3)  # vf0, vf1 (compose), vf2 (deploy)
        self.env = dict(
            os.environ,
            BASE_IMAGE=_base_image(),
            VFSTACK_IMAGE=STACK_IMAGE,
            VFSTACK_APP_IMAGE=APP_IMAGE,
            VFSTACK_MODE="emulated",
            PF=PF,
            NUM_VFS="3",  # VF 2 is for `vfstack deploy`
            VF0_METRICS_PORT=str(self.metrics[0]),
            VF1_METRICS_PORT=str(self.metrics[1]),
            VF1_WORKERS="2",  # app-echo's Stack spans both of vf1's workers
            VFSTACK_RUN_DIR=str(self.run_dir),
            DIAG_SERVICES="1",
            APP_HTTP_SIZE=str(HTTP_SIZE),
        )
        self.services = ["nic", "stack-vf0", "stack-vf1", "app-http", "app-echo"]

    def compose(self, *args: str, timeout: float = 120, check: bool = True):
        argv = [
            "docker", "compose",
            "--project-directory", str(ROOT),
            "-f", str(ROOT / "docker-compose.yml"),
            "--env-file", str(ROOT / ".env.example"),
            "-p", self.name,
            *args,
        ]  # fmt: skip
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            logs = subprocess.run(
                [*argv[: argv.index("-p") + 2], "logs", "--no-color", "--tail", "40"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            pytest.fail(
                f"docker compose {' '.join(args)}: exit {result.returncode}\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n--- logs ---\n{logs[-6000:]}",
                pytrace=False,
            )
        return result

    def control(self, name: str) -> str:
        return f"unix://{self.run_dir}/{name}.sock"


def _vfstack(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vfstack.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _cleanup(project: Project, docker_client) -> None:
    """Whatever happened: the project, the deploy containers, the port."""
    project.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)
    _vfstack("deploy", "stop", "--project", project.name)
    for container in docker_client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project.name}"}
    ):
        container.remove(force=True)
    if _netns_exists(PEER_NS) or Path(f"/sys/class/net/{PF}").exists():
        _vfstack("emulate", "down", "--pf", PF)
    subprocess.run(["umount", "--recursive", "--lazy", str(project.run_dir)], check=False)
    shutil.rmtree(project.run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def project(docker_client):
    project = Project()
    try:
        # What setup-host.sh does for the default run directory.
        share = ROOT / "docker" / "share-mount.sh"
        subprocess.run(["sh", str(share), str(project.run_dir)], check=True)
        started = time.monotonic()
        project.compose("build", timeout=UP_TIMEOUT_S)
        TIMES["image build"] = time.monotonic() - started
        sizes = {name: docker_client.images.get(name).attrs["Size"] for name in IMAGES}
        print("\ne2e image sizes: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items()))
        started = time.monotonic()
        project.compose(
            "up", "--detach", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), *project.services,
            timeout=UP_TIMEOUT_S + 60,
        )  # fmt: skip
        TIMES["compose up to healthy"] = time.monotonic() - started
        yield project
    finally:
        _cleanup(project, docker_client)
        print("\ne2e times: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMES.items()))


def _peer(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", PEER_NS, *argv], capture_output=True, text=True, timeout=timeout
    )


def _curl(url: str) -> str:
    result = _peer("curl", "--silent", "--show-error", "--fail", "--max-time", "10", url)
    assert result.returncode == 0, f"curl {url}: {result.stderr}"
    return result.stdout


_ECHO_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    s.sendall(sys.argv[3].encode())
    s.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := s.recv(4096):
        data += chunk
print(data.decode(), end="")
"""


def _echo(ip: str, port: int, text: str) -> str:
    result = _peer(sys.executable, "-c", _ECHO_CLIENT, ip, str(port), text)
    assert result.returncode == 0, f"echo {ip}:{port}: {result.stderr}"
    return result.stdout


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def test_every_service_is_up_and_healthy(project):
    result = project.compose("ps", "--all", "--format", "json")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    # One JSON object per line (an array in older Compose releases).
    rows = json.loads(lines[0]) if lines[0].startswith("[") else [json.loads(x) for x in lines]
    state = {row["Service"]: (row["State"], row["Health"]) for row in rows}
    assert state == {name: ("running", "healthy") for name in project.services}


def test_the_run_directory_is_a_size_limited_tmpfs_of_its_own(project):
    """docker/nic.sh mounts it in its container; the shared bind carries
    it to the host, so the stacks' files can neither fill the host's /run
    nor be starved by it."""
    mounts = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE,SIZE", "-M", str(project.run_dir)],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    assert ["vfstack-run", "tmpfs", "16M"] in [line.split() for line in mounts]


def test_http_on_vf0_from_the_kernel_peer(project):
    assert len(_curl(f"http://{VF0_IP}:8080/")) == HTTP_SIZE  # the SDK app
    assert len(_curl(f"http://{VF0_IP}/{HTTP_SIZE}")) == HTTP_SIZE  # the stack's diag HTTP


def test_echo_on_vf1_from_the_kernel_peer(project):
    for _ in range(16):  # connections from random ports: both of vf1's workers serve
        text = "vfstack e2e " + secrets.token_hex(8)
        assert _echo(VF1_IP, 7007, text) == text
    opens = {
        line.rpartition('worker="')[2][0]: float(line.rpartition(" ")[2])
        for line in _metrics(project.metrics[1]).splitlines()
        if line.startswith("vfstack_tcp_passive_opens_total{")
    }
    assert set(opens) == {"0", "1"} and min(opens.values()) > 0, opens


def _container(docker_client, project: Project, service: str):
    (container,) = docker_client.containers.list(
        filters={"label": [f"com.docker.compose.project={project.name}",
                           f"com.docker.compose.service={service}"]}
    )  # fmt: skip
    return container


def test_apps_run_unprivileged_without_capabilities(project, docker_client):
    for service in ("app-http", "app-echo"):
        container = _container(docker_client, project, service)
        assert container.attrs["Config"]["User"] == "10001:10001"
        host = container.attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
        assert host["NetworkMode"] == "none" and not host["Privileged"]


_FIND = "import importlib.util as u, sys; print(*(m for m in sys.argv[1:] if u.find_spec(m)))"


def test_apps_run_the_sdk_alone_and_stacks_the_stack_image(project, docker_client):
    for service in ("nic", "stack-vf0", "stack-vf1", "app-http", "app-echo"):
        container = _container(docker_client, project, service)
        image = APP_IMAGE if service.startswith("app-") else STACK_IMAGE
        assert container.attrs["Config"]["Image"] == image, service
        code, out = container.exec_run(["python3", "-c", _FIND, *MODULES])
        assert (code, out.decode().strip()) == (0, IMAGES[image]), service


def test_apps_are_attached_to_their_stacks(project):
    # An app attaches once per worker: vf1 runs two.
    for stack, app, workers in (("vf0", "http", [0]), ("vf1", "echo", [0, 1])):
        result = _vfstack("sessions", "--control", project.control(stack), "--json")
        assert result.returncode == 0, result.stderr
        sessions = json.loads(result.stdout)["sessions"]
        assert {s["app"] for s in sessions} == {app}, sessions
        assert sorted(s.get("worker", 0) for s in sessions) == workers, sessions


def test_each_instance_serves_its_metrics(project):
    for index, port in enumerate(project.metrics[:2]):
        text = _metrics(port)
        info = [line for line in text.splitlines() if line.startswith("vfstack_info{")]
        assert len(info) == 1, text[:2000]
        assert f'instance="vf{index}"' in info[0]
        assert f'iface="{PF}v{index}"' in info[0]
        assert 'mode="emulated"' in info[0]
        assert 'build="compiled"' in info[0]  # the image's build stage compiled the hot path


def test_host_tools_reach_the_control_api(project):
    result = _vfstack("status", "--control", project.control("vf1"), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["iface"], status["ip"]) == (f"{PF}v1", f"{VF1_IP}/24")
    assert status["workers"] == 2


def test_an_asgi_app_with_the_frameworks_profile(project, docker_client):
    """`docker compose --profile frameworks up`: Starlette on uvicorn
    (vfstack.examples.asgi_app) on VF1 beside app-echo, from the image with
    the frameworks, as unprivileged as the other apps."""
    frameworks = ("--profile", "frameworks")
    try:
        # --build: an image left from an older checkout would run an older SDK.
        project.compose(
            *frameworks, "up", "--build", "--detach", "--wait", "--wait-timeout",
            str(UP_TIMEOUT_S), "app-web", timeout=UP_TIMEOUT_S + 60,
        )  # fmt: skip
        assert len(_curl(f"http://{VF1_IP}:8080/")) == 64
        addresses = json.loads(_curl(f"http://{VF1_IP}:8080/addresses"))
        assert addresses["local"] == f"{VF1_IP}:8080"
        text = "vfstack e2e " + secrets.token_hex(8)
        assert _echo(VF1_IP, 7007, text) == text  # app-echo shares the VF
        container = _container(docker_client, project, "app-web")
        assert container.attrs["Config"]["Image"] == "vfstack-app-frameworks:local"
        host = container.attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
        assert host["NetworkMode"] == "none"
    finally:
        project.compose(*frameworks, "rm", "--stop", "--force", "app-web", check=False)


def test_deploy_starts_and_stops_a_stack_per_vf(project, docker_client):
    deploy = ["--project", project.name + "-deploy"]
    started = time.monotonic()
    result = _vfstack(
        "deploy", "start", *deploy, "--pf", PF, "--vfs", "2",
        "--metrics-port-base", str(project.metrics[2] - 2),
        "--run-dir", str(project.run_dir), "--diag-services", "--wait", "120",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    TIMES["deploy start to healthy"] = time.monotonic() - started
    try:
        assert len(_curl(f"http://{VF2_IP}/32")) == 32
        assert 'instance="vf2"' in _metrics(project.metrics[2])
        listing = _vfstack("deploy", "list", *deploy)
        assert f"{project.name}-deploy-vf2" in listing.stdout
        assert "running (healthy)" in listing.stdout
    finally:
        result = _vfstack("deploy", "stop", *deploy)
    assert result.returncode == 0, result.stderr
    label = f"io.vfstack.deploy={project.name}-deploy"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
    assert not list(project.run_dir.glob("vf2.*"))


def _health(container) -> str:
    container.reload()
    return container.attrs["State"]["Health"]["Status"]


def test_a_stack_killed_with_sigkill_comes_back_and_its_app_answers_again(project, docker_client):
    """The issue's scenario: kill -9 of stack-vf0's stackservice process.
    The engine restarts the container (its restart policy), the new
    instance takes VF0 back, and app-http notices, attaches again and
    listens again by itself: its container is not restarted."""
    stack = _container(docker_client, project, "stack-vf0")
    app = _container(docker_client, project, "app-http")
    app_restarts = app.attrs["RestartCount"]
    url = f"http://{VF0_IP}:8080/"
    assert len(_curl(url)) == HTTP_SIZE
    (pid,) = [
        int(pid)
        for pid, command in stack.top(ps_args="-eo pid,args")["Processes"]
        if "stackservice run" in command and "docker-init" not in command
    ]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    answered = None
    while answered is None and time.monotonic() - killed < RECOVERY_BOUND_S:
        result = _peer("curl", "--silent", "--fail", "--max-time", "2", url)
        if result.returncode == 0 and len(result.stdout) == HTTP_SIZE:
            answered = time.monotonic() - killed
        else:
            time.sleep(0.5)
    assert answered is not None, f"{url} still fails {RECOVERY_BOUND_S} s after kill -9"
    TIMES["kill -9 of stack-vf0 to app-http answering"] = answered
    print(f"\napp-http answered again {answered:.1f} s after kill -9 of stack-vf0")
    stack.reload()
    app.reload()
    logs = app.logs(stderr=True).decode()
    assert stack.attrs["RestartCount"] == 1
    assert app.attrs["RestartCount"] == app_restarts, logs
    # One line for the outage, none per attempt to attach again.
    assert logs.count("attaching to") == 1 and logs.count("listening on") == 2, logs
    # Health starts again from "starting" in the restarted container; the
    # first check comes one interval (10 s) after the restart.
    deadline = killed + RECOVERY_BOUND_S
    while {_health(stack), _health(app)} != {"healthy"} and time.monotonic() < deadline:
        time.sleep(1)
    assert (_health(stack), _health(app)) == ("healthy", "healthy")
    TIMES["kill -9 of stack-vf0 to both healthy"] = time.monotonic() - killed


def test_down_leaves_nothing_behind(project, docker_client):
    started = time.monotonic()
    project.compose("down", "--timeout", "30")
    TIMES["compose down"] = time.monotonic() - started
    label = f"com.docker.compose.project={project.name}"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
    # No control socket, shared-memory segment, doorbell, counters or pid file.
    assert sorted(p.name for p in project.run_dir.iterdir()) == []
    assert not _netns_exists(PEER_NS)
    with contextlib.suppress(FileNotFoundError):
        leftovers = [name for name in os.listdir("/sys/class/net") if name.startswith(PF)]
        assert leftovers == []
