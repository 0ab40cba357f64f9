"""`vfstack emulate up|down` builds exactly docs/architecture.md's emulated port."""

import os
import signal
import subprocess
import time

import pytest
from pyroute2 import IPRoute, netns

from stackservice.nic.emulate import EmulatedPort, emulate_down, emulate_up, vf_mac
from stackservice.nic.netconf import detect_mode, inside_netns, read_sysctl
from tests.support.netns import (
    OWNERS,
    in_netns,
    quiet,
    release_prefix,
    remove_orphans,
    unique_prefix,
)

pytestmark = pytest.mark.root


def _links() -> dict[str, dict]:
    with IPRoute() as ipr:
        return {link.get("IFLA_IFNAME"): link for link in ipr.get_links()}


def _offload(netns_name: str | None, ifname: str, feature: str) -> str:
    argv = ["ethtool", "-k", ifname]
    out = (
        in_netns(netns_name, *argv).stdout
        if netns_name
        else subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    )
    return next(
        line.split(":")[1].split()[0] for line in out.splitlines() if line.startswith(feature + ":")
    )


@pytest.fixture
def port():
    port = EmulatedPort(prefix=unique_prefix())
    yield port
    emulate_down(port, say=quiet)
    release_prefix(port.prefix)


def test_emulate_up_builds_peer_wire_pf_and_vfs(port):
    emulate_up(port, 3, say=quiet)
    links = _links()
    for i in range(3):
        vf = links[port.vf(i)]
        assert vf.get("IFLA_ADDRESS") == vf_mac(i)
        assert vf.get("IFLA_LINKINFO").get("IFLA_INFO_DATA").get("IFLA_MACVLAN_MODE") == "bridge"
        assert vf.get("IFLA_OPERSTATE") == "UP"
        assert read_sysctl(f"net/ipv6/conf/{port.vf(i)}/disable_ipv6") == 1
        assert detect_mode(port.vf(i)) == "emulated"
    assert port.wire not in links  # the wire's far end lives in the peer namespace
    addrs = in_netns(port.netns, "ip", "-4", "-o", "addr", "show", "dev", port.wire).stdout
    assert "198.18.0.1/24" in addrs
    for feature in ("tcp-segmentation-offload", "generic-segmentation-offload", "tx-checksumming"):
        assert _offload(port.netns, port.wire, feature) == "off"
        assert _offload(None, port.pf, feature) == "off"
    with inside_netns(port.netns):
        assert read_sysctl(f"net/ipv6/conf/{port.wire}/disable_ipv6") == 1


def test_emulate_up_twice_is_idempotent_and_adds_missing_vfs(port):
    said: list[str] = []
    emulate_up(port, 1, say=said.append)
    assert any(s.endswith("created") for s in said)
    said.clear()
    emulate_up(port, 2, say=said.append)
    assert [s for s in said if s.endswith("created")] == [
        f"VF 1 {port.vf(1)} mac {vf_mac(1)} (stack address 198.18.0.11): created"
    ]
    addrs = in_netns(port.netns, "ip", "-4", "-o", "addr", "show", "dev", port.wire).stdout
    assert addrs.count("198.18.0.1/24") == 1


def test_emulate_down_removes_everything_and_repeats_quietly(port):
    emulate_up(port, 2, say=quiet)
    emulate_down(port, say=quiet)
    emulate_down(port, say=quiet)
    assert port.netns not in netns.listnetns()
    assert not [name for name in _links() if name.startswith(port.prefix)]


def test_vfstack_emulate_cli_prints_what_it_made(port):
    up = subprocess.run(
        ["vfstack", "emulate", "up", "--vfs", "1", "--prefix", port.prefix],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"VF 0 {port.vf(0)} mac 02:00:00:00:00:10" in up.stdout
    down = subprocess.run(
        ["vfstack", "emulate", "down", "--prefix", port.prefix],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"namespace {port.netns}: removed" in down.stdout


def test_vfstack_emulate_cli_bad_prefix_one_line_error():
    bad = subprocess.run(
        ["vfstack", "emulate", "up", "--prefix", "much-too-long"], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "prefix" in bad.stderr


def test_remove_orphans_takes_a_killed_runs_network_and_leaves_live_ones(port):
    """A run killed outright leaves its network; the next session removes
    it, because nobody holds its owner file's lock, and leaves a network
    whose creator holds the lock even if its pid means nothing here (a run
    in another PID namespace)."""
    orphan = EmulatedPort(prefix=unique_prefix())
    release_prefix(orphan.prefix)
    (OWNERS / orphan.prefix).write_text(f"{os.getpid()}\n")  # a live pid, no lock
    (OWNERS / port.prefix).write_text("4194304\n")  # past pid_max, but locked
    try:
        emulate_up(orphan, 1, say=quiet)
        emulate_up(port, 1, say=quiet)
        removed = remove_orphans()
        assert orphan.prefix in removed and port.prefix not in removed
        assert orphan.netns not in netns.listnetns()
        assert not [name for name in _links() if name and name.startswith(orphan.prefix)]
        assert port.netns in netns.listnetns() and port.pf in _links()
    finally:
        emulate_down(orphan, say=quiet)


def test_inside_netns_refuses_a_missing_namespace_instead_of_creating_it():
    name = unique_prefix()
    try:
        with pytest.raises(FileNotFoundError), inside_netns(name):
            pass
        assert name not in netns.listnetns()
    finally:
        release_prefix(name)


def test_a_forked_child_stopped_by_sigterm_runs_none_of_the_parents_teardown(tmp_path):
    """The session turns SIGTERM into KeyboardInterrupt so fixtures tear
    down; a forked child (pyroute2's netns helpers) must just die instead of
    running its inherited copy of the test's `finally` blocks."""
    marker = tmp_path / "teardown-ran"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(ready_w, b"x")
            time.sleep(30)
        finally:
            marker.touch()  # what a fixture's teardown would do
        os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert not marker.exists()
