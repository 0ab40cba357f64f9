"""What the example servers share: mTCP's Listing 1 skeleton (one epoll
over the listener and every connection) and the program around it, which
outlives the stack: when the session ends (vfstack.StackGone: the stack
restarted, or ended it), it attaches again and listens again; and the
program around a framework that owns its loop (run_framework)."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import threading
import time

import vfstack
from vfstack.examples._api import add_arguments, listener, open_api

EPOLLIN = select.EPOLLIN


class EpollServer:
    """Accepts every pending connection, hands each event to `on_events`.

    Subclasses give `accepted(sock)` (the connection's state object, with
    a `sock` attribute, or None to keep nothing), `on_events(fd, conn,
    events)` and `summary()`.
    """

    def __init__(self, api, sock) -> None:
        self.api, self.listener = api, sock
        self.conns: dict[int, object] = {}
        self.connections = 0
        self.ep = None

    def serve_forever(self) -> None:
        """Serve on `listener` until an exception; then close it, the
        connections and the epoll (a StackGone comes from the listener's
        accept: the connections just see resets)."""
        ep = self.ep = self.api.epoll()
        listen_fd = self.listener.fileno()
        ep.register(listen_fd, EPOLLIN)
        conns = self.conns
        try:
            while True:
                for fd, events in ep.poll():
                    if fd == listen_fd:
                        self._accept_all()
                        continue
                    conn = conns.get(fd)
                    if conn is not None:
                        self.on_events(fd, conn, events)
        finally:
            for conn in conns.values():
                conn.sock.close()
            conns.clear()
            self.listener.close()
            ep.close()

    def _accept_all(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            self.connections += 1
            sock.setblocking(False)
            conn = self.accepted(sock)
            if conn is not None:
                fd = sock.fileno()
                self.conns[fd] = conn
                self.ep.register(fd, EPOLLIN)

    def drop(self, fd: int) -> None:
        conn = self.conns.pop(fd)
        self.ep.unregister(fd)
        conn.sock.close()

    def accepted(self, sock):
        raise NotImplementedError

    def on_events(self, fd: int, conn, events: int) -> None:
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError


def server_parser(name: str, doc: str, port: int, backlog: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m vfstack.examples.{name}", description=doc.split("\n\n")[0]
    )
    add_arguments(parser, app=name.split("_")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--backlog", type=int, default=backlog)
    return parser


def run(name: str, args: argparse.Namespace, make) -> None:
    """Attach (or pick the kernel), listen, serve until SIGTERM/Ctrl-C,
    detach, and say what was done. `make(api, listener)` builds the server.
    Each time the session ends, one line says so; the program attaches
    again as soon as the stack is back and serves on a new listener."""
    api = open_api(args)
    server = make(api, listener(api, args.host, args.port, args.backlog))
    try:
        while True:
            print(f"{name}: listening on {args.host}:{args.port} ({api.name})", flush=True)
            try:
                server.serve_forever()
            except vfstack.StackGone as exc:
                print(f"{name}: {exc.strerror}; attaching to {args.control} again", flush=True)
                api.reattach()
                server.listener = listener(api, args.host, args.port, args.backlog)
    except KeyboardInterrupt:
        pass
    finally:
        api.close()
        print(f"{name}: {server.summary()}", flush=True)


def run_framework(name: str, doc: str, serve) -> None:
    """The main of an example whose framework owns the loop: parse the
    common arguments and `--size`, attach (or pick the kernel), and call
    `serve(api, args, listening)`, which runs the framework until it shuts
    down and prints `listening` once it listens.

    When the stack ends the session, the framework would serve nothing,
    for ever, its listener gone: a watcher interrupts the program as
    Ctrl-C does, the framework shuts down and the program exits 1, for its
    supervisor (compose's restart policy) to start it again and attach
    anew. It looks once a second."""
    parser = server_parser(name, doc, port=8080, backlog=1024)
    parser.add_argument("--size", type=int, default=64, help="bytes GET / answers")
    args = parser.parse_args()
    api = open_api(args)
    ended = threading.Event()

    def watch() -> None:
        while not api.stack.gone:
            time.sleep(1)
        ended.set()
        print(f"{name}: the stack ended this session; exiting to be restarted", flush=True)
        os.kill(os.getpid(), signal.SIGINT)

    if api.stack is not None:
        threading.Thread(target=watch, name="session-watch", daemon=True).start()
    try:
        serve(api, args, f"{name}: listening on {args.host}:{args.port} ({api.name})")
    except KeyboardInterrupt:  # uvicorn shuts down, then raises the signal it caught again
        pass
    finally:
        api.close()
    if ended.is_set():
        sys.exit(1)
