"""`Epoll`: `select.epoll` over the sockets of one `vfstack.Stack`.

Like Linux's eventpoll, each Epoll keeps an *interest list* (fd -> mask)
and a *ready list*. An fd joins the ready list when something may have
made it more ready: a READY or ACCEPTED event from the stack (dispatched
by `Stack._drain`, which calls `_touch`), a register/modify, or the app's
own shutdown. Becoming *less* ready (the app read the RX ring dry, filled
the TX ring) needs no event, because `poll` recomputes each listed slot's
mask from the slot table and the rings (`Socket._poll_mask`) and drops the
slot if nothing of interest is left.

Triggering, as in epoll(7):
- level-triggered: a reported slot goes back to the end of the ready list,
  so it is reported again while still ready (and fairly, when `maxevents`
  cuts a poll short);
- EPOLLET: a reported slot leaves the ready list until the next event from
  the stack (new data, new room, a new connection, a hang-up);
- EPOLLONESHOT: after one report the slot is disabled until `modify`.

File descriptors are the sockets' `fileno()` (slot numbers; with several
workers unique across their sessions: vfstack.sockets.stack), so a program
written against `select.epoll` keeps its `{fd: socket}` map unchanged. A
closed socket leaves every Epoll by itself, as a closed fd does on Linux.
When the session ends, every registered socket joins the ready list
(`Stack._notice`) and reports what the end made of it: ERR|HUP, and
IN|OUT|RDHUP for a connection, which reads as reset (vfstack.sockets.socket).
"""

from __future__ import annotations

import errno
import select
import time

from vfstack._errors import error

__all__ = ["Epoll"]

_ET = select.EPOLLET
_ONESHOT = select.EPOLLONESHOT
_ALWAYS = select.EPOLLERR | select.EPOLLHUP  # reported whether asked for or not
_DEFAULT_MASK = select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT
_DISABLED = -1  # a ONESHOT slot after its report


class Epoll:
    """Readiness of many sockets of one Stack; make it with `stack.epoll()`."""

    def __init__(self, stack) -> None:
        self._stack = stack
        self._interest: dict[int, list] = {}  # fd -> [socket, mask]
        self._ready: dict[int, None] = {}  # insertion-ordered set of fds
        self._closed = False

    # ------------------------------------------------------------- public

    def fileno(self) -> int:
        """The stack's doorbell fd (see `Stack.fileno` for how to poll it)."""
        self._check_open()
        return self._stack.fileno()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Forget every registration (idempotent)."""
        if self._closed:
            return
        stack = self._stack
        with stack._lock:
            for fd in self._interest:
                stack._unwatch(fd, self)
            self._interest.clear()
            self._ready.clear()
            self._closed = True

    def register(self, fd, eventmask: int = _DEFAULT_MASK) -> None:
        """Watch `fd` (a Socket of this stack or its fileno()).

        Raises:
            FileExistsError: already registered. OSError EBADF: not an open
            socket of this stack. ValueError: this Epoll is closed.
        """
        self._check_open()
        stack = self._stack
        with stack._lock:
            sock = stack._socket_of(fd)
            fd = sock._fd
            if fd in self._interest:
                raise error(errno.EEXIST)
            self._interest[fd] = [sock, int(eventmask)]
            stack._watch(fd, self)
            self._ready[fd] = None  # epoll_ctl reports what is ready already

    def modify(self, fd, eventmask: int) -> None:
        """Change the mask of a registered fd (and re-arm a ONESHOT one).

        Raises: FileNotFoundError: not registered.
        """
        self._check_open()
        with self._stack._lock:
            entry = self._entry(fd)
            entry[1] = int(eventmask)
            self._ready[entry[0]._fd] = None

    def unregister(self, fd) -> None:
        """Stop watching `fd`. Raises: FileNotFoundError: not registered."""
        self._check_open()
        stack = self._stack
        with stack._lock:
            fd = self._entry(fd)[0]._fd
            del self._interest[fd]
            self._ready.pop(fd, None)
            stack._unwatch(fd, self)

    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        """Wait up to `timeout` seconds (None or negative: forever) for ready
        fds; returns [(fd, events)], at most `maxevents` (-1: no limit).

        Raises: ValueError: closed Epoll or maxevents 0 / below -1.
        OSError EBADF: the stack session was closed.
        """
        self._check_open()
        if maxevents == -1:
            maxevents = 1 << 30
        elif maxevents <= 0:
            raise ValueError(f"maxevents must be greater than 0, got {maxevents}")
        stack = self._stack
        deadline = None  # set when the first look finds nothing: poll(0) never reads the clock
        while True:
            if self._ready or not stack._quiet():
                # One lock for the dispatch and the collection. Not `with`:
                # compiled, that builds two bound methods per poll.
                lock = stack._lock
                lock.acquire()
                try:
                    dispatched = stack._dispatch()
                    found = self._collect(maxevents)
                finally:
                    lock.release()
                stack._wake_driver(dispatched)
            else:  # nothing listed, nothing to dispatch: no lock to take
                found = []
            if found or self._closed:
                return found
            if timeout is None or timeout < 0:
                stack._pump(None)
                continue
            if timeout == 0:
                return found
            if deadline is None:
                deadline = time.monotonic() + timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return found
            stack._pump(remaining)

    def __enter__(self) -> Epoll:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._interest)} registered"
        return f"<vfstack.Epoll {state}>"

    # ---------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed epoll object")

    def _entry(self, fd) -> list:
        entry = self._interest.get(fd if isinstance(fd, int) else fd.fileno())
        if entry is None or (not isinstance(fd, int) and entry[0] is not fd):
            raise error(errno.ENOENT)
        return entry

    def _touch(self, fd: int) -> None:
        """The stack reported news for `fd` (stack lock held)."""
        self._ready[fd] = None

    def _forget(self, fd: int) -> None:
        """`fd`'s socket was closed (stack lock held)."""
        self._interest.pop(fd, None)
        self._ready.pop(fd, None)

    def _collect(self, maxevents: int) -> list[tuple[int, int]]:
        """Report from the ready list (stack lock held).

        The list is walked in place: a level-triggered fd that is still
        ready keeps its place, which is where a move to the end would put
        it when the walk covers the whole list. Only a walk that
        `maxevents` cut short moves its reported fds behind the rest.
        """
        found: list[tuple[int, int]] = []
        leaving: list[int] = []
        ready, interest = self._ready, self._interest
        cut_short = False
        for fd in ready:
            if len(found) >= maxevents:
                cut_short = True
                break
            entry = interest.get(fd)
            if entry is None:
                leaving.append(fd)
                continue
            mask = entry[1]
            if mask == _DISABLED:
                leaving.append(fd)
                continue
            events = entry[0]._poll_mask() & (mask | _ALWAYS)
            if not events:
                leaving.append(fd)
                continue
            found.append((fd, events))
            if mask & _ONESHOT:
                entry[1] = _DISABLED
                leaving.append(fd)
            elif mask & _ET:
                leaving.append(fd)
        for fd in leaving:
            del ready[fd]
        if cut_short:
            for fd, _ in found:
                if fd in ready:  # level-triggered: look again, after the rest
                    del ready[fd]
                    ready[fd] = None
        return found
