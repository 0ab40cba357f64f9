"""A stack instance on the emulated port, seen from the Linux peer."""

import json
import re
import subprocess
import sys
import threading

import pytest
from vfstack._extensions import build

from stackservice.nic.emulate import vf_mac
from tests.support.netns import in_netns, kernel_peer, spawn_in_netns
from tests.support.stack import StackProcess, running_stack, sample_until

pytestmark = pytest.mark.root


def _ping(netns: str, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return in_netns(netns, "ping", "-n", *args, address, check=False, timeout=120)


def test_instance_startup_line_names_iface_mac_ip_mode_build(emulated_port):
    with running_stack(emulated_port.vf(0), "198.18.0.10/24") as stack:
        line = stack.startup_line
    parts = (emulated_port.vf(0), vf_mac(0), "198.18.0.10/24", "mode emulated", f"build {build()}")
    for part in parts:
        assert part in line


def test_a_pure_instance_and_a_pure_app_carry_a_connection(emulated_port, monkeypatch):
    """VFSTACK_NO_EXTENSIONS=1, or a machine without a compiler, runs the
    unit's `.py` files: the integration suite runs compiled, so this is the
    pure stack's and the pure SDK's one test on a real wire. An instance
    and an echo app, both pure, echo 1 MiB to a kernel peer intact."""
    monkeypatch.setenv("VFSTACK_NO_EXTENSIONS", "1")  # both children inherit it
    with running_stack(emulated_port.vf(0), "198.18.0.10/24") as instance:
        assert "build pure" in instance.startup_line
        app = subprocess.Popen(
            [sys.executable, "-m", "vfstack.examples.echo_server", "--port", "7007",
             "--control", f"unix://{instance.run_dir / 'vf0.sock'}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert "listening on" in app.stdout.readline(), app.stderr.read()
            result = kernel_peer(
                emulated_port.netns, "echo", "--host", "198.18.0.10", "--port", "7007",
                "--bytes", str(1 << 20), "--seed", "5", timeout=120,
            )  # fmt: skip
        finally:
            app.terminate()
            _, err = app.communicate(timeout=30)
    assert result["received_sha256"] == result["sent_sha256"]
    assert "running pure Python" not in err  # asked for: no warning


def test_instances_answer_full_size_pings_with_identical_payload(emulated_port):
    """Acceptance: 20/20 replies to 1472-byte pings on each VF."""
    with (
        running_stack(emulated_port.vf(0), "198.18.0.10/24", "vf0"),
        running_stack(emulated_port.vf(1), "198.18.0.11/24", "vf1"),
    ):
        for address in ("198.18.0.10", "198.18.0.11"):
            ping = _ping(
                emulated_port.netns,
                address,
                "-c",
                "20",
                "-i",
                "0.01",
                "-s",
                "1472",
                "-p",
                "a55aff0001",
            )
            assert " 20 received" in ping.stdout, ping.stdout
            # iputils compares every reply's payload with what it sent.
            assert "wrong data byte" not in ping.stdout
            assert "DUP!" not in ping.stdout
        neighbours = in_netns(
            emulated_port.netns, "ip", "neigh", "show", "dev", emulated_port.wire
        ).stdout
        assert re.search(rf"198\.18\.0\.10 lladdr {vf_mac(0)} ", neighbours), neighbours
        assert re.search(rf"198\.18\.0\.11 lladdr {vf_mac(1)} ", neighbours), neighbours


def test_unowned_address_gets_no_answer(emulated_port):
    with running_stack(emulated_port.vf(0), "198.18.0.10/24") as stack:
        ping = _ping(emulated_port.netns, "198.18.0.99", "-c", "3", "-i", "0.2", "-W", "1")
        assert " 0 received" in ping.stdout
        assert stack.counters()["events"]["arp_reply_out"] == 0


def test_every_frame_from_vf_mac_was_sent_by_the_stack(emulated_port):
    """Acceptance: the host kernel sends nothing on a VF the stack owns.

    The peer captures every frame whose source is the VF's MAC; their number
    must equal the frames the stack itself transmitted.
    """
    capture = spawn_in_netns(
        emulated_port.netns,
        "tcpdump",
        "-i",
        emulated_port.wire,
        "-n",
        "-l",
        "-e",
        f"ether src {vf_mac(0)}",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=_collect, args=(capture.stdout, lines), daemon=True)
    try:
        _wait_for_capture(capture)
        reader.start()
        with running_stack(emulated_port.vf(0), "198.18.0.10/24") as stack:
            ping = _ping(emulated_port.netns, "198.18.0.10", "-c", "10", "-i", "0.01")
            assert " 10 received" in ping.stdout
            # Until the capture has seen as many frames as the stack sent.
            sent_by_stack = sample_until(
                lambda: stack.counters()["nic"]["tx_packets"],
                lambda sent: sum(vf_mac(0) in line for line in lines) >= sent,
            )
    finally:
        capture.terminate()
        capture.wait(timeout=10)
        reader.join(timeout=10)
    out = "".join(lines)
    frames = [line for line in lines if vf_mac(0) in line]
    assert len(frames) == sent_by_stack, out
    assert all(("ARP" in f or "ICMP" in f) and "IPv6" not in f for f in frames), out


def _collect(stream, lines: list[str]) -> None:
    """Append each line of `stream` to `lines` as soon as it is read."""
    for line in iter(stream.readline, ""):
        lines.append(line)


def _wait_for_capture(capture: subprocess.Popen) -> None:
    # tcpdump says "listening on ..." once its socket is open.
    for line in capture.stderr:
        if "listening on" in line:
            return
    raise AssertionError("tcpdump exited before listening")


def test_sigterm_exits_zero_and_removes_instance_files(emulated_port, tmp_path):
    stack = StackProcess(emulated_port.vf(0), "198.18.0.10/24", tmp_path, "vf0")
    assert (tmp_path / "vf0.counters").exists()
    status, out, err = stack.stop()
    assert status == 0, err
    assert "stopped; counters" in out
    assert list(tmp_path.iterdir()) == []


def test_second_instance_with_same_name_is_refused(emulated_port, tmp_path):
    first = StackProcess(emulated_port.vf(0), "198.18.0.10/24", tmp_path, "vf0")
    try:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "stackservice",
                "run",
                "--iface",
                emulated_port.vf(1),
                "--ip",
                "198.18.0.11/24",
                "--name",
                "vf0",
                "--run-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "already running" in second.stderr
    finally:
        first.stop()


def test_second_instance_on_an_owned_interface_is_refused_and_changes_nothing(
    emulated_port, tmp_path
):
    first = StackProcess(emulated_port.vf(0), "198.18.0.10/24", tmp_path / "a", "vf0")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "stackservice", "run", "--iface", emulated_port.vf(0),
             "--ip", "198.18.0.20/24", "--name", "intruder", "--run-dir", str(tmp_path / "b")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"stackservice intruder: interface {emulated_port.vf(0)} is already owned by "
            "another stack instance"
        ]
        assert not (tmp_path / "b").exists()  # refused before it made anything
        ping = in_netns(emulated_port.netns, "ping", "-c", "1", "-W", "2", "198.18.0.10")
        assert ping.returncode == 0  # the owner goes on
    finally:
        first.stop()


def test_missing_interface_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stackservice",
            "run",
            "--iface",
            "vftnosuch0",
            "--ip",
            "198.18.0.10/24",
            "--run-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "vftnosuch0" in result.stderr


def test_sigterm_resets_open_connections_and_the_peer_sees_the_resets(emulated_port, tmp_path):
    """docs/architecture.md: on SIGTERM connections are reset, so peers
    learn at once: the kernel peer's five sockets each read ECONNRESET."""
    stack = StackProcess(emulated_port.vf(0), "198.18.0.10/24", tmp_path, "vf0", "--diag-services")
    holder = spawn_in_netns(
        emulated_port.netns,
        sys.executable,
        "-m",
        "tests.support.kernel_peer",
        "hold",
        "--port",
        "80",
        "--count",
        "5",
        "--linger",
        "20",
        "--timeout",
        "30",
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert '"served": 5' in holder.stdout.readline()
        status, out, _ = stack.stop()
        held = json.loads(holder.communicate(timeout=30)[0])
    finally:
        holder.kill()
        stack.stop()
    assert status == 0
    summary = json.loads(out.split("counters ", 1)[1])
    assert summary["tcp"]["resets_out"] >= 5
    assert (held["reset"], held["eof"]) == (5, 0), held
