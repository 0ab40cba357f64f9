"""The `vfstack` admin command."""

from __future__ import annotations

import argparse
import sys


def _emulate(args: argparse.Namespace) -> int:
    # Imported here: only emulate needs netlink, and apps that import the
    # SDK should not pay for pyroute2.
    from stackservice.nic.emulate import EmulatedPort, emulate_down, emulate_up

    port = EmulatedPort(prefix=args.prefix, pf_name=args.pf)
    if args.action == "up":
        emulate_up(port, args.vfs)
    else:
        emulate_down(port)
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"vfstack {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
