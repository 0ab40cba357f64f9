"""The soak's actors and the drivers that run their connections.

An *actor* (`Actor`) is one process of the soak: an SDK app attached to
the stack, or the kernel peer. It listens on some ports (each connection
it accepts runs the plan the initiator's header names) and keeps
`concurrency` connections open to each of its targets, each with the
next plan of that target's seeded stream. It counts what its connections
did and reports failures with their last operations.

A *driver* runs the endpoints (tests/support/soak_plan.py) the way one
kind of application would:
- `ReadinessDriver`: one thread, non-blocking sockets and a poller; over
  a vfstack `Epoll` (level-triggered, or EPOLLONESHOT re-armed by
  `modify`), a `vfstack.StackSelector`, or, for the kernel peer, the
  platform's `selectors.DefaultSelector`;
- `ThreadDriver`: blocking sockets with timeouts, a thread per connection;
- `AsyncioDriver`: `vfstack.aio` streams on an asyncio loop.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import select
import selectors
import socket
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable

from tests.support.soak_plan import (
    ACCEPTOR,
    COMPLETE,
    HANG_SECONDS,
    INITIATOR,
    Endpoint,
    Options,
    make_plan,
)

POLL_SECONDS = 0.2  # a driver looks at the drain/exit flags at least this often
EXIT_GRACE_SECONDS = 90.0  # after "exit": connections still open then are failures
BOTH_WAYS_SLICE = 0.02  # ThreadDriver: longest wait on one direction while the other waits
BACKLOGS = (4, 16, 128)


class Actor:
    """One soak process's shared state: plan streams, flags, counts, reports.

    Thread-safe: drivers call it from any thread. `emit` writes one JSON
    line to stdout, which the orchestrator reads (tests/support/soak.py).
    """

    def __init__(
        self, name: str, seed: int, targets, refused, concurrency: int, plan: int | None = None
    ) -> None:
        self.name = name
        self.plan = plan  # replay: every connection this actor starts runs this plan
        self.seed = seed
        self.targets: list[tuple[str, int]] = list(targets)
        self.refused: tuple[str, int] = refused
        self.concurrency = concurrency
        self.going = threading.Event()  # every actor listens: start connecting
        self.draining = threading.Event()  # start no more connections
        self.exiting = threading.Event()  # close listeners, finish, report
        self._lock = threading.Lock()
        self._streams = [random.Random(f"{seed}/target/{i}") for i in range(len(self.targets))]
        self.live: set[Endpoint] = set()
        self.recent: deque = deque(maxlen=12)  # (time, what): the actor's last steps
        self.ops = self.sent = self.received = self.verified = 0
        self.outcomes: Counter = Counter()  # "kind/outcome" -> connections
        self.failures = 0
        self._drained = False
        self._started = time.monotonic()

    # ------------------------------------------------------------ plans

    def next_plan(self, target: int, now: float) -> tuple[Endpoint, tuple[str, int]]:
        """A new initiator endpoint for `target` and the address to connect to."""
        with self._lock:
            seed = self._streams[target].getrandbits(63)
        seed = seed if self.plan is None else self.plan
        plan = make_plan(seed)
        endpoint = Endpoint(INITIATOR, plan, now)
        address = self.refused if plan.kind == "refused" else self.targets[target]
        endpoint.address = f"to {address[0]}:{address[1]}"
        self._began(endpoint, f"connect plan {seed} ({plan.kind}) to {address[0]}:{address[1]}")
        return endpoint, address

    def accepted(self, peer, now: float) -> Endpoint:
        endpoint = Endpoint(ACCEPTOR, None, now)
        endpoint.address = f"from {peer[0]}:{peer[1]}"
        self._began(endpoint, f"accept from {peer[0]}:{peer[1]}")
        return endpoint

    def listener_options(self, port: int) -> tuple[int, Options]:
        """Backlog and options of the listener on `port` (inherited by what it
        accepts on Linux). Never SO_LINGER: accepted sockets would reset on close."""
        rng = random.Random(f"{self.seed}/listen/{port}")
        options = Options(
            nodelay=rng.random() < 0.5,
            keepalive=(rng.randint(1, 3), 1, 5) if rng.random() < 0.3 else None,
            rcvbuf=rng.choice((0, 0, 16384, 65536)),
            sndbuf=rng.choice((0, 0, 16384, 65536)),
        )
        return rng.choice(BACKLOGS), options

    def _began(self, endpoint: Endpoint, what: str) -> None:
        with self._lock:
            self.live.add(endpoint)
            self.recent.append((time.monotonic() - self._started, what))

    # ---------------------------------------------------------- results

    def finished(self, endpoint: Endpoint) -> None:
        """An endpoint is done and its socket closed: count it, report a failure."""
        complete = endpoint.outcome == COMPLETE
        with self._lock:
            self.live.discard(endpoint)
            self.ops += endpoint.ops
            self.sent += endpoint.sent
            self.received += endpoint.received
            self.verified += endpoint.received if complete else 0
            outcome = endpoint.outcome or "failed"
            self.outcomes[f"{endpoint.kind}/{outcome}"] += 1
            self.failures += bool(endpoint.failure)
            seed = endpoint.plan.seed if endpoint.plan else "?"
            self.recent.append((time.monotonic() - self._started, f"plan {seed}: {outcome}"))
        if endpoint.failure:
            self.fail(endpoint.describe())

    def fail(self, text: str) -> None:
        """Report a failure, with the actor's last steps."""
        steps = "\n".join(f"    {t:8.3f}s {what}" for t, what in list(self.recent))
        self.emit(
            {
                "type": "failure",
                "actor": self.name,
                "text": f"{self.name}: {text}\n  {self.name}'s last steps:\n{steps}",
            }
        )

    def counts(self) -> dict:
        with self._lock:
            return {
                "actor": self.name,
                "ops": self.ops,
                "sent": self.sent,
                "received": self.received,
                "verified": self.verified,
                "connections": sum(self.outcomes.values()),
                "open": len(self.live),
                "failures": self.failures,
                "outcomes": dict(self.outcomes),
            }

    def report_ready(self) -> None:
        """Say that this actor listens, and may be told to go."""
        self.emit({"type": "ready", "actor": self.name})

    def report_drained(self) -> None:
        """Say once that no connection this actor started is still open."""
        if not self._drained:
            self._drained = True
            self.emit({"type": "drained", "actor": self.name})

    def emit(self, record: dict) -> None:
        with self._lock:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()

    def dump(self) -> str:
        """Everything in flight, for a post-mortem (SIGUSR1, or a stack that died)."""
        lines = [f"{self.name}: {len(self.live)} connections open; last steps:"]
        lines += [f"    {t:8.3f}s {what}" for t, what in list(self.recent)]
        for endpoint in list(self.live):
            lines.append(endpoint.describe())
        return "\n".join(lines)


# ------------------------------------------------------------------ calls


def make_call(sock, call: tuple) -> None:
    """One call an endpoint asked for (see `Endpoint`), on a socket."""
    what = call[0]
    if what == "setsockopt":
        sock.setsockopt(*call[1:])
    elif what == "shutdown":
        sock.shutdown(call[1])
    else:
        sock.close()


def make_calls(sock, endpoint: Endpoint, now: float, before_close=None) -> bool:
    """Make the endpoint's calls in order. Returns whether it closed the socket."""
    while calls := endpoint.take_calls():
        for call in calls:
            if call[0] == "close" and before_close is not None:
                before_close()
            try:
                make_call(sock, call)
            except OSError as exc:
                endpoint.on_error(exc, call[0], now)
            else:
                endpoint.on_call_done(call, now)
            if call[0] == "close":
                return True
    return False


def attempt(endpoint: Endpoint, op: str, call, arg, not_yet: type[OSError]) -> None:
    """`call(arg)` for a "recv" or a "send", the outcome told to the
    endpoint; `not_yet` (EAGAIN, a timeout) means try again later."""
    try:
        result = call(arg)
    except not_yet:
        return
    except OSError as exc:
        endpoint.on_error(exc, op, time.monotonic())
        return
    if op == "recv":
        endpoint.on_received(result, time.monotonic())
    else:
        endpoint.on_sent(result, time.monotonic())


def listen(new_socket, port: int, backlog: int, options: Options):
    sock = new_socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for level, name, value in options.calls():
        sock.setsockopt(level, name, value)
    sock.bind(("0.0.0.0", port))
    sock.listen(backlog)
    return sock


# -------------------------------------------------------------- pollers


class EpollPoller:
    """A vfstack `Epoll`, level-triggered or EPOLLONESHOT (re-armed on each wait)."""

    def __init__(self, epoll, oneshot: bool) -> None:
        self._epoll = epoll
        self._oneshot = select.EPOLLONESHOT if oneshot else 0
        self._socks: dict[int, tuple] = {}  # fd -> (socket, mask)

    def set(self, sock, read: bool, write: bool) -> None:
        mask = (select.EPOLLIN if read else 0) | (select.EPOLLOUT if write else 0)
        fd = sock.fileno()
        known = self._socks.get(fd)
        if not mask:
            if known:
                self.forget(sock)
            return
        mask |= self._oneshot
        if known is None:
            self._epoll.register(sock, mask)
        elif known[1] != mask or self._oneshot:  # a ONESHOT fd is off after its report
            self._epoll.modify(sock, mask)
        self._socks[fd] = (sock, mask)

    def forget(self, sock) -> None:
        if self._socks.pop(sock.fileno(), None) is not None:
            self._epoll.unregister(sock)

    def wait(self, timeout: float) -> list[tuple]:
        found = []
        for fd, events in self._epoll.poll(timeout):
            sock = self._socks[fd][0]
            readable = events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP)
            writable = events & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP)
            found.append((sock, bool(readable), bool(writable)))
        return found


class SelectorPoller:
    """A `selectors.BaseSelector`: a `vfstack.StackSelector`, or the kernel's."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        self._events: dict[object, int] = {}

    def set(self, sock, read: bool, write: bool) -> None:
        events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
        known = self._events.get(sock, 0)
        if events == known:
            return
        if not events:
            self.forget(sock)
        elif not known:
            self._selector.register(sock, events)
        else:
            self._selector.modify(sock, events)
        if events:
            self._events[sock] = events

    def forget(self, sock) -> None:
        if self._events.pop(sock, 0):
            self._selector.unregister(sock)

    def wait(self, timeout: float) -> list[tuple]:
        return [
            (key.fileobj, bool(events & selectors.EVENT_READ), bool(events & selectors.EVENT_WRITE))
            for key, events in self._selector.select(timeout)
        ]


# ------------------------------------------------------ readiness driver


class _Conn:
    __slots__ = ("sock", "endpoint", "target", "connecting")

    def __init__(self, sock, endpoint: Endpoint, target: int, connecting: bool) -> None:
        self.sock, self.endpoint = sock, endpoint
        self.target = target  # index into actor.targets; -1: accepted
        self.connecting = connecting


class ReadinessDriver:
    """One thread, non-blocking sockets, one poller for them all."""

    def __init__(self, actor: Actor, new_socket: Callable, poller) -> None:
        self.actor = actor
        self.new_socket = new_socket
        self.poller = poller
        self.conns: dict[object, _Conn] = {}
        self.listeners: list = []
        self.in_flight = [0] * len(actor.targets)

    def run(self, ports: list[int]) -> None:
        actor = self.actor
        for port in ports:
            listener = listen(self.new_socket, port, *actor.listener_options(port))
            listener.setblocking(False)
            self.poller.set(listener, True, False)
            self.listeners.append(listener)
        actor.report_ready()
        give_up = None
        while True:
            now = time.monotonic()
            if not actor.draining.is_set():
                if actor.going.is_set():
                    self._start_connections(now)
            elif not any(self.in_flight):
                actor.report_drained()
            if actor.exiting.is_set():
                self._close_listeners()
                give_up = give_up or now + EXIT_GRACE_SECONDS
                if not self.conns:
                    return
                if now > give_up:
                    self._abandon(now)
                    return
            wake = self._service(now)
            timeout = min(max(wake - time.monotonic(), 0.0), POLL_SECONDS)
            for sock, readable, writable in self.poller.wait(timeout):
                self._on_ready(sock, readable, writable)

    def _start_connections(self, now: float) -> None:
        for target in range(len(self.actor.targets)):
            while self.in_flight[target] < self.actor.concurrency:
                self.in_flight[target] += 1
                endpoint, address = self.actor.next_plan(target, now)
                sock = self.new_socket()
                sock.setblocking(False)
                conn = _Conn(sock, endpoint, target, connecting=True)
                self.conns[sock] = conn
                for call in endpoint.connect_calls():
                    make_call(sock, call)
                    endpoint.on_call_done(call, now)
                code = sock.connect_ex(address)
                if code == 0:
                    self._connected(conn, now)
                elif code != errno.EINPROGRESS:
                    conn.connecting = False
                    endpoint.on_error(OSError(code, os.strerror(code)), "connect", now)

    def _connected(self, conn: _Conn, now: float) -> None:
        conn.connecting = False
        error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            conn.endpoint.on_error(OSError(error, os.strerror(error)), "connect", now)
        else:
            conn.endpoint.on_connected(now)

    def _service(self, now: float) -> float:
        """Poll every endpoint, make its calls, watch what it waits for.
        Returns the earliest time one wants to be polled again."""
        wake = now + POLL_SECONDS
        for conn in list(self.conns.values()):
            endpoint, sock = conn.endpoint, conn.sock
            at = endpoint.poll(now)
            if make_calls(sock, endpoint, now, lambda s=sock: self.poller.forget(s)):
                self._closed(conn)
                continue
            if conn.connecting:
                self.poller.set(sock, False, True)
            else:
                want_write = endpoint.want_send() is not None
                self.poller.set(sock, endpoint.want_recv() > 0, want_write)
            wake = min(wake, at)
        return wake

    def _on_ready(self, sock, readable: bool, writable: bool) -> None:
        now = time.monotonic()
        if sock in self.listeners:
            self._accept_all(sock, now)
            self.poller.set(sock, True, False)  # re-armed, if EPOLLONESHOT disabled it
            return
        conn = self.conns.get(sock)
        if conn is None:
            return
        endpoint = conn.endpoint
        if conn.connecting:
            self._connected(conn, now)
            return
        size = endpoint.want_recv()
        if readable and size:
            attempt(endpoint, "recv", sock.recv, size, BlockingIOError)
        view = endpoint.want_send()
        if writable and view is not None:
            attempt(endpoint, "send", sock.send, view, BlockingIOError)

    def _accept_all(self, listener, now: float) -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            self.conns[sock] = _Conn(sock, self.actor.accepted(peer, now), -1, connecting=False)

    def _closed(self, conn: _Conn) -> None:
        del self.conns[conn.sock]
        if conn.target >= 0:
            self.in_flight[conn.target] -= 1
        self.actor.finished(conn.endpoint)

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            self.poller.forget(listener)
            listener.close()
        self.listeners.clear()

    def _abandon(self, now: float) -> None:
        for conn in list(self.conns.values()):
            conn.endpoint._fail(f"still open {EXIT_GRACE_SECONDS:.0f} s after exit")
            make_calls(conn.sock, conn.endpoint, now, lambda s=conn.sock: self.poller.forget(s))
            self._closed(conn)


# --------------------------------------------------------- thread driver


class ThreadDriver:
    """Blocking sockets with timeouts: a thread per connection, a thread
    per listener, `concurrency` threads per target."""

    def __init__(self, actor: Actor, new_socket: Callable) -> None:
        self.actor = actor
        self.new_socket = new_socket
        self.serving: list[threading.Thread] = []
        self._lock = threading.Lock()

    def run(self, ports: list[int]) -> None:
        actor = self.actor
        listeners = [listen(self.new_socket, p, *actor.listener_options(p)) for p in ports]
        acceptors = [self._thread(self._accept_loop, listener) for listener in listeners]
        actor.report_ready()
        actor.going.wait()
        initiators = [
            self._thread(self._initiate_loop, target)
            for target in range(len(actor.targets))
            for _ in range(actor.concurrency)
        ]
        actor.draining.wait()
        for thread in initiators:
            thread.join()
        actor.report_drained()
        actor.exiting.wait()
        for thread in acceptors:
            thread.join()
        give_up = time.monotonic() + EXIT_GRACE_SECONDS
        for thread in list(self.serving):
            thread.join(max(give_up - time.monotonic(), 0.0))
        for endpoint in list(actor.live):  # its thread is stuck in a call
            actor.fail(f"still open {EXIT_GRACE_SECONDS:.0f} s after exit:\n{endpoint.describe()}")

    def _thread(self, target, *args) -> threading.Thread:
        thread = threading.Thread(target=self._guarded, args=(target, *args), daemon=True)
        thread.start()
        return thread

    def _guarded(self, target, *args) -> None:
        try:
            target(*args)
        except Exception as exc:  # a bug of the SDK or the soak: report, do not hang
            self.actor.fail(f"{target.__name__} raised {exc!r}")
            raise

    def _accept_loop(self, listener) -> None:
        listener.settimeout(POLL_SECONDS)
        while not self.actor.exiting.is_set():
            try:
                sock, peer = listener.accept()
            except TimeoutError:
                continue
            endpoint = self.actor.accepted(peer, time.monotonic())
            thread = self._thread(self._drive, sock, endpoint)
            with self._lock:
                self.serving = [t for t in self.serving if t.is_alive()] + [thread]
        listener.close()

    def _initiate_loop(self, target: int) -> None:
        actor = self.actor
        while not actor.draining.is_set():
            now = time.monotonic()
            endpoint, address = actor.next_plan(target, now)
            sock = self.new_socket()
            for call in endpoint.connect_calls():
                make_call(sock, call)
                endpoint.on_call_done(call, now)
            sock.settimeout(HANG_SECONDS)
            try:
                sock.connect(address)
            except OSError as exc:  # TimeoutError too: a connect that hangs
                endpoint.on_error(exc, "connect", time.monotonic())
            else:
                endpoint.on_connected(time.monotonic())
            self._drive(sock, endpoint)

    def _drive(self, sock, endpoint: Endpoint) -> None:
        while True:
            now = time.monotonic()
            wake = endpoint.poll(now)
            if make_calls(sock, endpoint, now):
                break
            size, view = endpoint.want_recv(), endpoint.want_send()
            wait = max(wake - now, 0.001)
            if size and view is not None:  # both ways: a short look at each
                self._step(sock, endpoint, "recv", size, 0.001)
                view = endpoint.want_send()
                if view is not None:
                    self._step(sock, endpoint, "send", view, min(wait, BOTH_WAYS_SLICE))
            elif size:
                self._step(sock, endpoint, "recv", size, wait)
            elif view is not None:
                self._step(sock, endpoint, "send", view, wait)
            elif not endpoint.done:
                time.sleep(wait)
        self.actor.finished(endpoint)

    @staticmethod
    def _step(sock, endpoint: Endpoint, op: str, arg, timeout: float) -> None:
        sock.settimeout(timeout)
        attempt(endpoint, op, sock.recv if op == "recv" else sock.send, arg, TimeoutError)


# -------------------------------------------------------- asyncio driver


class AsyncioDriver:
    """`vfstack.aio` streams: `start_server` and `open_connection`, a task
    per connection with at most one read and one write in flight."""

    def __init__(self, actor: Actor, stack) -> None:
        self.actor = actor
        self.stack = stack
        self.tasks: set[asyncio.Task] = set()

    def run(self, ports: list[int]) -> None:
        asyncio.run(self._main(ports))

    async def _main(self, ports: list[int]) -> None:
        import vfstack.aio

        actor = self.actor
        servers = []
        for port in ports:
            backlog, options = actor.listener_options(port)
            server = await vfstack.aio.start_server(
                self._serve, "0.0.0.0", port, stack=self.stack, backlog=backlog
            )
            for level, name, value in options.calls():
                server.sockets[0].setsockopt(level, name, value)
            servers.append(server)
        actor.report_ready()
        while not actor.going.is_set():
            await asyncio.sleep(POLL_SECONDS)
        initiators = [
            asyncio.create_task(self._initiate_loop(target))
            for target in range(len(actor.targets))
            for _ in range(actor.concurrency)
        ]
        while not actor.draining.is_set():
            await asyncio.sleep(POLL_SECONDS)
        await asyncio.gather(*initiators)
        actor.report_drained()
        while not actor.exiting.is_set():
            await asyncio.sleep(POLL_SECONDS)
        for server in servers:
            server.close()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=EXIT_GRACE_SECONDS)
        for endpoint in list(actor.live):
            actor.fail(f"still open {EXIT_GRACE_SECONDS:.0f} s after exit:\n{endpoint.describe()}")

    async def _serve(self, reader, writer) -> None:
        endpoint = self.actor.accepted(writer.get_extra_info("peername"), time.monotonic())
        await self._guarded(self._drive(endpoint, reader, writer))

    async def _guarded(self, coroutine) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await coroutine
        except Exception as exc:  # a bug of the SDK or the soak: report it
            self.actor.fail(f"asyncio task raised {exc!r}")
        finally:
            self.tasks.discard(task)

    async def _initiate_loop(self, target: int) -> None:
        import vfstack.aio

        actor = self.actor
        while not actor.draining.is_set():
            now = time.monotonic()
            endpoint, address = actor.next_plan(target, now)
            try:
                reader, writer = await asyncio.wait_for(
                    vfstack.aio.open_connection(*address, stack=self.stack), HANG_SECONDS
                )
            except OSError as exc:  # TimeoutError too
                endpoint.on_error(exc, "connect", time.monotonic())
                endpoint.take_calls()  # its close: open_connection closed the socket already
                actor.finished(endpoint)
                continue
            sock = writer.get_extra_info("socket")
            for call in endpoint.connect_calls():  # no hook before connect: right after
                make_call(sock, call)
                endpoint.on_call_done(call, now)
            endpoint.on_connected(time.monotonic())
            await self._guarded(self._drive(endpoint, reader, writer))

    async def _drive(self, endpoint: Endpoint, reader, writer) -> None:
        sock = writer.get_extra_info("socket")
        reading = writing = None
        try:
            while True:
                now = time.monotonic()
                wake = endpoint.poll(now)
                if self._make_calls(endpoint, sock, writer, now):
                    break
                size, view = endpoint.want_recv(), endpoint.want_send()
                if size and reading is None:
                    reading = asyncio.ensure_future(reader.read(size))
                if view is not None and writing is None:
                    writing = asyncio.ensure_future(_write(writer, bytes(view)))
                pending = {task for task in (reading, writing) if task is not None}
                timeout = max(wake - now, 0.0)
                if pending:
                    await asyncio.wait(pending, timeout=timeout, return_when="FIRST_COMPLETED")
                else:
                    await asyncio.sleep(timeout)
                now = time.monotonic()
                # Errors of reads and drains are the transport's, whatever it was doing.
                if reading is not None and reading.done():
                    _deliver(endpoint, reading, "transport", endpoint.on_received, now)
                    reading = None
                if writing is not None and writing.done():
                    _deliver(endpoint, writing, "transport", endpoint.on_sent, now)
                    writing = None
        finally:
            for task in (reading, writing):
                if task is not None:
                    task.cancel()
            if not writer.transport.is_closing():
                writer.transport.abort()
        self.actor.finished(endpoint)

    @staticmethod
    def _make_calls(endpoint: Endpoint, sock, writer, now: float) -> bool:
        """Make the endpoint's calls the asyncio way. Returns whether it closed."""
        while calls := endpoint.take_calls():
            for call in calls:
                what = call[0]
                try:
                    if what == "close":
                        if call[1]:
                            writer.transport.abort()
                        else:
                            writer.close()
                    elif what == "shutdown":
                        # The write half goes through the transport, which
                        # shuts it once its buffer is sent: shut under it,
                        # the socket would lose what the transport holds.
                        if call[1] != socket.SHUT_WR:
                            sock.shutdown(socket.SHUT_RD)
                        if call[1] != socket.SHUT_RD:
                            writer.write_eof()
                    else:
                        make_call(sock, call)
                except OSError as exc:
                    endpoint.on_error(exc, what, now)
                else:
                    endpoint.on_call_done(call, now)
                if what == "close":
                    return True
        return False


async def _write(writer, data: bytes) -> int:
    writer.write(data)
    await writer.drain()
    return len(data)


def _deliver(endpoint: Endpoint, task: asyncio.Future, op: str, on_result, now: float) -> None:
    try:
        result = task.result()
    except OSError as exc:
        endpoint.on_error(exc, op, now)
    else:
        on_result(result, now)


THREADS_MARK = "--- where each thread is ---"


def all_threads_dump() -> str:
    """Where every thread is: for a post-mortem of a stuck actor."""
    frames = sys._current_frames()
    return "\n".join(
        f"thread {thread.name}:\n" + "".join(traceback.format_stack(frames[thread.ident]))
        for thread in threading.enumerate()
        if thread.ident in frames
    )
