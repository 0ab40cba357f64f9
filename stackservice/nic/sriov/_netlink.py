"""VF settings over rtnetlink: the requests that set them, the reading of
what a PF reports, and `Netlink`, the one object that talks to the kernel.

Settings the NIC enforces per VF (MAC, VLAN, spoof check, trust, link
state, rate) are set through the PF (IFLA_VFINFO_LIST), as `ip link set PF
vf N ...` does. Requests are plain dicts (pyroute2's keyword arguments),
built and checked without a socket.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields

from pyroute2 import IPRoute, NetlinkError

from ._errors import VfError
from ._mac import ZERO_MAC, parse_mac

# 802.1Q: VID 4095 is reserved; 0 means "no VLAN" (the VF sends untagged).
MAX_VLAN = 4094
MAX_QOS = 7
# IFLA_VF_LINK_STATE values (include/uapi/linux/if_link.h).
LINK_STATES = {"auto": 0, "enable": 1, "disable": 2}
_LINK_STATE_NAMES = {value: name for name, value in LINK_STATES.items()}
# A driver that does not report spoof check or trust sends -1 as a u32.
_NOT_REPORTED = 0xFFFFFFFF
_IFF_UP = 0x1  # include/uapi/linux/if.h


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
        spec["mac"] = mac if mac == ZERO_MAC else parse_mac(mac, f"VF {vf} MAC")
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


def settings_text(settings: VfSettings) -> str:
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


# --- the kernel: what a PF reports, and changes to it -----------------------


@dataclass(frozen=True, slots=True)
class VmdqPort:
    name: str
    index: int  # ifindex
    mac: str
    up: bool = False  # IFF_UP: administratively up


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
                up = bool(link["flags"] & _IFF_UP)
                found[int(suffix)] = VmdqPort(name, link["index"], link.get("IFLA_ADDRESS"), up)
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
