"""A TCP echo server: every byte received is sent back; EOF from the client
is answered with EOF once everything has been echoed.

An epoll loop in the style of mTCP's Listing 1. Back-pressure: while a
client's bytes wait to go back (its send ring is full), the server stops
reading from it, so a fast sender cannot make it buffer without bound.

    python -m vfstack.examples.echo_server --control unix:///run/vfstack/vf1.sock --port 7007
"""

from __future__ import annotations

import select

from vfstack.examples._server import EpollServer, run, server_parser

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


class EchoServer(EpollServer):
    def __init__(self, api, sock) -> None:
        super().__init__(api, sock)
        self.echoed = 0
        self.scratch = bytearray(CHUNK)

    def summary(self) -> str:
        return f"{self.echoed} bytes echoed on {self.connections} connections"

    def accepted(self, sock) -> Connection:
        return Connection(sock)

    def on_events(self, fd: int, conn: Connection, events: int) -> None:
        self._service(fd, conn)  # whatever the event, _service finds out

    def _service(self, fd: int, conn: Connection) -> None:
        sock, scratch = conn.sock, self.scratch
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
            self.drop(fd)
            return
        if conn.eof and not conn.pending:
            self.drop(fd)
            return
        mask = EPOLLOUT if conn.pending else EPOLLIN  # no reading while bytes wait
        if mask != conn.mask:
            self.ep.modify(fd, mask)
            conn.mask = mask

    def _send(self, conn: Connection) -> None:
        pending = conn.pending
        sent = conn.sock.send(pending)
        self.echoed += sent
        conn.pending = pending[sent:]


def main(argv: list[str] | None = None) -> None:
    args = server_parser("echo_server", __doc__, port=7007, backlog=1024).parse_args(argv)
    run("echo_server", args, EchoServer)


if __name__ == "__main__":
    main()
