"""`vfstack deploy`: the address plan, VF discovery over a fake sysfs, the
container specification (and that it matches docker-compose.yml's stack
services), and start/stop against a stand-in for the Docker client. No
Docker daemon is involved: tests/e2e/test_compose.py runs the real thing.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from vfstack import cli
from vfstack.deploy import (
    CAPABILITIES,
    LABEL,
    Plan,
    Vf,
    container_spec,
    discover_vfs,
    rows,
    select_vfs,
    start,
    stop,
)

ROOT = Path(__file__).resolve().parents[2]


def _vf(index: int, pf: str = "vfpf0") -> Vf:
    return Vf(pf, index, f"{pf}v{index}", "macvlan")


def quiet(_: str) -> None:
    pass


# --- the address plan ------------------------------------------------------


def test_vf_i_gets_base_address_plus_i_and_metrics_port_base_plus_i():
    plan = Plan(base_ip="198.18.0.10/24", metrics_port_base=9100)
    assert [plan.address(i) for i in (0, 1, 5)] == [
        "198.18.0.10/24",
        "198.18.0.11/24",
        "198.18.0.15/24",
    ]
    assert [plan.metrics_port(i) for i in (0, 1, 5)] == [9100, 9101, 9105]


def test_address_may_cross_an_octet_inside_a_wide_network():
    assert Plan(base_ip="10.1.0.250/16").address(10) == "10.1.1.4/16"


def test_address_may_be_the_last_host_of_the_network():
    assert Plan(base_ip="198.18.0.10/24").address(244) == "198.18.0.254/24"


@pytest.mark.parametrize("index", [245, 300])  # the broadcast address, outside the /24
def test_address_beyond_the_network_or_on_broadcast_is_refused(index):
    with pytest.raises(ValueError, match="not a host address"):
        Plan(base_ip="198.18.0.10/24").address(index)


def test_metrics_port_out_of_range_is_refused():
    with pytest.raises(ValueError, match="out of range"):
        Plan(metrics_port_base=65535).metrics_port(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_ip": "198.18.0.10"}, "prefix length"),
        ({"base_ip": "198.18.0.300/24"}, "--base-ip"),
        ({"gateway": "10.0.0.1"}, "not on 198.18.0.0/24"),
        ({"project": "Bad Name"}, "--project"),
        ({"name_prefix": "../x"}, "--name-prefix"),
        ({"run_dir": "run/vfstack"}, "absolute"),
        ({"metrics_port_base": 0}, "not a port"),
    ],
)
def test_plan_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Plan(**kwargs)


# --- the container specification -------------------------------------------


def test_spec_runs_one_stack_on_the_vf_with_its_address_name_and_metrics_port():
    plan = Plan(image="vfstack:test", project="edge", gateway="198.18.0.1")
    spec = container_spec(plan, _vf(3))
    assert spec["image"] == "vfstack:test"
    assert spec["name"] == "edge-vf3"
    assert spec["command"] == ["stackservice", "run"]
    assert spec["environment"] == {
        "VFSTACK_IFACE": "vfpf0v3",
        "VFSTACK_IP": "198.18.0.13/24",
        "VFSTACK_NAME": "vf3",
        "VFSTACK_METRICS_PORT": "9103",
        "VFSTACK_GATEWAY": "198.18.0.1",
        "VFSTACK_APP_GROUP": "10001",  # the image's vfstack group, as in compose
    }
    assert spec["labels"][LABEL] == "edge"
    assert spec["labels"]["io.vfstack.vf"] == "3"
    assert spec["labels"]["io.vfstack.pf"] == "vfpf0"


def test_spec_is_capability_limited_not_privileged():
    spec = container_spec(Plan(), _vf(0))
    host = spec["host_config"]
    assert host["network_mode"] == "host"
    assert host["cap_drop"] == ["ALL"]
    assert sorted(host["cap_add"]) == ["IPC_LOCK", "NET_ADMIN", "NET_RAW", "SYS_NICE"]
    assert "privileged" not in host
    # What `--security-opt systempaths=unconfined` sends: /proc/sys writable.
    assert spec["host_config_extra"] == {"MaskedPaths": [], "ReadonlyPaths": []}
    assert host["binds"] == {"/run/vfstack": {"bind": "/run/vfstack", "mode": "rw"}}
    assert host["init"] is True


def test_workers_reach_the_stack_only_when_more_than_one():
    assert "VFSTACK_WORKERS" not in container_spec(Plan(), _vf(0))["environment"]
    assert container_spec(Plan(workers=4), _vf(0))["environment"]["VFSTACK_WORKERS"] == "4"
    for bad in (0, 65):
        with pytest.raises(ValueError, match="--workers"):
            Plan(workers=bad)


def test_diag_services_only_when_asked():
    assert "VFSTACK_DIAG_SERVICES" not in container_spec(Plan(), _vf(0))["environment"]
    spec = container_spec(Plan(diag_services=True), _vf(0))
    assert spec["environment"]["VFSTACK_DIAG_SERVICES"] == "1"


def test_spec_matches_the_compose_stack_services():
    """`vfstack deploy` and docker-compose.yml must make the same stacks."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    spec = container_spec(Plan(), _vf(0))
    for name in ("stack-vf0", "stack-vf1"):
        service = compose["services"][name]
        assert service["network_mode"] == "host"
        assert service["cap_drop"] == ["ALL"]
        assert sorted(service["cap_add"]) == sorted(CAPABILITIES)
        assert service["group_add"] == ["${APP_GROUP:-10001}"]
        assert spec["host_config"]["group_add"] == ["10001"]
        assert service["environment"]["VFSTACK_APP_GROUP"] == "${APP_GROUP:-10001}"
        assert service["security_opt"] == ["systempaths=unconfined"]
        assert "privileged" not in service
        assert service["init"] is True
        targets = [volume.rsplit(":", 1)[1] for volume in service["volumes"]]
        assert targets == [spec["host_config"]["binds"]["/run/vfstack"]["bind"]]
        assert set(service["environment"]) >= set(spec["environment"])
        assert service["image"] == "${VFSTACK_IMAGE:-vfstack:local}"
    assert Plan().image == "vfstack:local"


# --- discovery ---------------------------------------------------------------


def _net(root: Path, name: str) -> Path:
    path = root / "class" / "net" / name
    path.mkdir(parents=True)
    return path


def test_discovers_macvlan_vfs_by_index(tmp_path):
    pf = _net(tmp_path, "vfpf0")
    for name in ("vfpf0v10", "vfpf0v2", "vfpf0v0", "vfpf0x1", "vfpf0v01", "other"):
        (pf / f"upper_{name}").symlink_to(f"../{name}")
    found = discover_vfs("vfpf0", tmp_path)
    assert [(vf.index, vf.iface, vf.kind) for vf in found] == [
        (0, "vfpf0v0", "macvlan"),
        (2, "vfpf0v2", "macvlan"),
        (10, "vfpf0v10", "macvlan"),
    ]


def test_discovers_sriov_vfs_with_a_netdev(tmp_path):
    pf = _net(tmp_path, "ens1f0")
    (pf / "address").write_text("3c:fd:fe:00:00:01\n")
    pci = tmp_path / "devices" / "0000:3b:00.0"
    pci.mkdir(parents=True)
    (pci / "sriov_totalvfs").write_text("8\n")
    (pci / "sriov_numvfs").write_text("3\n")
    (pf / "device").symlink_to(pci)
    for i, netdev in enumerate(["ens1f0v0", "ens1f0v1", None]):
        vf_pci = tmp_path / "devices" / f"0000:3b:02.{i}"
        vf_pci.mkdir()
        if netdev:
            (vf_pci / "net" / netdev).mkdir(parents=True)
            _net(tmp_path, netdev).joinpath("address").write_text(f"02:00:00:00:01:0{i}\n")
        (pci / f"virtfn{i}").symlink_to(vf_pci)
    found = discover_vfs("ens1f0", tmp_path)
    # VF 2 is bound to no network driver (e.g. vfio-pci): nothing to run on.
    assert [(vf.index, vf.iface, vf.kind) for vf in found] == [
        (0, "ens1f0v0", "sriov"),
        (1, "ens1f0v1", "sriov"),
    ]


@pytest.mark.parametrize("pf", ["", "../etc", "a" * 16, "nope0"])
def test_discovery_refuses_bad_or_missing_pf(tmp_path, pf):
    with pytest.raises(ValueError, match="--pf"):
        discover_vfs(pf, tmp_path)


def test_select_vfs():
    vfs = [_vf(0), _vf(1), _vf(3)]
    assert select_vfs(vfs, None) == vfs
    assert select_vfs(vfs, [3, 0, 3]) == [_vf(0), _vf(3)]
    with pytest.raises(ValueError, match="no VF 2 \\(have: 0, 1, 3\\)"):
        select_vfs(vfs, [2])


def test_cli_parses_deploy_start():
    args = cli.build_parser().parse_args(
        ["deploy", "start", "--pf", "ens1f0", "--vfs", "0,2,5-7", "--wait", "--diag-services"]
    )
    assert (args.pf, args.vfs, args.wait, args.diag_services) == (
        "ens1f0",
        [0, 2, 5, 6, 7],
        120.0,
        True,
    )
    assert args.project == "vfstack-deploy"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["deploy", "start", "--vfs", "3-1"])


# --- start / stop against a stand-in Docker client ----------------------------


class FakeContainer:
    def __init__(self, client: FakeClient, ident: str, spec: dict) -> None:
        self.client, self.id, self.spec = client, ident, spec
        self.name = spec["name"]
        self.labels = spec["labels"]
        self.status = "created"
        self.attrs = {"State": {"Health": {"Status": "starting"}}}

    def stop(self, timeout: int) -> None:
        self.client.log.append(("stop", self.name, timeout))
        self.status = "exited"

    def remove(self, force: bool = False) -> None:
        self.client.log.append(("remove", self.name))
        del self.client.created[self.id]


class FakeApi:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def create_host_config(self, **kwargs):
        return {"from_kwargs": kwargs}

    def create_container(self, host_config, **kwargs):
        ident = f"id{len(self.client.log)}"
        spec = dict(kwargs, host_config=host_config)
        self.client.created[ident] = FakeContainer(self.client, ident, spec)
        self.client.log.append(("create", kwargs["name"]))
        return {"Id": ident}

    def start(self, ident):
        self.client.created[ident].status = "running"
        self.client.log.append(("start", self.client.created[ident].name))

    def remove_container(self, ident, force=False):
        del self.client.created[ident]


class FakeClient:
    """The parts of docker.DockerClient that vfstack.deploy uses."""

    def __init__(self) -> None:
        self.created: dict[str, FakeContainer] = {}
        self.log: list[tuple] = []
        self.api = FakeApi(self)
        self.containers = SimpleNamespace(list=self._list, get=self.created.__getitem__)

    def _list(self, all: bool, filters: dict):
        assert all
        wanted = filters["label"]

        def match(container: FakeContainer) -> bool:
            for want in wanted:
                key, _, value = want.partition("=")
                if key not in container.labels or (value and container.labels[key] != value):
                    return False
            return True

        return [c for c in self.created.values() if match(c)]


def test_start_creates_one_container_per_vf_with_the_host_settings():
    client = FakeClient()
    started = start(client, Plan(project="p"), [_vf(0), _vf(1)], say=quiet)
    assert [c.name for c in started] == ["p-vf0", "p-vf1"]
    assert [entry[0] for entry in client.log] == ["create", "start", "create", "start"]
    host_config = started[0].spec["host_config"]
    # create_host_config's result, with the paths it has no argument for.
    assert host_config["MaskedPaths"] == [] and host_config["ReadonlyPaths"] == []
    assert host_config["from_kwargs"]["cap_add"] == list(CAPABILITIES)
    assert started[0].spec["environment"]["VFSTACK_IFACE"] == "vfpf0v0"


def test_start_keeps_running_containers_and_replaces_stopped_ones():
    client = FakeClient()
    first = start(client, Plan(project="p"), [_vf(0), _vf(1)], say=quiet)
    first[1].status = "exited"
    client.log.clear()
    again = start(client, Plan(project="p"), [_vf(0), _vf(1)], say=quiet)
    assert again[0] is first[0]
    assert client.log == [("remove", "p-vf1"), ("create", "p-vf1"), ("start", "p-vf1")]


def test_start_checks_the_whole_plan_before_starting_anything():
    client = FakeClient()
    plan = Plan(base_ip="198.18.0.253/24")
    with pytest.raises(ValueError, match="VF 2"):
        start(client, plan, [_vf(0), _vf(2)], say=quiet)
    assert client.log == []


def test_stop_removes_only_the_projects_containers():
    client = FakeClient()
    start(client, Plan(project="a"), [_vf(0), _vf(1)], say=quiet)
    start(client, Plan(project="b"), [_vf(0)], say=quiet)
    assert [row["container"] for row in rows(client, None)] == ["a-vf0", "b-vf0", "a-vf1"]
    assert stop(client, "a", say=quiet) == 2
    assert [c.name for c in client.created.values()] == ["b-vf0"]
    assert ("stop", "a-vf0", 20) in client.log
    assert stop(client, "a", say=quiet) == 0


def test_rows_show_vf_address_metrics_and_health():
    client = FakeClient()
    start(client, Plan(project="p"), [_vf(4)], say=quiet)
    (row,) = rows(client, "p")
    assert row == {
        "container": "p-vf4",
        "project": "p",
        "pf": "vfpf0",
        "vf": "4",
        "iface": "vfpf0v4",
        "ip": "198.18.0.14/24",
        "metrics": "9104",
        "status": "running (starting)",
    }


# --- the image's health check (docker/healthcheck.py) -------------------------


def _healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "docker/healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_asks_the_socket_the_stack_was_given():
    control_url = _healthcheck().control_url
    assert control_url({"VFSTACK_NAME": "vf0"}) == "unix:///run/vfstack/vf0.sock"
    assert control_url({"VFSTACK_IFACE": "vfpf0v1"}) == "unix:///run/vfstack/vfpf0v1.sock"
    assert (
        control_url({"VFSTACK_NAME": "vf0", "VFSTACK_RUN_DIR": "/srv/x"})
        == "unix:///srv/x/vf0.sock"
    )
    assert control_url({"VFSTACK_CONTROL": "unix:///a/b.sock"}) == "unix:///a/b.sock"
    with pytest.raises(ValueError):
        control_url({})


def test_healthcheck_fails_when_nothing_listens(tmp_path, capsys):
    main = _healthcheck().main
    assert main(["vfstack-healthcheck", f"unix://{tmp_path}/none.sock"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []
