"""Reading sysfs: SR-IOV PFs, their VFs and the netdev that stands for a VF.

Nothing here writes. Every function takes the ``sysfs_root`` to read (so
tests build a fake tree) and follows the links the kernel makes: a PF's
``device/virtfnN`` to each VF's PCI function, whose ``net/`` names its
netdev, and a lower device's ``upper_<name>`` to a macvlan on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._errors import VfError

SYSFS_ROOT = "/sys"
MAX_IFNAME = 15


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


def net_dir(sysfs_root: str | Path, ifname: str) -> Path:
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


def check_ifname(name: str, what: str = "interface") -> None:
    # The name becomes a path component: refuse anything but one component.
    if not name or len(name) > MAX_IFNAME or "/" in name or name in (".", ".."):
        raise VfError(f"not an {what} name: {name!r}")


def read_pf(name: str, sysfs_root: str | Path = SYSFS_ROOT) -> PhysicalFunction:
    """The SR-IOV PF `name` and its enabled VFs, sorted by index.

    Raises VfError when there is no such interface or it has no SR-IOV.
    """
    check_ifname(name)
    net = net_dir(sysfs_root, name)
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
    mac = _read(net_dir(sysfs_root, netdev) / "address") if netdev else None
    return VirtualFunction(index, _link_name(link) or "", netdev, mac)


def list_pfs(sysfs_root: str | Path = SYSFS_ROOT) -> list[PhysicalFunction]:
    """Every SR-IOV capable interface, by name."""
    net = Path(sysfs_root) / "class" / "net"
    if not net.is_dir():
        return []
    names = sorted(p.name for p in net.iterdir() if (p / "device" / "sriov_totalvfs").exists())
    return [read_pf(name, sysfs_root) for name in names]


def resolve_vf_netdev(pf: str, vf: int, sysfs_root: str | Path = SYSFS_ROOT) -> str:
    """The netdev that stands for VF `vf` of `pf`: the SR-IOV VF's netdev,
    or on a port without SR-IOV the VMDq/emulated macvlan ``<pf>v<vf>``
    (found as the PF's ``upper_<name>`` link).

    Raises VfError naming what is missing.
    """
    check_ifname(pf, "interface")
    net = net_dir(sysfs_root, pf)
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
