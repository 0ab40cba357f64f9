"""`Socket`: Python's `socket.socket` API over one slot of a session.

Semantics follow Python's sockets on Linux: blocking by default,
`setblocking(False)` / `settimeout(0)` makes calls raise BlockingIOError
(EAGAIN; EINPROGRESS for connect), a timeout raises TimeoutError, `recv`
returns b"" at EOF, errors are OSError subclasses with the kernel's errno.

State comes from the slot table (state, readiness, pending error), which
the stack writes; data moves through the slot's RX/TX byte rings. A send
is one TX command; a read that may have found the RX ring full (so the
stack stopped filling it) is followed by RX_DONE.

When the session ends (the stack ended it, or died: `Stack._notice`), a
connection reads as reset, as on Linux after a RST: the bytes already in
its RX ring first, then ConnectionResetError once (recv, send), then
EOF on recv and BrokenPipeError on send; epoll sees
IN|OUT|HUP|RDHUP (and ERR until that error is reported). A listener
reports ERR|HUP, and `accept()` raises `vfstack.StackGone` (ENETDOWN),
as does every call that needs an answer from the stack.

Several workers (vfstack.sockets.stack "lanes"): a socket lives in one lane.
`listen()` listens on every lane (mTCP's per-core listen): the listener
opens a slot on each other lane, gives it the same options, address and
backlog, and their connections join the one accept queue. `connect()`
from a socket bound to a port whose flows another worker receives
(vfstack._steering) first moves the socket there: a new slot with the
same options and address, whose events the Stack reports under the
socket's `fileno()` (its first slot stays held, so that number is not
given to another socket), or in a Stack of that worker's alone (a
pre-forked app's: `vfstack.connect(worker=i)`) fails with EADDRNOTAVAIL.
An unbound socket's active open picks a port of its own worker's share
and never moves.
"""

from __future__ import annotations

import errno
import socket as _socket
import struct
import time
import weakref
from collections import deque

from vfstack._errors import StackGone, check, error, timed_out
from vfstack._steering import worker_of
from vfstack.shm import (
    EPOLLERR,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDHUP,
    OP_BIND,
    OP_CONNECT,
    OP_GETSOCKOPT,
    OP_LISTEN,
    OP_RX_DONE,
    OP_SETSOCKOPT,
    OP_SHUTDOWN,
    OP_SOCKET,
    OP_TX,
    SLOT_CONNECTED,
    SLOT_CONNECTING,
    SLOT_LISTENING,
    SLOT_OPEN,
)

__all__ = ["Socket"]

_CONNECTION = (SLOT_CONNECTING, SLOT_CONNECTED)  # an end of the session resets these
_U64 = (1 << 64) - 1
_DEFAULT_BACKLOG = 128
_INT = struct.Struct("i")
_LINGER = struct.Struct("ii")  # struct linger {l_onoff, l_linger}
# A data call's deadline before it first has to wait: the clock is read
# then, so a call that finds its data or room never reads it (a kernel
# socket's does not either).
_FROM_NOW = object()


def _ip(host: str) -> int:
    if host in ("", "0.0.0.0"):
        return 0
    try:
        packed = _socket.inet_aton(host)
    except OSError:
        packed = _socket.inet_aton(_socket.gethostbyname(host))
    return int.from_bytes(packed, "big")


def _ip_str(value: int) -> str:
    return _socket.inet_ntoa(value.to_bytes(4, "big"))


def _address(address, what: str) -> tuple[str, int, int]:
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError(f"{what}(): AF_INET address must be tuple, not {type(address).__name__}")
    host, port = address
    if not isinstance(host, str) or not isinstance(port, int):
        raise TypeError(f"{what}(): AF_INET address must be a pair (host, port)")
    if not 0 <= port <= 65535:
        raise OverflowError(f"{what}(): port must be 0-65535.")
    ip = _ip(host)
    return _ip_str(ip), ip, port


class Socket:
    """A TCP socket of a `vfstack.Stack` (make it with `stack.socket()`)."""

    family = _socket.AF_INET
    type = _socket.SOCK_STREAM
    proto = _socket.IPPROTO_TCP

    def __init__(
        self,
        stack,
        lane,
        slot: int,
        generation: int,
        local: tuple[str, int] | None = None,
        peer: tuple[str, int] | None = None,
    ) -> None:
        self._stack = stack
        self._lane = lane
        self._seg = lane.segment
        self._slot = slot
        self._fd = lane.fd(slot)
        self._generation = generation
        self._timeout: float | None = None
        self._local = local
        self._bound_ip = "0.0.0.0"
        self._peer = peer
        self._connecting_to: tuple[str, int] | None = None
        self._listening = False
        self._siblings: list[tuple] = []  # a listener's (lane, slot) on the other lanes
        self._anchor: tuple | None = None  # a moved socket's first (lane, slot): its fileno
        self._options: list[tuple[int, int, int]] = []  # what setsockopt set, to replay
        self._rd_closed = False
        self._wr_closed = False
        self._error_reported = False
        self._rx = self._seg.rx(slot)
        self._tx = self._seg.tx(slot)
        self._io_refs = 0  # files from makefile() still open: close() waits for them
        self._close_pending = False
        stack._sockets[self._fd] = weakref.ref(self)

    # ------------------------------------------------------------ basics

    def fileno(self) -> int:
        """Unique within the Stack (-1 once closed): the slot number, with
        several workers slot x N + worker."""
        return self._fd if self._slot >= 0 else -1

    def _check(self) -> int:
        slot = self._slot
        if slot < 0 or self._stack._closed:
            raise error(errno.EBADF)
        return slot

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def _deadline(self) -> float | None:
        t = self._timeout
        return None if t is None else time.monotonic() + t

    def _block(self, ready, deadline):
        """Wait for ready() under this socket's timeout mode (each `ready`
        counts the end of the session as ready, to fail as it should).
        `deadline`: monotonic, None (no timeout) or _FROM_NOW (the timeout
        starts now). Returns the deadline, for the caller's next wait."""
        if ready():
            return deadline
        if self._timeout == 0.0:
            # Never sleeping, the caller would never see the stack hang up.
            if self._stack._notice() and ready():
                return deadline
            raise error(errno.EAGAIN)
        if deadline is _FROM_NOW:
            deadline = self._deadline()
        if not self._stack._wait(ready, deadline):
            raise timed_out()
        return deadline

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._slot < 0:
            return "<vfstack.Socket [closed]>"
        return (
            f"<vfstack.Socket fd={self._fd}, laddr={self._local}, raddr={self._peer},"
            f" timeout={self._timeout}>"
        )

    # ------------------------------------------------------------ control

    def bind(self, address) -> None:
        slot = self._check()
        host, ip, port = _address(address, "bind")
        event = self._stack._call(self._lane, OP_BIND, slot, ip, port)
        check(event.result)
        self._bound_ip = host
        self._local = (host, event.a1)

    def listen(self, backlog: int = _DEFAULT_BACKLOG) -> None:
        slot = self._check()
        backlog = min(max(int(backlog), 1), 65535)
        stack = self._stack
        fd = self._fd
        with stack._lock:  # the queue exists before an ACCEPTED can be dispatched
            created = fd not in stack._accepts
            if created:
                stack._accepts[fd] = deque()
        event = stack._call(self._lane, OP_LISTEN, slot, backlog)
        if event.result < 0 and created:
            with stack._lock:
                stack._accepts.pop(fd, None)
        check(event.result)
        self._listening = True
        self._local = (self._bound_ip, event.a1)
        if created:
            self._listen_everywhere(backlog)

    def _listen_everywhere(self, backlog: int) -> None:
        """Listen on every other lane too, on the same address, with the
        same options. Raises: OSError (the lanes opened so far close)."""
        stack = self._stack
        ip, port = _ip(self._bound_ip), self._local[1]
        try:
            for lane in stack._lanes:
                if lane is not self._lane:
                    slot = self._open_like(lane, ip, port)
                    self._siblings.append((lane, slot))
                    with stack._lock:
                        stack._alias_of[lane.fd(slot)] = self._fd
                    check(stack._call(lane, OP_LISTEN, slot, backlog).result)
        except BaseException:
            self._close_siblings()
            raise

    def _open_like(self, lane, ip: int, port: int) -> int:
        """A new slot on `lane` with this socket's options, bound to (ip,
        port). Returns: its slot. Raises: OSError (it is closed again)."""
        stack = self._stack
        event = stack._call(lane, OP_SOCKET)
        check(event.result)
        slot = event.slot
        try:
            for level, optname, value in self._options:
                check(stack._call(lane, OP_SETSOCKOPT, slot, level, optname, value).result)
            check(stack._call(lane, OP_BIND, slot, ip, port).result)
        except BaseException:
            stack._close_slot(lane, slot)
            raise
        return slot

    def _close_siblings(self) -> None:
        stack = self._stack
        siblings, self._siblings = self._siblings, []
        for lane, slot in siblings:
            with stack._lock:
                stack._alias_of.pop(lane.fd(slot), None)
            stack._close_slot(lane, slot)

    def accept(self) -> tuple[Socket, tuple[str, int]]:
        """The next connection: (socket, (peer ip, peer port)). The new socket is blocking."""
        self._check()
        if not self._listening:
            raise error(errno.EINVAL)
        stack = self._stack
        queue = stack._accepts[self._fd]
        self._block(
            lambda: bool(queue) or self._slot < 0 or stack._ended is not None, self._deadline()
        )
        self._check()
        stack._check_alive()  # what is still queued ended with the session
        with stack._lock:
            index, slot, ip, port, _ = queue.popleft()
        peer = (_ip_str(ip), port)
        local = (stack.local_ip, self._local[1] if self._local else 0)
        lane = stack._lanes[index]
        return Socket(stack, lane, slot, lane.segment.generation(slot), local, peer), peer

    def connect(self, address) -> None:
        code = self._connect(address)
        if code:
            raise error(code)

    def connect_ex(self, address) -> int:
        """connect() returning the errno instead of raising it (0: connected)."""
        try:
            return self._connect(address)
        except TimeoutError:
            return errno.EAGAIN
        except StackGone as exc:
            return exc.errno

    def _connect(self, address) -> int:
        slot = self._check()
        host, ip, port = _address(address, "connect")
        if port == 0 or ip == 0:
            return errno.ECONNREFUSED  # what Linux answers (the layout forbids port 0)
        stack = self._stack
        workers = stack._workers
        if workers > 1 and self._local and self._seg.slot_state(slot) == SLOT_OPEN:
            worker = worker_of(self._local[1], port, workers)
            if worker != self._lane.worker:
                lane = next((lane for lane in stack._lanes if lane.worker == worker), None)
                if lane is None:  # a Stack of one worker's (a pre-forked app's)
                    return errno.EADDRNOTAVAIL
                slot = self._move_to(lane)
        event = stack._call(self._lane, OP_CONNECT, slot, ip, port)
        if event.result < 0:
            return -event.result
        self._local = (stack.local_ip, event.a1)
        self._connecting_to = (host, port)
        if self._timeout == 0.0:
            return errno.EINPROGRESS
        seg = self._seg
        if not stack._wait(lambda: seg.slot_state(slot) != SLOT_CONNECTING, self._deadline()):
            raise timed_out()
        return self._connect_outcome()

    def _move_to(self, lane) -> int:
        """Reopen this bound socket on `lane`, whose worker receives its
        flow's frames; its fileno() stays. Returns: the slot it has now."""
        anchor = self._anchor  # not None: moved before, by a connect that failed
        stack = self._stack
        if anchor is not None and anchor[0] is lane:  # back where it began
            home, slot = anchor
            for level, optname, value in self._options:  # some may be newer than it
                check(stack._call(home, OP_SETSOCKOPT, slot, level, optname, value).result)
            self._drop_moved_slot(self._slot)
            self._anchor = None
            self._become(home, slot)
            return slot
        slot = self._open_like(lane, _ip(self._bound_ip), self._local[1])
        if anchor is None:
            self._anchor = (self._lane, self._slot)  # held: its number is the socket's
        else:
            self._drop_moved_slot(self._slot)
        self._become(lane, slot)
        with stack._lock:
            stack._alias_of[lane.fd(slot)] = self._fd
        return slot

    def _become(self, lane, slot: int) -> None:
        self._lane, self._seg, self._slot = lane, lane.segment, slot
        self._generation = lane.segment.generation(slot)
        self._rx, self._tx = lane.segment.rx(slot), lane.segment.tx(slot)

    def _drop_moved_slot(self, slot: int) -> None:
        stack, lane = self._stack, self._lane
        with stack._lock:
            stack._alias_of.pop(lane.fd(slot), None)
        stack._close_slot(lane, slot)

    def _connect_outcome(self) -> int:
        seg, slot = self._seg, self._slot
        if seg.slot_state(slot) == SLOT_CONNECTED:
            self._peer = self._connecting_to
            return 0
        code = seg.slot_error(slot)
        event = self._stack._call(
            self._lane, OP_GETSOCKOPT, slot, _socket.SOL_SOCKET, _socket.SO_ERROR
        )
        return code or event.a64 or errno.ECONNREFUSED

    def shutdown(self, how: int) -> None:
        slot = self._check()
        if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
            raise error(errno.EINVAL)
        stack = self._stack
        check(stack._call(self._lane, OP_SHUTDOWN, slot, how).result)
        for lane, sibling in self._siblings:
            check(stack._call(lane, OP_SHUTDOWN, sibling, how).result)
        if how != _socket.SHUT_WR:
            self._rd_closed = True
        if how != _socket.SHUT_RD:
            self._wr_closed = True
        stack._touch(self._fd)

    # Python's own, over socket.SocketIO: they need only recv_into, send,
    # fileno, _io_refs and _decref_socketios, so files from a vfstack socket
    # buffer, time out and close exactly as a kernel socket's do.
    makefile = _socket.socket.makefile

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._close_pending:
            self.close()

    def close(self) -> None:
        """Give the slot back (idempotent; with files from `makefile` still
        open, once the last is closed, as Python's sockets). Unsent bytes in
        the TX ring are still handed to TCP; unread received bytes are dropped."""
        slot = self._slot
        if slot < 0:
            return
        if self._io_refs > 0:
            self._close_pending = True
            return
        self._slot = -1
        self._listening = False
        stack = self._stack
        if not stack._closed:
            if self._anchor is None:
                stack._close_slot(self._lane, slot)
            else:
                self._drop_moved_slot(slot)
                home, first = self._anchor
                stack._close_slot(home, first)  # and with it, what its fileno names
            self._close_siblings()

    def detach(self) -> int:
        raise error(errno.EOPNOTSUPP)

    def getsockname(self) -> tuple[str, int]:
        self._check()
        return self._local or ("0.0.0.0", 0)

    def getpeername(self) -> tuple[str, int]:
        slot = self._check()
        if (
            self._peer is None
            and self._connecting_to is not None
            and self._seg.slot_state(slot) == SLOT_CONNECTED
        ):
            self._peer = self._connecting_to
        if self._peer is None:
            raise error(errno.ENOTCONN)
        return self._peer

    def setsockopt(self, level: int, optname: int, value, optlen: int | None = None) -> None:
        slot = self._check()
        if value is None:
            raise TypeError("setsockopt() needs a value")
        if level == _socket.SOL_SOCKET and optname == _socket.SO_LINGER:
            if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) < 8:
                raise error(errno.EINVAL)  # Linux wants a whole struct linger
            onoff, seconds = _LINGER.unpack(bytes(value)[:8])
            value = (1 if onoff else 0) | max(seconds, 0) << 32
        elif isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            value = _INT.unpack(raw[:4].ljust(4, b"\0"))[0]
        value = int(value)
        if not 0 <= value <= _U64:
            raise error(errno.EINVAL)
        stack = self._stack
        check(stack._call(self._lane, OP_SETSOCKOPT, slot, level, optname, value).result)
        for lane, sibling in self._siblings:
            check(stack._call(lane, OP_SETSOCKOPT, sibling, level, optname, value).result)
        if len(stack._lanes) > 1:
            self._options.append((level, optname, value))

    def getsockopt(self, level: int, optname: int, buflen: int | None = None):
        slot = self._check()
        event = self._stack._call(self._lane, OP_GETSOCKOPT, slot, level, optname)
        check(event.result)
        value = event.a64
        if level == _socket.SOL_SOCKET and optname == _socket.SO_LINGER:
            linger = _LINGER.pack(value & 1, value >> 32)
            return value & 1 if buflen is None else linger[:buflen].ljust(buflen, b"\0")
        if value >= 1 << 31:
            value -= 1 << 64 if value >= 1 << 63 else 0
        if buflen is None:
            return value
        return _INT.pack(value)[:buflen].ljust(buflen, b"\0")

    def _poll_mask(self) -> int:
        """The EPOLL* bits Linux would report for this socket now (stack lock held).

        The slot table has the stack's view (hang-up, error, whether TCP
        takes data); the rings and the accept queue have the app's.
        """
        slot = self._slot
        if slot < 0:
            return 0
        if self._stack._ended is not None:
            if self._listening:
                return EPOLLERR | EPOLLHUP
            mask = EPOLLIN | EPOLLOUT | EPOLLHUP | EPOLLRDHUP
            return mask if self._error_reported else mask | EPOLLERR
        if self._listening:
            return EPOLLIN if self._stack._accepts.get(self._fd) else 0
        seg = self._seg
        stack_mask = seg.readiness(slot)
        mask = stack_mask & (EPOLLHUP | EPOLLRDHUP)
        if seg.slot_error(slot) and not self._error_reported:
            mask |= EPOLLERR
        state = seg.slot_state(slot)
        if state == SLOT_OPEN and not mask:  # never connected: Linux says OUT|HUP
            return EPOLLOUT | EPOLLHUP
        if self._rx.readable() or self._rd_closed or mask:
            mask |= EPOLLIN
        if self._rd_closed and self._wr_closed:
            mask |= EPOLLHUP
        elif self._rd_closed:
            mask |= EPOLLRDHUP
        if stack_mask & EPOLLHUP or (
            stack_mask & EPOLLOUT and not self._wr_closed and self._tx.free()
        ):
            mask |= EPOLLOUT
        return mask

    # --------------------------------------------------------------- data

    def _pending_error(self, ended: bool) -> int:
        """The errno waiting for this socket (0: none). Once the session is
        over (`ended`), a connection has the one a reset leaves: ECONNRESET."""
        seg, slot = self._seg, self._slot
        code = seg.slot_error(slot)
        if code or not ended or seg.slot_state(slot) not in _CONNECTION:
            return code
        return errno.ECONNRESET

    def _send_errno(self) -> int:
        """0 if a send may proceed (or must wait), else the errno to raise."""
        if self._wr_closed:
            return errno.EPIPE
        seg, slot = self._seg, self._slot
        state = seg.slot_state(slot)
        if state not in _CONNECTION:
            return errno.ENOTCONN
        if state == SLOT_CONNECTING and self._stack._ended is None:
            return 0
        code = self._pending_error(self._stack._ended is not None)
        if code:
            if not self._error_reported:
                return code
            return errno.EPIPE
        if seg.readiness(slot) & EPOLLHUP:
            return errno.EPIPE
        return 0

    def _send_ready(self) -> bool:
        if self._slot < 0 or self._send_errno():
            return True
        return self._seg.slot_state(self._slot) != SLOT_CONNECTING and self._tx.free() > 0

    def _send_now(self, view: memoryview) -> int:
        """Queue what the TX ring takes of `view` now (0: no room yet);
        one TX command. Raises the socket's error, if it has one."""
        slot = self._check()
        code = self._send_errno()
        if code:
            if code not in (errno.EPIPE, errno.ENOTCONN):
                self._error_reported = True
            raise error(code)
        n = self._tx.write(view)
        if n:
            self._stack._notify(self._lane, OP_TX, slot)
        return n

    def send(self, data, flags: int = 0) -> int:
        """Queue as much of `data` as the TX ring takes (at least one byte,
        waiting for room if blocking); one TX command. Returns bytes queued."""
        self._check()
        view = memoryview(data).cast("B")
        if not len(view):
            return 0
        deadline = _FROM_NOW
        while True:
            if not self._send_ready():  # asked first: a C call, not a bound method's
                deadline = self._block(self._send_ready, deadline)
            n = self._send_now(view)
            if n:
                return n

    def sendall(self, data, flags: int = 0) -> None:
        """Send every byte, waiting for room as needed (the timeout covers the whole call)."""
        self._check()
        view = memoryview(data).cast("B")
        deadline = _FROM_NOW
        offset, total = 0, len(view)
        while offset < total:
            if not self._send_ready():
                deadline = self._block(self._send_ready, deadline)
            offset += self._send_now(view[offset:])

    def _recv_ready(self) -> bool:
        slot = self._slot
        if slot < 0 or self._rd_closed or self._rx.readable() or self._stack._ended is not None:
            return True
        seg = self._seg
        if seg.readiness(slot) & (EPOLLRDHUP | EPOLLHUP | EPOLLERR) or seg.slot_error(slot):
            return True
        return seg.slot_state(slot) not in (SLOT_CONNECTED, SLOT_CONNECTING)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        buffer = bytearray(bufsize)
        n = self.recv_into(buffer, bufsize, flags)
        del buffer[n:]
        return bytes(buffer)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        slot = self._check()
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if nbytes:
            if nbytes > len(view):
                raise ValueError("buffer too small for requested bytes")
            view = view[:nbytes]
        if not len(view):
            return 0
        deadline = _FROM_NOW
        rx, seg, stack = self._rx, self._seg, self._stack
        while True:
            # Loaded before the ring: EOF and the end of the session follow the last byte.
            mask = seg.readiness(slot)
            ended = stack._ended is not None
            before = rx.readable()
            n = rx.read_into(view)
            if n:
                if rx.was_full(before, n):  # the stack waits for RX_DONE
                    stack._notify(self._lane, OP_RX_DONE, slot)
                return n
            if self._rd_closed:
                return 0
            code = self._pending_error(ended)
            if code:
                if self._error_reported:
                    return 0
                self._error_reported = True
                raise error(code)
            if mask & (EPOLLRDHUP | EPOLLHUP):
                return 0
            state = seg.slot_state(slot)
            if state not in (SLOT_CONNECTED, SLOT_CONNECTING):
                if state == SLOT_OPEN and self._connecting_to is None and not self._listening:
                    raise error(errno.ENOTCONN)
                if state == SLOT_LISTENING:
                    raise error(errno.ENOTCONN)
                return 0
            deadline = self._block(self._recv_ready, deadline)
            slot = self._check()
