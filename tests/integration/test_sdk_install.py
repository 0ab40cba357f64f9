"""The SDK alone, as an application installs it: `pip install .` (no
extras) into a clean virtual environment, then an app run by that
environment's Python against a live instance, with the kernel peer as
its client.

The environment gets a copy of the repository's sources (pyproject.toml,
setup.py, README.md, stackservice/, sdk/; not the checkout's own build):
a build in place would leave build/ and *.egg-info in the checkout. Its
Python runs isolated (`-I`: no PYTHONPATH, no current directory on
sys.path), so the app imports what the install put there and nothing
from the checkout. About 2 min for the environment on the development
machine, most of it compiling the stack's hot path, which the same
install is then checked to run (setup.py, sdk/vfstack/_extensions.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.support.netns import kernel_peer
from tests.support.process import stop
from tests.support.stack import running_stack

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
STACK = "198.18.0.10"
PORT = 7007
MB = 1 << 20
SDK = {"vfstack", "grpcio", "protobuf"}
# The stack service's and `vfstack deploy`'s dependencies: none may come
# with the SDK (distribution names, normalized).
STACK_ONLY = {
    "pyroute2", "prometheus-client", "docker", "grpcio-health-checking", "grpcio-reflection",
}  # fmt: skip
STACK_MODULES = {"stackservice", "pyroute2", "prometheus_client", "docker"}


def _clean_env() -> dict[str, str]:
    """This process's environment without PYTHON* (PYTHONPATH would put
    the checkout in front of the install) and VFSTACK_NO_EXTENSIONS (the
    install and its run are the default ones, whichever leg runs this)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTHON") and k != "VFSTACK_NO_EXTENSIONS"
    }


def _copy_sources(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(
        "__pycache__", "*.pyc", "*.egg-info", "build", "*.so", "*.c", "_extensions.json"
    )
    dest.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("stackservice", "sdk"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


class LightVenv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.python = str(path / "bin" / "python")

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command of the environment (`bin/NAME`) or, for `-c`/a script,
        its Python in isolated mode; from the environment's directory."""
        if argv[0] in ("vfstack", "stackservice"):
            argv = (str(self.path / "bin" / argv[0]), *argv[1:])
        else:
            argv = (self.python, "-I", *argv)
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=self.path,
            env=_clean_env(),
        )  # fmt: skip


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory):
    """A virtual environment with `pip install <the repository>`: no extras."""
    tmp = tmp_path_factory.mktemp("sdk-install")
    source = _copy_sources(tmp / "src")
    env = LightVenv(tmp / "venv")
    venv.create(env.path, with_pip=True, clear=True)
    done = subprocess.run(
        [env.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=600, cwd=tmp, env=_clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return env


_DISTRIBUTIONS = """
import importlib.metadata, json, re
print(json.dumps(sorted(
    re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in importlib.metadata.distributions()
)))
"""


_BUILD = """
import json, vfstack._extensions as extensions, stackservice.tcp.engine as engine
print(json.dumps({"build": extensions.build(), "engine": engine.__file__}))
"""


def test_pip_install_compiles_the_hot_path_and_runs_it_compiled(light_venv):
    """The wheel carries the unit's extensions, their build record and the
    .pxd files the record covers; installing it must not make them look
    stale (a wheel's .py files come out newer than its extensions)."""
    done = light_venv.run("-c", _BUILD)
    assert (done.returncode, done.stderr) == (0, "")
    report = json.loads(done.stdout)
    assert report["build"] == "compiled"
    assert Path(report["engine"]).is_relative_to(light_venv.path), report["engine"]


def test_pip_install_without_extras_brings_the_sdk_and_nothing_of_the_stack(light_venv):
    done = light_venv.run("-c", _DISTRIBUTIONS)
    assert done.returncode == 0, done.stderr
    installed = set(json.loads(done.stdout))
    assert installed >= SDK, installed
    assert sorted(installed & STACK_ONLY) == []


# The app: echo one connection on the SDK, report where vfstack came from
# and every top-level module it loaded, then keep its session until stdin
# closes: ending a session resets its connections, and the echo's last
# bytes may still wait in the stack's send buffer.
_APP = """
import json, sys
import vfstack

control, port = sys.argv[1], int(sys.argv[2])
with vfstack.connect(control, app="light") as stack:
    listener = stack.socket()
    listener.setsockopt(vfstack.SOL_SOCKET, vfstack.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(8)
    print(json.dumps({"listening": port}), flush=True)
    conn, _ = listener.accept()
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
    modules = sorted({name.partition(".")[0] for name in sys.modules})
    print(json.dumps({"vfstack": vfstack.__file__, "modules": modules}), flush=True)
    sys.stdin.read()
"""


def test_an_app_on_the_sdk_alone_echoes_for_the_kernel_peer(light_venv, emulated_port):
    app_file = light_venv.path / "light_app.py"
    app_file.write_text(_APP)
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0") as instance:
        control = f"unix://{instance.run_dir / 'vf0.sock'}"
        app = subprocess.Popen(
            [light_venv.python, "-I", str(app_file), control, str(PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=light_venv.path, env=_clean_env(),
        )  # fmt: skip
        try:
            line = app.stdout.readline()
            if not line:  # it ended before listening: say why
                pytest.fail(f"the app exited: {app.communicate(timeout=10)[1]}")
            assert json.loads(line) == {"listening": PORT}
            # The app-side CLI, from the same environment, sees the session.
            sessions = light_venv.run("vfstack", "sessions", "--control", control, "--json")
            assert sessions.returncode == 0, sessions.stderr
            assert [s["app"] for s in json.loads(sessions.stdout)["sessions"]] == ["light"]
            result = kernel_peer(
                emulated_port.netns, "echo", "--host", STACK, "--port", str(PORT),
                "--bytes", str(MB), timeout=60, check=False,
            )  # fmt: skip
            out, err = app.communicate(timeout=20)  # closes its stdin: it detaches
        finally:
            if app.poll() is None:
                stop(app)
    assert app.returncode == 0, err
    assert result.get("bytes") == MB, (result, err)
    assert result["received_sha256"] == result["sent_sha256"]
    assert result["clean_eof"]
    report = json.loads(out.strip().splitlines()[-1])
    assert Path(report["vfstack"]).is_relative_to(light_venv.path), report["vfstack"]
    assert sorted(STACK_MODULES & set(report["modules"])) == []


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["vfstack", "vf", "list"], "stack"),
        (["vfstack", "deploy", "list"], "deploy"),
        (["stackservice", "run", "--iface", "vft-none", "--ip", "198.18.0.99/24"], "stack"),
    ],
)
def test_operator_commands_on_the_sdk_alone_say_what_to_install(light_venv, argv, extra):
    if argv[0] == "stackservice":  # should it get further, nothing lands in /run/vfstack
        argv = [*argv, "--run-dir", str(light_venv.path / "run")]
    done = light_venv.run(*argv)
    assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert re.fullmatch(rf"\S.* is missing\): pip install 'vfstack\[{extra}\]'", line), line
