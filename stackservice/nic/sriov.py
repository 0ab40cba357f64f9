"""SR-IOV and VMDq virtual functions: discovery, VF count, VF settings.

Three ways give a stack instance its own "VF":

- ``sriov``: a real VF netdev. The PF's sysfs directory tells how many VFs
  the device offers (``sriov_totalvfs``) and has enabled (``sriov_numvfs``),
  and links each one (``virtfnN``) to its PCI function and netdev. Settings
  the NIC enforces per VF (MAC, VLAN, spoof check, trust, link state, rate)
  are set through the PF with netlink (IFLA_VFINFO_LIST), as `ip link set
  PF vf N ...` does.
- ``vmdq``: bridge-mode macvlans ``<pf>v<i>`` on a port without SR-IOV:
  macvlan is the kernel's MAC-demultiplexing (VMDq) interface.
- ``emulated``: `vfstack emulate` (stackservice/nic/emulate.py), the same
  macvlans on one end of a veth wire.

Discovery and request building are plain functions over a sysfs tree (the
``sysfs_root`` argument, so tests build a fake one) and dicts; only
`Netlink` talks to the kernel, and a setup validates everything before it
changes anything and puts back what it changed when a later step fails.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError

SYSFS_ROOT = "/sys"
MODES = ("sriov", "vmdq")
MAX_VMDQ_PORTS = 64
MAX_IFNAME = 15
# 802.1Q: VID 4095 is reserved; 0 means "no VLAN" (the VF sends untagged).
MAX_VLAN = 4094
MAX_QOS = 7
# IFLA_VF_LINK_STATE values (include/uapi/linux/if_link.h).
LINK_STATES = {"auto": 0, "enable": 1, "disable": 2}
_LINK_STATE_NAMES = {value: name for name, value in LINK_STATES.items()}
# A driver that does not report spoof check or trust sends -1 as a u32.
_NOT_REPORTED = 0xFFFFFFFF
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_ZERO_MAC = "00:00:00:00:00:00"


class VfError(ValueError):
    """A request that cannot be carried out as asked (no such PF, no SR-IOV,
    too many VFs, a bad MAC or VLAN, an address clash). Raised before
    anything is changed."""


class VfSetupError(RuntimeError):
    """A step failed after others had changed the system; the message says
    what failed and whether everything was put back."""


# --- sysfs discovery -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VirtualFunction:
    index: int
    pci_address: str
    netdev: str | None  # None while no network driver is bound (e.g. vfio-pci)
    mac: str | None


@dataclass(frozen=True, slots=True)
class PhysicalFunction:
    name: str
    driver: str | None
    pci_address: str | None
    mac: str | None
    total_vfs: int
    num_vfs: int
    vfs: tuple[VirtualFunction, ...]


def _net_dir(sysfs_root: str | Path, ifname: str) -> Path:
    return Path(sysfs_root) / "class" / "net" / ifname


def _link_name(path: Path) -> str | None:
    """Basename of a symlink's target: sysfs names PCI functions and
    drivers by the last component of its links."""
    try:
        return Path(os.readlink(path)).name
    except OSError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int:
    text = _read(path)
    if text is None or not text.isdigit():
        raise VfError(f"cannot read {path}")
    return int(text)


def _check_ifname(name: str, what: str = "interface") -> None:
    # The name becomes a path component: refuse anything but one component.
    if not name or len(name) > MAX_IFNAME or "/" in name or name in (".", ".."):
        raise VfError(f"not an {what} name: {name!r}")


def read_pf(name: str, sysfs_root: str | Path = SYSFS_ROOT) -> PhysicalFunction:
    """The SR-IOV PF `name` and its enabled VFs, sorted by index.

    Raises VfError when there is no such interface or it has no SR-IOV.
    """
    _check_ifname(name)
    net = _net_dir(sysfs_root, name)
    if not net.exists():
        raise VfError(f"no such interface: {name}")
    device = net / "device"
    if not (device / "sriov_totalvfs").exists():
        raise VfError(
            f"{name} has no SR-IOV (no device/sriov_totalvfs); "
            "use --mode vmdq, or `vfstack emulate up` for an emulated port"
        )
    vfs = []
    for link in device.glob("virtfn*"):
        suffix = link.name[len("virtfn") :]
        if suffix.isdigit():
            vfs.append(_read_vf(int(suffix), link, sysfs_root))
    vfs.sort(key=lambda vf: vf.index)  # glob order is arbitrary; "virtfn10" < "virtfn2"
    return PhysicalFunction(
        name=name,
        driver=_link_name(device / "driver"),
        pci_address=_link_name(device),
        mac=_read(net / "address"),
        total_vfs=_read_int(device / "sriov_totalvfs"),
        num_vfs=_read_int(device / "sriov_numvfs"),
        vfs=tuple(vfs),
    )


def _read_vf(index: int, link: Path, sysfs_root: str | Path) -> VirtualFunction:
    names = sorted(p.name for p in (link / "net").iterdir()) if (link / "net").is_dir() else []
    netdev = names[0] if names else None
    mac = _read(_net_dir(sysfs_root, netdev) / "address") if netdev else None
    return VirtualFunction(index, _link_name(link) or "", netdev, mac)


def list_pfs(sysfs_root: str | Path = SYSFS_ROOT) -> list[PhysicalFunction]:
    """Every SR-IOV capable interface, by name."""
    net = Path(sysfs_root) / "class" / "net"
    if not net.is_dir():
        return []
    names = sorted(p.name for p in net.iterdir() if (p / "device" / "sriov_totalvfs").exists())
    return [read_pf(name, sysfs_root) for name in names]


def _write_sysfs(path: Path, value: int) -> None:
    path.write_text(f"{value}\n")


def set_num_vfs(
    name: str,
    num: int,
    sysfs_root: str | Path = SYSFS_ROOT,
    write: Callable[[Path, int], None] = _write_sysfs,
) -> int:
    """Enable `num` VFs on PF `name`. Returns the previous number.

    The kernel refuses to change a non-zero count to another non-zero one
    (EBUSY), so 0 is written first; if the new count then fails, the
    previous one is written back. Nothing is written when the count is
    already right (re-creating VFs would drop their settings).

    Raises VfError (no such PF, no SR-IOV, num out of range) before any
    write, OSError when the kernel refuses a write.
    """
    pf = read_pf(name, sysfs_root)
    if not 0 <= num <= pf.total_vfs:
        raise VfError(f"{name} supports at most {pf.total_vfs} VFs, not {num}")
    previous = pf.num_vfs
    if num == previous:
        return previous
    path = _net_dir(sysfs_root, name) / "device" / "sriov_numvfs"
    if previous and num:
        _write_or_explain(write, path, 0)
    try:
        _write_or_explain(write, path, num)
    except OSError as exc:
        if not previous:
            raise
        try:
            write(path, previous)
        except OSError as again:
            raise OSError(
                exc.errno, f"{exc.strerror}; writing {previous} back failed too: {again.strerror}"
            ) from exc
        raise
    return previous


def _write_or_explain(write: Callable[[Path, int], None], path: Path, value: int) -> None:
    try:
        write(path, value)
    except OSError as exc:
        raise OSError(exc.errno, f"writing {value} to {path}: {exc.strerror}") from exc


def resolve_vf_netdev(pf: str, vf: int, sysfs_root: str | Path = SYSFS_ROOT) -> str:
    """The netdev that stands for VF `vf` of `pf`: the SR-IOV VF's netdev,
    or on a port without SR-IOV the VMDq/emulated macvlan ``<pf>v<vf>``
    (found as the PF's ``upper_<name>`` link).

    Raises VfError naming what is missing.
    """
    _check_ifname(pf, "interface")
    net = _net_dir(sysfs_root, pf)
    if not net.exists():
        raise VfError(f"no such interface: {pf}")
    if vf < 0:
        raise VfError(f"VF index must be 0 or more, not {vf}")
    if not (net / "device" / "sriov_totalvfs").exists():
        port = f"{pf}v{vf}"
        if (net / f"upper_{port}").exists():
            return port
        raise VfError(f"{pf} has no SR-IOV and no VMDq port {port}")
    info = read_pf(pf, sysfs_root)
    found = [v for v in info.vfs if v.index == vf]
    if not found:
        if not info.vfs:
            raise VfError(f"{pf} has no VFs enabled; run `vfstack vf setup --pf {pf} --num N`")
        raise VfError(f"{pf} has {len(info.vfs)} VFs (0..{len(info.vfs) - 1}); no VF {vf}")
    if found[0].netdev is None:
        raise VfError(
            f"VF {vf} of {pf} (PCI {found[0].pci_address}) has no network interface; "
            "bind it to its VF driver"
        )
    return found[0].netdev


# --- MAC addresses and VLANs -----------------------------------------------


def parse_mac(text: str, flag: str = "--mac") -> str:
    """A unicast, non-zero MAC address in lower case. Raises VfError."""
    mac = text.strip().lower()
    if not _MAC.match(mac) or mac == _ZERO_MAC or int(mac[:2], 16) & 1:
        raise VfError(f"{flag}: not a unicast MAC address: {text!r}")
    return mac


def mac_sequence(base: str, count: int, flag: str = "--mac-base") -> list[str]:
    """`count` MACs from `base` up: port i gets base + i, carrying into
    higher octets as a 48-bit number. Raises VfError if one would leave
    the unicast range (carry into the multicast bit or past 48 bits)."""
    start = int(parse_mac(base, flag).replace(":", ""), 16)
    macs = []
    for i in range(count):
        value = start + i
        if value >= 1 << 48 or (value >> 40) & 1:
            raise VfError(f"{flag}: {base} + {i} is not a unicast MAC address")
        text = f"{value:012x}"
        macs.append(":".join(text[j : j + 2] for j in range(0, 12, 2)))
    return macs


def check_mac_clashes(planned: Mapping[str, str], in_use: Mapping[str, str]) -> None:
    """Raise VfError if two planned ports share a MAC, or one takes a MAC
    another interface already has. Both map a name to a MAC."""
    owners: dict[str, str] = {}
    for name, mac in planned.items():
        if mac in owners:
            raise VfError(f"MAC clash: {owners[mac]} and {name} would both get {mac}")
        owners[mac] = name
    for name, mac in in_use.items():
        mac = mac.lower()
        if mac in owners:
            raise VfError(f"MAC clash: {owners[mac]} would get {mac}, already used by {name}")


def parse_count(text: str | int, flag: str = "--num") -> int:
    value = str(text).strip()
    if not value.isdigit():
        raise VfError(f"{flag}: give a number of VFs (0 or more), not {text!r}")
    return int(value)


def parse_vlan(text: str | int, flag: str = "--vlan") -> int:
    value = str(text).strip()
    if not value.isdigit() or int(value) > MAX_VLAN:
        raise VfError(f"{flag}: give a VLAN id 0..{MAX_VLAN} (0: untagged), not {text!r}")
    return int(value)


# --- VF settings through the PF (netlink) ----------------------------------


@dataclass(frozen=True, slots=True)
class VfSettings:
    """Settings the NIC enforces on one VF. None: leave as is (in a request)
    or not reported (read back). MAC 00:00:00:00:00:00 = none assigned."""

    mac: str | None = None
    vlan: int | None = None  # 0: untagged
    qos: int | None = None  # 802.1p priority of the VLAN tag
    spoofchk: bool | None = None
    trust: bool | None = None
    link_state: str | None = None  # "auto", "enable" or "disable"
    min_tx_rate: int | None = None  # Mbit/s; 0: no limit
    max_tx_rate: int | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


def vf_request(pf_index: int, vf: int, settings: VfSettings) -> dict:
    """The keyword arguments of ``ipr.link("set", ...)`` that apply
    `settings` to VF `vf` of the PF with index `pf_index` (one IFLA_VF_INFO
    in the PF's IFLA_VFINFO_LIST). VLAN and QoS travel together in
    IFLA_VF_VLAN, min and max rate in IFLA_VF_RATE: give both of a pair.

    Raises VfError on a value the kernel would refuse.
    """
    if vf < 0:
        raise VfError(f"VF index must be 0 or more, not {vf}")
    spec: dict = {"vf": vf}
    if settings.mac is not None:
        mac = settings.mac.lower()
        spec["mac"] = mac if mac == _ZERO_MAC else parse_mac(mac, f"VF {vf} MAC")
    if settings.vlan is not None or settings.qos is not None:
        spec["vlan"] = _vlan_spec(vf, settings)
    if settings.spoofchk is not None:
        spec["spoofchk"] = int(settings.spoofchk)
    if settings.trust is not None:
        spec["trust"] = int(settings.trust)
    if settings.link_state is not None:
        if settings.link_state not in LINK_STATES:
            raise VfError(f"VF {vf} link state: give auto, enable or disable")
        spec["link_state"] = LINK_STATES[settings.link_state]
    if settings.min_tx_rate is not None or settings.max_tx_rate is not None:
        spec["rate"] = _rate_spec(vf, settings)
    return {"index": pf_index, "vf": spec}


def _vlan_spec(vf: int, settings: VfSettings) -> dict:
    if settings.vlan is None:
        raise VfError(f"VF {vf}: a QoS priority needs a VLAN")
    qos = settings.qos or 0
    if not 0 <= settings.vlan <= MAX_VLAN:
        raise VfError(f"VF {vf}: VLAN must be 0..{MAX_VLAN}, not {settings.vlan}")
    if not 0 <= qos <= MAX_QOS or (qos and not settings.vlan):
        raise VfError(f"VF {vf}: QoS must be 0..{MAX_QOS}, on a VLAN other than 0")
    return {"vlan": settings.vlan, "qos": qos}


def _rate_spec(vf: int, settings: VfSettings) -> dict:
    low, high = settings.min_tx_rate, settings.max_tx_rate
    if low is None or high is None:
        raise VfError(f"VF {vf}: give both min and max TX rate")
    if low < 0 or high < 0 or (high and low > high):
        raise VfError(f"VF {vf}: TX rate must be 0 <= min <= max (Mbit/s), not {low}..{high}")
    return {"min_tx_rate": low, "max_tx_rate": high}


def parse_vf_info_list(link) -> dict[int, VfSettings]:
    """Each VF's settings from a PF's link message (``ipr.link("get",
    index=pf, ext_mask=1)``: RTEXT_FILTER_VF asks for IFLA_VFINFO_LIST)."""
    vflist = link.get("IFLA_VFINFO_LIST")
    if vflist is None:
        return {}
    found = {}
    for info in vflist.get_attrs("IFLA_VF_INFO"):
        mac = info.get("IFLA_VF_MAC")
        if mac is None:
            continue  # every driver reports the MAC; the VF index comes with it
        vlan = info.get("IFLA_VF_VLAN")
        spoofchk = info.get("IFLA_VF_SPOOFCHK")
        trust = info.get("IFLA_VF_TRUST")
        state = info.get("IFLA_VF_LINK_STATE")
        rate = info.get("IFLA_VF_RATE")
        found[mac["vf"]] = VfSettings(
            mac=mac["mac"],
            vlan=vlan["vlan"] if vlan else None,
            qos=vlan["qos"] if vlan else None,
            spoofchk=_reported_flag(spoofchk, "spoofchk"),
            trust=_reported_flag(trust, "trust"),
            link_state=_LINK_STATE_NAMES.get(state["link_state"]) if state else None,
            min_tx_rate=rate["min_tx_rate"] if rate else None,
            max_tx_rate=rate["max_tx_rate"] if rate else None,
        )
    return found


def _reported_flag(attr, key: str) -> bool | None:
    if attr is None or attr[key] == _NOT_REPORTED:
        return None
    return bool(attr[key])


def settings_change(target: VfSettings, current: VfSettings) -> tuple[VfSettings, VfSettings]:
    """(what to send, how to undo it): the fields of `target` that differ
    from `current`, and `current`'s values of those fields. Pairs the kernel
    sets together (VLAN+QoS, min+max rate) stay together, the missing half
    taken from `current` as `ip link` does. A field `current` does not
    report cannot be undone and is left out of the undo."""
    change: dict = {}
    undo: dict = {}
    for name in ("mac", "spoofchk", "trust", "link_state"):
        want = getattr(target, name)
        if want is not None and want != getattr(current, name):
            change[name] = want
            if getattr(current, name) is not None:
                undo[name] = getattr(current, name)
    if target.vlan is not None:
        want_pair = (target.vlan, target.qos or 0)
        have_pair = (current.vlan, current.qos or 0)
        if want_pair != have_pair:
            change.update(vlan=want_pair[0], qos=want_pair[1])
            if current.vlan is not None:
                undo.update(vlan=have_pair[0], qos=have_pair[1])
    if target.min_tx_rate is not None or target.max_tx_rate is not None:
        low = target.min_tx_rate if target.min_tx_rate is not None else current.min_tx_rate or 0
        high = target.max_tx_rate if target.max_tx_rate is not None else current.max_tx_rate or 0
        if (low, high) != (current.min_tx_rate, current.max_tx_rate):
            change.update(min_tx_rate=low, max_tx_rate=high)
            if current.max_tx_rate is not None:
                undo.update(min_tx_rate=current.min_tx_rate or 0, max_tx_rate=current.max_tx_rate)
    return VfSettings(**change), VfSettings(**undo)


# --- VMDq ports (macvlans on the PF) ---------------------------------------


@dataclass(frozen=True, slots=True)
class VmdqPort:
    name: str
    index: int  # ifindex
    mac: str


def vmdq_port_name(pf: str, i: int) -> str:
    return f"{pf}v{i}"


def macvlan_request(pf_index: int, name: str, mac: str) -> dict:
    """Keyword arguments of ``ipr.link("add", ...)`` for a VMDq port:
    a bridge-mode macvlan (its own MAC; ports on one PF reach each other)."""
    return {
        "ifname": name,
        "kind": "macvlan",
        "link": pf_index,
        "macvlan_mode": "bridge",
        "address": mac,
    }


def link_set_request(name: str, mac: str | None = None, state: str | None = None) -> dict:
    """Keyword arguments of ``ipr.link("set", ...)`` for a MAC and/or link
    state change of an existing interface."""
    request: dict = {"ifname": name}
    if mac is not None:
        request["address"] = parse_mac(mac, f"{name} MAC")
    if state is not None:
        if state not in ("up", "down"):
            raise VfError(f"{name}: link state must be up or down, not {state!r}")
        request["state"] = state
    return request


# --- Changing the system, and undoing it -----------------------------------

Issue = Callable[[str, dict], None]  # (pyroute2 link command, its keyword arguments)


@dataclass(frozen=True, slots=True)
class LinkStep:
    """One netlink change, a line saying what it does, and the change that
    undoes it (None when there is nothing to undo)."""

    command: str  # "add", "set" or "del"
    args: dict
    what: str
    undo: LinkStep | None = None


class Journal:
    """Issues steps, remembering the undo of each one that succeeded, so a
    setup that fails midway can put back what it had changed."""

    def __init__(self, issue: Issue) -> None:
        self._issue = issue
        self._undo: list[LinkStep] = []

    def run(self, step: LinkStep) -> None:
        self._issue(step.command, step.args)
        if step.undo is not None:
            self._undo.append(step.undo)

    def rollback(self) -> list[str]:
        """Undo in reverse order. Returns what could not be undone; keeps
        going past a failure, since every other undo still helps."""
        failed = []
        while self._undo:
            step = self._undo.pop()
            try:
                self._issue(step.command, step.args)
            except Exception as exc:  # report it and undo the rest
                failed.append(f"{step.what}: {_describe(exc)}")
        return failed


def run_steps(
    steps: list[LinkStep], issue: Issue, cleanup: Callable[[], list[str]] | None = None
) -> None:
    """Run every step; on a failure undo the ones done, then `cleanup`
    (for changes outside netlink), and raise VfSetupError."""
    journal = Journal(issue)
    for step in steps:
        try:
            journal.run(step)
        except Exception as exc:
            failed = journal.rollback()
            if cleanup is not None:
                failed += cleanup()
            outcome = (
                "could not restore: " + "; ".join(failed)
                if failed
                else "earlier changes were restored"
            )
            raise VfSetupError(f"{step.what} failed: {_describe(exc)}; {outcome}") from exc


def _describe(exc: Exception) -> str:
    if isinstance(exc, NetlinkError):
        return os.strerror(exc.code) if exc.code else str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


class Netlink:
    """The kernel reads and writes a VF setup needs, over one rtnetlink
    socket (an IPRoute, or a NetNS for a private namespace). Read errors
    come out as OSError."""

    def __init__(self, ipr) -> None:
        self._ipr = ipr

    def index(self, name: str) -> int | None:
        with _as_oserror():
            found = self._ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def addresses(self) -> dict[str, str]:
        """Every interface's MAC, by name."""
        with _as_oserror():
            links = self._ipr.get_links()
        return {link.get("IFLA_IFNAME"): link.get("IFLA_ADDRESS") or "" for link in links}

    def vf_settings(self, pf_index: int) -> dict[int, VfSettings]:
        with _as_oserror():
            link = self._ipr.link("get", index=pf_index, ext_mask=1)[0]
        return parse_vf_info_list(link)

    def vmdq_ports(self, pf_index: int, pf: str) -> dict[int, VmdqPort]:
        """The macvlans on the PF named ``<pf>v<i>``, by i."""
        with _as_oserror():
            links = self._ipr.get_links()
        found = {}
        for link in links:
            name = link.get("IFLA_IFNAME") or ""
            info = link.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info else None
            suffix = name[len(pf) + 1 :]
            if (
                kind == "macvlan"
                and link.get("IFLA_LINK") == pf_index
                and name.startswith(pf + "v")
                and suffix.isdigit()
                and str(int(suffix)) == suffix  # "v01" is not port 1
            ):
                found[int(suffix)] = VmdqPort(name, link["index"], link.get("IFLA_ADDRESS"))
        return found

    def issue(self, command: str, args: dict) -> None:
        # A copy: pyroute2 pops keys out of a VF spec while encoding it.
        self._ipr.link(command, **copy.deepcopy(args))


@contextlib.contextmanager
def _as_oserror() -> Iterator[None]:
    try:
        yield
    except NetlinkError as exc:
        raise OSError(exc.code, f"netlink: {os.strerror(exc.code)}") from exc


@contextlib.contextmanager
def open_netlink() -> Iterator[Netlink]:
    with IPRoute() as ipr:
        yield Netlink(ipr)


# --- `vfstack vf setup` ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupRequest:
    pf: str
    num: int
    mac_base: str | None = None
    vlan: int | None = None
    mode: str = "sriov"

    @classmethod
    def parse(
        cls,
        pf: str,
        num: str | int,
        mac_base: str | None = None,
        vlan: str | int | None = None,
        mode: str = "sriov",
    ) -> SetupRequest:
        """Validate raw flag values. Raises VfError naming the bad one."""
        try:
            _check_ifname(pf, "interface")
        except VfError as exc:
            raise VfError(f"--pf: {exc}") from None
        if mode not in MODES:
            raise VfError(f"--mode: give {' or '.join(MODES)}, not {mode!r}")
        count = parse_count(num)
        base = parse_mac(mac_base, "--mac-base") if mac_base is not None else None
        tag = parse_vlan(vlan) if vlan is not None else None
        if mode == "vmdq":
            if tag is not None:
                raise VfError("--vlan: VMDq ports (macvlans) do not tag; use a VLAN netdev as PF")
            if base is None and count:
                raise VfError("--mac-base: VMDq ports are told apart by MAC; give a base MAC")
            if count > MAX_VMDQ_PORTS:
                raise VfError(f"--num: at most {MAX_VMDQ_PORTS} VMDq ports")
            if count and len(vmdq_port_name(pf, count - 1)) > MAX_IFNAME:
                raise VfError(f"--pf: {pf}v{count - 1} would be longer than {MAX_IFNAME} bytes")
        if base is not None:
            mac_sequence(base, count)  # refuse a range that leaves unicast now
        return cls(pf, count, base, tag, mode)


def setup_vfs(
    request: SetupRequest,
    sysfs_root: str | Path = SYSFS_ROOT,
    netlink: Netlink | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """Give PF `request.pf` `request.num` VFs (SR-IOV) or VMDq ports, VF i
    with MAC base+i and the VLAN, if asked.

    Raises VfError before changing anything when the request does not fit
    the system, VfSetupError when a step failed (after putting back what
    had been changed), OSError when the kernel refuses the VF count.
    """
    if netlink is None:
        with open_netlink() as opened:
            return setup_vfs(request, sysfs_root, opened, say)
    if request.mode == "vmdq":
        return _setup_vmdq(request, netlink, say)
    return _setup_sriov(request, sysfs_root, netlink, say)


@dataclass(frozen=True, slots=True)
class _SriovPlan:
    """A checked SR-IOV setup: the PF, each VF's wanted settings, and (when
    settings are asked for) the PF's ifindex and its VFs' settings before."""

    pf: PhysicalFunction
    num: int
    targets: dict[int, VfSettings]
    pf_index: int | None
    before: dict[int, VfSettings]


def _check_sriov(request: SetupRequest, sysfs_root: str | Path, netlink: Netlink) -> _SriovPlan:
    pf = read_pf(request.pf, sysfs_root)
    if request.num > pf.total_vfs:
        raise VfError(f"--num: {pf.name} supports at most {pf.total_vfs} VFs, not {request.num}")
    macs = mac_sequence(request.mac_base, request.num) if request.mac_base else []
    targets = {
        i: VfSettings(mac=macs[i] if macs else None, vlan=request.vlan) for i in range(request.num)
    }
    if request.mac_base is None and request.vlan is None:
        return _SriovPlan(pf, request.num, {}, None, {})
    pf_index = netlink.index(pf.name)
    if pf_index is None:
        raise VfError(f"--pf: {pf.name} is in sysfs but not in this network namespace")
    # The PF's own VFs get new MACs (or go away): their current MACs do not count.
    own = {vf.netdev for vf in pf.vfs if vf.netdev}
    in_use = {name: mac for name, mac in netlink.addresses().items() if name not in own}
    check_mac_clashes({f"VF {i}": mac for i, mac in enumerate(macs)}, in_use)
    return _SriovPlan(pf, request.num, targets, pf_index, netlink.vf_settings(pf_index))


def _setup_sriov(
    request: SetupRequest, sysfs_root: str | Path, netlink: Netlink, say: Callable[[str], None]
) -> None:
    plan = _check_sriov(request, sysfs_root, netlink)
    # Everything is checked: from here on, changes.
    previous = set_num_vfs(plan.pf.name, plan.num, sysfs_root)
    counted = "unchanged" if previous == plan.num else f"was {previous}"
    say(f"PF {plan.pf.name}: {plan.num} VFs ({counted})")
    if plan.pf_index is None:
        return
    # Re-created VFs start from the driver's defaults, not from `before`.
    current = plan.before if previous == plan.num else netlink.vf_settings(plan.pf_index)
    steps = {}
    for i, target in plan.targets.items():
        change, undo = settings_change(target, current.get(i, VfSettings()))
        if not change.is_empty():
            restore = LinkStep("set", vf_request(plan.pf_index, i, undo), f"restore VF {i}")
            steps[i] = LinkStep(
                "set",
                vf_request(plan.pf_index, i, change),
                f"VF {i}: {_settings_text(change)}",
                None if undo.is_empty() else restore,
            )

    def put_back_count() -> list[str]:
        return _restore_count(plan, previous, sysfs_root, netlink)

    run_steps(list(steps.values()), netlink.issue, put_back_count)
    for i in plan.targets:
        say(steps[i].what if i in steps else f"VF {i}: unchanged")


def _restore_count(
    plan: _SriovPlan, previous: int, sysfs_root: str | Path, netlink: Netlink
) -> list[str]:
    """After a failed setup that changed the VF count: the old count back,
    then the old VFs' settings, which re-creating them had dropped."""
    if previous == plan.num or plan.pf_index is None:
        return []
    try:
        set_num_vfs(plan.pf.name, previous, sysfs_root)
    except OSError as exc:
        return [f"restoring {previous} VFs on {plan.pf.name}: {exc}"]
    fresh = netlink.vf_settings(plan.pf_index)
    failed = []
    for i, settings in sorted(plan.before.items()):
        change, _ = settings_change(settings, fresh.get(i, VfSettings()))
        if change.is_empty():
            continue
        try:
            netlink.issue("set", vf_request(plan.pf_index, i, change))
        except Exception as exc:  # report it and restore the others
            failed.append(f"restore VF {i}: {_describe(exc)}")
    return failed


def _settings_text(settings: VfSettings) -> str:
    parts = []
    if settings.mac is not None:
        parts.append(f"mac {settings.mac}")
    if settings.vlan is not None:
        parts.append(f"vlan {settings.vlan}" + (f" qos {settings.qos}" if settings.qos else ""))
    for name in ("spoofchk", "trust", "link_state", "min_tx_rate", "max_tx_rate"):
        value = getattr(settings, name)
        if value is not None:
            parts.append(f"{name} {value}")
    return " ".join(parts)


def _setup_vmdq(request: SetupRequest, netlink: Netlink, say: Callable[[str], None]) -> None:
    pf_index = netlink.index(request.pf)
    if pf_index is None:
        raise VfError(f"no such interface: {request.pf}")
    macs = mac_sequence(request.mac_base, request.num) if request.mac_base else []
    existing = netlink.vmdq_ports(pf_index, request.pf)
    ours = {port.name for port in existing.values()}
    addresses = netlink.addresses()
    for i in range(request.num):
        name = vmdq_port_name(request.pf, i)
        if name in addresses and name not in ours:
            raise VfError(f"{name} exists and is not a macvlan on {request.pf}")
    in_use = {n: m for n, m in addresses.items() if n not in ours}
    check_mac_clashes({vmdq_port_name(request.pf, i): m for i, m in enumerate(macs)}, in_use)
    steps = _vmdq_steps(request, pf_index, macs, existing)
    run_steps(steps, netlink.issue)
    for step in steps:
        say(step.what)
    if not steps:
        say(f"PF {request.pf}: {request.num} VMDq ports (unchanged)")


def _vmdq_steps(
    request: SetupRequest, pf_index: int, macs: list[str], existing: dict[int, VmdqPort]
) -> list[LinkStep]:
    """Creates and MAC changes first, removals last: a failure before the
    removals leaves nothing to re-create."""
    steps = []
    for i, mac in enumerate(macs):
        name = vmdq_port_name(request.pf, i)
        port = existing.get(i)
        if port is None:
            steps.append(
                LinkStep(
                    "add",
                    macvlan_request(pf_index, name, mac),
                    f"VMDq port {name}: created, mac {mac}",
                    LinkStep("del", {"ifname": name}, f"remove {name}"),
                )
            )
        elif port.mac != mac:
            steps.append(
                LinkStep(
                    "set",
                    link_set_request(name, mac=mac),
                    f"VMDq port {name}: mac {port.mac} -> {mac}",
                    LinkStep("set", link_set_request(name, mac=port.mac), f"restore {name} MAC"),
                )
            )
    for i, port in sorted(existing.items()):
        if i >= request.num:
            steps.append(
                LinkStep(
                    "del",
                    {"ifname": port.name},
                    f"VMDq port {port.name}: removed",
                    LinkStep(
                        "add",
                        macvlan_request(pf_index, port.name, port.mac),
                        f"re-create {port.name}",
                    ),
                )
            )
    return steps
