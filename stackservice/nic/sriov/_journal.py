"""The journal: what `vfstack vf setup` found on a PF before it changed
anything, kept in a file so `vfstack vf restore` can put it back.

One file a PF, ``<dir>/<pf>.json``; the directory is the command's
``--journal-dir``, else ``$VFSTACK_VF_JOURNAL_DIR``, else
``/run/vfstack/vf-setup``. Under /run because what it undoes does not
outlive a reboot either: the VF count and VF settings start from scratch,
macvlans are gone. The first setup of a PF writes it; later setups keep it,
so it always holds the state before the first one; restore removes it once
everything is back. A file is complete or absent: it is written aside and
linked into place, which also fails if another setup got there first.

Format 1 (JSON)::

    {"format": 1, "pf": "ens1f0", "mode": "sriov",
     "pci_address": "0000:00:03.0", "num_vfs": 2,
     "vfs": [{"vf": 0, "mac": "02:00:00:00:00:20", "vlan": 0, "qos": 0,
              "spoofchk": true, "trust": false, "link_state": "auto",
              "min_tx_rate": 0, "max_tx_rate": 0}, ...]}

    {"format": 1, "pf": "p0", "mode": "vmdq",
     "ports": [{"port": 0, "mac": "02:00:00:00:00:10", "up": false}, ...]}

A VF setting null was not reported by the driver (restore leaves it);
``"vfs": null``: the PF was not in setup's network namespace, so its VFs'
settings could not be read.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ._discovery import check_ifname
from ._errors import VfError
from ._mac import parse_mac
from ._netlink import VfSettings

JOURNAL_DIR = "/run/vfstack/vf-setup"
JOURNAL_DIR_ENV = "VFSTACK_VF_JOURNAL_DIR"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class SriovState:
    """An SR-IOV PF as setup found it."""

    pci_address: str | None
    num_vfs: int
    vfs: Mapping[int, VfSettings] | None  # None: not readable (PF in another namespace)


@dataclass(frozen=True, slots=True)
class PortState:
    """A VMDq port (macvlan ``<pf>v<i>``) as setup found it."""

    mac: str
    up: bool


@dataclass(frozen=True, slots=True)
class VmdqState:
    """The VMDq ports of a PF as setup found them, by i."""

    ports: Mapping[int, PortState]


@dataclass(frozen=True, slots=True)
class Journal:
    """One PF's journal: the PF, and what setup found on it (its type says
    the mode)."""

    pf: str
    found: SriovState | VmdqState

    @property
    def mode(self) -> str:
        return "sriov" if isinstance(self.found, SriovState) else "vmdq"

    def to_json(self) -> str:
        record: dict = {"format": FORMAT, "pf": self.pf, "mode": self.mode}
        if isinstance(self.found, SriovState):
            vfs = self.found.vfs
            record["pci_address"] = self.found.pci_address
            record["num_vfs"] = self.found.num_vfs
            record["vfs"] = None if vfs is None else [_vf_record(i, vfs[i]) for i in sorted(vfs)]
        else:
            ports = self.found.ports
            record["ports"] = [{"port": i, **asdict(ports[i])} for i in sorted(ports)]
        return json.dumps(record, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Journal:
        """Raises ValueError naming what is wrong."""
        record = json.loads(text)  # json.JSONDecodeError is a ValueError
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"not format {FORMAT}")
        pf = _typed(record, "pf", str)
        check_ifname(pf)
        if record.get("mode") == "sriov":
            vfs = _typed(record, "vfs", list, none=True)
            found: SriovState | VmdqState = SriovState(
                pci_address=_typed(record, "pci_address", str, none=True),
                num_vfs=_count(record, "num_vfs"),
                vfs=None if vfs is None else _indexed(vfs, "vf", _vf_settings),
            )
        elif record.get("mode") == "vmdq":
            found = VmdqState(_indexed(_typed(record, "ports", list), "port", _port_state))
        else:
            raise ValueError(f"unknown mode {record.get('mode')!r}")
        return cls(pf, found)


def _vf_record(index: int, settings: VfSettings) -> dict:
    return {"vf": index, **{f.name: getattr(settings, f.name) for f in fields(VfSettings)}}


_VF_TYPES = {
    "mac": str, "vlan": int, "qos": int, "spoofchk": bool, "trust": bool,
    "link_state": str, "min_tx_rate": int, "max_tx_rate": int,
}  # fmt: skip


def _vf_settings(record: dict) -> VfSettings:
    # Types only: a value vf_request or the kernel refuses fails that VF's
    # restore, saying why, and not the reading of the whole journal.
    return VfSettings(
        **{name: _typed(record, name, kind, none=True) for name, kind in _VF_TYPES.items()}
    )


def _port_state(record: dict) -> PortState:
    return PortState(parse_mac(_typed(record, "mac", str), "mac"), _typed(record, "up", bool))


def _indexed(records: list, key: str, parse: Callable[[dict], Any]) -> dict:
    found = {}
    for record in records:
        if not isinstance(record, dict):
            raise ValueError(f"{key}s: {record!r} is not an object")
        index = _count(record, key)
        if index in found:
            raise ValueError(f"{key} {index} twice")
        found[index] = parse(record)
    return found


def _count(record: dict, key: str) -> int:
    value = _typed(record, key, int)
    if value < 0:
        raise ValueError(f"{key}: {value} is negative")
    return value


def _typed(record: dict, key: str, kind: type, none: bool = False):
    """record[key], checked to be a `kind` (or None when `none`); bool is
    not taken for int, as JSON does not mix them."""
    if key not in record:
        raise ValueError(f"no {key}")
    value = record[key]
    if value is None and none:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key}: {value!r} is not {kind.__name__}")
    return value


def resolve_journal_dir(given: str | Path | None = None) -> Path:
    """The directory of the journals: `given`, else $VFSTACK_VF_JOURNAL_DIR,
    else /run/vfstack/vf-setup."""
    return Path(given or os.environ.get(JOURNAL_DIR_ENV) or JOURNAL_DIR)


class JournalStore:
    """The journals in one directory, one a PF."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, pf: str) -> Path:
        check_ifname(pf)  # a path component: one, and not "." or ".."
        return self.directory / f"{pf}.json"

    def load(self, pf: str) -> Journal | None:
        """The PF's journal, None when it has none.

        Raises VfError when the file cannot be read or is not a journal of
        `pf`: it is left where it is, for a person to look at.
        """
        path = self.path(pf)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VfError(f"cannot read the journal {path}: {exc.strerror}") from exc
        try:
            journal = Journal.from_json(text)
        except ValueError as exc:
            raise VfError(f"{path} is not a vfstack VF journal ({exc})") from exc
        if journal.pf != pf:
            raise VfError(f"{path} is the journal of {journal.pf}, not {pf}")
        return journal

    def create(self, journal: Journal) -> bool:
        """Write `journal` unless its PF has one. Returns whether it wrote.

        The file goes in complete or not at all: written and synced under a
        temporary name, then hard-linked to its own name, which fails when
        that exists (another setup wrote it first).

        Raises VfError when it cannot be written.
        """
        path = self.path(journal.pf)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{journal.pf}.")
            try:
                with os.fdopen(fd, "w") as file:
                    file.write(journal.to_json())
                    file.flush()
                    os.fsync(file.fileno())
                os.chmod(temporary, 0o644)
                written = _link_new(temporary, path)
            finally:
                os.unlink(temporary)
            _sync_directory(self.directory)
        except OSError as exc:
            raise VfError(f"cannot write the journal {path}: {exc.strerror}") from exc
        return written

    def remove(self, pf: str) -> None:
        self.path(pf).unlink(missing_ok=True)
        _sync_directory(self.directory)


def _link_new(source: str, path: Path) -> bool:
    """Link `source` as `path` unless `path` exists. Returns whether it did."""
    try:
        os.link(source, path)
    except FileExistsError:
        return False
    return True


def _sync_directory(directory: Path) -> None:
    """Make a name added or removed in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):  # some file systems cannot sync a directory
            os.fsync(fd)
    finally:
        os.close(fd)
