"""Doorbells: a kernel-waitable "look at your rings" between two processes.

A doorbell is a FIFO (named pipe) in a directory both sides see — a tmpfs
shared by the stack's container and the application's. The side that
creates it opens it `O_RDWR | O_NONBLOCK`: it never blocks in `open()`
waiting for the other, and since it holds a write end, it never reads EOF.
`ring()` writes one byte; a full pipe (EAGAIN) means wake-ups are already
pending, which is all a ring has to ensure. The waiter polls `fileno()`
(poll, selectors, asyncio's `add_reader`) and `drain()`s the bytes after
waking. The pending bytes are a *level*: a ring that happens before the
waiter blocks is not lost, the wait just returns at once.

The end of the ringing side. An application opens the doorbell it waits
on with `open(path, ring=False)`, read-only: then the stack holds the
only write end, and once that closes — the stack ended the session, or
its process died, however (`kill -9` too: the kernel closes its
descriptors) — the pipe has no writer left and poll reports POLLHUP, for
good: `wait()` returns at once and `hung_up()` is True. Like the flock
the stack probes on the segment (`Segment.app_alive`), this is the state
of one kernel object, the same in every container and PID namespace, and
it needs no probing while the application sleeps: the hang-up wakes it.

Doorbells are expensive (~7 µs to a sleeping process, ~46 µs round trip
with both sides sleeping, docs/architecture.md "Measured costs"), so they
are rung only when the consumer of a ring said it sleeps: the need-wakeup
flag in the ring header (vfstack.shm._rings), as AF_XDP and virtio do.

The protocol, for one ring R whose consumer C sleeps on doorbell D::

    consumer C                              producer P
    ----------                              ----------
    loop:                                   write records, then
      batch = R.pop_many(...)                 R.publish(n)       # p1: store head
      if batch: handle it; continue         if R.needs_wakeup(): # p2: fence, load flag
      (spin briefly: sleeping costs µs)         D.ring()         # p3: write a byte
      if R.prepare_sleep():   # c1: store flag=1, fence, c2: load head
          D.wait(timeout)     # c3: poll, then drain the pending bytes
          R.sleep_done()      # c4: store flag=0

Why no wake-up is lost. C blocks only if, at c2, it saw no data; P skips
the bell only if, at p2, it saw the flag clear. Both sides put a full fence
between their store and their load (a locked instruction; x86-64 TSO would
otherwise let each load pass the older store — the store-buffer case, which
is exactly this Dekker-style pattern, so plain TSO is *not* enough here).
With fences, all four operations fall into one total order, and c1 precedes
c2 and p1 precedes p2 in it. Then either

- c1 comes before p2: P reads flag=1 and rings (unless C has already
  woken and cleared it, see c4 below). The byte stays in the pipe until C
  drains it, so C's wait returns whether it blocks before or after the
  ring; or
- p2 comes before c1: then p1 < p2 < c1 < c2, so C's load at c2 sees the
  new head, `prepare_sleep()` returns False and C consumes instead of
  sleeping.

C drains only right after waking (c3) and always re-checks the ring before
it can sleep again (the loop goes back to `pop_many`). A ring consumed by
that drain was caused by a publish that is already visible (the pipe's
own locking orders P's write before C's read), so draining loses nothing;
a ring after the drain stays pending and costs one spurious wake-up at
most. Clearing the flag (c4) needs no fence: if P reads the cleared flag
it skips the bell, but C is awake and passes c1-c2 before it sleeps
again, which by the second case sees P's head. Spurious wake-ups (a stale
byte, a liar setting its flag) cost time, never correctness.

Trust: a process can fill the pipe (then `ring()` gets EAGAIN, harmless),
read the other side's bytes (it only steals its own wake-ups), or unlink
the path (open descriptors keep working). `open()` refuses anything but a
FIFO and does not follow symlinks. The stack keeps the descriptors it made
with `create()` and never reopens a path an application can replace.

The fence is an uncontended lock round trip (~75 ns, pure Python's
cheapest locked instruction), paid once per `prepare_sleep()` and once per
`needs_wakeup()`, i.e. per batch. A compiled build uses
`__atomic_thread_fence(__ATOMIC_SEQ_CST)` instead.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat

__all__ = ["Doorbell"]

_OPEN_FLAGS = os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
_BYTE = b"\x01"


class Doorbell:
    """One direction of wake-ups over a FIFO; see the module docstring."""

    __slots__ = ("_fd", "_poll", "_scratch", "path")

    def __init__(self, path: str, fd: int) -> None:
        """Use `create()` or `open()`."""
        self.path = path
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._scratch = bytearray(4096)

    @classmethod
    def create(cls, path: str, mode: int = 0o660, group: int | None = None) -> Doorbell:
        """Make the FIFO at `path` (exactly `mode`, whatever the umask; owned
        by `group` if given) and open it.

        Raises:
            FileExistsError: something is already at `path`.
        """
        os.mkfifo(path, mode)
        try:
            if group is not None:
                os.chown(path, -1, group, follow_symlinks=False)
            os.chmod(path, mode)
            return cls.open(path)
        except BaseException:
            os.unlink(path)
            raise

    @classmethod
    def open(cls, path: str, ring: bool = True) -> Doorbell:
        """Open an existing doorbell (never blocks, never follows a symlink);
        with `ring` False only to wait on it, so that `hung_up()` can tell
        when every other process has closed it (see the module docstring).

        Raises:
            OSError: cannot open it (FileNotFoundError, PermissionError, ELOOP).
            ValueError: `path` is not a FIFO.
        """
        fd = os.open(path, _OPEN_FLAGS | (os.O_RDWR if ring else os.O_RDONLY))
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError(f"{path} is not a FIFO")
        return cls(path, fd)

    def fileno(self) -> int:
        """The descriptor: readable while a ring is pending."""
        return self._fd

    def ring(self) -> None:
        """Wake the other side (one byte; a full pipe means it is woken already)."""
        try:  # noqa: SIM105 (contextlib.suppress costs a context manager per ring)
            os.write(self._fd, _BYTE)
        except BlockingIOError:
            pass

    def drain(self) -> int:
        """Consume every pending ring.

        Returns:
            How many bytes were pending.
        """
        fd, scratch, total = self._fd, self._scratch, 0
        while True:
            try:
                n = os.readv(fd, (scratch,))
            except BlockingIOError:
                return total
            total += n
            if n < len(scratch):  # the pipe is empty now: spare the EAGAIN call
                return total

    def wait(self, timeout: float | None = None) -> bool:
        """Block until rung or `timeout` seconds pass (None: forever, 0: just look),
        then drain.

        Returns:
            True if rung (the pending rings are consumed) or hung up,
            False on timeout.
        """
        ms = None if timeout is None else max(0.0, timeout * 1000.0)
        if not self._poll.poll(ms):
            return False
        self.drain()
        return True

    def hung_up(self) -> bool:
        """Has every process that could ring it closed its end? Only a
        doorbell opened with `ring=False` can tell (one poll, no waiting)."""
        return any(revents & select.POLLHUP for _, revents in self._poll.poll(0))

    def close(self) -> None:
        """Close the descriptor (idempotent); the FIFO stays for the other side."""
        if self._fd >= 0:
            self._poll.unregister(self._fd)
            os.close(self._fd)
            self._fd = -1

    def unlink(self) -> None:
        """Remove the FIFO's name (open descriptors keep working)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
