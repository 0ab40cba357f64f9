"""The one switch between vfstack and kernel sockets the examples share.

An `Api` has `socket()` and `epoll()` with Python's signatures; with
`--kernel` they are `socket.socket` and `select.epoll`, otherwise the
`Stack` attached at `--control`. Everything after that is one code path,
but for `reattach()`, after the stack ended the session (vfstack.StackGone).
"""

from __future__ import annotations

import argparse
import math
import os
import select
import signal
import socket
import sys

import vfstack

DEFAULT_CONTROL = "unix:///run/vfstack/vf0.sock"
_ATTACH_ERRORS = (OSError, vfstack.ControlError, ValueError)


class Api:
    def __init__(self, args: argparse.Namespace) -> None:
        self.kernel = args.kernel
        self.control, self.app = args.control, args.app
        self.stack = None
        if self.kernel:
            self.socket = socket.socket
            self.epoll = select.epoll
            self.name = "kernel"
        else:
            self._attach(wait=0.0)

    def _attach(self, wait: float) -> None:
        self.stack = vfstack.connect(self.control, app=self.app, wait=wait)
        self.socket = self.stack.socket
        self.epoll = self.stack.epoll
        self.name = f"vfstack session {self.stack.session_id}"

    def reattach(self) -> None:
        """A new session once the stack is back (vfstack.connect retries,
        pausing at most a second), after the last one ended."""
        self.stack.close()
        try:
            self._attach(wait=math.inf)
        except _ATTACH_ERRORS as exc:
            sys.exit(f"cannot attach to {self.control} again: {exc}")

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()


def add_arguments(parser: argparse.ArgumentParser, app: str) -> None:
    parser.add_argument(
        "--control",
        default=os.environ.get("VFSTACK_CONTROL", DEFAULT_CONTROL),
        help="the stack instance's control API (env VFSTACK_CONTROL; default %(default)s)",
    )
    parser.add_argument(
        "--kernel", action="store_true", help="use Linux kernel sockets instead of vfstack"
    )
    parser.add_argument("--app", default=app, help="session name shown in metrics")


def open_api(args: argparse.Namespace) -> Api:
    """Attach (or pick the kernel), and make SIGTERM end the program like
    Ctrl-C, so the session is detached cleanly under `docker stop`."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return Api(args)
    except _ATTACH_ERRORS as exc:
        sys.exit(f"cannot attach to {args.control}: {exc}")


def listener(api: Api, host: str, port: int, backlog: int):
    """A non-blocking listening socket."""
    sock = api.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock
