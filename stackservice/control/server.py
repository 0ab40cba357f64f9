"""The control API of one stack instance: a gRPC server in its own process.

The instance starts it next to its packet loop, so gRPC threads and the GIL
never slow the loop:

    python -m stackservice.control.server --link-fd FD --counters PATH \\
        --info JSON --unix PATH [--tcp HOST:PORT] [--metrics HOST:PORT] \\
        [--apps PATH]

With several workers (`stackservice run --workers N`) each has its link,
counters file and app table: `--link-fd`, `--counters` and `--apps` are
given once per worker, in worker order; stackservice.control.workers asks
the links as one, and the files are read added up.

- GetInfo answers from `--info` (static identity, `started_at` in Unix
  seconds gives the uptime).
- GetStats / WatchStats read the counters file directly; the loop is not
  involved. WatchStats sends absolute values first, then changes. The
  gauges (groups in `GAUGE_GROUPS`) cannot carry a negative change in a
  uint64, so every message holds their current value.
- ListConnections, ListSessions, Attach and Detach ask the loop over the
  link (`stackservice.control.link`), within the call's deadline capped at
  `LINK_TIMEOUT_S`, and only between the loop's "ready" and "stopping".
- `--metrics` serves Prometheus `/metrics` over HTTP
  (`stackservice.metrics.exporter`), read from the counters file (and the
  per-app table of `--apps`, if given) at scrape time; it stops with the
  server.

Health (`grpc.health.v1`) is NOT_SERVING until the loop says "ready",
SERVING after, NOT_SERVING for good on "stopping" or when the link closes,
which also stop the server gracefully. Server reflection covers StackControl
and Health.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from vfstack.v1 import stack_pb2, stack_pb2_grpc

from stackservice.control.gate import INNER_MODE, REFUSALS, Caller, Gate, inner_path
from stackservice.control.handoff import Handoff, handoff_path
from stackservice.control.link import FDS, LinkClient
from stackservice.control.workers import WorkerLinks
from stackservice.limits import Limits
from stackservice.metrics.counters import CounterFiles, read_counters
from stackservice.metrics.exporter import MetricsServer, StackCollector, make_registry
from stackservice.metrics.layout import INSTANCE_LAYOUT
from stackservice.parent import die_with_parent

SERVICE_NAME = stack_pb2.DESCRIPTOR.services_by_name["StackControl"].full_name

LINK_TIMEOUT_S = 5.0  # the longest a call waits for the loop
STOP_GRACE_S = 2.0  # in-flight calls get this long on a graceful stop
STARTUP_WAIT_S = 5.0  # a call made while the loop starts waits this long for it
MAX_RECEIVE_BYTES = 64 << 10  # requests are small; anything bigger is abuse
MAX_SEND_BYTES = 32 << 20  # a ListConnections reply for many sockets
WORKERS = 8  # threads serving calls
MAX_CONCURRENT_RPCS = 16  # beyond: RESOURCE_EXHAUSTED, not a growing queue
MAX_WATCHERS = 4  # WatchStats streams, each holding a worker thread
CONTROL_NICE = 10  # below the loop's priority (it is this process's parent)
WATCH_MIN_MS, WATCH_MAX_MS = 10, 60_000
GAUGE_GROUPS = INSTANCE_LAYOUT.gauges  # tcp_states, sessions

# Error names in the loop's replies and the status codes they stand for.
LINK_ERRORS: dict[str, grpc.StatusCode] = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "unimplemented": grpc.StatusCode.UNIMPLEMENTED,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "internal": grpc.StatusCode.INTERNAL,  # a bug the loop contained (stackservice.faults)
}

# The link's life, driven by the loop's events.
STARTING, READY, STOPPING, CLOSED = "starting", "ready", "stopping", "closed"
_UNAVAILABLE = {
    STARTING: "the stack is starting",
    STOPPING: "the stack is stopping",
    CLOSED: "the stack loop is gone",
}


class Link(Protocol):
    """What the server needs of `stackservice.control.link.LinkClient`."""

    def start(self) -> None: ...

    def request(self, op: str, timeout: float, **fields: Any) -> dict: ...


# The loop's end, or each worker's (in worker order).
LinkSockets = socket.socket | list[socket.socket]
LinkFactory = Callable[[LinkSockets, Callable[[str], None]], Link]


@dataclass(frozen=True, slots=True)
class StackIdentity:
    """The static part of GetInfo, from `--info`."""

    name: str
    iface: str
    mac: str
    ip: str
    gateway: str
    mode: str
    pf: str
    vf_index: int
    workers: int
    version: str
    started_at: float  # Unix seconds
    congestion_control: str
    diag_services: bool
    build: str  # the hot path: compiled or pure (sdk/vfstack/_extensions.py)

    @classmethod
    def from_json(cls, text: str) -> StackIdentity:
        """Raises ValueError naming the missing, unknown or mistyped key."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--info is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("--info must be a JSON object")
        fields = cls.__dataclass_fields__
        if unknown := sorted(set(data) - set(fields)):
            raise ValueError(f"--info: unknown key {unknown[0]!r}")
        if missing := [name for name in fields if name not in data]:
            raise ValueError(f"--info: missing key {missing[0]!r}")
        values = {name: _info_value(name, data[name], fields[name].type) for name in fields}
        return cls(**values)

    def to_proto(self, now: float) -> stack_pb2.StackInfo:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        del fields["started_at"]
        uptime_ms = max(0, int((now - self.started_at) * 1000))
        return stack_pb2.StackInfo(uptime_ms=uptime_ms, **fields)


def _info_value(name: str, value: Any, kind: str) -> Any:
    # Unknown optional identity (no PF, not a VF, no gateway) may be null.
    if value is None and kind == "str":
        return ""
    if value is None and name == "vf_index":
        return -1
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in ("str", "bool") and type(value).__name__ == kind:
        return value
    raise ValueError(f"--info: {name!r} must be {kind}, not {type(value).__name__}")


def _stats(snapshot: dict[str, dict[str, int]], delta: bool) -> stack_pb2.Stats:
    groups = [
        stack_pb2.CounterGroup(
            name=group,
            counters=[stack_pb2.Counter(name=k, value=v) for k, v in values.items()],
        )
        for group, values in snapshot.items()
    ]
    return stack_pb2.Stats(timestamp_ms=int(time.time() * 1000), delta=delta, groups=groups)


def _difference(
    now: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """What changed since `before`: counter increments, gauges' new values.

    Unchanged ones are left out (a client reads a missing counter as no
    change): a 10 ms watcher then costs both ends a few counters per
    message instead of every one of them.
    """
    changes = {}
    for group, values in now.items():
        old = before[group]
        if group in GAUGE_GROUPS:
            changed = {k: v for k, v in values.items() if v != old[k]}
        else:
            changed = {k: (v - old[k]) % (1 << 64) for k, v in values.items() if v != old[k]}
        if changed:
            changes[group] = changed
    return changes


def _message(cls: type, fields: Any) -> Any:
    """A proto message from a dict the loop sent; a malformed one is a bug
    on the loop's side, reported as INTERNAL by the caller."""
    if not isinstance(fields, dict):
        raise TypeError(f"{cls.__name__}: expected an object")
    return cls(**fields)


class StackControlServicer(stack_pb2_grpc.StackControlServicer):
    """StackControl over a link to the loop and the instance's counters."""

    def __init__(
        self,
        identity: StackIdentity,
        counters_path: CounterFiles,
        handoff: Handoff,
        link_timeout: float = LINK_TIMEOUT_S,
    ) -> None:
        self.identity = identity
        self.handoff = handoff  # where Attach leaves the session's descriptors
        self.gate: Gate | None = None  # set once serving: who calls on the unix socket
        self.counters_path = counters_path
        self.link_timeout = link_timeout
        self.link: Link | None = None  # set once the link exists
        self.link_state = STARTING
        # Set when the link leaves STARTING: a request that arrives while
        # the loop is still taking its NIC waits for it (STARTUP_WAIT_S),
        # since the instance's start-up line and a client's first Attach
        # can come before the loop's "ready" event has crossed the link.
        self.started = threading.Event()
        self._watch_lock = threading.Lock()
        self._watches: set[threading.Event] = set()
        self._shutting_down = False

    @property
    def active_watches(self) -> int:
        with self._watch_lock:
            return len(self._watches)

    def shutdown(self) -> None:
        """End every WatchStats stream now and refuse new ones."""
        with self._watch_lock:
            self._shutting_down = True
            for wake in self._watches:
                wake.set()

    # -- from the instance's own state -------------------------------------

    def GetInfo(self, request, context):
        return self.identity.to_proto(time.time())

    def GetStats(self, request, context):
        return _stats(self._read_counters(context), delta=False)

    def WatchStats(self, request, context):
        interval_ms = request.interval_ms
        if not WATCH_MIN_MS <= interval_ms <= WATCH_MAX_MS:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"interval_ms must be {WATCH_MIN_MS}..{WATCH_MAX_MS}, not {interval_ms}",
            )
        wake = threading.Event()
        with self._watch_lock:
            if self._shutting_down:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the control server is stopping")
            if len(self._watches) >= MAX_WATCHERS:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"at most {MAX_WATCHERS} WatchStats streams at a time",
                )
            self._watches.add(wake)
        try:
            # A client that goes away wakes the wait at once.
            if not context.add_callback(wake.set):
                return
            yield from self._watch(interval_ms / 1000, wake, context)
        finally:
            with self._watch_lock:
                self._watches.discard(wake)

    def _watch(
        self, interval: float, wake: threading.Event, context: grpc.ServicerContext
    ) -> Iterator[stack_pb2.Stats]:
        before = self._read_counters(context)
        yield _stats(before, delta=False)
        due = time.monotonic() + interval
        while not wake.wait(max(0.0, due - time.monotonic())) and context.is_active():
            now = self._read_counters(context)
            yield _stats(_difference(now, before), delta=True)
            before = now
            # Keep the cadence; after a stall, skip the missed ticks.
            due = max(due + interval, time.monotonic())

    def _read_counters(self, context: grpc.ServicerContext) -> dict[str, dict[str, int]]:
        try:
            return read_counters(self.counters_path, INSTANCE_LAYOUT)
        except OSError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot read the counters: {exc}")
        except ValueError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    # -- from the loop -------------------------------------------------------

    def ListConnections(self, request, context):
        reply = self._ask(
            context,
            "connections",
            viewer=self._viewer(context),
            connection_id=request.connection_id,
            states=list(request.states),
            limit=request.limit,
            after_id=request.after_id,
        )
        return self._convert(
            context,
            lambda: stack_pb2.ListConnectionsResponse(
                connections=[_message(stack_pb2.Connection, c) for c in reply["connections"]],
                total=reply["total"],
            ),
        )

    def ListSessions(self, request, context):
        reply = self._ask(context, "sessions", viewer=self._viewer(context))
        return self._convert(
            context,
            lambda: stack_pb2.ListSessionsResponse(
                sessions=[_message(stack_pb2.Session, s) for s in reply["sessions"]]
            ),
        )

    def Attach(self, request, context):
        caller = self._caller(context)
        if caller is None:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "attach over the instance's unix socket: its peer credentials name the app",
            )
        route = {}
        if request.HasField("worker"):
            if request.worker >= self.identity.workers:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"worker {request.worker}: the instance runs {self.identity.workers}",
                )
            if self.identity.workers > 1:
                route["worker"] = request.worker
        reply = self._ask(
            context,
            "attach",
            keep_fds=True,
            **route,
            app=request.app,
            uid=caller.uid,
            pid=caller.pid,
            command_ring_slots=request.command_ring_slots,
            event_ring_slots=request.event_ring_slots,
            socket_ring_bytes=request.socket_ring_bytes,
        )
        fds = reply.pop(FDS)
        try:
            # JSON has no bytes: the token travels as base64 text.
            response = self._convert(
                context,
                lambda: stack_pb2.AttachResponse(
                    session_id=reply["session_id"],
                    segment_bytes=reply["segment_bytes"],
                    layout_version=reply["layout_version"],
                    token=base64.b64decode(reply["token"], validate=True),
                    handoff_path=str(self.handoff.path),
                ),
            )
        except BaseException:  # no handoff: the session ends as its descriptors close
            for fd in fds:
                os.close(fd)
            raise
        self.handoff.offer(response.session_id, response.token, fds, caller.uid)
        return response

    def Detach(self, request, context):
        token = base64.b64encode(request.token).decode("ascii")
        self._ask(context, "detach", session_id=request.session_id, token=token)
        return stack_pb2.DetachResponse()

    def expired(self, session_id: int) -> None:
        """The handoff dropped a session's descriptors at the attach
        timeout: tell the loop (it counts it), from a thread of its own so
        the handoff never waits for the loop."""
        link = self.link

        def tell() -> None:
            with contextlib.suppress(OSError, TimeoutError):
                for fd in link.request("expired", self.link_timeout, session_id=session_id)[FDS]:
                    os.close(fd)

        if link is not None:
            threading.Thread(target=tell, name="expired", daemon=True).start()

    def _viewer(self, context: grpc.ServicerContext) -> int:
        """The uid a listing is for: an app sees its own sessions and
        connections, root all (the loop applies it). A caller without
        credentials (TCP) sees none: PERMISSION_DENIED."""
        caller = self._caller(context)
        if caller is None:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "listings are served on the instance's unix socket: its peer credentials "
                "say whose sessions and connections to show",
            )
        return caller.uid

    def _caller(self, context: grpc.ServicerContext) -> Caller | None:
        """Who calls, if the call came through the gate (None over TCP)."""
        gate = self.gate
        return None if gate is None else gate.caller(context.peer())

    def _ask(
        self, context: grpc.ServicerContext, op: str, keep_fds: bool = False, **fields: Any
    ) -> dict:
        """The loop's reply to one request, or abort with the status code
        its error (or the link's failure) stands for. With `keep_fds`, the
        descriptors the reply carries are the caller's (under FDS), else
        closed here."""
        if self.link_state == STARTING:
            remaining = context.time_remaining()
            self.started.wait(
                STARTUP_WAIT_S if remaining is None else min(remaining, STARTUP_WAIT_S)
            )
        if self.link is None or self.link_state != READY:
            context.abort(grpc.StatusCode.UNAVAILABLE, _UNAVAILABLE.get(self.link_state, ""))
        remaining = context.time_remaining()
        deadline_binds = remaining is not None and remaining < self.link_timeout
        timeout = remaining if deadline_binds else self.link_timeout
        if timeout <= 0:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        try:
            reply = self.link.request(op, timeout, **fields)
        except TimeoutError:
            if deadline_binds:
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"no reply from the loop ({op})")
            context.abort(
                grpc.StatusCode.UNAVAILABLE, f"the loop did not answer {op} in {timeout:.1f}s"
            )
        except OSError as exc:  # ConnectionError and any other socket failure
            context.abort(grpc.StatusCode.UNAVAILABLE, f"the stack loop is gone: {exc}")
        error = reply.get("error")
        if error is not None or not keep_fds:
            for fd in reply.pop(FDS, ()):
                os.close(fd)
        if error is not None:
            code = LINK_ERRORS.get(error, grpc.StatusCode.UNKNOWN)
            context.abort(code, str(reply.get("message") or error))
        return reply

    @staticmethod
    def _convert(context: grpc.ServicerContext, build: Callable[[], Any]) -> Any:
        try:
            return build()
        except (KeyError, TypeError, ValueError) as exc:
            context.abort(grpc.StatusCode.INTERNAL, f"malformed reply from the loop: {exc!r}")


class ControlServer:
    """A running control server: the handle `serve` returns."""

    def __init__(
        self,
        server: grpc.Server,
        servicer: StackControlServicer,
        health_servicer: health.HealthServicer,
        unix_path: Path,
        tcp_port: int | None,
        metrics: MetricsServer | None = None,
    ) -> None:
        self.server = server
        self.servicer = servicer
        self.health = health_servicer
        self.unix_path = unix_path
        self.tcp_port = tcp_port  # the bound port (useful with port 0)
        self.metrics = metrics
        self.metrics_port = None if metrics is None else metrics.port  # bound, like tcp_port
        self._lock = threading.Lock()
        self._stopped: threading.Event | None = None
        self._stop_requested = threading.Event()
        # Closing the HTTP server blocks up to its poll interval, and the
        # handoff closes once in-flight Attach calls are over: a thread does
        # both, so stop() stays quick (it runs in signal handlers).
        self._stopper = threading.Thread(target=self._stop_rest, name="stopper", daemon=True)

    def on_event(self, event: str) -> None:
        """The loop's events, from the link's reader thread."""
        if event == READY:
            if self.servicer.link_state == STARTING:
                self.servicer.link_state = READY
                self._set_health(health_pb2.HealthCheckResponse.SERVING)
        elif event in (STOPPING, CLOSED):
            self.servicer.link_state = event
            self.stop()
        self.servicer.started.set()

    def _stop_rest(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        self._stopped.wait()
        if self.servicer.gate is not None:  # in-flight calls relayed to the end
            self.servicer.gate.close()
        inner_path(self.unix_path).unlink(missing_ok=True)
        self.servicer.handoff.close()  # sessions still waiting for their app end

    def _set_health(self, status: int) -> None:
        for service in (health.OVERALL_HEALTH, SERVICE_NAME):
            self.health.set(service, status)

    def stop(self, grace: float = STOP_GRACE_S) -> threading.Event:
        """Stop gracefully (idempotent): health NOT_SERVING for good, watch
        streams end, in-flight calls get `grace` seconds, `/metrics` and
        then the handoff socket close.

        Returns the event set once the gRPC server has stopped (`wait`
        also waits for `/metrics` and the handoff).
        """
        with self._lock:
            if self._stopped is None:
                self.health.enter_graceful_shutdown()
                self.servicer.shutdown()
                self._stopped = self.server.stop(grace)
                self._stopper.start()
                self._stop_requested.set()
            return self._stopped

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until stopped. Returns False on timeout."""
        start = time.monotonic()
        if not self._stop_requested.wait(timeout):
            return False
        assert self._stopped is not None
        if not self._stopped.wait(_left(start, timeout)):
            return False
        self._stopper.join(_left(start, timeout))
        return not self._stopper.is_alive()


def _left(start: float, timeout: float | None) -> float | None:
    return None if timeout is None else max(0.0, timeout - (time.monotonic() - start))


def _default_link(
    sock: socket.socket | list[socket.socket], on_event: Callable[[str], None]
) -> Link:
    if isinstance(sock, list):  # one per worker
        return WorkerLinks(sock, on_event) if len(sock) > 1 else LinkClient(sock[0], on_event)
    return LinkClient(sock, on_event)


def _add_unix_port(server: grpc.Server, path: Path) -> None:
    # The socket is created at bind: no window with a wider mode.
    previous = os.umask(0o777 & ~INNER_MODE)
    try:
        server.add_insecure_port(f"unix:{path}")
    finally:
        os.umask(previous)


def serve(
    link_sock: LinkSockets,
    counters_path: CounterFiles,
    identity: StackIdentity,
    unix_path: Path,
    tcp: str | None = None,
    *,
    metrics: tuple[str, int] | None = None,
    apps_path: Path | list[Path] | None = None,
    attach_timeout: float = Limits().attach_timeout_ms / 1000,
    link_timeout: float = LINK_TIMEOUT_S,
    link_factory: LinkFactory = _default_link,
) -> ControlServer:
    """Start the control server, `/metrics` on `metrics` (host, port) if
    given (per-app series from the app tables at `apps_path`), the handoff
    socket beside `unix_path` (`handoff_path`), whose descriptors wait
    `attach_timeout` seconds for their app, and the link to the loop.

    Returns the running `ControlServer`.
    Raises RuntimeError when an address cannot be bound.
    """
    gate_refusals = dict.fromkeys(REFUSALS, 0)  # the gate counts, /metrics reads
    metrics_server = (
        _serve_metrics(counters_path, identity, metrics, apps_path, gate_refusals)
        if metrics
        else None
    )
    handoff = None
    try:
        try:
            handoff = Handoff(handoff_path(unix_path), attach_timeout)
        except OSError as exc:
            raise RuntimeError(f"handoff socket {handoff_path(unix_path)}: {exc}") from None
        return _serve_grpc(
            link_sock,
            counters_path,
            identity,
            unix_path,
            tcp,
            metrics_server,
            handoff,
            gate_refusals,
            link_timeout=link_timeout,
            link_factory=link_factory,
        )
    except BaseException:
        if metrics_server is not None:
            metrics_server.stop()
        if handoff is not None:
            handoff.close()
        raise


def _serve_metrics(
    counters_path: CounterFiles,
    identity: StackIdentity,
    address: tuple[str, int],
    apps_path: Path | list[Path] | None = None,
    gate_refusals: dict[str, int] | None = None,
) -> MetricsServer:
    registry = make_registry(
        StackCollector(counters_path, identity, apps_path=apps_path, more_refusals=gate_refusals)
    )
    try:
        return MetricsServer(registry, *address)
    except OSError as exc:
        raise RuntimeError(f"metrics on {address[0]}:{address[1]}: {exc}") from None


def _serve_grpc(
    link_sock: LinkSockets,
    counters_path: CounterFiles,
    identity: StackIdentity,
    unix_path: Path,
    tcp: str | None,
    metrics: MetricsServer | None,
    handoff: Handoff,
    gate_refusals: dict[str, int],
    *,
    link_timeout: float,
    link_factory: LinkFactory,
) -> ControlServer:
    servicer = StackControlServicer(identity, counters_path, handoff, link_timeout)
    handoff.on_expired = servicer.expired
    health_servicer = health.HealthServicer()
    server = grpc.server(
        ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="control-rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.so_reuseport", 0),  # a taken TCP port is an error, not shared
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    stack_pb2_grpc.add_StackControlServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    _add_unix_port(server, inner_path(unix_path))  # behind the gate, root only
    tcp_port = server.add_insecure_port(tcp) if tcp else None
    handle = ControlServer(server, servicer, health_servicer, unix_path, tcp_port, metrics)
    handle._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    server.start()
    try:  # last: a connection it accepts finds the server listening
        servicer.gate = Gate(unix_path, gate_refusals)
    except OSError as exc:
        server.stop(0).wait()
        inner_path(unix_path).unlink(missing_ok=True)
        raise RuntimeError(f"control socket {unix_path}: {exc}") from None
    servicer.link = link_factory(link_sock, handle.on_event)
    servicer.link.start()
    return handle


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise _ArgumentError(message)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="stackservice.control.server", add_help=False)
    # One of each per worker, in worker order.
    parser.add_argument("--link-fd", type=int, action="append", required=True)
    parser.add_argument("--counters", type=Path, action="append", required=True)
    parser.add_argument("--info", required=True)
    parser.add_argument("--unix", type=Path, required=True)
    parser.add_argument("--tcp")
    parser.add_argument("--metrics")
    # Each may appear later (a worker makes its own): read at each scrape.
    parser.add_argument("--apps", type=Path, action="append")
    parser.add_argument("--attach-timeout-ms", type=int, default=Limits().attach_timeout_ms)
    args = parser.parse_args(argv)
    args.info = StackIdentity.from_json(args.info)
    if args.tcp is not None and not args.tcp.rpartition(":")[2].isdigit():
        raise _ArgumentError(f"--tcp must be HOST:PORT, not {args.tcp!r}")
    if args.metrics is not None:
        args.metrics = _metrics_address(args.metrics)
    for path in args.counters:
        if not path.is_file():
            raise _ArgumentError(f"--counters: no such file {str(path)!r}")
    if len(args.counters) != len(args.link_fd):
        raise _ArgumentError("give one --counters per --link-fd (one of each per worker)")
    args.link = []
    for fd in args.link_fd:
        try:
            link = socket.socket(fileno=fd)
        except OSError as exc:
            raise _ArgumentError(f"--link-fd {fd}: {exc.strerror or exc}") from None
        if link.family != socket.AF_UNIX or link.type != socket.SOCK_SEQPACKET:
            link.detach()
            raise _ArgumentError(f"--link-fd {fd}: not an AF_UNIX seqpacket socket")
        args.link.append(link)
    return args


def _metrics_address(text: str) -> tuple[str, int]:
    """HOST:PORT (HOST may be empty for every address, or [IPv6])."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise _ArgumentError(f"--metrics must be HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


def main(argv: list[str] | None = None) -> int:
    """Run until the loop stops, the link closes or SIGTERM/SIGINT.

    Returns 0 after a graceful stop, 1 when it cannot listen, 2 on bad
    arguments.
    """
    prog = "stackservice.control.server"
    try:
        args = _parse(sys.argv[1:] if argv is None else argv)
    except (_ArgumentError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    # Killed with the instance if it dies without stopping us (kill -9):
    # an orphan stopping gracefully would, on its way out, remove the
    # control socket's path, which a new instance may have taken by then.
    die_with_parent(signal.SIGKILL)
    # The data path first: whatever callers make this process do (relaying,
    # gRPC, listings) gets the CPU the packet loop leaves.
    os.nice(CONTROL_NICE)
    # Handlers first: a SIGTERM arriving while the server starts listening
    # must still mean a graceful stop, not the default kill.
    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    try:
        handle = serve(
            args.link,
            args.counters,
            args.info,
            args.unix,
            args.tcp,
            metrics=args.metrics,
            apps_path=args.apps,
            attach_timeout=args.attach_timeout_ms / 1000,
        )
    except RuntimeError as exc:
        print(f"{prog}: error: cannot listen: {exc}", file=sys.stderr)
        return 1
    while not handle.wait(timeout=0.1):  # short waits let signal handlers run
        if stop_requested.is_set():
            handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
