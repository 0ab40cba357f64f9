"""What one stack instance is told at start: validated once, then frozen."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    iface: str
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None
    mac: str | None
    name: str
    run_dir: Path

    @classmethod
    def build(
        cls,
        iface: str,
        ip: str,
        gateway: str | None = None,
        mac: str | None = None,
        name: str | None = None,
        run_dir: str = "/run/vfstack",
    ) -> InstanceConfig:
        """Validate raw flag values. Raises ValueError naming the bad one."""
        if not iface or len(iface) > 15 or "/" in iface:
            raise ValueError(f"--iface: not an interface name: {iface!r}")
        try:
            address = ipaddress.IPv4Interface(ip)
        except ValueError as exc:
            raise ValueError(f"--ip: {exc}") from None
        if "/" not in ip:
            raise ValueError(f"--ip: give a prefix length, e.g. {ip}/24")
        if address.network.prefixlen > 30 or address.ip in (
            address.network.network_address,
            address.network.broadcast_address,
        ):
            raise ValueError(f"--ip: {ip} is not a usable host address")
        gw = None
        if gateway:
            try:
                gw = ipaddress.IPv4Address(gateway)
            except ValueError as exc:
                raise ValueError(f"--gateway: {exc}") from None
            if gw not in address.network:
                raise ValueError(f"--gateway: {gateway} is not on {address.network}")
        if mac is not None:
            mac = mac.lower()
            if not _MAC.match(mac) or int(mac[:2], 16) & 1:
                raise ValueError(f"--mac: not a unicast MAC address: {mac}")
        name = name or iface
        if not _NAME.match(name):
            raise ValueError(f"--name: use letters, digits, '.', '_', '-': {name!r}")
        return cls(iface, address, gw, mac, name, Path(run_dir))
