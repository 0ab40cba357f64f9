"""Several applications on one port: two apps on one instance and one on
another VF's instance, all serving at once. No cross-talk; an app killed
with SIGKILL loses only its own connections (reset within the liveness
check's second) and its files; a hostile app that scribbles over its
shared memory ends only its own session."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import vfstack

from stackservice.nic.netconf import inside_netns
from tests.support.netns import kernel_peer
from tests.support.stack import running_stack, wait_until

pytestmark = pytest.mark.root

VF0, VF1 = "198.18.0.10", "198.18.0.11"
ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20


@contextlib.contextmanager
def app(*argv: str):
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert "listening on" in proc.stdout.readline()
        yield proc
    finally:
        proc.kill()
        proc.wait()


def echo_server(control: str, port: int, name: str):
    return app(
        "vfstack.examples.echo_server", "--control", control, "--port", str(port), "--app", name
    )


def session_ids(control: str) -> dict[str, int]:
    with contextlib.closing(vfstack._control.ControlClient(control)) as client:
        return {s.app: s.session_id for s in client.sessions().sessions}


def sessions(control: str) -> list[str]:
    return sorted(session_ids(control))


def session_files(instance, session_id: int) -> list[str]:
    return sorted(p.name for p in instance.run_dir.glob(f"{instance.name}.s{session_id}.*"))


def peer_connection(netns: str, host: str, port: int) -> socket.socket:
    with inside_netns(netns):
        sock = socket.create_connection((host, port), timeout=10)
    return sock


def round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@pytest.fixture
def two_instances(emulated_port):
    with (
        running_stack(emulated_port.vf(0), f"{VF0}/24", "vf0") as vf0,
        running_stack(emulated_port.vf(1), f"{VF1}/24", "vf1") as vf1,
    ):
        yield emulated_port, vf0, vf1


def control_of(instance) -> str:
    return f"unix://{instance.run_dir / (instance.name + '.sock')}"


def test_three_apps_on_two_vfs_serve_at_once_and_a_killed_one_takes_only_its_own(two_instances):
    port, vf0, vf1 = two_instances
    c0, c1 = control_of(vf0), control_of(vf1)
    with (
        echo_server(c0, 7001, "alpha") as alpha,
        echo_server(c0, 7002, "beta"),
        echo_server(c1, 7001, "gamma"),
    ):
        assert sessions(c0) == ["alpha", "beta"] and sessions(c1) == ["gamma"]
        targets = [(VF0, 7001, 1), (VF0, 7002, 2), (VF1, 7001, 3)]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(
                lambda t: kernel_peer(
                    port.netns, "echo", "--host", t[0], "--port", str(t[1]),
                    "--bytes", str(5 * MB), "--seed", str(t[2]), timeout=120,
                ),
                targets,
            ))  # fmt: skip
        for result in results:
            assert result["received_sha256"] == result["sent_sha256"], result
        # Each app sent back exactly its own client's bytes: seeds differ, so
        # any cross-talk would break a digest above.

        to_alpha = peer_connection(port.netns, VF0, 7001)
        to_beta = peer_connection(port.netns, VF0, 7002)
        to_gamma = peer_connection(port.netns, VF1, 7001)
        for sock in (to_alpha, to_beta, to_gamma):
            assert round_trip(sock, b"hello") == b"hello"
        ids = session_ids(c0)
        assert len(session_files(vf0, ids["alpha"])) == 3  # segment and two doorbells

        alpha.kill()
        alpha.wait()
        # The stack notices the dead app by its liveness check (every 0.4 s)
        # and resets its connections; the timeout only bounds a broken stack.
        to_alpha.settimeout(30)
        with pytest.raises(ConnectionResetError):
            while to_alpha.recv(100):
                pass

        assert wait_until(lambda: sessions(c0) == ["beta"], timeout=5)
        assert round_trip(to_beta, b"still here" * 1000) == b"still here" * 1000
        assert round_trip(to_gamma, b"me too") == b"me too"
        assert session_files(vf0, ids["alpha"]) == []
        assert len(session_files(vf0, ids["beta"])) == 3
        for sock in (to_alpha, to_beta, to_gamma):
            sock.close()


def test_a_hostile_app_scribbling_over_its_segment_ends_only_its_own_session(two_instances):
    port, vf0, _ = two_instances
    c0 = control_of(vf0)
    with echo_server(c0, 7002, "beta"):
        hostile = subprocess.run(
            [sys.executable, "-m", "tests.support.hostile_app", "--control", c0,
             "--seconds", "3", "--seed", "7"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert vf0.proc.poll() is None, "the stack died"
        assert wait_until(lambda: sessions(c0) == ["beta"], timeout=5), sessions(c0)
        result = kernel_peer(
            port.netns, "echo", "--host", VF0, "--port", "7002", "--bytes", str(2 * MB),
            "--seed", "11", timeout=60,
        )  # fmt: skip
        assert result["received_sha256"] == result["sent_sha256"]
    report = json.loads(hostile.stdout.strip().splitlines()[-1])
    assert report["scribbles"] > 100
    assert report["still_attached"] is False  # ended for its violations, not its exit
