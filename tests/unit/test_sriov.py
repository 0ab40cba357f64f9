"""SR-IOV/VMDq discovery and setup (stackservice/nic/sriov.py) and the
`vfstack vf` commands, over a fake sysfs tree laid out as the kernel lays
out /sys (relative symlinks from class/net into devices/, virtfnN/physfn
links between PCI functions) and a fake netlink that records requests.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import re
from pathlib import Path

import pytest
from pyroute2 import NetlinkError
from pyroute2.iproute.linux import get_arguments_processor
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from vfstack import cli

from stackservice.nic import sriov
from stackservice.nic.sriov import (
    Journal,
    JournalStore,
    LinkStep,
    PortState,
    SetupRequest,
    SriovState,
    VfError,
    VfSettings,
    VfSetupError,
    VmdqPort,
    VmdqState,
    check_mac_clashes,
    list_pfs,
    mac_sequence,
    macvlan_request,
    parse_mac,
    parse_vf_info_list,
    read_pf,
    resolve_journal_dir,
    resolve_vf_netdev,
    restore_vfs,
    run_steps,
    set_num_vfs,
    settings_change,
    setup_vfs,
    vf_request,
)

PF_PCI = "0000:00:03.0"
PF_MAC = "3c:fd:fe:00:00:01"
ZERO_MAC = "00:00:00:00:00:00"


class FakeSysfs:
    """A /sys tree under `root` with the kernel's layout and link targets."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("class/net", "devices/pci0000:00", "devices/virtual/net", "bus/pci/drivers"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def _function(self, pci: str, driver: str | None) -> Path:
        fn = self.root / "devices/pci0000:00" / pci
        fn.mkdir()
        if driver:
            (self.root / "bus/pci/drivers" / driver).mkdir(exist_ok=True)
            os.symlink(f"../../../bus/pci/drivers/{driver}", fn / "driver")
        return fn

    def _netdev(self, fn: Path, name: str, mac: str) -> None:
        net = fn / "net" / name
        net.mkdir(parents=True)
        (net / "address").write_text(mac + "\n")
        os.symlink(f"../../../{fn.name}", net / "device")
        os.symlink(f"../../devices/pci0000:00/{fn.name}/net/{name}", self.root / "class/net" / name)

    def pf(self, name: str = "ens1f0", total: int = 8, num: int = 0, pci: str = PF_PCI) -> None:
        fn = self._function(pci, "ixgbe")
        (fn / "sriov_totalvfs").write_text(f"{total}\n")
        (fn / "sriov_numvfs").write_text(f"{num}\n")
        self._netdev(fn, name, PF_MAC)

    def vf(
        self, index: int, pci: str, netdev: str | None, mac: str = "", pf_pci: str = PF_PCI
    ) -> None:
        fn = self._function(pci, "ixgbevf" if netdev else "vfio-pci")
        os.symlink(f"../{pf_pci}", fn / "physfn")
        os.symlink(f"../{pci}", self.root / "devices/pci0000:00" / pf_pci / f"virtfn{index}")
        if netdev:
            self._netdev(fn, netdev, mac)

    def virtual(self, name: str, mac: str, upper_of: str | None = None) -> None:
        """A software netdev (veth, macvlan); `upper_of` gives the kernel's
        upper_<name> link on that lower device, as for a macvlan."""
        net = self.root / "devices/virtual/net" / name
        net.mkdir()
        (net / "address").write_text(mac + "\n")
        os.symlink(f"../../devices/virtual/net/{name}", self.root / "class/net" / name)
        if upper_of:
            os.symlink(f"../{name}", self.root / "devices/virtual/net" / upper_of / f"upper_{name}")

    def num_vfs(self, pci: str = PF_PCI) -> int:
        return int((self.root / "devices/pci0000:00" / pci / "sriov_numvfs").read_text())


@pytest.fixture(autouse=True)
def journal_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where every setup here (and `vfstack vf` run from here) journals:
    the test's own directory, never the host's /run/vfstack."""
    path = tmp_path / "journal"
    monkeypatch.setenv("VFSTACK_VF_JOURNAL_DIR", str(path))
    return path


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path / "sys")


@pytest.fixture
def pf_with_vfs(sysfs: FakeSysfs) -> FakeSysfs:
    """ens1f0 with 3 of 8 VFs enabled; VF 2 is bound to vfio-pci (no netdev)."""
    sysfs.pf(total=8, num=3)
    sysfs.vf(0, "0000:00:03.1", "ens1f0v0", "02:00:00:00:00:20")
    sysfs.vf(1, "0000:00:03.2", "ens1f0v1", "02:00:00:00:00:21")
    sysfs.vf(2, "0000:00:03.3", None)
    return sysfs


class FakeNetlink:
    """Stands in for sriov.Netlink: answers reads from dicts, records each
    issued request, and applies VF settings and VMDq port changes the way
    the kernel would, so a later read sees them. `fail_on(n)` makes the
    n-th issue (1-based) fail."""

    def __init__(self, links: dict[str, tuple[int, str]] | None = None) -> None:
        self.links = dict(links or {"ens1f0": (4, PF_MAC)})
        self.vfs: dict[int, VfSettings] = {}
        self.defaults = VfSettings(mac=ZERO_MAC, vlan=0, qos=0)  # of a re-created VF
        self.ports: dict[int, VmdqPort] = {}
        self.issued: list[tuple[str, dict]] = []
        self._fail_at: int | None = None
        self._sysfs: FakeSysfs | None = None
        self._num = 0

    def fail_on(self, n: int) -> None:
        self._fail_at = n

    def index(self, name: str) -> int | None:
        return self.links[name][0] if name in self.links else None

    def addresses(self) -> dict[str, str]:
        return {name: mac for name, (_, mac) in self.links.items()}

    def watch(self, sysfs: FakeSysfs) -> None:
        """Act as the PF driver does when the VF count changes: the VFs
        are re-created with default settings."""
        self._sysfs, self._num = sysfs, sysfs.num_vfs()

    def vf_settings(self, pf_index: int) -> dict[int, VfSettings]:
        if self._sysfs is not None and self._sysfs.num_vfs() != self._num:
            self._num = self._sysfs.num_vfs()
            self.vfs = {i: self.defaults for i in range(self._num)}
        return dict(self.vfs)

    def vmdq_ports(self, pf_index: int, pf: str) -> dict[int, VmdqPort]:
        return dict(self.ports)

    def issue(self, command: str, args: dict) -> None:
        self.issued.append((command, copy.deepcopy(args)))
        if self._fail_at == len(self.issued):
            raise NetlinkError(errno.EOPNOTSUPP)
        if "vf" in args:
            spec = args["vf"]
            self.vfs[spec["vf"]] = applied(self.vfs.get(spec["vf"], VfSettings()), spec)
        elif command == "add":
            index = max(i for i, _ in self.links.values()) + 1
            port = VmdqPort(args["ifname"], index, args["address"])
            self.ports[port_number(port.name)] = port
            self.links[port.name] = (index, port.mac)
        elif command == "del":
            del self.ports[port_number(args["ifname"])], self.links[args["ifname"]]
        else:
            port = self.ports[port_number(args["ifname"])]
            mac = args.get("address", port.mac)
            up = args.get("state", "up" if port.up else "down") == "up"
            self.ports[port_number(port.name)] = VmdqPort(port.name, port.index, mac, up)
            self.links[port.name] = (port.index, mac)


def applied(old: VfSettings, spec: dict) -> VfSettings:
    """`old` with the settings of a pyroute2 VF spec."""
    vlan, rate = spec.get("vlan", {}), spec.get("rate", {})
    link_state = {value: name for name, value in sriov.LINK_STATES.items()}
    return VfSettings(
        mac=spec.get("mac", old.mac),
        vlan=vlan.get("vlan", old.vlan),
        qos=vlan.get("qos", old.qos),
        spoofchk=bool(spec["spoofchk"]) if "spoofchk" in spec else old.spoofchk,
        trust=bool(spec["trust"]) if "trust" in spec else old.trust,
        link_state=link_state[spec["link_state"]] if "link_state" in spec else old.link_state,
        min_tx_rate=rate.get("min_tx_rate", old.min_tx_rate),
        max_tx_rate=rate.get("max_tx_rate", old.max_tx_rate),
    )


def port_number(name: str) -> int:
    return int(name.rsplit("v", 1)[1])


def vf_macs(fake: FakeNetlink) -> list[tuple[int, str | None]]:
    return [(args["vf"]["vf"], args["vf"].get("mac")) for _, args in fake.issued]


# --- discovery ---------------------------------------------------------------


def test_read_pf_finds_driver_pci_mac_and_each_vf(pf_with_vfs):
    pf = read_pf("ens1f0", pf_with_vfs.root)
    assert (pf.name, pf.driver, pf.pci_address, pf.mac) == ("ens1f0", "ixgbe", PF_PCI, PF_MAC)
    assert (pf.total_vfs, pf.num_vfs) == (8, 3)
    assert [(vf.index, vf.pci_address, vf.netdev, vf.mac) for vf in pf.vfs] == [
        (0, "0000:00:03.1", "ens1f0v0", "02:00:00:00:00:20"),
        (1, "0000:00:03.2", "ens1f0v1", "02:00:00:00:00:21"),
        (2, "0000:00:03.3", None, None),
    ]


def test_read_pf_orders_vfs_by_number_not_by_name(sysfs):
    sysfs.pf(total=16, num=12)
    for i in reversed(range(12)):
        sysfs.vf(i, f"0000:00:04.{i:x}", f"ens1f0v{i}", f"02:00:00:00:01:{i:02x}")
    pf = read_pf("ens1f0", sysfs.root)
    assert [vf.index for vf in pf.vfs] == list(range(12))
    assert pf.vfs[10].netdev == "ens1f0v10"


def test_read_pf_missing_interface_raises(sysfs):
    with pytest.raises(VfError, match="no such interface: ens9"):
        read_pf("ens9", sysfs.root)


def test_read_pf_without_sriov_raises(sysfs):
    sysfs.virtual("veth0", "02:00:00:00:09:01")
    with pytest.raises(VfError, match="veth0 has no SR-IOV"):
        read_pf("veth0", sysfs.root)


@pytest.mark.parametrize("name", ["../../etc", "", "a" * 16])
def test_read_pf_refuses_names_that_are_not_interfaces(sysfs, name):
    with pytest.raises(VfError, match="not an interface name"):
        read_pf(name, sysfs.root)


def test_list_pfs_lists_only_sriov_ports(pf_with_vfs):
    pf_with_vfs.virtual("lo", "00:00:00:00:00:00")
    pf_with_vfs.pf(name="ens2f0", total=4, num=0, pci="0000:00:05.0")
    assert [pf.name for pf in list_pfs(pf_with_vfs.root)] == ["ens1f0", "ens2f0"]
    assert list_pfs(pf_with_vfs.root / "nowhere") == []


# --- VF count ----------------------------------------------------------------


def recording_writer(log: list[int], fail_on: int | None = None):
    def write(path: Path, value: int) -> None:
        log.append(value)
        if value == fail_on:
            raise OSError(errno.EBUSY, "Device or resource busy")
        path.write_text(f"{value}\n")

    return write


def test_set_num_vfs_from_zero_writes_the_count_once(sysfs):
    sysfs.pf(total=8, num=0)
    writes: list[int] = []
    assert set_num_vfs("ens1f0", 4, sysfs.root, recording_writer(writes)) == 0
    assert writes == [4]
    assert sysfs.num_vfs() == 4


def test_set_num_vfs_changing_a_nonzero_count_writes_zero_first(sysfs):
    sysfs.pf(total=8, num=2)
    writes: list[int] = []
    assert set_num_vfs("ens1f0", 5, sysfs.root, recording_writer(writes)) == 2
    assert writes == [0, 5]
    assert sysfs.num_vfs() == 5


def test_set_num_vfs_to_zero_writes_zero_once(sysfs):
    sysfs.pf(total=8, num=3)
    writes: list[int] = []
    set_num_vfs("ens1f0", 0, sysfs.root, recording_writer(writes))
    assert writes == [0]


def test_set_num_vfs_same_count_writes_nothing(sysfs):
    sysfs.pf(total=8, num=3)
    writes: list[int] = []
    assert set_num_vfs("ens1f0", 3, sysfs.root, recording_writer(writes)) == 3
    assert writes == []


def test_set_num_vfs_more_than_total_raises_before_writing(sysfs):
    sysfs.pf(total=8, num=2)
    writes: list[int] = []
    with pytest.raises(VfError, match="at most 8 VFs, not 9"):
        set_num_vfs("ens1f0", 9, sysfs.root, recording_writer(writes))
    assert writes == [] and sysfs.num_vfs() == 2


def test_set_num_vfs_refused_count_writes_previous_back(sysfs):
    sysfs.pf(total=8, num=2)
    writes: list[int] = []
    with pytest.raises(OSError, match=r"writing 6 to .*sriov_numvfs") as raised:
        set_num_vfs("ens1f0", 6, sysfs.root, recording_writer(writes, fail_on=6))
    assert raised.value.errno == errno.EBUSY
    assert writes == [0, 6, 2]
    assert sysfs.num_vfs() == 2


def test_set_num_vfs_on_pf_without_sriov_raises(sysfs):
    sysfs.virtual("veth0", "02:00:00:00:09:01")
    with pytest.raises(VfError, match="no SR-IOV"):
        set_num_vfs("veth0", 1, sysfs.root)


# --- VF identity -> netdev -----------------------------------------------------


def test_resolve_vf_netdev_gives_the_sriov_vf_netdev(pf_with_vfs):
    assert resolve_vf_netdev("ens1f0", 1, pf_with_vfs.root) == "ens1f0v1"


@pytest.mark.parametrize(
    ("vf", "message"),
    [(3, r"has 3 VFs \(0..2\); no VF 3"), (2, r"VF 2 of ens1f0 \(PCI 0000:00:03.3\) has no")],
)
def test_resolve_vf_netdev_missing_vf_or_netdev_raises(pf_with_vfs, vf, message):
    with pytest.raises(VfError, match=message):
        resolve_vf_netdev("ens1f0", vf, pf_with_vfs.root)


def test_resolve_vf_netdev_pf_with_no_vfs_enabled_says_how(sysfs):
    sysfs.pf(num=0)
    with pytest.raises(VfError, match="vfstack vf setup --pf ens1f0"):
        resolve_vf_netdev("ens1f0", 0, sysfs.root)


def test_resolve_vf_netdev_vmdq_port_is_the_pfs_upper_macvlan(sysfs):
    sysfs.virtual("vfpf0", "02:00:00:00:09:00")
    sysfs.virtual("vfpf0v1", "02:00:00:00:00:11", upper_of="vfpf0")
    assert resolve_vf_netdev("vfpf0", 1, sysfs.root) == "vfpf0v1"
    with pytest.raises(VfError, match="no SR-IOV and no VMDq port vfpf0v0"):
        resolve_vf_netdev("vfpf0", 0, sysfs.root)


def test_resolve_vf_netdev_missing_pf_raises(sysfs):
    with pytest.raises(VfError, match="no such interface: ens1f0"):
        resolve_vf_netdev("ens1f0", 0, sysfs.root)


# --- MACs and VLANs --------------------------------------------------------------


def test_mac_sequence_adds_the_index_with_carry():
    assert mac_sequence("02:00:00:00:00:FE", 3) == [
        "02:00:00:00:00:fe",
        "02:00:00:00:00:ff",
        "02:00:00:00:01:00",
    ]


@pytest.mark.parametrize("base", ["02:ff:ff:ff:ff:ff", "fe:ff:ff:ff:ff:ff"])
def test_mac_sequence_leaving_unicast_raises(base):
    assert mac_sequence(base, 1) == [base]
    with pytest.raises(VfError, match=r"\+ 1 is not a unicast"):
        mac_sequence(base, 2)


@pytest.mark.parametrize(
    "text", ["01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:00:10", "02-00-00-00-00-10", "x"]
)
def test_parse_mac_refuses_non_unicast_or_malformed(text):
    with pytest.raises(VfError, match="--mac-base: not a unicast MAC"):
        parse_mac(text, "--mac-base")


def test_check_mac_clashes_two_planned_ports_sharing_a_mac():
    with pytest.raises(VfError, match="VF 0 and VF 1 would both get 02:00:00:00:00:10"):
        check_mac_clashes({"VF 0": "02:00:00:00:00:10", "VF 1": "02:00:00:00:00:10"}, {})


def test_check_mac_clashes_mac_used_by_another_interface():
    planned = {"VF 0": "02:00:00:00:00:10", "VF 1": "02:00:00:00:00:11"}
    with pytest.raises(VfError, match="VF 1 would get 02:00:00:00:00:11, already used by eth9"):
        check_mac_clashes(planned, {"lo": "00:00:00:00:00:00", "eth9": "02:00:00:00:00:11"})
    check_mac_clashes(planned, {"eth9": "02:00:00:00:00:12"})  # no clash: no error


# --- VF requests (what goes to pyroute2) ------------------------------------------

ALL_SETTINGS = VfSettings(
    mac="02:00:00:00:00:12",
    vlan=100,
    qos=3,
    spoofchk=True,
    trust=False,
    link_state="disable",
    min_tx_rate=10,
    max_tx_rate=100,
)


def test_vf_request_builds_the_pyroute2_vf_spec():
    assert vf_request(7, 2, ALL_SETTINGS) == {
        "index": 7,
        "vf": {
            "vf": 2,
            "mac": "02:00:00:00:00:12",
            "vlan": {"vlan": 100, "qos": 3},
            "spoofchk": 1,
            "trust": 0,
            "link_state": 2,
            "rate": {"min_tx_rate": 10, "max_tx_rate": 100},
        },
    }


def test_vf_request_leaves_out_settings_not_asked_for():
    assert vf_request(7, 0, VfSettings(vlan=5)) == {
        "index": 7,
        "vf": {"vf": 0, "vlan": {"vlan": 5, "qos": 0}},
    }


def _encode_link_set(request: dict) -> ifinfmsg:
    """What pyroute2's link("set", **request) would send, decoded again."""
    args = get_arguments_processor("link", "set", copy.deepcopy(request))
    msg = ifinfmsg()
    for name, *_ in msg.fields:
        msg[name] = args.get_value(name, default=0, mode="field")
    for key, value in args.items():
        nla = ifinfmsg.name2nla(key)
        if msg.valid_nla(nla) and value is not None:
            msg["attrs"].append([nla, value])
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    return decoded


def test_vf_request_encodes_to_one_ifla_vf_info_with_each_attribute():
    msg = _encode_link_set(vf_request(7, 2, ALL_SETTINGS))
    assert msg["index"] == 7
    infos = msg.get("IFLA_VFINFO_LIST").get_attrs("IFLA_VF_INFO")
    assert len(infos) == 1
    info = infos[0]
    assert info.get("IFLA_VF_MAC")["mac"] == "02:00:00:00:00:12"
    assert (info.get("IFLA_VF_VLAN")["vlan"], info.get("IFLA_VF_VLAN")["qos"]) == (100, 3)
    assert info.get("IFLA_VF_SPOOFCHK")["spoofchk"] == 1
    assert info.get("IFLA_VF_TRUST")["trust"] == 0
    assert info.get("IFLA_VF_LINK_STATE")["link_state"] == 2
    rate = info.get("IFLA_VF_RATE")
    assert (rate["min_tx_rate"], rate["max_tx_rate"]) == (10, 100)
    for name in ("IFLA_VF_MAC", "IFLA_VF_VLAN", "IFLA_VF_RATE", "IFLA_VF_TRUST"):
        assert info.get(name)["vf"] == 2  # the kernel reads the VF index from each


def test_parse_vf_info_list_reads_back_what_a_request_sets():
    assert parse_vf_info_list(_encode_link_set(vf_request(7, 2, ALL_SETTINGS))) == {2: ALL_SETTINGS}


def test_parse_vf_info_list_unreported_flags_are_none():
    msg = ifinfmsg()
    msg["attrs"] = [
        ("IFLA_VFINFO_LIST", {"attrs": [("IFLA_VF_INFO", {"attrs": [
            ("IFLA_VF_MAC", {"vf": 3, "mac": "00:00:00:00:00:00"}),
            ("IFLA_VF_SPOOFCHK", {"vf": 3, "spoofchk": 0xFFFFFFFF}),
            ("IFLA_VF_TRUST", {"vf": 3, "trust": 0xFFFFFFFF}),
            ("IFLA_VF_LINK_STATE", {"vf": 3, "link_state": 0}),
        ]})]}),
    ]  # fmt: skip
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    assert parse_vf_info_list(decoded) == {
        3: VfSettings(mac="00:00:00:00:00:00", link_state="auto")
    }
    assert parse_vf_info_list(ifinfmsg()) == {}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (VfSettings(mac="01:00:5e:00:00:01"), "not a unicast MAC"),
        (VfSettings(vlan=4095), "VLAN must be 0..4094"),
        (VfSettings(qos=3), "QoS priority needs a VLAN"),
        (VfSettings(vlan=0, qos=3), "on a VLAN other than 0"),
        (VfSettings(vlan=10, qos=8), "QoS must be 0..7"),
        (VfSettings(max_tx_rate=100), "both min and max"),
        (VfSettings(min_tx_rate=200, max_tx_rate=100), "min <= max"),
        (VfSettings(link_state="up"), "auto, enable or disable"),
    ],
)
def test_vf_request_refuses_values_the_kernel_would(settings, message):
    with pytest.raises(VfError, match=message):
        vf_request(7, 0, settings)


def test_vf_request_zero_mac_clears_the_assigned_mac():
    assert vf_request(7, 0, VfSettings(mac="00:00:00:00:00:00"))["vf"]["mac"] == "00:00:00:00:00:00"


# --- what to change, and how to undo it ------------------------------------------


def test_settings_change_sends_only_differences_and_remembers_originals():
    current = VfSettings(mac="02:00:00:00:00:20", vlan=7, qos=2, spoofchk=True, trust=False)
    target = VfSettings(mac="02:00:00:00:00:30", vlan=7, qos=2, spoofchk=True, trust=True)
    change, undo = settings_change(target, current)
    assert change == VfSettings(mac="02:00:00:00:00:30", trust=True)
    assert undo == VfSettings(mac="02:00:00:00:00:20", trust=False)


def test_settings_change_vlan_alone_resets_qos_and_undo_restores_both():
    change, undo = settings_change(VfSettings(vlan=100), VfSettings(vlan=7, qos=2))
    assert change == VfSettings(vlan=100, qos=0)
    assert undo == VfSettings(vlan=7, qos=2)


def test_settings_change_one_rate_takes_the_other_from_current():
    change, undo = settings_change(
        VfSettings(max_tx_rate=500), VfSettings(min_tx_rate=10, max_tx_rate=100)
    )
    assert change == VfSettings(min_tx_rate=10, max_tx_rate=500)
    assert undo == VfSettings(min_tx_rate=10, max_tx_rate=100)


def test_settings_change_same_settings_change_nothing():
    change, undo = settings_change(ALL_SETTINGS, ALL_SETTINGS)
    assert change.is_empty() and undo.is_empty()


def test_settings_change_unreported_original_has_no_undo():
    change, undo = settings_change(VfSettings(trust=True), VfSettings())
    assert change == VfSettings(trust=True)
    assert undo.is_empty()


# --- running steps, rolling back ---------------------------------------------------


class Recorder:
    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def __call__(self, command: str, args: dict) -> None:
        self.calls.append(args["name"])
        if args["name"] in self.fail:
            raise NetlinkError(errno.EEXIST)


def step(name: str, undo: str | None = None) -> LinkStep:
    return LinkStep(
        "set", {"name": name}, name, LinkStep("set", {"name": undo}, undo) if undo else None
    )


def test_run_steps_issues_each_step_in_order_and_no_undo():
    issue = Recorder()
    run_steps([step("a", "undo a"), step("b", "undo b")], issue)
    assert issue.calls == ["a", "b"]


def test_run_steps_failure_undoes_done_steps_in_reverse_then_cleans_up():
    issue = Recorder(fail={"c"})
    cleaned = []
    with pytest.raises(VfSetupError, match="c failed: File exists; earlier changes were restored"):
        run_steps(
            [step("a", "undo a"), step("b"), step("c", "undo c"), step("d", "undo d")],
            issue,
            lambda: cleaned.append(list(issue.calls)) or [],
        )
    assert issue.calls == ["a", "b", "c", "undo a"]
    assert cleaned == [["a", "b", "c", "undo a"]]  # after the rollback


def test_run_steps_rollback_goes_on_past_a_failed_undo_and_says_so():
    issue = Recorder(fail={"c", "undo b"})
    with pytest.raises(VfSetupError, match=r"could not restore: undo b: .*File exists"):
        run_steps([step("a", "undo a"), step("b", "undo b"), step("c")], issue)
    assert issue.calls == ["a", "b", "c", "undo b", "undo a"]


# --- setup: SR-IOV -----------------------------------------------------------------


def test_setup_sriov_sets_count_then_mac_base_plus_i_and_vlan(sysfs):
    sysfs.pf(total=8, num=0)
    fake = FakeNetlink()
    said: list[str] = []
    setup_vfs(
        SetupRequest.parse("ens1f0", "3", "02:00:00:00:00:fe", "100"), sysfs.root, fake, said.append
    )
    assert sysfs.num_vfs() == 3
    assert fake.issued == [
        ("set", {"index": 4, "vf": {"vf": i, "mac": mac, "vlan": {"vlan": 100, "qos": 0}}})
        for i, mac in enumerate(["02:00:00:00:00:fe", "02:00:00:00:00:ff", "02:00:00:00:01:00"])
    ]
    assert said == [
        "PF ens1f0: 3 VFs (was 0)",
        "VF 0: mac 02:00:00:00:00:fe vlan 100",
        "VF 1: mac 02:00:00:00:00:ff vlan 100",
        "VF 2: mac 02:00:00:00:01:00 vlan 100",
    ]


def test_setup_sriov_again_with_same_settings_changes_nothing(pf_with_vfs):
    fake = FakeNetlink()
    fake.vfs = {i: VfSettings(mac=f"02:00:00:00:00:2{i}", vlan=0, qos=0) for i in range(3)}
    said: list[str] = []
    request = SetupRequest.parse("ens1f0", "3", "02:00:00:00:00:20", "0")
    setup_vfs(request, pf_with_vfs.root, fake, said.append)
    assert fake.issued == []
    assert said == ["PF ens1f0: 3 VFs (unchanged)"] + [f"VF {i}: unchanged" for i in range(3)]


def test_setup_sriov_own_vf_netdevs_macs_are_not_a_clash(pf_with_vfs):
    # ens1f0v0/v1 have ...:20 and ...:21; VF 0 is to get ...:21.
    fake = FakeNetlink({"ens1f0": (4, PF_MAC), "ens1f0v0": (5, "02:00:00:00:00:20"),
                        "ens1f0v1": (6, "02:00:00:00:00:21")})  # fmt: skip
    setup_vfs(SetupRequest.parse("ens1f0", "2", "02:00:00:00:00:21"), pf_with_vfs.root, fake, print)
    assert vf_macs(fake) == [(0, "02:00:00:00:00:21"), (1, "02:00:00:00:00:22")]
    assert pf_with_vfs.num_vfs() == 2


@pytest.mark.parametrize(
    ("mac_base", "message"),
    [
        ("02:00:00:00:00:0f", "VF 1 would get 02:00:00:00:00:10, already used by eth1"),
        ("3c:fd:fe:00:00:00", "VF 1 would get 3c:fd:fe:00:00:01, already used by ens1f0"),
    ],
)
def test_setup_sriov_mac_clash_changes_nothing(sysfs, mac_base, message):
    sysfs.pf(total=8, num=2)
    fake = FakeNetlink({"ens1f0": (4, PF_MAC), "eth1": (2, "02:00:00:00:00:10")})
    with pytest.raises(VfError, match=message):
        setup_vfs(SetupRequest.parse("ens1f0", "4", mac_base), sysfs.root, fake, print)
    assert sysfs.num_vfs() == 2
    assert fake.issued == []


def test_setup_sriov_too_many_vfs_changes_nothing(sysfs):
    sysfs.pf(total=4, num=2)
    fake = FakeNetlink()
    with pytest.raises(VfError, match="--num: ens1f0 supports at most 4 VFs, not 5"):
        setup_vfs(SetupRequest.parse("ens1f0", "5", "02:00:00:00:00:10"), sysfs.root, fake, print)
    assert sysfs.num_vfs() == 2 and fake.issued == []


def test_setup_sriov_failure_midway_restores_changed_vfs(pf_with_vfs):
    fake = FakeNetlink()
    fake.vfs = {i: VfSettings(mac=f"02:00:00:00:00:2{i}", vlan=0, qos=0) for i in range(3)}
    fake.fail_on(3)  # VF 0 and VF 1 succeed, VF 2 fails
    with pytest.raises(VfSetupError, match=r"VF 2: mac 02:00:00:00:00:42 failed: .*restored"):
        setup_vfs(
            SetupRequest.parse("ens1f0", "3", "02:00:00:00:00:40"), pf_with_vfs.root, fake, print
        )
    assert vf_macs(fake) == [
        (0, "02:00:00:00:00:40"),
        (1, "02:00:00:00:00:41"),
        (2, "02:00:00:00:00:42"),
        (1, "02:00:00:00:00:21"),
        (0, "02:00:00:00:00:20"),
    ]
    assert {i: s.mac for i, s in fake.vfs.items()} == {i: f"02:00:00:00:00:2{i}" for i in range(3)}
    assert pf_with_vfs.num_vfs() == 3


def test_setup_sriov_failure_after_count_change_restores_count_and_settings(pf_with_vfs):
    fake = FakeNetlink()
    fake.watch(pf_with_vfs)
    fake.vfs = {0: VfSettings(mac="02:00:00:00:00:20", vlan=9, qos=0)}
    fake.fail_on(2)
    with pytest.raises(VfSetupError, match="VF 1: vlan 100 failed"):
        setup_vfs(SetupRequest.parse("ens1f0", "4", vlan="100"), pf_with_vfs.root, fake, print)
    assert pf_with_vfs.num_vfs() == 3
    assert [(a["vf"]["vf"], a["vf"].get("vlan")) for _, a in fake.issued[:3]] == [
        (0, {"vlan": 100, "qos": 0}),
        (1, {"vlan": 100, "qos": 0}),  # fails
        (0, {"vlan": 0, "qos": 0}),  # undone, back to the re-created VF's default
    ]
    # The count went back to 3, which re-creates the VFs: VF 0 gets its own
    # settings from before the setup (MAC, VLAN 9) again.
    assert fake.issued[3:] == [
        ("set", {"index": 4, "vf": {"vf": 0, "mac": "02:00:00:00:00:20",
                                   "vlan": {"vlan": 9, "qos": 0}}}),
    ]  # fmt: skip
    assert fake.vfs[0] == VfSettings(mac="02:00:00:00:00:20", vlan=9, qos=0)


# --- setup: VMDq (macvlan ports) -----------------------------------------------------


def test_setup_vmdq_creates_changes_then_removes_ports():
    fake = FakeNetlink({"p0": (3, "02:00:00:00:09:00"), "p0v0": (10, "02:00:00:00:00:99"),
                        "p0v2": (12, "02:00:00:00:00:98")})  # fmt: skip
    fake.ports = {
        0: VmdqPort("p0v0", 10, "02:00:00:00:00:99"),
        2: VmdqPort("p0v2", 12, "02:00:00:00:00:98"),
    }
    said: list[str] = []
    setup_vfs(
        SetupRequest.parse("p0", "2", "02:00:00:00:00:10", mode="vmdq"), "/x", fake, said.append
    )
    assert fake.issued == [
        ("set", {"ifname": "p0v0", "address": "02:00:00:00:00:10"}),
        ("add", macvlan_request(3, "p0v1", "02:00:00:00:00:11")),
        ("del", {"ifname": "p0v2"}),
    ]
    assert fake.issued[1][1] == {
        "ifname": "p0v1", "kind": "macvlan", "link": 3, "macvlan_mode": "bridge",
        "address": "02:00:00:00:00:11",
    }  # fmt: skip
    assert said == [
        "VMDq port p0v0: mac 02:00:00:00:00:99 -> 02:00:00:00:00:10",
        "VMDq port p0v1: created, mac 02:00:00:00:00:11",
        "VMDq port p0v2: removed",
    ]


def test_setup_vmdq_name_taken_by_another_interface_changes_nothing():
    fake = FakeNetlink({"p0": (3, "02:00:00:00:09:00"), "p0v1": (9, "02:00:00:00:07:00")})
    with pytest.raises(VfError, match="p0v1 exists and is not a macvlan on p0"):
        setup_vfs(SetupRequest.parse("p0", "2", "02:00:00:00:00:10", mode="vmdq"), "/x", fake)
    assert fake.issued == []


def test_setup_vmdq_failed_create_removes_the_ports_made_before():
    fake = FakeNetlink({"p0": (3, "02:00:00:00:09:00")})
    fake.fail_on(2)
    with pytest.raises(VfSetupError, match=r"p0v1: created, .* failed"):
        setup_vfs(SetupRequest.parse("p0", "2", "02:00:00:00:00:10", mode="vmdq"), "/x", fake)
    assert [(c, a["ifname"]) for c, a in fake.issued] == [
        ("add", "p0v0"),
        ("add", "p0v1"),
        ("del", "p0v0"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num": "three"}, "--num: give a number"),
        ({"num": "-1"}, "--num: give a number"),
        ({"vlan": "4095"}, "--vlan: give a VLAN id 0..4094"),
        ({"vlan": "ten"}, "--vlan"),
        ({"mac_base": "01:00:00:00:00:00"}, "--mac-base: not a unicast"),
        ({"mac_base": "02:ff:ff:ff:ff:ff"}, r"--mac-base: 02:ff:ff:ff:ff:ff \+ 1"),
        ({"pf": "a/b"}, "--pf: not an interface name"),
        ({"mode": "vmdq", "vlan": "5"}, "--vlan: VMDq ports"),
        ({"mode": "vmdq", "mac_base": None}, "--mac-base: VMDq ports are told apart by MAC"),
        ({"mode": "vmdq", "pf": "enp129s0f0np12"}, "--pf: enp129s0f0np12v1 would be longer"),
        ({"mode": "vlan"}, "--mode"),
    ],
)
def test_setup_request_bad_flag_names_it(kwargs, message):
    args = {"pf": "ens1f0", "num": "2", "mac_base": "02:00:00:00:00:10", **kwargs}
    with pytest.raises(VfError, match=message):
        SetupRequest.parse(**args)


# --- the `vfstack vf` commands ---------------------------------------------------------


def test_cli_vf_list_prints_each_pf_and_its_vfs(pf_with_vfs, capsys):
    assert cli.main(["vf", "list", "--sysfs-root", str(pf_with_vfs.root)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "PF      Driver  PCI           MAC                VFs  Total",
        f"ens1f0  ixgbe   {PF_PCI}  {PF_MAC}    3      8",
        "  VF  Netdev    MAC                PCI",
        "   0  ens1f0v0  02:00:00:00:00:20  0000:00:03.1",
        "   1  ens1f0v1  02:00:00:00:00:21  0000:00:03.2",
        "   2  -         -                  0000:00:03.3",
    ]


def test_cli_vf_list_json_has_every_field(pf_with_vfs, capsys):
    assert cli.main(["vf", "list", "--json", "--sysfs-root", str(pf_with_vfs.root)]) == 0
    [pf] = json.loads(capsys.readouterr().out)
    assert {k: pf[k] for k in ("name", "driver", "pci_address", "total_vfs", "num_vfs")} == {
        "name": "ens1f0", "driver": "ixgbe", "pci_address": PF_PCI, "total_vfs": 8, "num_vfs": 3,
    }  # fmt: skip
    assert pf["vfs"][1] == {
        "index": 1, "pci_address": "0000:00:03.2", "netdev": "ens1f0v1", "mac": "02:00:00:00:00:21",
    }  # fmt: skip
    assert pf["vfs"][2]["netdev"] is None


def test_cli_vf_list_without_sriov_says_so(sysfs, capsys):
    assert cli.main(["vf", "list", "--sysfs-root", str(sysfs.root)]) == 0
    assert capsys.readouterr().out.startswith("no SR-IOV capable interface under")


def test_cli_vf_setup_count_only_writes_sriov_numvfs(pf_with_vfs, capsys):
    assert cli.main(["vf", "setup", "--pf", "ens1f0", "--num", "5",
                     "--sysfs-root", str(pf_with_vfs.root)]) == 0  # fmt: skip
    assert pf_with_vfs.num_vfs() == 5
    assert capsys.readouterr().out == "PF ens1f0: 5 VFs (was 3)\n"


@pytest.fixture
def fake_netlink(monkeypatch) -> FakeNetlink:
    """What `vfstack vf setup` gets when it opens netlink."""
    fake = FakeNetlink({"ens1f0": (4, PF_MAC), "eth1": (2, "02:00:00:00:00:13")})

    @contextlib.contextmanager
    def opened():
        yield fake

    monkeypatch.setattr(sriov, "open_netlink", opened)
    return fake


def test_cli_vf_setup_applies_mac_base_and_vlan(pf_with_vfs, fake_netlink, capsys):
    argv = ["vf", "setup", "--pf", "ens1f0", "--num", "2", "--mac-base", "02:00:00:00:00:30",
            "--vlan", "42", "--sysfs-root", str(pf_with_vfs.root)]  # fmt: skip
    assert cli.main(argv) == 0
    assert vf_macs(fake_netlink) == [(0, "02:00:00:00:00:30"), (1, "02:00:00:00:00:31")]
    assert {a["vf"]["vlan"]["vlan"] for _, a in fake_netlink.issued} == {42}
    assert "VF 1: mac 02:00:00:00:00:31 vlan 42" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pf", "ens9", "--num", "2"], "no such interface: ens9"),
        (["--pf", "ens1f0", "--num", "9"], "at most 8 VFs, not 9"),
        (["--pf", "ens1f0", "--num", "2", "--mac-base", "02:00:00:00:00"], "--mac-base"),
        (["--pf", "ens1f0", "--num", "2", "--mac-base", "03:00:00:00:00:01"], "--mac-base"),
        (["--pf", "ens1f0", "--num", "2", "--vlan", "4096"], "--vlan"),
        (["--pf", "ens1f0", "--num", "2", "--vlan", "-3"], "--vlan"),
        (["--pf", "ens1f0", "--num", "6", "--mac-base", "02:00:00:00:00:10"],
         "VF 3 would get 02:00:00:00:00:13, already used by eth1"),
    ],
)  # fmt: skip
def test_cli_vf_setup_bad_configuration_one_line_and_nothing_changed(
    pf_with_vfs, fake_netlink, capsys, argv, message
):
    status = cli.main(["vf", "setup", *argv, "--sysfs-root", str(pf_with_vfs.root)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("vfstack vf: ") and message in err
    assert pf_with_vfs.num_vfs() == 3
    assert fake_netlink.issued == []


def test_cli_vf_setup_without_sriov_one_line_error(sysfs, capsys):
    sysfs.virtual("veth0", "02:00:00:00:09:01")
    argv = ["vf", "setup", "--pf", "veth0", "--num", "1", "--sysfs-root", str(sysfs.root)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "veth0 has no SR-IOV" in err


# --- the journal, and `vfstack vf restore` ------------------------------------------------

BEFORE = {
    0: VfSettings("02:00:00:00:00:20", 0, 0, True, False, "auto", 0, 0),
    1: VfSettings("02:00:00:00:00:21", 7, 2, False, True, "enable", 0, 100),
    2: VfSettings(ZERO_MAC, 0, 0, True, False, "auto", 0, 0),
}
DEFAULTS = VfSettings(ZERO_MAC, 0, 0, True, False, "auto", 0, 0)  # a re-created VF's


@pytest.fixture
def configured(pf_with_vfs: FakeSysfs) -> FakeNetlink:
    """ens1f0's 3 VFs with settings of their own (VF 1 trusted, tagged,
    rate-limited), as a driver reports them; re-created VFs get DEFAULTS."""
    fake = FakeNetlink()
    fake.watch(pf_with_vfs)
    fake.vfs, fake.defaults = dict(BEFORE), DEFAULTS
    return fake


def system(sysfs: FakeSysfs, fake: FakeNetlink) -> tuple[dict, dict, dict]:
    """Everything setup may change: every file and link under the fake
    /sys, the VFs' settings, the VMDq ports."""
    tree = {}
    for path in sorted(sysfs.root.rglob("*")):
        if path.is_symlink():
            tree[str(path)] = "-> " + os.readlink(path)
        elif path.is_file():
            tree[str(path)] = path.read_text()
    return tree, fake.vf_settings(4), dict(fake.ports)


def setup(sysfs: FakeSysfs, fake: FakeNetlink, *flags: str, mode: str = "sriov") -> None:
    num, mac_base, vlan = (*flags, None, None)[:3]
    request = SetupRequest.parse("ens1f0", num, mac_base, vlan, mode)
    setup_vfs(request, sysfs.root, fake, lambda line: None)


def restore(sysfs: FakeSysfs, fake: FakeNetlink) -> list[str]:
    said: list[str] = []
    restore_vfs("ens1f0", sysfs.root, fake, said.append)
    return said


def test_restore_after_setup_gives_back_the_exact_original_system(pf_with_vfs, configured):
    before = system(pf_with_vfs, configured)
    setup(pf_with_vfs, configured, "5", "02:00:00:00:00:40", "100")
    assert system(pf_with_vfs, configured) != before
    said = restore(pf_with_vfs, configured)
    assert system(pf_with_vfs, configured) == before
    # Re-created VFs have the driver's defaults, which VF 2 had: VF 1 needs
    # all of its own settings back, VF 0 its MAC.
    assert said[:-1] == [
        "PF ens1f0: 3 VFs (was 5)",
        "VF 1: mac 02:00:00:00:00:21 vlan 7 qos 2 spoofchk False trust True "
        "link_state enable min_tx_rate 0 max_tx_rate 100",
        "VF 0: mac 02:00:00:00:00:20",
    ]
    assert said[-1].startswith("PF ens1f0: restored as before `vfstack vf setup`; journal ")


@pytest.mark.parametrize(
    "flags", [("5",), ("0",), ("1", None, "9"), ("3", "02:00:00:00:00:40"), ("8", None, "0")]
)
def test_restore_after_any_setup_gives_back_the_original_system(pf_with_vfs, configured, flags):
    before = system(pf_with_vfs, configured)
    setup(pf_with_vfs, configured, *flags)
    assert system(pf_with_vfs, configured) != before
    restore(pf_with_vfs, configured)
    assert system(pf_with_vfs, configured) == before


def test_restore_same_count_puts_back_vf_settings_last_vf_first(pf_with_vfs, configured):
    setup(pf_with_vfs, configured, "3", "02:00:00:00:00:40", "100")
    configured.issued.clear()
    restore(pf_with_vfs, configured)
    assert [(a["vf"]["vf"], a["vf"].get("mac"), a["vf"]["vlan"]) for _, a in configured.issued] == [
        (2, ZERO_MAC, {"vlan": 0, "qos": 0}),
        (1, "02:00:00:00:00:21", {"vlan": 7, "qos": 2}),
        (0, "02:00:00:00:00:20", {"vlan": 0, "qos": 0}),
    ]
    assert configured.vfs == BEFORE


def test_setup_journals_what_it_found_before_changing_anything(
    pf_with_vfs, configured, journal_dir
):
    configured.fail_on(1)  # the first change fails: the journal is already there
    with pytest.raises(VfSetupError):
        setup(pf_with_vfs, configured, "3", "02:00:00:00:00:40")
    record = json.loads((journal_dir / "ens1f0.json").read_text())
    assert {k: v for k, v in record.items() if k != "vfs"} == {
        "format": 1, "pf": "ens1f0", "mode": "sriov", "pci_address": PF_PCI, "num_vfs": 3,
    }  # fmt: skip
    assert record["vfs"][1] == {
        "vf": 1, "mac": "02:00:00:00:00:21", "vlan": 7, "qos": 2, "spoofchk": False,
        "trust": True, "link_state": "enable", "min_tx_rate": 0, "max_tx_rate": 100,
    }  # fmt: skip
    assert [vf["vf"] for vf in record["vfs"]] == [0, 1, 2]


def test_setup_twice_keeps_the_journal_of_the_first(pf_with_vfs, configured, journal_dir):
    before = system(pf_with_vfs, configured)
    setup(pf_with_vfs, configured, "5", "02:00:00:00:00:40", "100")
    first = (journal_dir / "ens1f0.json").read_text()
    setup(pf_with_vfs, configured, "6", "02:00:00:00:00:50")
    assert (journal_dir / "ens1f0.json").read_text() == first
    restore(pf_with_vfs, configured)
    assert system(pf_with_vfs, configured) == before


def test_setup_refused_request_writes_no_journal(pf_with_vfs, configured, journal_dir):
    with pytest.raises(VfError, match="at most 8 VFs"):
        setup(pf_with_vfs, configured, "9")
    assert not journal_dir.exists()


def test_setup_other_mode_than_the_journal_says_restore_first(pf_with_vfs, configured):
    setup(pf_with_vfs, configured, "4")
    configured.issued.clear()
    with pytest.raises(VfError, match=r"sriov mode .*vfstack vf restore --pf ens1f0` first"):
        setup(pf_with_vfs, configured, "2", "02:00:00:00:00:40", mode="vmdq")
    assert configured.issued == [] and pf_with_vfs.num_vfs() == 4


def test_restore_failure_midway_goes_on_keeps_the_journal_and_a_retry_finishes(
    pf_with_vfs, configured, journal_dir
):
    before = system(pf_with_vfs, configured)
    setup(pf_with_vfs, configured, "3", "02:00:00:00:00:40", "100")
    configured.fail_on(len(configured.issued) + 2)  # VF 2 back, VF 1 refused, VF 0 back
    with pytest.raises(VfSetupError, match=r"could not put back VF 1: .*Operation not supp"):
        restore(pf_with_vfs, configured)
    assert (journal_dir / "ens1f0.json").exists()
    assert configured.vfs[0] == BEFORE[0] and configured.vfs[2] == BEFORE[2]
    assert configured.vfs[1] != BEFORE[1]
    said = restore(pf_with_vfs, configured)
    assert said[0].startswith("VF 1: mac 02:00:00:00:00:21")
    assert system(pf_with_vfs, configured) == before
    assert not (journal_dir / "ens1f0.json").exists()


def test_restore_without_journal_says_there_is_nothing_to_restore(pf_with_vfs, configured):
    with pytest.raises(VfError, match=r"nothing to restore on ens1f0: no journal .*ens1f0.json"):
        restore(pf_with_vfs, configured)
    assert configured.issued == []


def test_restore_when_nothing_changed_removes_the_journal(pf_with_vfs, configured, journal_dir):
    setup(pf_with_vfs, configured, "3")
    assert restore(pf_with_vfs, configured) == [
        f"PF ens1f0: already as before `vfstack vf setup`; journal {journal_dir}/ens1f0.json "
        "removed"
    ]
    assert configured.issued == [] and not (journal_dir / "ens1f0.json").exists()


def test_restore_pf_that_is_another_device_now_changes_nothing(
    pf_with_vfs, configured, journal_dir
):
    setup(pf_with_vfs, configured, "5")
    record = json.loads((journal_dir / "ens1f0.json").read_text())
    (journal_dir / "ens1f0.json").write_text(json.dumps({**record, "pci_address": "0000:81:00.0"}))
    with pytest.raises(
        VfError, match=r"ens1f0 is PCI 0000:00:03\.0 now, the journal is of PCI 0000:81"
    ):
        restore(pf_with_vfs, configured)
    assert pf_with_vfs.num_vfs() == 5 and (journal_dir / "ens1f0.json").exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "Expecting property name"),
        ('{"format": 2}', "not format 1"),
        ('{"format": 1, "pf": "ens1f0", "mode": "vlan"}', "unknown mode 'vlan'"),
        ('{"format": 1, "pf": "ens1f0", "mode": "sriov", "pci_address": null, "vfs": []}',
         "no num_vfs"),
        ('{"format": 1, "pf": "ens1f0", "mode": "sriov", "pci_address": null, "num_vfs": true,'
         ' "vfs": []}', "num_vfs: True is not int"),
        ('{"format": 1, "pf": "ens1f0", "mode": "vmdq", "ports": [{"port": 0, "mac": "x",'
         ' "up": false}]}', "mac: not a unicast MAC"),
        ('{"format": 1, "pf": "ens1f0", "mode": "vmdq", "ports": [1]}', "1 is not an object"),
        ('{"format": 1, "pf": "ens2f0", "mode": "vmdq", "ports": []}', "journal of ens2f0"),
    ],
)  # fmt: skip
def test_restore_unreadable_journal_names_the_problem_and_keeps_it(
    pf_with_vfs, configured, journal_dir, text, problem
):
    journal_dir.mkdir()
    (journal_dir / "ens1f0.json").write_text(text)
    with pytest.raises(VfError, match=re.escape(problem)):
        restore(pf_with_vfs, configured)
    assert (journal_dir / "ens1f0.json").read_text() == text
    assert configured.issued == []


def test_journal_reads_back_what_it_wrote(tmp_path):
    store = JournalStore(tmp_path / "j")
    sriov_journal = Journal("ens1f0", SriovState(PF_PCI, 3, dict(BEFORE)))
    vmdq_journal = Journal("p0", VmdqState({0: PortState("02:00:00:00:00:10", True)}))
    assert store.create(sriov_journal) and store.create(vmdq_journal)
    assert not store.create(Journal("p0", VmdqState({})))  # the first one stays
    assert (store.load("ens1f0"), store.load("p0")) == (sriov_journal, vmdq_journal)
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["ens1f0.json", "p0.json"]


def test_journal_dir_is_the_flag_else_the_environment_else_run(monkeypatch):
    assert resolve_journal_dir("/x") == Path("/x")
    assert resolve_journal_dir() == Path(os.environ["VFSTACK_VF_JOURNAL_DIR"])
    monkeypatch.delenv("VFSTACK_VF_JOURNAL_DIR")
    assert resolve_journal_dir() == Path("/run/vfstack/vf-setup")


@pytest.fixture
def vmdq_ports() -> FakeNetlink:
    """p0 with ports v0 (up), v1 and v2 (up)."""
    fake = FakeNetlink({"p0": (3, "02:00:00:00:09:00")})
    for i, (mac, up) in enumerate([("02:00:00:00:00:99", True), ("02:00:00:00:00:98", False),
                                   ("02:00:00:00:00:97", True)]):  # fmt: skip
        fake.ports[i] = VmdqPort(f"p0v{i}", 10 + i, mac, up)
        fake.links[f"p0v{i}"] = (10 + i, mac)
    return fake


def ports_as_found(fake: FakeNetlink) -> dict[str, tuple[str, bool]]:
    return {port.name: (port.mac, port.up) for port in fake.ports.values()}


@pytest.mark.parametrize("num", ["0", "1", "3", "5"])
def test_restore_vmdq_after_setup_gives_back_the_ports(vmdq_ports, num):
    before = ports_as_found(vmdq_ports)
    request = SetupRequest.parse("p0", num, "02:00:00:00:00:10", mode="vmdq")
    setup_vfs(request, "/x", vmdq_ports, lambda line: None)
    assert ports_as_found(vmdq_ports) != before
    said: list[str] = []
    restore_vfs("p0", "/x", vmdq_ports, said.append)
    assert ports_as_found(vmdq_ports) == before
    assert said[-1].startswith("PF p0: restored")


def test_restore_vmdq_removes_new_ports_first_then_macs_last_port_first(vmdq_ports):
    setup_vfs(SetupRequest.parse("p0", "5", "02:00:00:00:00:10", mode="vmdq"), "/x", vmdq_ports)
    vmdq_ports.issued.clear()
    restore_vfs("p0", "/x", vmdq_ports, lambda line: None)
    # Removals first: they free the names and MACs the others take back.
    assert vmdq_ports.issued == [
        ("del", {"ifname": "p0v4"}),
        ("del", {"ifname": "p0v3"}),
        ("set", {"ifname": "p0v2", "address": "02:00:00:00:00:97"}),
        ("set", {"ifname": "p0v1", "address": "02:00:00:00:00:98"}),
        ("set", {"ifname": "p0v0", "address": "02:00:00:00:00:99"}),
    ]


def test_restore_vmdq_re_creates_removed_ports_up_if_they_were(vmdq_ports):
    setup_vfs(SetupRequest.parse("p0", "1", "02:00:00:00:00:99", mode="vmdq"), "/x", vmdq_ports)
    vmdq_ports.issued.clear()
    said: list[str] = []
    restore_vfs("p0", "/x", vmdq_ports, said.append)
    assert said[:-1] == [
        "VMDq port p0v2: created, mac 02:00:00:00:00:97",
        "VMDq port p0v2: up",
        "VMDq port p0v1: created, mac 02:00:00:00:00:98",
    ]
    assert [c for c, _ in vmdq_ports.issued] == ["add", "set", "add"]


def test_restore_vmdq_name_taken_by_another_interface_changes_nothing(vmdq_ports, journal_dir):
    setup_vfs(SetupRequest.parse("p0", "1", "02:00:00:00:00:99", mode="vmdq"), "/x", vmdq_ports)
    vmdq_ports.links["p0v2"] = (40, "02:00:00:00:07:00")  # a veth took the name
    vmdq_ports.issued.clear()
    with pytest.raises(VfError, match="p0v2 exists and is not a macvlan on p0"):
        restore_vfs("p0", "/x", vmdq_ports)
    assert vmdq_ports.issued == [] and (journal_dir / "p0.json").exists()


# --- `vfstack vf restore` -----------------------------------------------------------------


def test_cli_vf_restore_puts_back_what_setup_changed(pf_with_vfs, fake_netlink, capsys):
    root = ["--sysfs-root", str(pf_with_vfs.root)]
    assert cli.main(["vf", "setup", "--pf", "ens1f0", "--num", "5", *root]) == 0
    capsys.readouterr()
    assert cli.main(["vf", "restore", "--pf", "ens1f0", *root]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "PF ens1f0: 3 VFs (was 5)"
    assert out[-1].startswith("PF ens1f0: restored as before `vfstack vf setup`")
    assert pf_with_vfs.num_vfs() == 3


@pytest.mark.parametrize(
    ("pf", "message"),
    [("ens1f0", "nothing to restore on ens1f0: no journal"), ("a/b", "--pf: not an interface")],
)
def test_cli_vf_restore_nothing_to_restore_one_line_exit_1(
    pf_with_vfs, fake_netlink, capsys, pf, message
):
    argv = ["vf", "restore", "--pf", pf, "--sysfs-root", str(pf_with_vfs.root)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vfstack vf: ") and message in err
    assert fake_netlink.issued == [] and pf_with_vfs.num_vfs() == 3


def test_cli_vf_journal_dir_flag_beats_the_environment(pf_with_vfs, tmp_path, journal_dir):
    flag = ["--sysfs-root", str(pf_with_vfs.root), "--journal-dir", str(tmp_path / "flag")]
    assert cli.main(["vf", "setup", "--pf", "ens1f0", "--num", "4", *flag]) == 0
    assert (tmp_path / "flag/ens1f0.json").exists() and not journal_dir.exists()
    assert cli.main(["vf", "restore", "--pf", "ens1f0", *flag]) == 0
    assert not (tmp_path / "flag/ens1f0.json").exists() and pf_with_vfs.num_vfs() == 3
