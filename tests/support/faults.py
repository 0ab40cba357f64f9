"""Faults injected into real code, for the tests of fault containment
(stackservice.faults): a real method made to raise `InjectedFault` for one
recognisable input only, everything else served as usual.

In-process, `inject(Owner, "method", when, monkeypatch.setattr)`. For a
real instance, `stackservice run` with faults injected:

    python -m tests.support.faults [--inject KIND]... run ARGS...

KIND (`FAULTS`): `frame`, an ICMP echo request whose data holds `MARK`
(`ping -p` + MARK_HEX); `event`, the diag HTTP service parsing a request for
`/fault`; `session`, a TX command of an app attached as `DOOMED_APP`;
`control`, ListConnections asked for connection id `FAULT_ID`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

MARK = b"FAULT"
MARK_HEX = MARK.hex()
FAULT_ID = 424242
DOOMED_APP = "doomed"


class InjectedFault(RuntimeError):
    """The bug a test planted."""


def inject(owner: object, name: str, when: Callable[..., bool], patch: Callable = setattr) -> None:
    """Make `owner.name` raise InjectedFault when `when(*args)` (the
    method's own arguments, `self` first) is true, and work otherwise."""
    real = getattr(owner, name)

    def faulty(*args, **kwargs):
        if when(*args, **kwargs):
            raise InjectedFault(f"injected into {name}")
        return real(*args, **kwargs)

    patch(owner, name, faulty)


def _frame() -> None:
    # The host's own methods are C calls when compiled: the fault goes into
    # the module function it calls for an echo request.
    from stackservice.net import host

    inject(host, "echo_reply", lambda request: MARK in bytes(request))


def _event() -> None:
    from stackservice import diag

    inject(diag, "_requested_size", lambda target: target == "/fault")


def _session() -> None:
    from vfstack.shm import OP_TX

    from stackservice.fastpath import commands

    inject(
        commands,
        "execute",
        lambda sockets, cmd, now: sockets.app_name == DOOMED_APP and cmd.op == OP_TX,
    )


def _control() -> None:
    from stackservice.control.requests import ControlRequests

    inject(ControlRequests, "connections", lambda _, r: r.get("connection_id") == FAULT_ID)


FAULTS = {"frame": _frame, "event": _event, "session": _session, "control": _control}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--inject", action="append", choices=sorted(FAULTS), default=[])
    args, rest = parser.parse_known_args(argv)
    for kind in args.inject:
        FAULTS[kind]()
    from stackservice.cli import main as stackservice_main

    return stackservice_main(rest)


if __name__ == "__main__":
    sys.exit(main())
