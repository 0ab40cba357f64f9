"""The link between a stack instance's packet loop and its control process.

One AF_UNIX stream socket pair. Frames are a 4-byte big-endian length and a
UTF-8 JSON object. The control process sends requests `{"id", "op", ...}`;
the loop answers `{"id", ...}` and sends events `{"event": "ready"}` /
`{"event": "stopping"}` unprompted. The loop never blocks waiting for the
control process: it reads only when its poller says the socket is readable,
and a reply that cannot be written within a short bound is dropped (the
control process then times out its request). A request whose handler
fails with an unexpected exception (a bug) is answered `{"error":
"internal"}` (INTERNAL to the gRPC caller) and contained by the loop's
`Containment` (site CONTROL); the next request is served as usual.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable

from stackservice.faults import Containment, FaultSite

_LENGTH = struct.Struct("!I")
MAX_FRAME = 64 << 20  # a ListConnections reply for ~200k sockets
_REPLY_SEND_TIMEOUT = 1.0  # seconds the loop may spend writing one reply

Handler = Callable[[dict], dict]


def encode(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _LENGTH.pack(len(body)) + body


class FrameReader:
    """Reassembles frames from stream chunks."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[dict]:
        """Frames completed by `chunk`. Raises ValueError on a bad frame."""
        buffer = self._buffer
        buffer += chunk
        messages = []
        while len(buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer)
            if length > MAX_FRAME:
                raise ValueError("control link frame too large")
            end = _LENGTH.size + length
            if len(buffer) < end:
                break
            message = json.loads(bytes(buffer[_LENGTH.size : end]))
            del buffer[:end]
            if not isinstance(message, dict):
                raise ValueError("control link frame is not an object")
            messages.append(message)
        return messages


class LinkServer:
    """The loop's end: answers requests with `handler`, sends events."""

    __slots__ = ("_contain", "_handler", "_reader", "sock")

    def __init__(
        self, sock: socket.socket, handler: Handler, contain: Containment | None = None
    ) -> None:
        """`contain`: the instance's fault policy; by default a strict one."""
        self.sock = sock
        sock.setblocking(False)
        self._handler = handler
        self._contain = contain or Containment()
        self._reader = FrameReader()

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> bool:
        """Serve every complete request. False once the control process is
        gone (EOF or a broken frame): the loop stops polling the link."""
        try:
            chunk = self.sock.recv(1 << 16)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        try:
            requests = self._reader.feed(chunk)
        except ValueError:
            return False
        for request in requests:
            self._send_frame(self._answer(request))
        return True

    def _answer(self, request: dict) -> bytes:
        """The encoded reply to one request; a bug fails that request only."""
        try:
            reply = self._handler(request)
            reply["id"] = request.get("id")
            return encode(reply)
        except Exception as exc:
            op = str(request.get("op"))[:64]
            self._contain.fault(FaultSite.CONTROL, exc, f"request {op!r} fails")
            message = f"internal error in the stack loop answering {op!r}: {type(exc).__name__}"
            return encode({"id": request.get("id"), "error": "internal", "message": message})

    def send_event(self, event: str) -> None:
        self._send_frame(encode({"event": event}))

    def _send_frame(self, frame: bytes) -> None:
        sock = self.sock
        sock.settimeout(_REPLY_SEND_TIMEOUT)
        try:
            sock.sendall(frame)
        except OSError:
            pass  # the control process is gone or stuck: it times out
        finally:
            sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()


class LinkClient:
    """The control process's end: one request at a time, events to a
    callback ("ready", "stopping", and "closed" when the loop is gone)."""

    def __init__(self, sock: socket.socket, on_event: Callable[[str], None]) -> None:
        self._sock = sock
        self._on_event = on_event
        self._lock = threading.Lock()  # one request in flight
        self._replies: dict[int, dict] = {}
        self._arrived = threading.Condition()
        self._next_id = 1
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="control-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self, op: str, timeout: float, **fields) -> dict:
        """Send one request and wait for its reply.

        Raises:
            TimeoutError: no reply within `timeout` seconds.
            ConnectionError: the loop is gone.
        """
        if not self._lock.acquire(timeout=timeout):
            raise TimeoutError(f"the stack loop is busy with another request for {timeout:.3f}s")
        try:
            if self._closed:
                raise ConnectionError("the stack loop is gone")
            request_id = self._next_id
            self._next_id += 1
            self._sock.sendall(encode({"id": request_id, "op": op, **fields}))
            with self._arrived:
                if not self._arrived.wait_for(
                    lambda: request_id in self._replies or self._closed, timeout
                ):
                    raise TimeoutError(f"no reply from the stack loop in {timeout:.3f}s")
                if request_id not in self._replies:
                    raise ConnectionError("the stack loop is gone")
                return self._replies.pop(request_id)
        finally:
            self._lock.release()

    def _read(self) -> None:
        reader = FrameReader()
        try:
            while chunk := self._sock.recv(1 << 16):
                for message in reader.feed(chunk):
                    if "event" in message:
                        self._on_event(message["event"])
                    else:
                        with self._arrived:
                            # A reply to a request that already timed out is
                            # dropped: only the waiting id is kept.
                            self._replies = {message.get("id"): message}
                            self._arrived.notify_all()
        except (OSError, ValueError):
            pass
        with self._arrived:
            self._closed = True
            self._arrived.notify_all()
        self._on_event("closed")
