"""VF setup against the real kernel, in a private network namespace.

No SR-IOV hardware here: a veth plays the PF. The kernel still parses the
IFLA_VFINFO_LIST our requests carry (a malformed one is EINVAL) before it
finds the veth has no VF operations (EOPNOTSUPP), so those tests prove the
requests are well formed and that a refused step is rolled back. VMDq
ports are real macvlans, created, changed, removed and rolled back, and
`vfstack vf restore` puts back what a setup changed.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyroute2 import NetlinkError, NetNS, netns
from pyroute2.ethtool import Ethtool

from stackservice.nic.netconf import disable_offloads, inside_netns
from stackservice.nic.sriov import (
    Journal,
    JournalStore,
    Netlink,
    SetupRequest,
    SriovState,
    VfError,
    VfSettings,
    VfSetupError,
    link_set_request,
    restore_vfs,
    setup_vfs,
    vf_request,
)
from tests.support.netns import in_netns, release_prefix, unique_prefix

pytestmark = pytest.mark.root

PF = "pf0"
PEER = "peer0"
IFF_UP = 0x1


@dataclass
class Namespace:
    name: str
    ipr: NetNS
    netlink: Netlink

    def links(self) -> dict[str, dict]:
        return {link.get("IFLA_IFNAME"): link for link in self.ipr.get_links()}

    def index(self, name: str) -> int:
        return self.ipr.link_lookup(ifname=name)[0]


@pytest.fixture(autouse=True)
def journal_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where every setup here (and `vfstack vf` run from here) journals:
    the test's own directory, never the host's /run/vfstack."""
    path = tmp_path / "journal"
    monkeypatch.setenv("VFSTACK_VF_JOURNAL_DIR", str(path))
    return path


@pytest.fixture
def ns() -> Iterator[Namespace]:
    """A namespace holding the veth PF0 <-> PEER0, removed after the test
    (the macvlans on PF0 go with it)."""
    name = unique_prefix()
    netns.create(name)
    try:
        with NetNS(name) as ipr:
            ipr.link("add", ifname=PF, kind="veth", peer={"ifname": PEER})
            yield Namespace(name, ipr, Netlink(ipr))
    finally:
        netns.remove(name)
        release_prefix(name)


def ports(ns: Namespace) -> dict[str, str]:
    """Macvlans on PF0, by name, with their MACs."""
    pf = ns.index(PF)
    return {
        name: link.get("IFLA_ADDRESS")
        for name, link in ns.links().items()
        if link.get("IFLA_LINK") == pf and name.startswith(PF + "v")
    }


def quiet(_: str) -> None:
    pass


# --- netlink reads and VF requests on a veth PF -------------------------------------


def test_netlink_reads_index_addresses_and_no_vfs_from_a_veth(ns):
    pf = ns.index(PF)
    assert ns.netlink.index(PF) == pf
    assert ns.netlink.index("nothere0") is None
    assert ns.netlink.addresses()[PF] == ns.links()[PF].get("IFLA_ADDRESS")
    assert ns.netlink.vf_settings(pf) == {}  # asked with RTEXT_FILTER_VF: no VFs on a veth


@pytest.mark.parametrize(
    "settings",
    [
        VfSettings(mac="02:00:00:00:0a:01"),
        VfSettings(vlan=100, qos=3),
        VfSettings(spoofchk=False, trust=True, link_state="enable", min_tx_rate=0, max_tx_rate=100),
    ],
)
def test_vf_request_is_well_formed_and_a_pf_without_vfs_refuses_it(ns, settings):
    with pytest.raises(NetlinkError) as refused:
        ns.netlink.issue("set", vf_request(ns.index(PF), 0, settings))
    assert refused.value.code == errno.EOPNOTSUPP  # EINVAL would mean a malformed request


def test_link_set_request_sets_a_macvlan_mac_and_state(ns):
    ns.ipr.link("add", ifname=f"{PF}v0", kind="macvlan", link=ns.index(PF), macvlan_mode="bridge")
    ns.netlink.issue("set", link_set_request(f"{PF}v0", mac="02:00:00:00:0a:77", state="up"))
    link = ns.links()[f"{PF}v0"]
    assert link.get("IFLA_ADDRESS") == "02:00:00:00:0a:77"
    assert link["flags"] & IFF_UP


def fake_pf_sysfs(root: Path, pf: str, total: int, num: int) -> None:
    """A sysfs tree in which `pf` is an SR-IOV PF (its netlink side is the
    real veth of the same name)."""
    device = root / "devices/pci0000:00/0000:00:03.0"
    device.mkdir(parents=True)
    (device / "sriov_totalvfs").write_text(f"{total}\n")
    (device / "sriov_numvfs").write_text(f"{num}\n")
    net = root / "class/net" / pf
    net.mkdir(parents=True)
    (net / "address").write_text("3c:fd:fe:00:00:01\n")
    os.symlink("../../../devices/pci0000:00/0000:00:03.0", net / "device")


def test_setup_sriov_refused_vf_mac_restores_the_vf_count(ns, tmp_path):
    fake_pf_sysfs(tmp_path, PF, total=8, num=1)
    numvfs = tmp_path / "devices/pci0000:00/0000:00:03.0/sriov_numvfs"
    request = SetupRequest.parse(PF, "2", "02:00:00:00:0a:00")
    with pytest.raises(VfSetupError, match="VF 0: mac 02:00:00:00:0a:00 failed: Operation not"):
        setup_vfs(request, tmp_path, ns.netlink, quiet)
    assert numvfs.read_text() == "1\n"


# --- VMDq ports: real macvlans ------------------------------------------------------


def test_setup_vmdq_makes_bridge_macvlans_with_mac_base_plus_i(ns):
    setup_vfs(SetupRequest.parse(PF, "3", "02:00:00:00:0a:fe", mode="vmdq"), netlink=ns.netlink)
    assert ports(ns) == {
        f"{PF}v0": "02:00:00:00:0a:fe",
        f"{PF}v1": "02:00:00:00:0a:ff",
        f"{PF}v2": "02:00:00:00:0b:00",
    }
    info = ns.links()[f"{PF}v1"].get("IFLA_LINKINFO")
    assert info.get("IFLA_INFO_KIND") == "macvlan"
    assert info.get("IFLA_INFO_DATA").get("IFLA_MACVLAN_MODE") == "bridge"
    # Left down: the stack instance silences the kernel on it before it goes up.
    assert not ns.links()[f"{PF}v1"]["flags"] & IFF_UP


def test_setup_vmdq_again_changes_macs_removes_extras_then_nothing(ns):
    setup_vfs(SetupRequest.parse(PF, "3", "02:00:00:00:0a:00", mode="vmdq"), netlink=ns.netlink)
    said: list[str] = []
    setup_vfs(
        SetupRequest.parse(PF, "1", "02:00:00:00:0c:00", mode="vmdq"), "/", ns.netlink, said.append
    )
    assert ports(ns) == {f"{PF}v0": "02:00:00:00:0c:00"}
    assert said == [
        f"VMDq port {PF}v0: mac 02:00:00:00:0a:00 -> 02:00:00:00:0c:00",
        f"VMDq port {PF}v1: removed",
        f"VMDq port {PF}v2: removed",
    ]
    said.clear()
    setup_vfs(
        SetupRequest.parse(PF, "1", "02:00:00:00:0c:00", mode="vmdq"), "/", ns.netlink, said.append
    )
    assert said == [f"PF {PF}: 1 VMDq ports (unchanged)"]


class FailingNetlink(Netlink):
    """The real netlink, except that the n-th change is refused."""

    def __init__(self, ipr, fail_at: int) -> None:
        super().__init__(ipr)
        self.count, self.fail_at = 0, fail_at

    def issue(self, command: str, args: dict) -> None:
        self.count += 1
        if self.count == self.fail_at:
            raise NetlinkError(errno.ENOBUFS)
        super().issue(command, args)


def test_setup_vmdq_failure_midway_puts_back_what_it_changed(ns):
    setup_vfs(SetupRequest.parse(PF, "1", "02:00:00:00:0a:00", mode="vmdq"), netlink=ns.netlink)
    failing = FailingNetlink(ns.ipr, fail_at=3)  # v0 MAC change, v1 created, v2 refused
    with pytest.raises(VfSetupError, match=f"{PF}v2: created.*failed.*restored"):
        setup_vfs(SetupRequest.parse(PF, "3", "02:00:00:00:0d:00", mode="vmdq"), netlink=failing)
    assert ports(ns) == {f"{PF}v0": "02:00:00:00:0a:00"}


def test_setup_vmdq_mac_of_another_interface_changes_nothing(ns):
    peer_mac = ns.links()[PEER].get("IFLA_ADDRESS")
    with pytest.raises(VfError, match=f"{PF}v0 would get {peer_mac}, already used by {PEER}"):
        setup_vfs(SetupRequest.parse(PF, "2", peer_mac, mode="vmdq"), netlink=ns.netlink)
    assert ports(ns) == {}


# --- the commands, run inside the namespace (sysfs there is the namespace's) ---------


def run_in(ns: Namespace, *argv: str) -> subprocess.CompletedProcess[str]:
    return in_netns(ns.name, sys.executable, *argv, check=False)


def test_cli_vf_setup_vmdq_then_stackservice_finds_the_port_by_pf_and_vf(ns):
    done = run_in(ns, "-m", "vfstack.cli", "vf", "setup", "--mode", "vmdq", "--pf", PF,
                  "--num", "2", "--mac-base", "02:00:00:00:0a:10")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"VMDq port {PF}v1: created, mac 02:00:00:00:0a:11" in done.stdout
    resolved = run_in(
        ns, "-c", f"from stackservice.nic.sriov import resolve_vf_netdev as r; print(r({PF!r}, 1))"
    )
    assert resolved.stdout.strip() == f"{PF}v1"
    missing = run_in(ns, "-m", "stackservice", "run", "--ip", "198.18.0.10/24",
                     "--pf", PF, "--vf", "5", "--control", "none")  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and f"no VMDq port {PF}v5" in missing.stderr


def test_cli_vf_setup_clash_one_line_error_and_nothing_made(ns):
    peer_mac = ns.links()[PEER].get("IFLA_ADDRESS")
    done = run_in(ns, "-m", "vfstack.cli", "vf", "setup", "--mode", "vmdq", "--pf", PF,
                  "--num", "2", "--mac-base", peer_mac)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and f"already used by {PEER}" in done.stderr
    assert ports(ns) == {}


def test_offloads_of_a_vmdq_port_whose_pf_keeps_them_do_not_stop_the_stack(ns):
    """A macvlan's TX offloads follow its lower device: with the PF's on,
    the kernel refuses to turn them off (ETHTOOL_F_WISH). Preparing the
    port must go on and report only what really changed."""
    setup_vfs(SetupRequest.parse(PF, "1", "02:00:00:00:0c:01", mode="vmdq"), netlink=ns.netlink)
    with inside_netns(ns.name):
        assert Ethtool().get_features(PF).features["tx-checksum-ip-generic"].enable
        changed = disable_offloads(f"{PF}v0")
        still_on = Ethtool().get_features(f"{PF}v0").features
    assert all(not still_on[name].enable for name in changed)
    assert still_on["tx-checksum-ip-generic"].enable  # follows the PF


# --- `vfstack vf restore` ------------------------------------------------------------


def ports_up(ns: Namespace) -> dict[str, tuple[str, bool]]:
    """Macvlans on PF0 with their MACs and whether they are up."""
    links = ns.links()
    return {name: (mac, bool(links[name]["flags"] & IFF_UP)) for name, mac in ports(ns).items()}


def test_restore_vmdq_gives_back_ports_macs_and_up_state(ns, journal_dir):
    for i in (0, 2):
        ns.ipr.link("add", ifname=f"{PF}v{i}", kind="macvlan", link=ns.index(PF),
                    macvlan_mode="bridge", address=f"02:00:00:00:0a:0{i}")  # fmt: skip
    ns.ipr.link("set", ifname=f"{PF}v2", state="up")
    before = ports_up(ns)
    assert before == {
        f"{PF}v0": ("02:00:00:00:0a:00", False),
        f"{PF}v2": ("02:00:00:00:0a:02", True),
    }
    setup_vfs(SetupRequest.parse(PF, "2", "02:00:00:00:0c:00", mode="vmdq"), "/", ns.netlink, quiet)
    assert ports(ns) == {f"{PF}v0": "02:00:00:00:0c:00", f"{PF}v1": "02:00:00:00:0c:01"}
    said: list[str] = []
    restore_vfs(PF, "/", ns.netlink, said.append)
    assert ports_up(ns) == before
    assert said[:-1] == [
        f"VMDq port {PF}v1: removed",
        f"VMDq port {PF}v0: mac 02:00:00:00:0c:00 -> 02:00:00:00:0a:00",
        f"VMDq port {PF}v2: created, mac 02:00:00:00:0a:02",
        f"VMDq port {PF}v2: up",
    ]
    assert not (journal_dir / f"{PF}.json").exists()


def test_restore_vmdq_failure_midway_keeps_the_journal_and_a_retry_finishes(ns, journal_dir):
    setup_vfs(SetupRequest.parse(PF, "3", "02:00:00:00:0d:00", mode="vmdq"), netlink=ns.netlink)
    failing = FailingNetlink(ns.ipr, fail_at=2)  # v2 removed, v1 refused, v0 removed
    with pytest.raises(VfSetupError, match=f"could not put back VMDq port {PF}v1: removed: No buf"):
        restore_vfs(PF, "/", failing, quiet)
    assert ports(ns) == {f"{PF}v1": "02:00:00:00:0d:01"}
    assert (journal_dir / f"{PF}.json").exists()
    restore_vfs(PF, "/", ns.netlink, quiet)
    assert ports(ns) == {}
    assert not (journal_dir / f"{PF}.json").exists()


def test_restore_sriov_puts_back_the_vf_count_read_over_netlink(ns, tmp_path, journal_dir):
    fake_pf_sysfs(tmp_path, PF, total=8, num=1)
    numvfs = tmp_path / "devices/pci0000:00/0000:00:03.0/sriov_numvfs"
    setup_vfs(SetupRequest.parse(PF, "3"), tmp_path, ns.netlink, quiet)
    assert numvfs.read_text() == "3\n"
    record = json.loads((journal_dir / f"{PF}.json").read_text())
    assert (record["num_vfs"], record["vfs"]) == (1, [])  # the veth reports no VF settings
    restore_vfs(PF, tmp_path, ns.netlink, quiet)
    assert numvfs.read_text() == "1\n"
    assert not (journal_dir / f"{PF}.json").exists()


def test_restore_sriov_vf_settings_are_well_formed_and_a_refusal_keeps_the_journal(
    ns, tmp_path, journal_dir
):
    fake_pf_sysfs(tmp_path, PF, total=8, num=3)
    before = SriovState(None, 1, {0: VfSettings(mac="02:00:00:00:0a:20", vlan=5, trust=True)})
    assert JournalStore(journal_dir).create(Journal(PF, before))
    # The kernel parses the VF request before it finds the veth has no VF
    # operations: EOPNOTSUPP, where a malformed one would be EINVAL.
    with pytest.raises(VfSetupError, match="VF 0: mac 02:00:00:00:0a:20 vlan 5 trust True: Oper"):
        restore_vfs(PF, tmp_path, ns.netlink, quiet)
    assert (tmp_path / "devices/pci0000:00/0000:00:03.0/sriov_numvfs").read_text() == "1\n"
    assert JournalStore(journal_dir).load(PF) == Journal(PF, before)


def test_cli_vf_restore_after_setup_then_nothing_left_to_restore(ns, journal_dir):
    done = run_in(ns, "-m", "vfstack.cli", "vf", "setup", "--mode", "vmdq", "--pf", PF,
                  "--num", "2", "--mac-base", "02:00:00:00:0a:10")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (journal_dir / f"{PF}.json").exists()
    restored = run_in(ns, "-m", "vfstack.cli", "vf", "restore", "--pf", PF)
    assert restored.returncode == 0, restored.stderr
    assert f"VMDq port {PF}v1: removed" in restored.stdout
    assert ports(ns) == {}
    again = run_in(ns, "-m", "vfstack.cli", "vf", "restore", "--pf", PF)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and f"nothing to restore on {PF}" in again.stderr
