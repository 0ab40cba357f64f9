"""The handoff: sessions' descriptors waiting for their app, in the
control process (the protocol: vfstack.shm._handoff).

Attach leaves with the control process what the loop made for the new
session (its segment, the read end of the app's doorbell, the stack's
doorbell); the app comes for them on the handoff socket, beside the
control socket, with the session's id and token. They are handed over
once, and only within the attach timeout: then the control process
closes its copies, and since it held the only read end of the app's
doorbell besides the app, the loop sees that doorbell's reader gone and
ends the session (vfstack.shm "Liveness"); `on_expired` then tells the
loop it was an expiry, which it counts. An app that attaches and never
comes holds nothing for longer than the timeout.

One thread serves the socket with a selector, never blocking on a
client: a connection gets `CONNECTION_TIMEOUT_S` to send its request,
and at most `MAX_CONNECTIONS` are open at once (beyond, new ones are
closed at once), so a client that connects and stays silent delays no
one.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vfstack.shm._handoff import HANDOFF_FDS, decode_request, encode_reply

CONNECTION_TIMEOUT_S = 1.0  # from connecting to sending the request
MAX_CONNECTIONS = 64  # handoff connections open at once
SOCKET_MODE = 0o660
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def handoff_path(control: Path) -> Path:
    """The handoff socket of the instance whose control socket is `control`."""
    return control.with_suffix(".attach")


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket, as the
    kernel recorded it when it connected (SO_PEERCRED)."""
    _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return uid


def _close_all(fds) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


@dataclass(slots=True)
class _Pending:
    token: bytes
    fds: list[int]
    uid: int | None  # the Attach caller's; None: not known (no check)
    deadline: float


@dataclass(slots=True)
class _Client:
    deadline: float
    sock: socket.socket = field(repr=False)


class Handoff:
    """The handoff socket at `path` and the descriptors waiting on it."""

    def __init__(self, path: Path, timeout: float, clock=time.monotonic) -> None:
        """Listen at `path` (mode 0660); serve from a thread of its own.
        `timeout`: seconds from Attach to the app taking its descriptors.

        Raises:
            OSError: `path` cannot be bound.
        """
        self.path = path
        self.timeout = timeout
        # Called, from the handoff's thread, with the id of each session
        # whose descriptors were dropped at the timeout.
        self.on_expired: Callable[[int], None] | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._clients: dict[int, _Client] = {}
        path.unlink(missing_ok=True)  # a stale socket from a crash
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        previous = os.umask(0o777 & ~SOCKET_MODE)  # no window with a wider mode
        try:
            self._listener.bind(str(path))
        finally:
            os.umask(previous)
        self._listener.listen(MAX_CONNECTIONS)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="handoff", daemon=True)
        self._thread.start()

    def offer(self, session_id: int, token: bytes, fds: list[int], uid: int | None) -> None:
        """Keep a new session's descriptors (owned from now on) for its app;
        once closed, drop them (the session ends)."""
        with self._lock:
            if self._stopping:
                dropped = list(fds)
            else:
                stale = self._pending.pop(session_id, None)
                dropped = stale.fds if stale is not None else []
                self._pending[session_id] = _Pending(
                    bytes(token), list(fds), uid, self._clock() + self.timeout
                )
                os.write(self._wake_w, b"\0")  # the next deadline may be sooner
        _close_all(dropped)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Stop serving, remove the socket, drop every waiting session's
        descriptors (idempotent)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            os.write(self._wake_w, b"\0")
        self._thread.join()
        self._selector.close()
        self._listener.close()
        self.path.unlink(missing_ok=True)
        for client in self._clients.values():
            client.sock.close()
        with self._lock:
            for pending in self._pending.values():
                _close_all(pending.fds)
            self._pending.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the thread -------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select(self._sleep()):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                else:
                    self._answer(key.fileobj)
            self._expire()

    def _sleep(self) -> float:
        with self._lock:
            deadlines = [p.deadline for p in self._pending.values()]
        deadlines += [c.deadline for c in self._clients.values()]
        return max(0.0, min(deadlines) - self._clock()) if deadlines else 1.0

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        if len(self._clients) >= MAX_CONNECTIONS:
            sock.close()
            return
        sock.setblocking(False)
        self._clients[sock.fileno()] = _Client(self._clock() + CONNECTION_TIMEOUT_S, sock)
        self._selector.register(sock, selectors.EVENT_READ)

    def _answer(self, sock: socket.socket) -> None:
        """One request, one reply, then the connection closes."""
        self._selector.unregister(sock)
        del self._clients[sock.fileno()]
        with sock:
            try:
                body = sock.recv(64)
                session_id, token = decode_request(body)
            except (OSError, ValueError):
                return
            error, fds = self._take(session_id, token, peer_uid(sock))
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            with contextlib.suppress(OSError):  # the app left: its session ends (fds closed)
                sock.sendmsg([encode_reply(error)], ancillary if fds else [])
            _close_all(fds)

    def _take(self, session_id: int, token: bytes, uid: int) -> tuple[int, list[int]]:
        """(0, the descriptors) for the right caller, else (errno, [])."""
        with self._lock:
            pending = self._pending.get(session_id)
            if pending is None or pending.deadline <= self._clock():
                return errno.ENOENT, []
            if not secrets.compare_digest(token, pending.token) or (
                pending.uid is not None and uid != pending.uid
            ):
                return errno.EACCES, []
            del self._pending[session_id]
        if len(pending.fds) != HANDOFF_FDS:  # the loop's reply said otherwise: a bug
            _close_all(pending.fds)
            return errno.EIO, []
        return 0, pending.fds

    def _expire(self) -> None:
        now = self._clock()
        with self._lock:
            late = [sid for sid, p in self._pending.items() if p.deadline <= now]
            dropped = [self._pending.pop(sid).fds for sid in late]
        for fds in dropped:
            _close_all(fds)
        if self.on_expired is not None:
            for session_id in late:
                self.on_expired(session_id)
        for fd, client in list(self._clients.items()):
            if client.deadline <= now:
                self._selector.unregister(client.sock)
                del self._clients[fd]
                client.sock.close()
