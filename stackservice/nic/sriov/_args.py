"""The flags of `vfstack vf setup` and `restore`, from raw text to a
checked request.

Each check names the flag it refuses, so the command can print one line.
Nothing here reads or changes the system.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._discovery import MAX_IFNAME, check_ifname
from ._errors import VfError
from ._mac import mac_sequence, parse_mac
from ._netlink import MAX_VLAN
from ._vmdq import MAX_VMDQ_PORTS, vmdq_port_name

MODES = ("sriov", "vmdq")


def parse_pf(text: str, flag: str = "--pf") -> str:
    """An interface name (one path component, at most 15 bytes). Raises
    VfError."""
    try:
        check_ifname(text, "interface")
    except VfError as exc:
        raise VfError(f"{flag}: {exc}") from None
    return text


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
        parse_pf(pf)
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
