"""The `vfstack` admin command."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vfstack._extras import install_hint, missing_extra

if TYPE_CHECKING:
    from vfstack._control import ControlClient


def _emulate(args: argparse.Namespace) -> int:
    # Imported here: only emulate needs netlink, and the SDK alone has no
    # pyroute2 (main() then prints what to install).
    from stackservice.nic.emulate import EmulatedPort, emulate_down, emulate_up

    port = EmulatedPort(prefix=args.prefix, pf_name=args.pf)
    if args.action == "up":
        emulate_up(port, args.vfs)
    else:
        emulate_down(port)
    return 0


# --- Real VFs: `vfstack vf list` reads sysfs; `vfstack vf setup` sets the VF
# count and each VF's MAC/VLAN (or builds VMDq macvlan ports), all checked
# before anything changes, and journals what it found; `vfstack vf restore`
# puts that back.

_PF_HEADER = ("PF", "Driver", "PCI", "MAC", "VFs", "Total")
_VF_HEADER = ("VF", "Netdev", "MAC", "PCI")


def _vf_list(args: argparse.Namespace) -> int:
    # Imported here, as for emulate: apps that import the SDK skip pyroute2.
    import dataclasses

    from stackservice.nic.sriov import list_pfs

    pfs = list_pfs(args.sysfs_root)
    if args.json:
        print(json.dumps([dataclasses.asdict(pf) for pf in pfs], indent=2))
    elif not pfs:
        print(f"no SR-IOV capable interface under {args.sysfs_root}/class/net")
    else:
        print("\n\n".join("\n".join(_pf_lines(pf)) for pf in pfs))
    return 0


def _pf_lines(pf: Any) -> list[str]:
    """A PF's line, then its VFs as an indented table."""
    row = [
        _text(pf.name), _text(pf.driver or "-"), _text(pf.pci_address or "-"),
        _text(pf.mac or "-"), str(pf.num_vfs), str(pf.total_vfs),
    ]  # fmt: skip
    lines = _table(_PF_HEADER, [row], frozenset({4, 5}))
    vfs = [
        [str(vf.index), _text(vf.netdev or "-"), _text(vf.mac or "-"), _text(vf.pci_address)]
        for vf in pf.vfs
    ]
    if vfs:
        lines += ["  " + line for line in _table(_VF_HEADER, vfs, frozenset({0}))]
    return lines


def _vf_setup(args: argparse.Namespace) -> int:
    from stackservice.nic.sriov import SetupRequest, open_netlink, setup_vfs

    request = SetupRequest.parse(args.pf, args.num, args.mac_base, args.vlan, args.mode)
    with open_netlink() as netlink:
        setup_vfs(request, args.sysfs_root, netlink, journal_dir=args.journal_dir)
    return 0


def _vf_restore(args: argparse.Namespace) -> int:
    from stackservice.nic.sriov import open_netlink, parse_pf, restore_vfs

    pf = parse_pf(args.pf)
    with open_netlink() as netlink:
        restore_vfs(pf, args.sysfs_root, netlink, journal_dir=args.journal_dir)
    return 0


def _add_vf_commands(commands: argparse._SubParsersAction) -> None:
    vf = commands.add_parser(
        "vf",
        help="list, set up or restore the SR-IOV VFs (or VMDq ports) of a real port",
        description="SR-IOV VFs of real ports; VMDq ports are macvlans <pf>v<i> on a port "
        "without SR-IOV. A stack instance takes one with `stackservice run --pf PF --vf I`.",
    )
    actions = vf.add_subparsers(dest="vf_action", required=True)
    sysfs = argparse.ArgumentParser(add_help=False)
    sysfs.add_argument(
        "--sysfs-root", default="/sys", metavar="DIR", help="where sysfs is (default /sys)"
    )
    listing = actions.add_parser(
        "list", parents=[sysfs], help="SR-IOV ports and their VFs (netdev, MAC, PCI address)"
    )
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    listing.set_defaults(run=_vf_list)
    journal = argparse.ArgumentParser(add_help=False)
    journal.add_argument(
        "--journal-dir",
        metavar="DIR",
        help="where setup records what it changes, one file a PF "
        "(default $VFSTACK_VF_JOURNAL_DIR, else /run/vfstack/vf-setup)",
    )
    setup = actions.add_parser(
        "setup",
        parents=[sysfs, journal],
        help="enable N VFs on a PF, VF i with MAC BASE+i and a VLAN; all or nothing",
    )
    setup.add_argument("--pf", required=True, help="the PF netdev, e.g. ens1f0")
    setup.add_argument("--num", required=True, metavar="N", help="VFs to enable (0: none)")
    setup.add_argument("--mac-base", metavar="MAC", help="VF i gets MAC + i (default: keep)")
    setup.add_argument(
        "--vlan", metavar="ID", help="VLAN 1..4094 the NIC tags each VF with (0: untagged)"
    )
    setup.add_argument(
        "--mode",
        choices=["sriov", "vmdq"],
        default="sriov",
        help="sriov (default): real VFs; vmdq: macvlan ports <pf>v<i> on a port without SR-IOV",
    )
    setup.set_defaults(run=_vf_setup)
    restore = actions.add_parser(
        "restore",
        parents=[sysfs, journal],
        help="put back what setup changed on a PF (VF count, MACs, VLANs, trust, ...)",
        description="Put a PF back as the first `vfstack vf setup` since the last restore "
        "found it, from the journal that setup wrote; the journal is removed once "
        "everything is back, and kept (run again) when something could not be.",
    )
    restore.add_argument("--pf", required=True, help="the PF netdev, e.g. ens1f0")
    restore.set_defaults(run=_vf_restore)


# --- Operator commands over the control API: status, conns, stats, sessions.
# Each command is a fetch (one RPC) and a render (reply -> lines); --json
# prints the reply itself, --watch repeats it (stats: the WatchStats stream).

Fetch = Callable[["ControlClient", argparse.Namespace], Any]
Render = Callable[[Any, argparse.Namespace], list[str]]

_CONN_HEADER = (
    "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port",
    "cwnd", "srtt(ms)", "rto(ms)", "retrans", "owner", "id",
)  # fmt: skip
_CONN_NUMERIC = frozenset({1, 2, 5, 6, 7, 8, 10})  # right-aligned columns
_SESSION_HEADER = ("Session", "App", "UID", "PID", "Attached for", "Sockets")


def _text(value: str) -> str:
    """A server string made safe for one table cell or line."""
    return "".join(c if c.isprintable() else "?" for c in value)


def _duration(ms: int) -> str:
    seconds = ms // 1000
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours:02}h {minutes:02}m {seconds:02}s"
    if hours:
        return f"{hours}h {minutes:02}m {seconds:02}s"
    if minutes:
        return f"{minutes}m {seconds:02}s"
    return f"{seconds}s"


def _ms(us: int) -> str:
    """Microseconds as milliseconds: 200, 200.5, 0.125."""
    return f"{us / 1000:.3f}".rstrip("0").rstrip(".")


def _address(ip: str, port: int) -> str:
    host = _text(ip) or "*"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port or '*'}"


def _clock(timestamp_ms: int) -> str:
    when = timestamp_ms / 1000 if timestamp_ms else time.time()
    return datetime.datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S")


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int]
) -> list[str]:
    """Columns as wide as their widest cell, two spaces apart."""
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _status_lines(info: Any, args: argparse.Namespace) -> list[str]:
    rows = [
        ("name", info.name),
        ("iface", info.iface),
        ("mac", info.mac),
        ("ip", info.ip),
        ("gateway", info.gateway or "none"),
        ("mode", info.mode),
        ("pf", info.pf or "unknown"),
        ("vf", str(info.vf_index) if info.vf_index >= 0 else "none"),
        ("workers", str(info.workers)),
        ("version", info.version),
        ("build", info.build),
        ("uptime", _duration(info.uptime_ms)),
        ("congestion control", info.congestion_control),
        ("diag services", "on" if info.diag_services else "off"),
    ]
    width = max(len(key) for key, _ in rows) + 1
    return [f"{key + ':':<{width}} {_text(value) or '-'}" for key, value in rows]


def _conn_row(conn: Any) -> list[str]:
    listener = conn.state == "LISTEN"
    if listener:
        peer, tcp = "*:*", ["-", "-", "-", "-"]
    else:
        peer = _address(conn.remote_ip, conn.remote_port) if conn.remote_ip else "*:*"
        srtt = f"{conn.srtt_us / 1000:.3f}" if conn.srtt_us else "-"
        tcp = [str(conn.cwnd), srtt, _ms(conn.rto_us), str(conn.retransmits)]
    return [
        _text(conn.state), str(conn.receive_queue), str(conn.send_queue),
        _address(conn.local_ip, conn.local_port), peer, *tcp,
        _text(conn.owner) or "-", str(conn.connection_id),
    ]  # fmt: skip


def _table_by_worker(header, rows: list[list[str]], numeric: frozenset, items) -> list[str]:
    """`_table`, with a worker column when the rows span an instance's
    workers (each item's `worker`; all 0 with one)."""
    if any(item.worker for item in items):
        header, numeric = (*header, "worker"), numeric | {len(header)}
        rows = [[*row, str(item.worker)] for row, item in zip(rows, items, strict=True)]
    return _table(header, rows, numeric)


def _conns_lines(reply: Any, args: argparse.Namespace) -> list[str]:
    rows = [_conn_row(c) for c in reply.connections]
    lines = _table_by_worker(_CONN_HEADER, rows, _CONN_NUMERIC, reply.connections)
    if reply.total > len(reply.connections):
        last = reply.connections[-1].connection_id if reply.connections else 0
        lines.append(
            f"({len(reply.connections)} of {reply.total} sockets shown; the next: --after {last})"
        )
    return lines


def _counter_lines(stats: Any, zeros: bool, sign: str = "") -> list[str]:
    """`netstat -s` style: a line per group, its counters indented under it."""
    lines = []
    for group in stats.groups:
        shown = [c for c in group.counters if zeros or c.value]
        counters = [(sign + str(c.value), _text(c.name)) for c in shown]
        if not counters:
            continue
        width = max(len(value) for value, _ in counters)
        lines.append(f"{_text(group.name)}:")
        lines.extend(f"    {value:>{width}} {name}" for value, name in counters)
    return lines


def _stats_lines(stats: Any, args: argparse.Namespace) -> list[str]:
    return _counter_lines(stats, zeros=args.all) or ["all counters are zero (--all lists them)"]


def _sessions_lines(reply: Any, args: argparse.Namespace) -> list[str]:
    if not reply.sessions:
        return ["no sessions"]
    rows = [
        [
            str(s.session_id),
            _text(s.app) or "-",
            str(s.uid),
            str(s.pid),
            _duration(s.attached_ms),
            str(s.sockets),
        ]
        for s in reply.sessions
    ]
    return _table_by_worker(_SESSION_HEADER, rows, frozenset({0, 2, 3, 5}), reply.sessions)


def _json(message: Any, one_line: bool) -> str:
    from google.protobuf.json_format import MessageToDict

    data = MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,  # counters as numbers, not strings
    )
    return json.dumps(data) if one_line else json.dumps(data, indent=2)


def _watch_poll(client: ControlClient, args: argparse.Namespace) -> int:
    """Any command under --watch: fetch again every interval (like watch(1))."""
    first = True
    while True:
        reply = args.fetch(client, args)
        if args.json:
            print(_json(reply, one_line=True), flush=True)
        else:
            if not first:
                print()
            print(f"{_clock(0)}  every {args.watch:g} s")
            print("\n".join(args.render(reply, args)), flush=True)
        first = False
        time.sleep(args.watch)


def _watch_stats(client: ControlClient, args: argparse.Namespace) -> int:
    """stats --watch: the WatchStats stream, then the changes it reports."""
    first, previous_ms = True, 0
    for stats in client.watch_stats(round(args.watch * 1000)):
        if args.json:
            print(_json(stats, one_line=True), flush=True)
            continue
        if not first:
            print()
        if stats.delta:
            known = previous_ms and stats.timestamp_ms > previous_ms
            span = (stats.timestamp_ms - previous_ms) / 1000 if known else args.watch
            print(f"{_clock(stats.timestamp_ms)}  changes over {span:.1f} s")
            lines = _counter_lines(stats, zeros=False, sign="+") or ["    no change"]
        else:
            print(f"{_clock(stats.timestamp_ms)}  totals")
            lines = _stats_lines(stats, args)
        print("\n".join(lines), flush=True)
        first, previous_ms = False, stats.timestamp_ms
    return 0


def _run_control(args: argparse.Namespace) -> int:
    # Imported here: emulate needs no gRPC.
    from vfstack._control import ControlClient, ControlError, resolve_control_url

    try:
        client = ControlClient(resolve_control_url(args.control), timeout=args.timeout)
    except ValueError as exc:  # a usage error, told in one line
        print(f"vfstack {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        with client:
            if args.watch is not None:
                return args.watch_with(client, args)
            reply = args.fetch(client, args)
            text = (
                _json(reply, one_line=False) if args.json else "\n".join(args.render(reply, args))
            )
            print(text)
            return 0
    except ControlError as exc:
        print(f"vfstack {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0 if args.watch is not None else 130
    except BrokenPipeError:  # e.g. `vfstack stats --watch | head`
        _discard_stdout()
        return 1


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the exit flush cannot fail again."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _bounded_seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be {low:g}..{high:g} seconds, not {text}")
        return value

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _state_name(text: str) -> str:
    return text.strip().upper().replace("-", "_")  # time-wait -> TIME_WAIT


def _control_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--control",
        metavar="URL",
        help="the instance's control API: unix:///PATH.sock, tcp://HOST:PORT or HOST:PORT "
        "(default $VFSTACK_CONTROL)",
    )
    options.add_argument("--json", action="store_true", help="print the reply as JSON")
    options.add_argument(
        "--watch",
        nargs="?",
        const=1.0,
        type=_bounded_seconds(0.01, 60),
        metavar="SECONDS",
        help="repeat every SECONDS (default 1) until Ctrl-C; JSON: one object a line",
    )
    options.add_argument(
        "--timeout",
        type=_bounded_seconds(0.001, 3600),
        default=5.0,
        metavar="SECONDS",
        help="deadline of each call (default 5)",
    )
    return options


def _add_control_commands(commands: argparse._SubParsersAction) -> None:
    options = _control_options()
    specs: list[tuple[str, str, Fetch, Render]] = [
        ("status", "identity and configuration of an instance",
         lambda client, args: client.info(), _status_lines),
        ("conns", "sockets of an instance, like ss -tan",
         lambda client, args: client.connections(args.id, args.state, args.limit, args.after),
         _conns_lines),
        ("stats", "counters of an instance, like netstat -s; --watch shows changes",
         lambda client, args: client.stats(), _stats_lines),
        ("sessions", "applications attached to an instance",
         lambda client, args: client.sessions(), _sessions_lines),
    ]  # fmt: skip
    for name, summary, fetch, render in specs:
        command = commands.add_parser(name, parents=[options], help=summary, description=summary)
        command.set_defaults(run=_run_control, fetch=fetch, render=render, watch_with=_watch_poll)
    conns = commands.choices["conns"]
    conns.add_argument(
        "--state",
        action="append",
        default=[],
        type=_state_name,
        help="only sockets in this state (RFC 9293 name, e.g. ESTABLISHED); repeatable",
    )
    conns.add_argument("--id", type=_positive_int, default=0, help="only this connection")
    conns.add_argument(
        "--limit", type=_positive_int, default=0, help="at most N sockets (the server's page: 500)"
    )
    conns.add_argument(
        "--after", type=_positive_int, default=0, help="only sockets whose id is above this"
    )
    stats = commands.choices["stats"]
    stats.add_argument("--all", action="store_true", help="also list counters that are zero")
    stats.set_defaults(watch_with=_watch_stats)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vfstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    emulate = commands.add_parser(
        "emulate",
        help="build or remove the emulated SR-IOV port (hosts without SR-IOV)",
        description="An emulated port: namespace <prefix>stack-peer holding the kernel peer "
        "<prefix>wire 198.18.0.1/24, PF <prefix>pf0, macvlan VFs <pf>v0..N-1.",
    )
    emulate.add_argument("action", choices=["up", "down"])
    emulate.add_argument("--vfs", type=int, default=2, help="number of VFs (default 2)")
    emulate.add_argument("--pf", help="PF interface name (default <prefix>pf0)")
    emulate.add_argument(
        "--prefix", default="vf", help="name prefix, for private copies (default vf)"
    )
    emulate.set_defaults(run=_emulate)
    _add_vf_commands(commands)
    _add_control_commands(commands)
    # vfstack.deploy imports only the standard library here; the docker
    # package is imported when a deploy command runs.
    from vfstack.deploy import add_deploy_command

    add_deploy_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"vfstack {args.command}: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        # An operator command (emulate, vf, deploy) on the SDK alone: its
        # stackservice import found no pyroute2 & co. One line, not a traceback.
        extra = missing_extra(exc, "deploy" if args.command == "deploy" else "stack")
        if extra is None:
            raise
        print(install_hint(f"vfstack {args.command}", exc, extra), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
