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
Before its first change, setup records what it found in a journal;
`restore_vfs` puts that back.

The modules, by seam:

- ``_discovery``: sysfs, read only (PFs, VFs, a VF's netdev).
- ``_mac``, ``_netlink``: MAC addresses; VF settings requests, what a PF
  reports, and `Netlink`, the one object that talks to the kernel.
- ``_changes``: the changes (VF count, netlink steps) and their undo.
- ``_journal``: what setup found, in a file per PF, for `vfstack vf restore`.
- ``_sriov``, ``_vmdq``: the two modes, each checked, set up and restored.
- ``_args``: the commands' flags, checked; ``_commands``: their entry points.
"""

from ._args import MODES, SetupRequest, parse_count, parse_pf, parse_vlan
from ._changes import Issue, LinkStep, UndoLog, run_all, run_steps, set_num_vfs
from ._commands import restore_vfs, setup_vfs
from ._discovery import (
    MAX_IFNAME,
    SYSFS_ROOT,
    PhysicalFunction,
    VirtualFunction,
    list_pfs,
    read_pf,
    resolve_vf_netdev,
)
from ._errors import VfError, VfSetupError
from ._journal import (
    JOURNAL_DIR,
    JOURNAL_DIR_ENV,
    Journal,
    JournalStore,
    PortState,
    SriovState,
    VmdqState,
    resolve_journal_dir,
)
from ._mac import check_mac_clashes, mac_sequence, parse_mac
from ._netlink import (
    LINK_STATES,
    MAX_QOS,
    MAX_VLAN,
    Netlink,
    VfSettings,
    VmdqPort,
    open_netlink,
    parse_vf_info_list,
    settings_change,
    vf_request,
)
from ._vmdq import MAX_VMDQ_PORTS, link_set_request, macvlan_request, vmdq_port_name

__all__ = [
    "JOURNAL_DIR",
    "JOURNAL_DIR_ENV",
    "LINK_STATES",
    "MAX_IFNAME",
    "MAX_QOS",
    "MAX_VLAN",
    "MAX_VMDQ_PORTS",
    "MODES",
    "SYSFS_ROOT",
    "Issue",
    "Journal",
    "JournalStore",
    "LinkStep",
    "Netlink",
    "PhysicalFunction",
    "PortState",
    "SetupRequest",
    "SriovState",
    "UndoLog",
    "VfError",
    "VfSettings",
    "VfSetupError",
    "VirtualFunction",
    "VmdqPort",
    "VmdqState",
    "check_mac_clashes",
    "link_set_request",
    "list_pfs",
    "mac_sequence",
    "macvlan_request",
    "open_netlink",
    "parse_count",
    "parse_mac",
    "parse_pf",
    "parse_vf_info_list",
    "parse_vlan",
    "read_pf",
    "resolve_journal_dir",
    "resolve_vf_netdev",
    "restore_vfs",
    "run_all",
    "run_steps",
    "set_num_vfs",
    "settings_change",
    "setup_vfs",
    "vf_request",
    "vmdq_port_name",
]
