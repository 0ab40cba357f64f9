"""A TCP echo server: every byte received is sent back; EOF from the client
is answered with EOF once everything has been echoed.

An epoll loop in the style of mTCP's Listing 1. Back-pressure: while a
client's bytes wait to go back (its send ring is full), the server stops
reading from it, so a fast sender cannot make it buffer without bound.

    python -m vfstack.examples.echo_server --control unix:///run/vfstack/vf1.sock --port 7007
"""

from __future__ import annotations

import argparse
import select

from vfstack.examples._api import add_arguments, listener, open_api

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
CHUNK = 65536


class Connection:
    __slots__ = ("sock", "pending", "eof", "mask")

    def __init__(self, sock) -> None:
        self.sock = sock
        self.pending = b""  # received, not yet sent back
        self.eof = False
        self.mask = EPOLLIN  # what it is registered for


class EchoServer:
    def __init__(self, api, sock) -> None:
        self.api, self.listener = api, sock
        self.connections = 0
        self.echoed = 0

    def serve_forever(self) -> None:
        ep = self.api.epoll()
        listen_fd = self.listener.fileno()
        ep.register(listen_fd, EPOLLIN)
        conns: dict[int, Connection] = {}
        scratch = bytearray(CHUNK)
        try:
            while True:
                for fd, _ in ep.poll():  # whatever the event, service() finds out
                    if fd == listen_fd:
                        self._accept_all(ep, conns)
                    elif fd in conns:
                        self._service(ep, conns, fd, conns[fd], scratch)
        finally:
            for conn in conns.values():
                conn.sock.close()
            ep.close()

    def _accept_all(self, ep, conns: dict) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            conns[sock.fileno()] = Connection(sock)
            ep.register(sock.fileno(), EPOLLIN)
            self.connections += 1

    def _service(self, ep, conns: dict, fd: int, conn: Connection, scratch: bytearray) -> None:
        sock = conn.sock
        try:
            while not conn.pending and not conn.eof:
                n = sock.recv_into(scratch)
                if n == 0:
                    conn.eof = True
                    break
                conn.pending = bytes(scratch[:n])
                self._send(conn)
            if conn.pending:
                self._send(conn)
        except BlockingIOError:
            pass
        except OSError:  # reset by the client
            self._drop(ep, conns, fd)
            return
        if conn.eof and not conn.pending:
            self._drop(ep, conns, fd)
            return
        mask = EPOLLOUT if conn.pending else EPOLLIN  # no reading while bytes wait
        if mask != conn.mask:
            ep.modify(fd, mask)
            conn.mask = mask

    def _send(self, conn: Connection) -> None:
        pending = conn.pending
        sent = conn.sock.send(pending)
        self.echoed += sent
        conn.pending = pending[sent:]

    def _drop(self, ep, conns: dict, fd: int) -> None:
        conn = conns.pop(fd)
        ep.unregister(fd)
        conn.sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vfstack.examples.echo_server", description=__doc__.split("\n\n")[0]
    )
    add_arguments(parser, app="echo")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=7007)
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args(argv)
    api = open_api(args)
    server = EchoServer(api, listener(api, args.host, args.port, args.backlog))
    print(f"echo_server: listening on {args.host}:{args.port} ({api.name})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        api.close()
        print(
            f"echo_server: {server.echoed} bytes echoed on {server.connections} connections",
            flush=True,
        )


if __name__ == "__main__":
    main()
