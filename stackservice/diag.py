"""Diagnostic services inside a stack instance (`--diag-services`): TCP echo
(7), discard (9) and a small HTTP responder (80), so an operator can test a
VF path with nc, curl or ab before any application attaches.

They use the engine's in-process socket interface: each listener and
connection has an owner whose `on_ready(sock, now)` the loop calls when the
socket's readiness may have changed; the owner then calls the engine's
socket methods, never blocking.
"""

from __future__ import annotations

import errno

from stackservice.tcp.engine import Listener, SocketError, TcpEngine
from stackservice.tcp.tcb import ERROR, HANGUP, Tcb

ECHO_PORT = 7
DISCARD_PORT = 9
HTTP_PORT = 80
BACKLOG = 4096
DEFAULT_BODY = 64  # `GET /` answers this many bytes (mTCP's 64 B message)
MAX_REQUEST_HEAD = 8192
MAX_BODY = 1 << 40

# Response bodies cycle through the 95 printable ASCII characters, so a
# client can check every byte: byte i of a body is PATTERN[i % 95].
PATTERN = bytes(range(32, 127))
_CHUNK = 1 << 16
_PATTERN_CHUNK = memoryview(PATTERN * (_CHUNK // len(PATTERN) + 2))


def body_bytes(offset: int, length: int) -> memoryview:
    """`length` (<= 64 KiB) body bytes starting at body offset `offset`."""
    start = offset % len(PATTERN)
    return _PATTERN_CHUNK[start : start + length]


class _Connection:
    """Base of one accepted connection's handler."""

    __slots__ = ("engine", "scratch")
    app_name = "diag"  # the owner ListConnections shows

    def __init__(self, engine: TcpEngine, scratch: memoryview) -> None:
        self.engine = engine
        self.scratch = scratch

    def on_ready(self, tcb: Tcb, now: int) -> None:
        if self.engine.readiness(tcb) & (ERROR | HANGUP):
            self.engine.close(tcb, now)
            return
        try:
            self.serve(tcb, now)
        except SocketError:
            self.engine.close(tcb, now)

    def serve(self, tcb: Tcb, now: int) -> None:
        raise NotImplementedError

    def read(self, tcb: Tcb, limit: int, now: int) -> int:
        """Bytes read into scratch; 0 when none are ready, or when the peer
        has finished sending, which every service answers by closing."""
        try:
            count = self.engine.receive_into(tcb, self.scratch[:limit], now)
        except SocketError as exc:
            if exc.errno == errno.EAGAIN:
                return 0
            raise
        if count == 0:
            self.engine.close(tcb, now)
        return count


class _Echo(_Connection):
    __slots__ = ()

    def serve(self, tcb: Tcb, now: int) -> None:
        # Read only what the send buffer can take back: a slow reader on the
        # far side closes our receive window instead of growing memory.
        while True:
            room = min(tcb.send_buffer.free(), len(self.scratch))
            if room == 0:
                return
            count = self.read(tcb, room, now)
            if not count:
                return
            self.engine.send(tcb, self.scratch[:count], now)


class _Discard(_Connection):
    __slots__ = ()

    def serve(self, tcb: Tcb, now: int) -> None:
        while self.read(tcb, len(self.scratch), now):
            pass


class _Http(_Connection):
    """HTTP/1.0 and 1.1 with keep-alive: `GET /<n>` answers n pattern bytes."""

    __slots__ = ("body_left", "body_sent", "close_after", "head", "request")

    def __init__(self, engine: TcpEngine, scratch: memoryview) -> None:
        super().__init__(engine, scratch)
        self.request = bytearray()
        self.head = b""  # response head still to send
        self.body_left = 0
        self.body_sent = 0
        self.close_after = False

    def serve(self, tcb: Tcb, now: int) -> None:
        while True:
            if not self._send_pending(tcb, now):
                return  # send buffer full: the next ACK brings us back
            if self.close_after:
                self.engine.close(tcb, now)
                return
            if self._next_request():
                continue
            count = self.read(tcb, len(self.scratch), now)
            if not count:
                return
            self.request += self.scratch[:count]

    def _send_pending(self, tcb: Tcb, now: int) -> bool:
        engine = self.engine
        if self.head:
            written = engine.send(tcb, self.head, now)
            self.head = self.head[written:]
            if self.head:
                return False
        while self.body_left:
            chunk = body_bytes(self.body_sent, min(self.body_left, _CHUNK))
            written = engine.send(tcb, chunk, now)
            self.body_sent += written
            self.body_left -= written
            if written < len(chunk):
                return False
        return True

    def _next_request(self) -> bool:
        """Parse one buffered request into a pending response. True if one
        was found (or a bad one answered), False if more bytes are needed."""
        end = self.request.find(b"\r\n\r\n")
        if end < 0:
            if len(self.request) > MAX_REQUEST_HEAD:
                self._respond(431, b"", close=True)
                return True
            return False
        head = bytes(self.request[:end]).decode("latin-1")
        del self.request[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._respond(400, b"", close=True)
            return True
        method, target, version = parts
        headers = {
            k.strip().lower(): v.strip().lower()
            for k, _, v in (line.partition(":") for line in lines[1:])
        }
        connection = headers.get("connection", "")
        keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        size = _requested_size(target)
        if method not in ("GET", "HEAD"):
            self._respond(405, b"", close=not keep_alive)
        elif size is None:
            self._respond(404, b"", close=not keep_alive)
        else:
            self._respond(
                200, b"", close=not keep_alive, body=0 if method == "HEAD" else size, length=size
            )
        return True

    def _respond(
        self, status: int, text: bytes, close: bool, body: int = 0, length: int = 0
    ) -> None:
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            431: "Request Header Fields Too Large",
        }[status]
        self.head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {length}\r\nConnection: {'close' if close else 'keep-alive'}"
            "\r\n\r\n"
        ).encode() + text
        self.body_left = body
        self.body_sent = 0
        self.close_after = close


def _requested_size(target: str) -> int | None:
    path = target.split("?", 1)[0]
    if path == "/":
        return DEFAULT_BODY
    digits = path[1:]
    if path.startswith("/") and digits.isdigit() and len(digits) <= 13:
        size = int(digits)
        return size if size <= MAX_BODY else None
    return None


class _Service:
    """Owner of one listener: accepts everything and hands each connection
    to a fresh handler."""

    __slots__ = ("engine", "handler", "listener", "scratch")
    app_name = "diag"

    def __init__(
        self, engine: TcpEngine, port: int, handler: type[_Connection], scratch: memoryview
    ) -> None:
        self.engine = engine
        self.handler = handler
        self.scratch = scratch
        self.listener = engine.listen(port, BACKLOG, owner=self)

    def on_ready(self, sock: Listener | Tcb, now: int) -> None:
        if sock is not self.listener:
            return  # a connection not accepted yet: served once accepted
        engine = self.engine
        while (tcb := engine.accept(sock)) is not None:
            tcb.owner = self.handler(engine, self.scratch)
            # Served (data may have come with the handshake) on its own
            # readiness event, in the loop's next pass: a fault in one
            # connection's handler then costs that connection, not the
            # listener and the connections behind it (StackLoop._dispatch).
            engine.notify(tcb)


class DiagServices:
    """Echo, discard and HTTP on one engine."""

    __slots__ = ("services",)

    def __init__(self, engine: TcpEngine) -> None:
        # One scratch buffer for all: handlers run one at a time in the loop.
        scratch = memoryview(bytearray(_CHUNK))
        self.services = [
            _Service(engine, ECHO_PORT, _Echo, scratch),
            _Service(engine, DISCARD_PORT, _Discard, scratch),
            _Service(engine, HTTP_PORT, _Http, scratch),
        ]


__all__ = ["DEFAULT_BODY", "PATTERN", "DiagServices", "body_bytes"]
