"""A small HTTP/1.0 and 1.1 server: `GET /` answers `--size` bytes.

One epoll loop in the style of mTCP's Listing 1: accept every pending
connection, read every readable socket, answer every complete request,
and wait for EPOLLOUT only when a response did not fit at once.
Keep-alive follows the request: HTTP/1.1 unless `Connection: close`,
HTTP/1.0 only with `Connection: keep-alive` (what `ab -k` sends).
With `--rst` it answers nothing: every connection is reset (SO_LINGER 0)
as soon as it is accepted, as in mTCP's accept benchmark (`python -m bench`).

    python -m vfstack.examples.http_server --control unix:///run/vfstack/vf0.sock --port 8080
    python -m vfstack.examples.http_server --kernel --port 8080     # the same on Linux sockets
"""

from __future__ import annotations

import select
import socket
import struct

from vfstack.examples._server import EpollServer, run, server_parser

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP
MAX_HEAD = 16384  # a request head longer than this is refused
_PATTERN = bytes(range(32, 127))


def body(size: int) -> bytes:
    """`size` printable bytes, the pattern the diag HTTP service sends too."""
    return (_PATTERN * (size // len(_PATTERN) + 1))[:size]


def response(version: bytes, keep_alive: bool, payload: bytes, status: bytes = b"200 OK") -> bytes:
    head = (
        b"%s %s\r\nServer: vfstack-example\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\nConnection: %s\r\n\r\n"
        % (version, status, len(payload), b"keep-alive" if keep_alive else b"close")
    )
    return head + payload


def wants_keep_alive(head: bytes) -> bool:
    lowered = head.lower()
    if head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.1"):
        return b"\r\nconnection: close" not in lowered
    return b"\r\nconnection: keep-alive" in lowered


class Connection:
    __slots__ = ("sock", "inbox", "outbox", "close_after", "waiting")

    def __init__(self, sock) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = b""
        self.close_after = False
        self.waiting = False  # registered for EPOLLOUT: a response did not fit


LINGER_ZERO = struct.pack("ii", 1, 0)  # struct linger: close() sends a RST


class HttpServer(EpollServer):
    def __init__(self, api, sock, size: int, rst: bool = False) -> None:
        super().__init__(api, sock)
        self.rst = rst
        payload = body(size)
        # Every answer this server gives, built once.
        self.answers = {
            (version, keep): response(version, keep, payload)
            for version in (b"HTTP/1.0", b"HTTP/1.1")
            for keep in (False, True)
        }
        self.refusal = response(b"HTTP/1.1", False, b"bad request\n", b"400 Bad Request")
        self.requests = 0
        self.scratch = bytearray(65536)
        self.view = memoryview(self.scratch)

    def summary(self) -> str:
        resets = " (all reset)" if self.rst else ""
        return f"{self.requests} requests on {self.connections} connections{resets}"

    def accepted(self, sock):
        if self.rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
            sock.close()
            return None
        return Connection(sock)

    def on_events(self, fd: int, conn: Connection, events: int) -> None:
        if events & (EPOLLIN | EPOLLERR | EPOLLHUP):
            self._read(fd, conn)
        elif events & EPOLLOUT:
            self._flush(fd, conn)

    def _read(self, fd: int, conn: Connection) -> None:
        sock, scratch, view = conn.sock, self.scratch, self.view
        while True:
            try:
                n = sock.recv_into(scratch)
            except BlockingIOError:
                break
            except OSError:  # reset by the peer
                self.drop(fd)
                return
            if n == 0:
                self.drop(fd)
                return
            conn.inbox += view[:n]
        self._answer(conn)
        self._flush(fd, conn)

    def _answer(self, conn: Connection) -> None:
        inbox = conn.inbox
        answers = []
        while not conn.close_after:
            end = inbox.find(b"\r\n\r\n")
            if end < 0:
                if len(inbox) > MAX_HEAD:
                    answers.append(self.refusal)
                    conn.close_after = True
                break
            head = bytes(inbox[:end])
            del inbox[: end + 4]
            line = head.split(b"\r\n", 1)[0].split()
            if len(line) != 3 or line[0] not in (b"GET", b"HEAD") or line[2][:5] != b"HTTP/":
                answers.append(self.refusal)
                conn.close_after = True
                break
            version = b"HTTP/1.1" if line[2] == b"HTTP/1.1" else b"HTTP/1.0"
            keep = wants_keep_alive(head)
            answers.append(self.answers[version, keep])
            self.requests += 1
            if not keep:
                conn.close_after = True
        if answers:
            joined = b"".join(answers)
            conn.outbox = bytes(conn.outbox) + joined if conn.outbox else joined

    def _flush(self, fd: int, conn: Connection) -> None:
        outbox = conn.outbox
        if outbox:
            try:
                sent = conn.sock.send(outbox)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.drop(fd)
                return
            conn.outbox = outbox = memoryview(outbox)[sent:] if sent < len(outbox) else b""
            if outbox:
                if not conn.waiting:
                    self.ep.modify(fd, EPOLLIN | EPOLLOUT)
                    conn.waiting = True
                return
            if conn.waiting:
                self.ep.modify(fd, EPOLLIN)
                conn.waiting = False
        if conn.close_after:
            self.drop(fd)


def main(argv: list[str] | None = None) -> None:
    parser = server_parser("http_server", __doc__, port=8080, backlog=4096)
    parser.add_argument("--size", type=int, default=64, help="bytes in every response body")
    parser.add_argument("--rst", action="store_true", help="accept and reset every connection")
    args = parser.parse_args(argv)
    run("http_server", args, lambda api, sock: HttpServer(api, sock, args.size, args.rst))


if __name__ == "__main__":
    main()
