"""MAC addresses of VFs and VMDq ports: parsed, numbered from a base,
checked against each other and against the interfaces already there."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ._errors import VfError

ZERO_MAC = "00:00:00:00:00:00"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def parse_mac(text: str, flag: str = "--mac") -> str:
    """A unicast, non-zero MAC address in lower case. Raises VfError."""
    mac = text.strip().lower()
    if not _MAC.match(mac) or mac == ZERO_MAC or int(mac[:2], 16) & 1:
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
