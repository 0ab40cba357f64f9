"""The link between a stack instance's packet loop and its control process.

One AF_UNIX SOCK_SEQPACKET socket pair: every frame is one message, a
UTF-8 JSON object. The control process sends requests `{"id", "op",
...}`; the loop answers `{"id", ...}` and sends events `{"event":
"ready"}` / `{"event": "stopping"}` unprompted. A reply may carry file
descriptors (SCM_RIGHTS, e.g. a session's shared memory and doorbells):
the handler puts them under `"fds"`, the link sends them with the
message and closes its copies; the other end finds them under `"fds"` of
the reply, and owns them.

Why messages and not a byte stream: a message arrives whole or not at
all, with its descriptors, so no reply can be cut off mid-frame and no
later reply misread as its continuation; a reply too large for the link
(`max_message`) is refused as one (`resource_exhausted`), and the link
goes on. The loop never blocks waiting for the control process: it reads
only when its poller says the socket is readable, and a reply that cannot
be written within a short bound is dropped whole (the control process
then times out its request). A handler may answer with a job, a
generator that yields while it has more to do and returns the reply: the
loop runs one step of it per pass (`work`, while `busy`), so no request
holds a pass for long; requests that come meanwhile wait their turn. A
request whose handler fails with an unexpected exception (a bug) is
answered `{"error": "internal"}` (INTERNAL to the gRPC caller) and
contained by the loop's `Containment` (site CONTROL); the next request
is served as usual.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Generator

from stackservice.faults import Containment, FaultSite

MAX_MESSAGE = 1 << 20  # the largest reply the loop sends (a bounded listing fits)
MAX_REQUEST = 64 << 10  # requests are small: anything bigger is refused
MAX_FDS = 8  # descriptors one message may carry
REQUESTS_PER_WAKE = 16  # requests served per readable wake-up, at most
_REPLY_SEND_TIMEOUT = 1.0  # seconds the loop may spend writing one reply
FDS = "fds"  # the key under which a message carries descriptors

Job = Generator[None, None, dict]  # yields while unfinished, returns the reply
Handler = Callable[[dict], dict | Job]


def link_pair() -> tuple[socket.socket, socket.socket]:
    """The two ends: (the loop's, the control process's)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_event(sock: socket.socket, event: str) -> None:
    """An event from a process that does not serve the link: the
    supervisor of several workers says "stopping" once all have stopped.
    Dropped if the control process is gone or stuck."""
    sock.settimeout(_REPLY_SEND_TIMEOUT)
    with contextlib.suppress(OSError):
        sock.send(_encode({"event": event}))


def _encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def _decode(body: bytes) -> dict:
    """Raises ValueError: not a JSON object."""
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("control link message is not an object")
    return message


def _close_all(fds) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _room(sock: socket.socket, wanted: int) -> int:
    """Make the socket's send buffer hold a `wanted`-byte message (beyond
    wmem_max only with CAP_NET_ADMIN, which the stack has); returns the
    largest message it takes (the kernel refuses one over sndbuf - 32)."""
    for option in (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, wanted + 4096)
            break
        except PermissionError:
            continue
    return min(wanted, sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - 64)


class LinkServer:
    """The loop's end: answers requests with `handler`, sends events."""

    __slots__ = ("_contain", "_handler", "_job", "_waiting", "max_message", "sock")

    def __init__(
        self, sock: socket.socket, handler: Handler, contain: Containment | None = None
    ) -> None:
        """`contain`: the instance's fault policy; by default a strict one."""
        self.sock = sock
        sock.setblocking(False)
        self.max_message = _room(sock, MAX_MESSAGE)
        self._handler = handler
        self._contain = contain or Containment()
        self._job: tuple[dict, Job] | None = None  # the request being answered, step by step
        self._waiting: deque[dict] = deque()  # requests come while a job runs

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def busy(self) -> bool:
        """A job is half done: the loop should call `work` without sleeping."""
        return self._job is not None

    def on_readable(self) -> bool:
        """Serve the requests waiting (a bounded number). False once the
        control process is gone: the loop stops polling the link."""
        for _ in range(REQUESTS_PER_WAKE):
            try:
                body, fds, flags, _ = socket.recv_fds(
                    self.sock, MAX_REQUEST, MAX_FDS, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return True
            except OSError:
                return False
            _close_all(fds)  # requests carry none; a stray one must not leak
            if not body:
                return False  # EOF: the control process closed its end
            try:
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise ValueError("control link request too large")
                request = _decode(body)
            except ValueError:
                continue  # one bad message: the next is still a message
            if self._job is None:
                self._answer(request)
            else:  # the control process sends one at a time: a few, at most
                self._waiting.append(request)
        return True

    def work(self) -> None:
        """One step of the job in progress (the loop calls it once a pass
        while `busy`); once it is done, its reply goes, and the requests
        that waited are answered in turn."""
        request, job = self._job
        try:
            next(job)
            return
        except StopIteration as done:
            reply = done.value
        except Exception as exc:
            reply = self._failed(request, exc)
        self._job = None
        self._reply(request, reply)
        while self._job is None and self._waiting:
            self._answer(self._waiting.popleft())

    def _answer(self, request: dict) -> None:
        """Answer one request, or start its job (with a first step now)."""
        try:
            reply = self._handler(request)
        except Exception as exc:
            reply = self._failed(request, exc)
        if isinstance(reply, dict):
            self._reply(request, reply)
        else:
            self._job = (request, reply)
            self.work()

    def _failed(self, request: dict, exc: Exception) -> dict:
        """A bug answering `request`: that request fails, the next is served."""
        op = str(request.get("op"))[:64]
        self._contain.fault(FaultSite.CONTROL, exc, f"request {op!r} fails")
        message = f"internal error in the stack loop answering {op!r}: {type(exc).__name__}"
        return {"error": "internal", "message": message}

    def _reply(self, request: dict, reply: dict) -> None:
        reply["id"] = request.get("id")
        self._send(reply)

    def send_event(self, event: str) -> None:
        self._send({"event": event})

    def _send(self, message: dict) -> None:
        """Send one message whole, or drop it whole; its descriptors are
        closed here either way (the receiver has its own copies)."""
        fds = message.pop(FDS, ())
        try:
            body = _encode(message)
            if len(body) > self.max_message:
                _close_all(fds)
                fds = ()
                body = _encode({
                    "id": message.get("id"), "error": "resource_exhausted",
                    "message": f"the reply of {len(body)} bytes exceeds the control link's "
                    f"{self.max_message}: ask for less",
                })  # fmt: skip
            sock = self.sock
            sock.settimeout(_REPLY_SEND_TIMEOUT)
            try:
                if fds:
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    sock.sendmsg([body], ancillary)
                else:
                    sock.send(body)
            except OSError:
                pass  # the control process is gone or stuck: it times out
            finally:
                sock.setblocking(False)
        finally:
            _close_all(fds)

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
        """Send one request and wait for its reply; descriptors it carries
        (under "fds") are the caller's to close.

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
            self._sock.send(_encode({"id": request_id, "op": op, **fields}))
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
        try:
            while True:
                body, fds, flags, _ = socket.recv_fds(
                    self._sock, MAX_MESSAGE, MAX_FDS, socket.MSG_CMSG_CLOEXEC
                )
                if not body:
                    break
                try:
                    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                        raise ValueError("control link message too large")
                    message = _decode(body)
                except ValueError:
                    _close_all(fds)
                    continue
                if "event" in message:
                    _close_all(fds)
                    self._on_event(message["event"])
                    continue
                message[FDS] = fds
                with self._arrived:
                    # A reply to a request that already timed out is
                    # dropped (its descriptors closed): only the waiting
                    # id is kept.
                    for stale in self._replies.values():
                        _close_all(stale[FDS])
                    self._replies = {message.get("id"): message}
                    self._arrived.notify_all()
        except OSError:
            pass
        with self._arrived:
            self._closed = True
            for stale in self._replies.values():
                _close_all(stale[FDS])
            self._replies = {}
            self._arrived.notify_all()
        self._on_event("closed")
