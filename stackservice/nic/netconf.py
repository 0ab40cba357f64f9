"""Kernel-side settings of an interface a stack owns (or the emulated wire).

The host kernel must neither answer, forward nor merge a VF's traffic: the
stack instance is the only host on it. Everything here goes through netlink
and ethtool ioctls (pyroute2) or /proc/sys, so it works the same inside a
capability-limited container as on the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.ethtool import Ethtool
from pyroute2.ethtool.ioctl import NotSupportedError

# Offloads that would hand AF_PACKET frames it cannot use: super-frames
# (GRO/LRO/GSO/TSO) or frames whose checksum is left for hardware to fill.
_OFFLOAD_MARKERS = ("segmentation", "gro", "lro", "tx-checksum")


def disable_offloads(ifname: str) -> list[str]:
    """Turn off segmentation, receive merging and TX checksum offloads.

    Returns the feature names that were on and are now off. Features the
    driver reports as fixed stay as they are.
    """
    ethtool = Ethtool()
    try:
        features = ethtool.get_features(ifname)
        changed = []
        for name, feature in features.features.items():
            if feature.enable and feature.available and any(m in name for m in _OFFLOAD_MARKERS):
                feature.enable = False
                changed.append(name)
        if changed:
            try:
                ethtool.set_features(ifname, features)
            except NotSupportedError:
                # ETHTOOL_F_WISH: the kernel applied what it could. Some
                # features of an upper device (a macvlan) follow its lower
                # device; say which really went off.
                now = ethtool.get_features(ifname).features
                changed = [name for name in changed if not now[name].enable]
        return changed
    finally:
        ethtool.close()


# What keeps the host kernel off an interface a stack owns, per interface
# ("{}" is its name): no IPv6 (no link-local address, router solicitations or
# DAD), no IPv4 forwarding from it, and no ARP answers for the host's own
# addresses (arp_ignore=8). Where /proc/sys is read-only (a Kubernetes pod)
# something else sets them before the stack starts: the CNI tuning plugin in
# deploy/kubernetes/ names the same three.
SILENCE_SYSCTLS: tuple[tuple[str, int], ...] = (
    ("net/ipv6/conf/{}/disable_ipv6", 1),
    ("net/ipv4/conf/{}/forwarding", 0),
    ("net/ipv4/conf/{}/arp_ignore", 8),
)
# How a write to /proc/sys fails where it is read-only or not ours.
_SYSCTL_REFUSED = (errno.EROFS, errno.EACCES, errno.EPERM)


def write_sysctl(key: str, value: int) -> None:
    """Write /proc/sys/<key> (dotted or slashed), in the current namespace."""
    path = Path("/proc/sys") / key.replace(".", "/")
    path.write_text(f"{value}\n")


def read_sysctl(key: str) -> int:
    return int((Path("/proc/sys") / key.replace(".", "/")).read_text())


def ensure_sysctl(key: str, value: int) -> bool:
    """Give /proc/sys/<key> `value`, writing only when it differs, so a
    read-only /proc/sys (a container's default) is fine once the value was
    set beforehand.

    Returns True when it wrote. Raises OSError, naming the sysctl and the
    ways to set it, when the value differs and /proc/sys refuses the write.
    """
    if read_sysctl(key) == value:
        return False
    try:
        write_sysctl(key, value)
    except OSError as exc:
        if exc.errno not in _SYSCTL_REFUSED:
            raise
        path = Path("/proc/sys") / key.replace(".", "/")
        raise OSError(
            exc.errno,
            f"{path} must be {value}, and writing it failed ({exc.strerror}): set it "
            "before the stack starts (on Kubernetes the CNI tuning plugin, see "
            "docs/kubernetes.md) or run the stack with a writable /proc/sys",
        ) from None
    return True


def silence_kernel(ifname: str) -> None:
    """Keep the host kernel off an interface (SILENCE_SYSCTLS).

    Raises OSError when one of them is wrong and cannot be written.
    """
    for key, value in SILENCE_SYSCTLS:
        ensure_sysctl(key.format(ifname), value)


@contextlib.contextmanager
def inside_netns(name: str) -> Iterator[None]:
    """Run the block with this thread in network namespace `name`.

    For sysctls and ethtool ioctls, which act on the caller's namespace.
    Raises FileNotFoundError when the namespace does not exist: pyroute2's
    pushns(name) would create an empty one and the block would act there.
    """
    fd = os.open(os.path.join(netns.NETNS_RUN_DIR, name), os.O_RDONLY)
    try:
        netns.pushns()
        try:
            netns.setns(fd)
            yield
        finally:
            netns.popns()
    finally:
        os.close(fd)


def flush_addresses(ipr: IPRoute, index: int) -> None:
    """Remove every address the kernel has on the interface."""
    for addr in ipr.get_addr(index=index):
        ipr.addr("del", index=index, address=addr.get("IFA_ADDRESS"), prefixlen=addr["prefixlen"])


def link_index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def prepare_interface(ifname: str, mac: str | None = None) -> str:
    """Make `ifname` the stack's own: kernel silenced, addresses flushed,
    offloads off, optionally a new MAC, link up. Returns the MAC in use.

    Raises OSError (ENODEV) when the interface does not exist.
    """
    with IPRoute() as ipr:
        index = link_index(ipr, ifname)
        if index is None:
            raise FileNotFoundError(errno.ENODEV, f"no such interface: {ifname}")
        silence_kernel(ifname)
        flush_addresses(ipr, index)
        disable_offloads(ifname)
        if mac is not None:
            ipr.link("set", index=index, address=mac)
        ipr.link("set", index=index, state="up")
        return ipr.get_links(index)[0].get("address")


def detect_mode(ifname: str) -> str:
    """How this interface stands for a VF: "sriov" (a real VF netdev),
    "emulated" (a macvlan on a veth, as `vfstack emulate` builds), "vmdq"
    (a macvlan on a real port) or "netdev" (anything else)."""
    if Path(f"/sys/class/net/{ifname}/device/physfn").exists():
        return "sriov"
    with IPRoute() as ipr:
        index = link_index(ipr, ifname)
        if index is None:
            raise FileNotFoundError(errno.ENODEV, f"no such interface: {ifname}")
        link = ipr.get_links(index)[0]
        if _link_kind(link) != "macvlan":
            return "netdev"
        parent = link.get("IFLA_LINK")
        parents = ipr.get_links(parent) if parent else []
        return "emulated" if parents and _link_kind(parents[0]) == "veth" else "vmdq"


def _link_kind(link) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info else None


def vf_identity(ifname: str) -> tuple[str, int]:
    """(PF netdev, VF index) of an interface standing for a VF, or ("", -1).

    A real VF is found through sysfs (device/physfn and its virtfnN links);
    a macvlan's PF is its lower device, and its index the "vN" suffix the
    emulated port and `vfstack vf setup` give it.
    """
    device = Path(f"/sys/class/net/{ifname}/device")
    physfn = device / "physfn"
    if physfn.exists():
        pf_names = [p.name for p in (physfn / "net").iterdir()] if (physfn / "net").exists() else []
        for link in physfn.glob("virtfn*"):
            if link.resolve() == device.resolve():
                return (pf_names[0] if pf_names else "", int(link.name[len("virtfn") :]))
        return (pf_names[0] if pf_names else "", -1)
    with IPRoute() as ipr:
        index = link_index(ipr, ifname)
        if index is None:
            return ("", -1)
        link = ipr.get_links(index)[0]
        if _link_kind(link) != "macvlan" or not link.get("IFLA_LINK"):
            return ("", -1)
        parents = ipr.get_links(link.get("IFLA_LINK"))
        pf = parents[0].get("IFLA_IFNAME") if parents else ""
    suffix = ifname[len(pf) :] if pf and ifname.startswith(pf) else ""
    return (pf, int(suffix[1:]) if suffix[:1] == "v" and suffix[1:].isdigit() else -1)
