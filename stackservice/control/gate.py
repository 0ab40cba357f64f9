"""The gate: every control call knows its caller, as the kernel says.

gRPC over a unix socket tells a servicer nothing of who called
(`context.peer()` is "unix:"), and a name or pid in a request is only
what the caller claims. So the control socket (`--unix`, mode 0660) is
the gate's: it accepts each connection itself, reads the caller's
credentials from the kernel (SO_PEERCRED: uid, gid, pid, recorded when
it connected), and relays the connection's bytes to the gRPC server,
which listens on a socket beside it only root may open (mode 0600).
The gate's own end of each relayed connection is bound to a fresh,
random abstract name, which is what gRPC reports as that connection's
peer; `Gate.caller(context.peer())` maps it back to the credentials.
A peer the gate did not make (a TCP client, anything else) has no
credentials: `caller()` is None.

Bounds: at most `MAX_CONNECTIONS` relayed connections, and at most
`MAX_CONNECTIONS_PER_UID` for any uid but root's, so one app opening
connections without end exhausts neither the control process's
descriptors nor its threads (beyond, a connection is closed at once). A
connection costs two threads, each copying one direction. And what a uid
but root's sends is relayed at `UPLOAD_BYTES_PER_S` at most (a token
bucket over all its connections, `UPLOAD_BURST` at once): beyond, its
relay waits, and the kernel holds the caller's writes. Every call costs
the control process (and some the loop) CPU in proportion to its bytes;
an app calling without pause (measured: four threads of
ListConnections, 95% of a core in this process) is slowed to the budget
instead of taking the CPU the other apps need. A call takes about a
hundred bytes: an app's Attach and listings, `vfstack stats --watch`
(one call), a health check every few seconds stay well within it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

MAX_CONNECTIONS = 128
# What the gate turned away or held back, by reason (vfstack_refusals_total
# beside the loop's stackservice.limits.Refusal): a connection closed at
# once as MAX_CONNECTIONS are relayed, or MAX_CONNECTIONS_PER_UID of its
# uid's; a relay that had to wait for its uid's upload budget.
REFUSALS = ("control_connections", "control_app_connections", "control_rate")
MAX_CONNECTIONS_PER_UID = 16
UPLOAD_BYTES_PER_S = 4 << 10  # what one uid's calls may send a second, in all
UPLOAD_BURST = 32 << 10
SOCKET_MODE = 0o660  # the gate: the app group's
INNER_MODE = 0o600  # the gRPC server: root only (the gate)
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Caller:
    """Who called, from SO_PEERCRED. `pid` is 0 when the caller lives in a
    PID namespace this process cannot see (another container)."""

    uid: int
    gid: int
    pid: int

    @property
    def root(self) -> bool:
        return self.uid == 0


def peer_credentials(sock: socket.socket) -> Caller:
    """The credentials of the process at the other end of a unix socket."""
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Caller(uid, gid, pid)


def inner_path(public: Path) -> Path:
    """Where the gRPC server listens behind the gate at `public`."""
    return public.with_suffix(".grpc")


def _bind(sock: socket.socket, path: Path, mode: int) -> None:
    path.unlink(missing_ok=True)  # a stale socket from a crash
    previous = os.umask(0o777 & ~mode)  # no window with a wider mode
    try:
        sock.bind(str(path))
    finally:
        os.umask(previous)


class Upload:
    """One uid's upload budget: a token bucket of bytes (thread-safe)."""

    __slots__ = ("_at", "_clock", "_lock", "_tokens")

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(UPLOAD_BURST)
        self._at = clock()

    def take(self, nbytes: int) -> float:
        """Spend `nbytes`; returns how long to wait before relaying them (0:
        at once), the debt being paid by the wait."""
        with self._lock:
            now = self._clock()
            self._tokens = min(UPLOAD_BURST, self._tokens + (now - self._at) * UPLOAD_BYTES_PER_S)
            self._at = now
            self._tokens -= nbytes
            return max(0.0, -self._tokens / UPLOAD_BYTES_PER_S)


class Gate:
    """The control socket at `public`, relaying to the gRPC server behind it."""

    def __init__(self, public: Path, refusals: dict[str, int] | None = None) -> None:
        """`refusals`: where to count them, by REFUSALS reason (the metrics
        exporter reads it); by default a private one.

        Raises OSError: `public` cannot be bound."""
        self.public = public
        # Every key from the start: a reader in another thread never sees
        # the dict change size.
        self.refusals = refusals if refusals is not None else dict.fromkeys(REFUSALS, 0)
        self.inner = inner_path(public)
        self._prefix = f"vfstack-gate/{secrets.token_hex(8)}"
        self._lock = threading.Lock()
        self._callers: dict[str, Caller] = {}  # gRPC's peer string -> credentials
        self._per_uid: Counter[int] = Counter()
        self._uploads: dict[int, Upload] = {}  # by uid but root's; one per uid that called
        self._open: set[socket.socket] = set()
        self._next = 0
        self._closed = False
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        _bind(self._listener, public, SOCKET_MODE)
        self._listener.listen(MAX_CONNECTIONS)
        self._thread = threading.Thread(target=self._accept, name="gate", daemon=True)
        self._thread.start()

    def caller(self, peer: str) -> Caller | None:
        """The credentials behind a gRPC peer string, if the gate made it."""
        with self._lock:
            return self._callers.get(peer)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._callers)

    def close(self) -> None:
        """Stop accepting, cut every relayed connection, remove the socket."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._thread.join()
        self._listener.close()
        self.public.unlink(missing_ok=True)

    # -- the threads ---------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                self._relay(client)
            except OSError:
                client.close()

    def _relay(self, client: socket.socket) -> None:
        caller = peer_credentials(client)
        with self._lock:
            if self._closed:
                client.close()
                return
            if len(self._callers) >= MAX_CONNECTIONS:
                full = "control_connections"
            elif not caller.root and self._per_uid[caller.uid] >= MAX_CONNECTIONS_PER_UID:
                full = "control_app_connections"
            else:
                full = None
            if full:
                self.refusals[full] += 1
                client.close()
                return
            self._next += 1
            name = f"{self._prefix}/{self._next}"
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            upstream.bind("\0" + name)
            upstream.connect(str(self.inner))
        except OSError:
            upstream.close()
            raise
        peer = f"unix-abstract:{name}"
        with self._lock:  # before the first byte: gRPC may ask at once
            self._callers[peer] = caller
            self._per_uid[caller.uid] += 1
            self._open.update((client, upstream))
            upload = None if caller.root else self._uploads.setdefault(caller.uid, Upload())
        done = threading.Barrier(2, action=lambda: self._forget(peer, caller, client, upstream))
        for source, sink, budget in ((client, upstream, upload), (upstream, client, None)):
            threading.Thread(
                target=self._copy, args=(source, sink, budget, done), name="gate-relay",
                daemon=True,
            ).start()  # fmt: skip

    def _copy(
        self,
        source: socket.socket,
        sink: socket.socket,
        budget: Upload | None,
        done: threading.Barrier,
    ) -> None:
        """One direction, until its end; then the other side hears EOF.
        With a `budget`, no faster than it allows."""
        with contextlib.suppress(OSError):
            while chunk := source.recv(_CHUNK):
                if budget is not None and (wait := budget.take(len(chunk))):
                    with self._lock:
                        self.refusals["control_rate"] += 1
                    time.sleep(wait)
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        done.wait()

    def _forget(
        self, peer: str, caller: Caller, client: socket.socket, upstream: socket.socket
    ) -> None:
        with self._lock:
            del self._callers[peer]
            self._per_uid[caller.uid] -= 1
            self._open.difference_update((client, upstream))
        client.close()
        upstream.close()
