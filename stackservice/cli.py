"""`stackservice run`: one stack instance on one VF, in the foreground.

The VF is `--iface NETDEV`, or `--pf PF --vf INDEX`: the netdev of that
SR-IOV VF (or the VMDq/emulated port PFv<INDEX>), found in sysfs.

Every flag can also come from the environment as VFSTACK_<FLAG> (for
containers): `--iface` from VFSTACK_IFACE, `--ip` from VFSTACK_IP, ...
A flag on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vfstack._extras import install_hint, missing_extra

from stackservice.config import (
    DEFAULT_BUSY_POLL_US,
    DEFAULT_CONGESTION_CONTROL,
    DEFAULT_LIMITS,
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_RUN_DIR,
    DEFAULT_TCP_MEMORY_MIB,
    DEFAULT_TIME_WAIT_MS,
    WORKERS,
    InstanceConfig,
    choose_iface,
)
from stackservice.limits import MIB


def _env(flag: str) -> str | None:
    return os.environ.get("VFSTACK_" + flag.upper().replace("-", "_")) or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stackservice",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one stack instance in the foreground")
    options = [
        ("iface", "the VF netdev (or emulated VF) the instance owns; or give --pf and --vf"),
        ("pf", "with --vf, instead of --iface: the PF whose VF the instance owns"),
        ("vf", "with --pf: the VF's index (its netdev is found in sysfs)"),
        ("ip", "the instance's IPv4 address with prefix, e.g. 198.18.0.10/24"),
        ("gateway", "next hop for off-link destinations"),
        ("mac", "MAC address to set on the interface (default: keep its own)"),
        ("name", "instance name (default: the interface name)"),
        ("run-dir", f"directory for the instance's shared files (default {DEFAULT_RUN_DIR})"),
        (
            "busy-poll-us",
            "keep polling this long after traffic before sleeping "
            f"(default {DEFAULT_BUSY_POLL_US})",
        ),
        (
            "congestion-control",
            f"cubic or newreno (default {DEFAULT_CONGESTION_CONTROL}); "
            "sockets may choose their own",
        ),
        (
            "time-wait-ms",
            f"how long closed connections stay in TIME-WAIT (default {DEFAULT_TIME_WAIT_MS})",
        ),
        (
            "tcp-memory-mib",
            "all connections' send and receive buffers together at most; out-of-order "
            f"data stops growing them at 3/4 of it (default {DEFAULT_TCP_MEMORY_MIB})",
        ),
        ("control", "control API socket, unix:///PATH or none (default RUN_DIR/NAME.sock)"),
        ("control-tcp", "also serve the control API on HOST:PORT"),
        ("metrics-port", "serve Prometheus metrics on METRICS_ADDRESS:PORT/metrics"),
        (
            "metrics-address",
            f"the address /metrics listens on (default {DEFAULT_METRICS_ADDRESS}; "
            "0.0.0.0 for every one)",
        ),
        (
            "workers",
            f"packet-loop processes, each with its share of the flows (default {WORKERS}; "
            "more than 1: no SDK sessions yet)",
        ),
        ("cpus", "CPUs to pin the workers to, e.g. 0,1 (worker i on the i-th, round robin)"),
        ("app-group", "group (name or gid) whose members' apps may attach (default: root only)"),
        (
            "shm-limit-mib",
            "shared memory committed to all sessions at most "
            f"(default {DEFAULT_LIMITS.shm_bytes // MIB})",
        ),
        (
            "app-shm-limit-mib",
            "shared memory committed to one app's (uid's) sessions at most; root is held "
            f"to the instance's only (default {DEFAULT_LIMITS.app_shm_bytes // MIB})",
        ),
        ("max-sessions", f"sessions attached at once (default {DEFAULT_LIMITS.sessions})"),
        (
            "max-app-sessions",
            "one app's (uid's) sessions attached at once; root is held to --max-sessions "
            f"only (default {DEFAULT_LIMITS.app_sessions})",
        ),
        (
            "attach-timeout-ms",
            "how long an attached app has to take its session's descriptors "
            f"(default {DEFAULT_LIMITS.attach_timeout_ms})",
        ),
        (
            "privileged-port-uids",
            "comma-separated uids that may, besides root, listen on ports below 1024",
        ),
        (
            "port-reserve-ms",
            "how long a port an app listened on stays its uid's after its session ends "
            f"(default {DEFAULT_LIMITS.port_reserve_ms}; 0: not at all)",
        ),
    ]
    for flag, help_text in options:
        default = _env(flag)
        # --iface or --pf/--vf: main() checks that exactly one way is given.
        required = flag == "ip" and default is None
        run.add_argument(
            f"--{flag}",
            default=default,
            required=required,
            help=f"{help_text} [env VFSTACK_{flag.upper().replace('-', '_')}]",
        )
    run.add_argument(
        "--diag-services",
        action="store_true",
        default=_env("diag-services") in ("1", "true", "yes"),
        help="serve TCP echo (7), discard (9) and HTTP (80, GET /<n>) from inside the "
        "instance [env VFSTACK_DIAG_SERVICES=1]",
    )
    run.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=_env("strict") in ("1", "true", "yes"),
        help="exit on an internal error (a bug) instead of containing it: counted in "
        "vfstack_internal_errors_total, logged, the instance serving on; for tests "
        "[env VFSTACK_STRICT=1]",
    )
    return parser


def _vf_netdev(pf: str, vf: int) -> str:
    """The netdev of VF `vf` of `pf`, from sysfs (SR-IOV VF or VMDq port)."""
    from stackservice.nic.sriov import resolve_vf_netdev

    return resolve_vf_netdev(pf, vf)


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except ModuleNotFoundError as exc:
        # `pip install vfstack` (the SDK alone) installs this command too,
        # without pyroute2 & co.: say what to install, not a traceback.
        extra = missing_extra(exc)
        if extra is None:
            raise
        print(install_hint("stackservice", exc, extra), file=sys.stderr)
        return 1


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        iface = choose_iface(args.iface, args.pf, args.vf, _vf_netdev)
        given = {  # flags not given keep InstanceConfig.build's defaults
            flag: value
            for flag, value in (
                ("gateway", args.gateway),
                ("mac", args.mac),
                ("name", args.name),
                ("run_dir", args.run_dir),
                ("busy_poll_us", args.busy_poll_us),
                ("congestion_control", args.congestion_control),
                ("time_wait_ms", args.time_wait_ms),
                ("tcp_memory_mib", args.tcp_memory_mib),
                ("control", args.control),
                ("control_tcp", args.control_tcp),
                ("metrics_port", args.metrics_port),
                ("metrics_address", args.metrics_address),
                ("workers", args.workers),
                ("cpus", args.cpus),
                ("app_group", args.app_group),
                ("shm_limit_mib", args.shm_limit_mib),
                ("app_shm_limit_mib", args.app_shm_limit_mib),
                ("max_sessions", args.max_sessions),
                ("max_app_sessions", args.max_app_sessions),
                ("attach_timeout_ms", args.attach_timeout_ms),
                ("privileged_port_uids", args.privileged_port_uids),
                ("port_reserve_ms", args.port_reserve_ms),
            )
            if value is not None
        }
        config = InstanceConfig.build(
            iface=iface,
            ip=args.ip,
            diag_services=args.diag_services,
            strict=args.strict,
            **given,
        )
    except ValueError as exc:
        print(f"stackservice: {exc}", file=sys.stderr)
        return 2
    # Contained faults and ended sessions are logged on stderr, named like
    # the instance's other lines.
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s stackservice {config.name}: %(levelname)s %(message)s",
    )
    # Imported after validation so `--help` and bad flags need no netlink.
    from stackservice.instance import run_instance

    return run_instance(config)


if __name__ == "__main__":
    sys.exit(main())
