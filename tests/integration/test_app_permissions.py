"""Who may attach: with `--app-group`, an unprivileged app in that group
attaches and serves; a process outside it cannot; and the group's apps
cannot list the run directory (which holds no session files anyway)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.netns import kernel_peer
from tests.support.stack import running_stack

pytestmark = pytest.mark.root

STACK = "198.18.0.10"
ROOT = Path(__file__).resolve().parents[2]
APP_UID = APP_GID = 10001


def as_user(uid: int, gid: int, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.as_user", str(uid), str(gid), *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def test_an_unprivileged_app_in_the_app_group_attaches_and_serves(emulated_port):
    with running_stack(
        emulated_port.vf(0), f"{STACK}/24", "vf0", "--app-group", str(APP_GID)
    ) as instance:
        run_dir = instance.run_dir
        st = os.stat(run_dir)
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (APP_GID, 0o710)
        for name in ("vf0.sock", "vf0.attach"):
            st = os.stat(run_dir / name)
            assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (APP_GID, 0o660)
        control = f"unix://{run_dir / 'vf0.sock'}"
        app = as_user(
            APP_UID, APP_GID, "vfstack.examples.echo_server", "--control", control, "--port", "7007"
        )
        try:
            assert "listening on" in app.stdout.readline(), app.stderr.read()
            assert list(run_dir.glob("vf0.s[0-9]*")) == []
            result = kernel_peer(
                emulated_port.netns, "echo", "--host", STACK, "--port", "7007",
                "--bytes", str(1 << 20), "--seed", "4", timeout=60,
            )  # fmt: skip
            assert result["received_sha256"] == result["sent_sha256"]
        finally:
            app.terminate()
            app.wait(timeout=10)

        snoop = subprocess.run(
            [sys.executable, "-c",
             "import os, sys; os.setgroups([]); os.setgid(10001); os.setuid(10001)\n"
             "try:\n    os.listdir(sys.argv[1])\nexcept PermissionError:\n    print('denied')",
             str(run_dir)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert snoop.stdout.strip() == "denied"

        outsider = as_user(
            10002, 10002, "vfstack.examples.echo_server", "--control", control, "--port", "7008"
        )
        _, err = outsider.communicate(timeout=60)
        assert outsider.returncode != 0
        assert "cannot attach" in err, err


def test_without_an_app_group_only_root_attaches(emulated_port):
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0") as instance:
        control = f"unix://{instance.run_dir / 'vf0.sock'}"
        app = as_user(
            APP_UID, APP_GID, "vfstack.examples.echo_server", "--control", control, "--port", "7007"
        )
        _, err = app.communicate(timeout=60)
        assert app.returncode != 0
        assert "cannot attach" in err, err
