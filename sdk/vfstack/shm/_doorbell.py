"""Doorbells: a kernel-waitable "look at your rings" between two processes.

A session has two, made by the stack at Attach and handed to the app as
descriptors over a unix socket (SCM_RIGHTS, vfstack.shm._handoff): no
path, so no file an app could replace, fill or remove.

- The app's doorbell (the stack rings, the app waits) is a pipe. The
  stack keeps the write end, the app gets the read end. `ring()` writes
  one byte; a full pipe (EAGAIN) means wake-ups are already pending,
  which is all a ring has to ensure. The waiter polls `fileno()` (poll,
  selectors, asyncio's `add_reader`) and `drain()`s after waking.
- The stack's doorbell (the app rings, the stack waits) is an eventfd
  both hold. `ring()` adds 1 to its counter; `drain()` is ONE read that
  takes the whole count back to 0, however often and however fast the app
  rings: the stack's cost per wake-up is one system call by construction,
  where a pipe kept full by an app (F_SETPIPE_SZ, 64 KiB writes) would
  hold a read-until-empty loop for as long as the app keeps writing.

Pending rings are a *level*: a ring that happens before the waiter blocks
is not lost, the wait just returns at once.

Liveness, both ways, from the pipe alone. Only the stack holds its write
end: once that closes (the stack ended the session, or its process died,
however: `kill -9` too, the kernel closes its descriptors), the app's
read end reports POLLHUP for good (`hung_up()`). Only the app holds its
read end (the control process drops its copy once the app has it): once
that closes, the app's process is gone, and the stack's write end
reports POLLERR (`reader_gone()`), which the stack's poll() sees at once.
Both are the state of one kernel object, the same in every container and
PID namespace, and neither needs probing.

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

Trust: an app can fill its pipe (then the stack's `ring()` gets EAGAIN,
harmless), read the eventfd (it only steals its own wake-ups), push the
eventfd's counter to its maximum (the app's own `ring()` then gets
EAGAIN, the stack's next `drain()` takes the count back) or ring without
pause (each costs the stack one read per pass; rung again and again with
no command behind it, the stack mutes it for a back-off and looks at the
ring on its own cadence: stackservice.fastpath.backoff).
`adopt()` refuses a descriptor that is neither a pipe nor an eventfd.

The fence is an uncontended lock round trip (~75 ns, pure Python's
cheapest locked instruction), paid once per `prepare_sleep()` and once per
`needs_wakeup()`, i.e. per batch. A compiled build uses
`__atomic_thread_fence(__ATOMIC_SEQ_CST)` instead.
"""

from __future__ import annotations

import os
import select
import stat

__all__ = ["Doorbell"]

_BYTE = b"\x01"
_PIPE_READ = 4096  # one drain of a pipe: the stack rings it at most once a pass
_EVENTFD_FLAGS = os.EFD_NONBLOCK | os.EFD_CLOEXEC
_PIPE_FLAGS = os.O_NONBLOCK | os.O_CLOEXEC


def _is_eventfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
    except OSError:
        return False


class Doorbell:
    """One end of a doorbell, a pipe or an eventfd; see the module docstring."""

    __slots__ = ("_eventfd", "_fd", "_poll", "_probe")

    def __init__(self, fd: int, eventfd: bool) -> None:
        """Use `pipe()`, `eventfd()` or `adopt()`."""
        self._fd = fd
        self._eventfd = eventfd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        # hung_up/reader_gone look from other threads than the one asleep
        # in wait(), and one poll object refuses concurrent polls
        # (RuntimeError); hang-ups and errors need no event mask.
        self._probe = select.poll()
        self._probe.register(fd, 0)

    @classmethod
    def pipe(cls) -> tuple[Doorbell, Doorbell]:
        """A new app doorbell: (its waiting end, its ringing end)."""
        read_end, write_end = os.pipe2(_PIPE_FLAGS)
        return cls(read_end, False), cls(write_end, False)

    @classmethod
    def eventfd(cls) -> Doorbell:
        """A new stack doorbell (both sides hold the same eventfd)."""
        return cls(os.eventfd(0, _EVENTFD_FLAGS), True)

    @classmethod
    def adopt(cls, fd: int) -> Doorbell:
        """A doorbell over a descriptor received from the other side (made
        non-blocking: its sender's flags may say otherwise).

        Raises:
            ValueError: `fd` is neither a pipe nor an eventfd.
        """
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            eventfd = False
        elif _is_eventfd(fd):
            eventfd = True
        else:
            raise ValueError(f"descriptor {fd} is neither a pipe nor an eventfd")
        os.set_blocking(fd, False)
        return cls(fd, eventfd)

    def fileno(self) -> int:
        """The descriptor: readable while a ring is pending."""
        return self._fd

    def ring(self) -> None:
        """Wake the other side (a full pipe or counter means it is woken
        already; a pipe with no reader left, a waiter that is gone, which
        poll reports: `reader_gone`)."""
        try:
            if self._eventfd:
                os.eventfd_write(self._fd, 1)
            else:
                os.write(self._fd, _BYTE)
        except (BlockingIOError, BrokenPipeError):
            pass

    def drain(self) -> int:
        """Consume the pending rings with one read (bounded by construction:
        an eventfd's counter comes back whole; a pipe gives at most
        4096 bytes, the rest keeps it readable for the next pass).

        Returns:
            How many rings were consumed.
        """
        try:
            if self._eventfd:
                return os.eventfd_read(self._fd)
            return len(os.read(self._fd, _PIPE_READ))
        except BlockingIOError:
            return 0

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
        """The waiting end of the app's doorbell: has every process that
        could ring it (the stack) closed its end? (One poll, no waiting.)"""
        return any(revents & select.POLLHUP for _, revents in self._probe.poll(0))

    def reader_gone(self) -> bool:
        """The ringing end of the app's doorbell: has every process that
        could wait on it (the app) closed its end? (One poll, no waiting.)"""
        return any(revents & select.POLLERR for _, revents in self._probe.poll(0))

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self._fd >= 0:
            self._poll.unregister(self._fd)
            self._probe.unregister(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
