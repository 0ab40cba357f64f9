"""One attached session: `vfstack.connect(url)` returns a `Stack`.

The Stack owns the session's shared-memory segment and both doorbells. It
is the only producer of the command ring and the only consumer of the
event ring; sockets (vfstack.sockets.socket) go through it for every
command and every wait. Events are dispatched by `_pump`: RESULTs to the
request that waits for them (by request id), ACCEPTED to the listener's
queue, SLOT_FREED to the slot bookkeeping; READY only wakes waiters, since
the slot table in shared memory is the authority on readiness, state and
error.

Waking (docs/architecture.md principle 2): the stack's doorbell is rung
only when the stack said it sleeps (`needs_wakeup()` after publishing);
before sleeping on the app doorbell the pump spins briefly (when its last
sleep was as short as a spin: adaptive), then announces sleep with
`prepare_sleep()` on the event ring, which re-checks the ring, so no event
posted meanwhile is missed.

Threads: one lock guards the rings and the dispatch tables; one thread at
a time sleeps on the doorbell (the "pumper"), the others wait on a
condition the pumper signals after every dispatch.

Several workers (`stackservice run --workers N`): the Stack attaches
once per worker, a *lane* each (`_Lane`: session, segment, rings and
doorbells), and merges them. A socket lives in one lane; its `fileno()`
is slot x N + worker, unique across the lanes. New sockets take the lanes
in turn, and a connection's active open picks its port in its worker's
share (vfstack._steering), so the replies reach it. A listener listens on
every lane (mTCP's per-core listen: vfstack.sockets.socket), its accept
queue fed by all of them. One pumper drains every lane and sleeps on every
app doorbell at once, through a kernel epoll that is also `fileno()`. One
worker ending its session ends the Stack's.

The end of the session (`_notice`): the stack stores `ended` in the
segment when it ends the session on purpose, and the app doorbell, whose
read end is ours and write end the stack's alone, hangs up when the
stack's end closes, on purpose or because the stack process died
(vfstack.shm "Liveness"). A hang-up
wakes the pumper at once, and a poller of `fileno()` too; callers that
never sleep look at most every PROBE_SECONDS. From then on (`_ended`),
commands raise StackGone, connections fail as reset, and every socket an
Epoll watches is reported.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import ipaddress
import os
import select
import socket as _socket
import threading
import time
import weakref
from collections import deque

from vfstack._control import DEFAULT_TIMEOUT, ControlClient, ControlError
from vfstack._errors import SDKError, StackGone, check, error
from vfstack.shm import (
    APP_BELL,
    EVENT_ACCEPTED,
    EVENT_RESULT,
    EVENT_SLOT_FREED,
    LAYOUT_VERSION,
    OP_CLOSE,
    OP_RX_DONE,
    OP_SOCKET,
    SEGMENT,
    STACK_BELL,
    BadRecord,
    CorruptRing,
    Doorbell,
    Event,
    Op,
    decode_event,
    encode_command_into,
    redeem,
)
from vfstack.shm._segment import Segment  # the defining module: stack.pxd cimports it
from vfstack.sockets.epoll import Epoll
from vfstack.v1 import stack_pb2

__all__ = ["Stack", "connect"]

SPIN_SECONDS = 50e-6  # busy-poll this long before sleeping on the doorbell
COMMAND_ANSWER_SECONDS = 30.0  # a stack that answers no command in this long is gone
# A caller that never sleeps (non-blocking calls, polls with timeout 0)
# looks this often whether the stack hung up without a word (one system call).
PROBE_SECONDS = 0.05
# connect(wait=...): first and longest pause between attempts, and what
# an instance that is down, starting or stopping answers (CANCELLED: it
# went away during the call).
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.05, 1.0
RETRY_CODES = frozenset({"UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED"})
# The clock of the hang-up probe, which every non-blocking call that finds
# nothing to do reads: bound once (a C global compiled, stack.pxd), not
# looked up in the time module per call.
_monotonic = time.monotonic
ENDED = "the stack ended this session"  # on purpose: see its log for why
DIED = "the stack instance is gone"


def _accepted_at(accepted: tuple) -> int:
    """When the worker accepted a queued connection (ACCEPTED's a64, µs)."""
    return accepted[4]


def connect(
    url: str,
    app: str = "app",
    timeout: float = DEFAULT_TIMEOUT,
    wait: float = 0.0,
    worker: int | None = None,
) -> Stack:
    """Attach to the instance whose control API listens at `url`
    (`unix:///run/vfstack/vf0.sock`, `HOST:PORT`).

    `wait`: for this many seconds, try again while the instance cannot
    answer (no control socket, still starting, stopping: as while it
    restarts), pausing 50 ms at first, then twice as long each time, up
    to 1 s; `math.inf` waits as long as it takes.

    `worker`: with several workers (`stackservice run --workers N`),
    attach to that one only, for a pre-forked app: one process per
    worker, each listening on the same port, gets the connections of its
    own worker, as with SO_REUSEPORT. By default the Stack attaches to
    every worker.

    Raises:
        ValueError: malformed URL.
        vfstack.ControlError: the instance refused or could not be reached
            (within `wait` seconds); INVALID_ARGUMENT: no such `worker`.
    """
    give_up = time.monotonic() + wait
    pause = RETRY_FIRST_SECONDS
    while True:
        try:
            return Stack(url, app, timeout, worker)
        except ControlError as exc:
            if exc.code not in RETRY_CODES or time.monotonic() + pause > give_up:
                raise
        time.sleep(pause)
        pause = min(2 * pause, RETRY_MAX_SECONDS)


class _Lane:
    """The session with one worker of the instance (its only one, with one
    worker): the segment, both rings, both doorbells. `index` is its place
    among the Stack's `count` lanes, `worker` the worker's number."""

    __slots__ = (
        "app_bell", "commands", "count", "events", "index", "nslots", "segment",
        "session_id", "stack_bell", "token", "worker",
    )  # fmt: skip

    def __init__(
        self, index: int, count: int, worker: int, reply: stack_pb2.AttachResponse
    ) -> None:
        self.index, self.count, self.worker = index, count, worker
        self.session_id, self.token = reply.session_id, reply.token

    def fd(self, slot: int) -> int:
        """The fileno() of this lane's `slot`: unique across the lanes."""
        return slot * self.count + self.index

    def open(self, reply: stack_pb2.AttachResponse, timeout: float) -> None:
        """Take the session's descriptors over the handoff socket and open
        them (vfstack.shm "Handoff").

        Raises:
            ValueError: another layout version, or what the stack handed
                over is not a sealed segment and two doorbells.
            OSError: the handoff refused (its errno) or failed.
        """
        if reply.layout_version != LAYOUT_VERSION:
            raise ValueError(
                f"the instance speaks layout {reply.layout_version}, this SDK {LAYOUT_VERSION}"
            )
        fds = redeem(reply.handoff_path, reply.session_id, reply.token, timeout)
        try:
            segment = Segment.open(fds[SEGMENT])  # which closes that descriptor
        except BaseException:
            os.close(fds[APP_BELL])
            os.close(fds[STACK_BELL])
            raise
        try:
            # The app's doorbell: the read end, the stack's write end being
            # its only other end, so its hang-up says the session is over.
            self.app_bell = Doorbell.adopt(fds[APP_BELL])
            self.stack_bell = Doorbell.adopt(fds[STACK_BELL])
        except BaseException:
            segment.close()
            os.close(fds[APP_BELL])
            os.close(fds[STACK_BELL])
            raise
        self.segment = segment
        self.commands = segment.commands
        self.events = segment.events
        self.nslots = segment.geometry.socket_slots

    def ended(self) -> bool:
        """Has the worker ended this session (its word in the segment) or
        died (our doorbell hung up)? One poll."""
        return self.segment.ended or self.app_bell.hung_up()

    def close(self) -> None:
        for bell in (self.app_bell, self.stack_bell):
            bell.close()
        with contextlib.suppress(BufferError):
            self.segment.close()


class Stack:
    """One session with a stack instance: makes sockets, pumps events."""

    def __init__(
        self,
        url: str,
        app: str = "app",
        timeout: float = DEFAULT_TIMEOUT,
        worker: int | None = None,
    ) -> None:
        client = ControlClient(url, timeout)
        self._client = client
        self._lanes: list[_Lane] = []
        try:
            info = client.info()
            self._workers = max(info.workers, 1)  # the instance's
            workers = range(self._workers) if worker is None else [worker]
            count = len(workers)
            for index, worker in enumerate(workers):
                request = stack_pb2.AttachRequest(app=app, pid=os.getpid(), worker=worker)
                reply = client._unary(client._stub.Attach, request)
                lane = _Lane(index, count, worker, reply)
                try:
                    lane.open(reply, timeout)
                except BaseException:
                    self._detach(lane)
                    raise
                self._lanes.append(lane)
        except BaseException:
            for lane in self._lanes:
                self._detach(lane)
                lane.close()
            client.close()
            raise
        self.session_id = self._lanes[0].session_id
        self.app = app
        self.local_ip = info.ip.split("/", 1)[0] or "0.0.0.0"
        # What the instance reaches: its subnet, and through its gateway the
        # rest (vfstack.aio routes an app's connections by these).
        self.network = ipaddress.IPv4Interface(info.ip or "0.0.0.0/32").network
        self.gateway = info.gateway or None
        self._bells = None  # with several lanes: a kernel epoll over their app doorbells
        self._lane_of_bell = {lane.app_bell.fileno(): lane for lane in self._lanes}
        if count > 1:
            self._bells = select.epoll()
            for fd in self._lane_of_bell:
                self._bells.register(fd, select.EPOLLIN)
        self._next_lane = 0  # the lane of the next socket()
        self._request = 0
        self._results: dict[int, Event] = {}
        # listener fd -> its connections, as (lane index, slot, ip, port,
        # when), in the order the workers accepted them
        self._accepts: dict[int, deque] = {}
        # A socket's slots that report under another fd: a listener's on the
        # other lanes, a moved socket's new one (vfstack.sockets.socket):
        # slot's fd -> the socket's fd
        self._alias_of: dict[int, int] = {}
        # fd -> its open Socket, so an Epoll can take a bare fileno(); held
        # weakly, as a dropped socket is no one's to keep (a plain weakref,
        # not a WeakValueDictionary, whose Python-level entries cost ~0.5 µs
        # a connection: close() removes the entry)
        self._sockets: dict[int, weakref.ref] = {}
        self._watchers: dict[int, list[Epoll]] = {}  # fd -> the Epolls that registered it
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._pumping = False
        # vfstack.aio's bridge to an event loop that polls fileno() all the
        # time: with one, the event ring stays announced as sleeping, and a
        # thread that consumed events behind that loop's back wakes the
        # loop for it.
        self._aio_driver = None
        self._driving = False  # that loop itself is dispatching
        self._closed = False
        self._ended: str | None = None  # why the session is over, once it is
        self._probe_at = 0.0  # next hang-up probe of a caller that never sleeps
        self._spin = SPIN_SECONDS  # the next wait's busy-poll (adaptive: _pump_events)

    # ---------------------------------------------------------------- public

    def socket(
        self, family: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM, proto: int = 0
    ):
        """A new TCP socket (blocking), like `socket.socket()`.

        Raises:
            OSError: EAFNOSUPPORT / EPROTONOSUPPORT for anything but
                AF_INET/SOCK_STREAM, EMFILE when the session has no free
                slot, EBADF after `close()`.
        """
        from vfstack.sockets.socket import Socket

        if family != _socket.AF_INET:
            raise error(errno.EAFNOSUPPORT)
        kind = type & ~(_socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
        if kind != _socket.SOCK_STREAM or proto not in (0, _socket.IPPROTO_TCP):
            raise error(errno.EPROTONOSUPPORT)
        lanes = self._lanes
        lane = lanes[self._next_lane]
        self._next_lane = (lane.index + 1) % len(lanes)
        event = self._call(lane, OP_SOCKET)
        check(event.result)
        sock = Socket(self, lane, event.slot, event.a1)
        if type & _socket.SOCK_NONBLOCK:
            sock.setblocking(False)
        return sock

    def epoll(self, sizehint: int = -1, flags: int = 0) -> Epoll:
        """A new `Epoll` over this stack's sockets, like `select.epoll()`."""
        self._check_open()
        return Epoll(self)

    def fileno(self) -> int:
        """The app doorbell's fd (with several workers, an epoll fd over
        their doorbells): readable when the stack has posted events for a
        session announced as sleeping, and for good once the session is
        over (`gone`). `vfstack.StackSelector` and `vfstack.aio` make that
        announcement and drain the fd; a loop of your own should go
        through one of them."""
        self._check_open()
        return self._bell_fd()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def gone(self) -> bool:
        """Is the session over on the stack's side (the instance ended it,
        or its process died)? Then `socket()` raises `vfstack.StackGone`
        and connections fail as reset: `close()` this Stack and
        `vfstack.connect()` again. Looks now (one system call)."""
        return self._notice(force=True)

    def close(self) -> None:
        """Detach (the stack resets this session's connections) and unmap. Idempotent."""
        with self._lock:
            if self._closed:
                return
            # An ended session has nothing to detach, and the control
            # socket may be a new instance's by now. With several workers,
            # the lanes whose worker lives on are detached still.
            self._notice(force=True)
            live = [lane for lane in self._lanes if not lane.ended()]
            self._closed = True
            self._cond.notify_all()
        for lane in live:
            self._detach(lane)
        self._client.close()
        driver = self._aio_driver
        if driver is not None and not driver.loop.is_closed():
            # Before the fd closes: the loop's selector must not keep it.
            driver.loop.remove_reader(self._bell_fd())
        if self._bells is not None:
            self._bells.close()
        for lane in self._lanes:
            lane.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"session={self.session_id}"
        if self._ended is not None:
            state += " gone"
        return f"<vfstack.Stack app={self.app!r} {state}>"

    # ------------------------------------------------------------ internals

    def _detach(self, lane: _Lane) -> None:
        with contextlib.suppress(Exception):
            request = stack_pb2.DetachRequest(session_id=lane.session_id, token=lane.token)
            self._client._unary(self._client._stub.Detach, request)

    def _bell_fd(self) -> int:
        if self._bells is not None:
            return self._bells.fileno()
        return self._lanes[0].app_bell.fileno()

    def _check_open(self) -> None:
        if self._closed:
            raise error(errno.EBADF)

    def _check_alive(self) -> None:
        """Raises: OSError EBADF after close(); StackGone once the session is over."""
        self._check_open()
        if self._ended is not None:
            raise StackGone(errno.ENETDOWN, self._ended)

    def _notice(self, force: bool = False) -> bool:
        """Is the session over? The stack's word in the segment, then
        whether the stack still holds its end of our doorbell (a poll):
        with `force`, else at most every PROBE_SECONDS (a non-blocking
        call that finds nothing to do pays ~0.2 µs, not a system call).
        When it is over: every waiter wakes, every socket an Epoll
        watches is reported (its mask says why: `Socket._poll_mask`).

        Returns: the session is over (False after close(): nothing to ask).
        """
        if self._ended is not None:
            return True
        if not force:
            now = _monotonic()
            if now < self._probe_at:
                return False
            self._probe_at = now + PROBE_SECONDS
        with self._lock:
            if self._ended is not None or self._closed:
                return self._ended is not None
            # Loops, not any(): a generator is a closure, which a compiled
            # method cannot hold.
            for lane in self._lanes:
                if lane.ended():
                    break
            else:
                return False
            why = DIED
            for lane in self._lanes:  # it stores `ended` before it closes the doorbell
                if lane.segment.ended:
                    why = ENDED
                    break
            self._ended = why
            for fd, epolls in self._watchers.items():
                for epoll in epolls:
                    epoll._touch(fd)
            self._cond.notify_all()
            return True

    def _submit(
        self, lane: _Lane, op: int, slot: int = 0, a1: int = 0, a2: int = 0, a64: int = 0
    ) -> int:
        """Publish one command on `lane`; ring its worker only if it sleeps.
        Returns its request id (unique across the lanes).

        Raises: OSError EBADF after close(); StackGone once the session is over.
        """
        with self._lock:
            self._check_alive()
            request = (self._request + 1) & 0xFFFFFFFF or 1
            self._request = request
            commands = lane.commands
            give_up = None
            while commands.reserve(1) == 0:
                # The stack stops taking commands while its events wait for
                # room: make room, wake it, and let it catch up.
                self._drain()
                lane.stack_bell.ring()
                now = time.monotonic()
                if give_up is None:
                    give_up = now + COMMAND_ANSWER_SECONDS
                elif now > give_up:
                    raise SDKError("the stack takes no commands: command ring full")
                time.sleep(0.0001)
                self._notice()
                self._check_alive()
            encode_command_into(
                commands.data, commands.write_offset(0), op, slot, request, a1, a2, 0, 0, a64
            )
            commands.publish(1)
            if commands.needs_wakeup():
                lane.stack_bell.ring()
            return request

    def _notify(self, lane: _Lane, op: int, slot: int) -> None:
        """Submit a command that has no reply (TX, RX_DONE, CLOSE). Once the
        session is over nobody reads it, and the call that made it (a send
        whose bytes are queued, a recv, a close) must not fail for it."""
        try:  # noqa: SIM105 (contextlib.suppress costs a context manager per send)
            self._submit(lane, op, slot)
        except StackGone:
            pass

    def _call(
        self, lane: _Lane, op: int, slot: int = 0, a1: int = 0, a2: int = 0, a64: int = 0
    ) -> Event:
        """Submit a command and wait for its RESULT (commands are answered
        at once by the stack; socket timeouts do not apply here)."""
        request = self._submit(lane, op, slot, a1, a2, a64)
        results = self._results
        if not self._wait(lambda: request in results, time.monotonic() + COMMAND_ANSWER_SECONDS):
            raise SDKError(
                f"no answer from the stack to {Op(op).name} in {COMMAND_ANSWER_SECONDS}s"
            )
        return results.pop(request)

    def _wait(self, ready, deadline: float | None) -> bool:
        """Pump events until `ready()` or `deadline` (monotonic; None: forever).

        Returns: ready() at the end. Raises: OSError EBADF if the stack
        closes, StackGone if the session ends (a `ready` that waits for
        data counts the end as ready, to fail as the socket should).
        """
        while True:
            if ready():
                return True
            self._check_alive()
            if deadline is None:
                remaining = None
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return ready()
            self._pump(remaining)

    def _pump(self, timeout: float | None) -> int:
        """Dispatch pending events; if none, wait up to `timeout` seconds
        (None: until some arrive). Returns how many this thread dispatched."""
        n = self._pump_events(timeout)
        self._wake_driver(n)
        return n

    def _dispatch(self) -> int:
        """Dispatch pending events without waiting (lock held); with none,
        look whether the session is over, which a caller that never sleeps
        would not see otherwise. Returns how many."""
        self._check_open()
        n = self._drain()
        if not n:
            self._notice()
        return n

    def _quiet(self) -> bool:
        """Nothing to dispatch and the session not over, asked without the
        lock: a poll(0) that finds nothing then costs no lock. Reads only
        (each lane's event head; `_notice` locks when it probes), so the
        answer is one another thread's dispatch may overtake, as a
        non-blocking poll's may on Linux."""
        self._check_open()
        for lane in self._lanes:
            if lane.events.pending():
                return False
        return not self._notice()

    def _wake_driver(self, dispatched: int) -> None:
        """After a pump by a thread other than vfstack.aio's event loop: wake
        that loop if this thread took events behind its back (`dispatched`)
        or events wait, since it sleeps on `fileno()` with the ring
        announced as sleeping and nothing rings for those."""
        driver = self._aio_driver
        if driver is not None and not self._driving:
            with self._lock:
                wake = not self._closed and (dispatched or not self._prepare_sleep())
            if wake:
                driver.wake()

    def _sleep_begin(self) -> bool:
        """An outside poller is about to block on `fileno()`: announce it.

        Returns: False if events wait already (dispatch them instead of
        blocking; no `_sleep_end` needed) or the session is over (nothing
        will ring), True if it may block.
        """
        with self._lock:
            self._check_open()
            if self._drain() or self._ended is not None:
                return False
            return self._prepare_sleep()

    def _sleep_end(self, readable: bool) -> None:
        """The outside poller woke up: take the ring back. `readable`: it
        saw `fileno()` readable, which without a ring means a hang-up."""
        with self._lock:
            if not self._closed:
                rung = 0
                for lane in self._lanes:
                    lane.events.sleep_done()
                    rung += lane.app_bell.drain()
                if not rung and readable:
                    self._notice(force=True)

    def _prepare_sleep(self) -> bool:
        """Announce sleep on every lane's event ring (lock held).

        Returns: True if all are still empty (block on the doorbells, then
        `sleep_done` each); False if one has events (none stays announced).
        """
        lanes = self._lanes
        for i, lane in enumerate(lanes):
            if not lane.events.prepare_sleep():
                for announced in lanes[:i]:
                    announced.events.sleep_done()
                return False
        return True

    def _wait_bells(self, timeout: float | None) -> bool:
        """Block until a lane's doorbell rings or hangs up, or `timeout`
        passes; drain them. Returns: rung or hung up."""
        if self._bells is None:
            return self._lanes[0].app_bell.wait(timeout)
        rung = self._bells.poll(-1 if timeout is None else timeout)
        for fd, _ in rung:
            self._lane_of_bell[fd].app_bell.drain()
        return bool(rung)

    def _pump_events(self, timeout: float | None) -> int:
        # The lock, not the condition: the same lock, without a Python-level
        # __enter__ (threading.Condition's) on every non-blocking call.
        with self._lock:
            if timeout == 0:
                return self._dispatch()
            self._check_open()
            n = self._drain()
            if n:
                return n
            # Another thread sleeps on the doorbell for us all; or the
            # session is over and nothing rings it (hung up, it would not
            # even block): wait for close() or the timeout.
            if self._pumping or self._ended is not None:
                self._cond.wait(timeout)
                return 0
            self._pumping = True
        try:
            end = time.perf_counter() + self._spin
            while True:
                with self._lock:
                    n = self._drain()
                if n:
                    return n
                if time.perf_counter() >= end:
                    break
            with self._lock:
                sleep = self._prepare_sleep()
            rung = False
            if sleep:
                slept_at = time.perf_counter()
                try:
                    rung = self._wait_bells(timeout)
                finally:
                    # Adaptive busy-poll: the next wait spins only if this
                    # sleep was short enough for a spin to have caught its
                    # event. A busy stack keeps it; an app that waits a
                    # millisecond between requests stops burning 50 µs of
                    # CPU per wait.
                    short = time.perf_counter() - slept_at < SPIN_SECONDS
                    self._spin = SPIN_SECONDS if short else 0.0
                    with self._lock:
                        if not self._closed:
                            for lane in self._lanes:
                                lane.events.sleep_done()
            with self._lock:
                if self._closed:
                    return 0
                n = self._drain()
                if not n and rung:  # woken with nothing to do: hung up?
                    self._notice(force=True)
                return n
        except CorruptRing as exc:
            raise SDKError(f"the stack broke the event ring: {exc.reason}") from None
        finally:
            with self._cond:
                self._pumping = False
                self._cond.notify_all()

    def _drain(self) -> int:
        """Dispatch every published event of every lane (lock held). Returns how many."""
        if self._closed:
            return 0
        n = 0
        for lane in self._lanes:
            if lane.events.available():
                n += self._drain_lane(lane)
        return n

    def _drain_lane(self, lane: _Lane) -> int:
        events = lane.events
        n = events.available()
        data, slots = events.data, lane.nslots
        alias_of = self._alias_of
        orphans: list[int] = []
        try:
            for i in range(n):
                event = decode_event(data, slots, events.read_offset(i))
                kind = event.kind
                if kind == EVENT_RESULT:
                    self._results[event.request] = event
                    continue
                if kind == EVENT_SLOT_FREED:
                    self._drop_stale(lane, event.slot, event.a64)
                    continue
                fd = lane.fd(event.slot)
                fd = alias_of.get(fd, fd)  # a listener's slot on another lane, a moved socket's
                if kind == EVENT_ACCEPTED:
                    queue = self._accepts.get(fd)
                    if queue is None:  # the listener was closed meanwhile
                        orphans.append(event.a1)
                        continue
                    accepted = (lane.index, event.a1, event.a2, event.a3, event.a64)
                    if queue and queue[-1][4] > event.a64:  # another lane's came later
                        bisect.insort(queue, accepted, key=_accepted_at)
                    else:
                        queue.append(accepted)
                watchers = self._watchers.get(fd)  # READY or ACCEPTED
                if watchers:
                    for epoll in watchers:
                        epoll._touch(fd)
        except BadRecord as exc:
            raise SDKError(f"the stack sent a bad event: {exc.reason}") from None
        events.release(n)
        self._cond.notify_all()
        for slot in orphans:
            self._close_slot(lane, slot)
        return n

    def _drop_stale(self, lane: _Lane, slot: int, end: int) -> None:
        """SLOT_FREED: the closed connection's unread bytes go. Like a read,
        a drop from a full ring owes the stack RX_DONE: it stopped filling
        the ring, which the slot's next connection may already have (its
        bytes would wait in the stack for good)."""
        rx = lane.segment.rx(slot)
        before = rx.readable()
        dropped = lane.segment.drop_stale_rx(slot, end)
        if dropped and rx.was_full(before, dropped):
            self._notify(lane, OP_RX_DONE, slot)

    def _close_slot(self, lane: _Lane, slot: int) -> None:
        """Give a slot back (no reply; SLOT_FREED follows). Lock may be held."""
        with self._lock:
            if self._closed:
                return
            fd = lane.fd(slot)
            queue = self._accepts.pop(fd, None)
            self._sockets.pop(fd, None)
            for epoll in self._watchers.pop(fd, ()):
                epoll._forget(fd)
            rx = lane.segment.rx(slot)
            n = rx.readable()
            if n:
                rx.release(n)  # the app discards what it has not read (layout contract)
            self._notify(lane, OP_CLOSE, slot)
            if queue:
                for index, pending, *_ in queue:
                    self._close_slot(self._lanes[index], pending)

    def _socket_of(self, fd):
        """The open Socket of this session that `fd` (a Socket or its fileno) names.

        Raises: OSError EBADF otherwise.
        """
        if isinstance(fd, int):
            ref = self._sockets.get(fd)
            sock = ref() if ref is not None else None
        else:
            sock = fd if getattr(fd, "_stack", None) is self else None
        if sock is None or sock._slot < 0:
            raise error(errno.EBADF)
        return sock

    def _watch(self, fd: int, epoll: Epoll) -> None:
        self._watchers.setdefault(fd, []).append(epoll)

    def _unwatch(self, fd: int, epoll: Epoll) -> None:
        watchers = self._watchers.get(fd)
        if watchers and epoll in watchers:
            watchers.remove(epoll)
            if not watchers:
                del self._watchers[fd]

    def _touch(self, fd: int) -> None:
        """The app itself made `fd` more ready (e.g. its own shutdown)."""
        with self._lock:
            for epoll in self._watchers.get(fd, ()):
                epoll._touch(fd)
