"""Packaging: `pip install vfstack` is the SDK alone (grpcio, protobuf);
the stack service comes with the `stack` extra, `vfstack deploy` with
`deploy`. Here, in the development install (everything present), the
pieces that keep that true: the SDK imports none of the extras' modules,
vfstack._extras names exactly the modules the extras bring, and an
operator command without them prints one line. The real thing, a clean
virtual environment with `pip install .` running an app against a live
instance, is tests/integration/test_sdk_install.py.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from vfstack._extras import MODULES, install_hint, missing_extra

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS_MODULES = set().union(*MODULES.values())


def _distribution_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement)[0]


def _top_level_modules(distribution: str) -> set[str]:
    """The import names a distribution installs, from its RECORD."""
    files = importlib.metadata.distribution(distribution).files or []
    tops = set()
    for file in files:
        top = file.parts[0]
        if top.endswith((".dist-info", ".data")) or top in ("..", "__pycache__"):
            continue
        tops.add(top.removesuffix(".py"))
    return tops


def test_the_sdk_depends_on_grpc_and_protobuf_only():
    names = {_distribution_name(r) for r in PYPROJECT["dependencies"]}
    assert names == {"grpcio", "protobuf"}


@pytest.mark.parametrize("extra", sorted(MODULES))
def test_extras_modules_match_pyproject(extra):
    requirements = PYPROJECT["optional-dependencies"][extra]
    names = {_distribution_name(r) for r in requirements} - {"vfstack"}
    modules = set().union(*(_top_level_modules(name) for name in names))
    assert modules == MODULES[extra]


def test_deploy_brings_the_stack_and_dev_brings_all():
    optional = PYPROJECT["optional-dependencies"]
    assert "vfstack[stack]" in optional["deploy"]
    assert "vfstack[stack,deploy,frameworks]" in optional["dev"]


# grpc's own __init__ imports grpc_health and grpc_reflection when they are
# installed (as in this environment): what `import grpc` loads is not the
# SDK's doing, so the first line is that, the second what the SDK adds.
_IMPORT_ALL = """
import importlib, pkgutil, sys
def tops():
    return " ".join(sorted({m.partition(".")[0] for m in sys.modules}))
import grpc
print(tops())
import vfstack, vfstack.aio, vfstack.cli, vfstack.deploy, vfstack.examples
for mod in pkgutil.iter_modules(vfstack.examples.__path__, "vfstack.examples."):
    importlib.import_module(mod.name)
vfstack.cli.build_parser()
print(tops())
"""


def test_the_sdk_and_its_cli_import_nothing_of_the_extras():
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True, check=True
    )
    by_grpc, loaded = (set(line.split()) for line in done.stdout.splitlines())
    assert {"vfstack", "grpc"} <= loaded
    assert sorted((loaded - by_grpc) & (EXTRAS_MODULES | {"stackservice"})) == []


# Runs a command with the named modules made unimportable, as on an
# SDK-only install: argv[1] is a comma-separated list, argv[2] the module
# whose main() runs, the rest its arguments.
_WITHOUT = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
module = importlib.import_module(sys.argv[2])
sys.exit(module.main(sys.argv[3:]))
"""


def _without(blocked: str, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT, blocked, module, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("module", "args", "line"),
    [
        ("vfstack.cli", ["emulate", "up"], "vfstack emulate: needs the stack service's"),
        ("vfstack.cli", ["vf", "list"], "vfstack vf: needs the stack service's"),
        ("vfstack.cli", ["deploy", "list"], "vfstack deploy: needs the Docker client"),
        (
            "stackservice.cli",
            ["run", "--iface", "x", "--ip", "198.18.0.10/24"],
            "stackservice: needs the stack service's",
        ),
    ],
)
def test_operator_commands_without_the_stack_print_one_line(module, args, line):
    done = _without(",".join(EXTRAS_MODULES), module, *args)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    (printed,) = done.stderr.splitlines()
    assert printed.startswith(line), printed
    extra = "deploy" if args[0] == "deploy" else "stack"
    assert printed.endswith(f"is missing): pip install 'vfstack[{extra}]'"), printed


def test_a_missing_module_no_extra_brings_is_a_bug_with_its_traceback():
    # stackservice itself is in every install: missing, the install is broken.
    done = _without("stackservice", "vfstack.cli", "emulate", "up")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "'stackservice" in done.stderr


def test_missing_extra_and_its_line():
    exc = ModuleNotFoundError("No module named 'pyroute2.netlink'", name="pyroute2.netlink")
    assert missing_extra(exc) == "stack"
    assert missing_extra(exc, "deploy") == "deploy"  # deploy includes the stack
    docker = ModuleNotFoundError("No module named 'docker'", name="docker")
    assert missing_extra(docker) == "deploy"
    assert missing_extra(ModuleNotFoundError("x", name="yaml")) is None
    assert install_hint("vfstack emulate", exc, "stack") == (
        "vfstack emulate: needs the stack service's dependencies, which the SDK alone does not "
        "install (pyroute2.netlink is missing): pip install 'vfstack[stack]'"
    )
