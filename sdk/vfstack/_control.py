"""A client of one stack instance's control API, for operators and scripts.

    with ControlClient("unix:///run/vfstack/vf0.sock") as client:
        print(client.info().name)

Every call runs under the client's timeout as its gRPC deadline; failures
arrive as `ControlError`, carrying the status code name and one line of
text fit for a terminal.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType

import grpc

from vfstack.v1 import stack_pb2, stack_pb2_grpc

ENV_CONTROL = "VFSTACK_CONTROL"
DEFAULT_TIMEOUT = 5.0
WATCH_INTERVAL_MS = (10, 60_000)  # what WatchStatsRequest.interval_ms accepts

_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:/\[\]]*):(?P<port>[^:/]*)")
_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# gRPC's own target schemes and web ones: not control URLs we accept.
_OTHER_SCHEMES = ("dns:", "unix-abstract:", "vsock:", "ipv4:", "ipv6:", "http:", "https:")

__all__ = [
    "ENV_CONTROL",
    "ControlClient",
    "ControlError",
    "parse_control_url",
    "resolve_control_url",
]


class ControlError(Exception):
    """A control call failed: `code` is the gRPC status code name
    (e.g. "UNAVAILABLE", "NOT_FOUND"), `message` one line for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def resolve_control_url(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The control URL to use: `flag` (from --control), else $VFSTACK_CONTROL.

    Returns: the URL, not yet parsed.
    Raises: ValueError when neither is given.
    """
    if flag is not None:
        return flag
    url = environ.get(ENV_CONTROL, "")
    if not url:
        raise ValueError(f"no control URL: pass --control URL or set {ENV_CONTROL}")
    return url


def parse_control_url(url: str) -> str:
    """Turn a control URL into a gRPC target.

    Accepted: `unix:///abs/path.sock`, `unix:/abs/path.sock`,
    `tcp://HOST:PORT` and `HOST:PORT`, HOST an IPv4 address, a hostname or a
    bracketed IPv6 address.

    Returns: the gRPC target (`unix:///abs/path.sock`, `HOST:PORT`).
    Raises: ValueError with a one-line message naming what is wrong.
    """
    text = url.strip()
    if not text:
        raise ValueError("empty control URL (use unix:///PATH or HOST:PORT)")
    try:
        if text.startswith("unix:"):
            return _unix_target(text[len("unix:") :])
        if text.startswith("tcp://"):
            return _tcp_target(text[len("tcp://") :])
        if "://" in text or text.lower().startswith(_OTHER_SCHEMES):
            scheme = text.split(":", 1)[0]
            raise ValueError(f"unknown scheme {scheme!r} (use unix:///PATH or HOST:PORT)")
        return _tcp_target(text)
    except ValueError as exc:
        raise ValueError(f"bad control URL {url!r}: {exc}") from None


def _unix_target(rest: str) -> str:
    # unix:///abs (empty authority) or unix:/abs; unix://x/... names a host.
    path = rest[2:] if rest.startswith("//") else rest
    if not path.startswith("/"):
        raise ValueError("a unix socket needs an absolute path (unix:///PATH)")
    if path.endswith("/") or "\0" in path:
        raise ValueError("not a socket file path")
    return "unix://" + path


def _tcp_target(rest: str) -> str:
    match = _HOST_PORT.fullmatch(rest)
    if match is None:
        raise ValueError("expected HOST:PORT (IPv6 in brackets: [::1]:PORT)")
    host, port = match["host"], match["port"]
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"port must be 1..65535, not {port!r}")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif not _is_host(host):
        raise ValueError(f"{host!r} is not an IPv4 address or hostname")
    return f"{host}:{int(port)}"


def _is_host(host: str) -> bool:
    labels = host.removesuffix(".").split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        try:  # all-numeric: must be a dotted IPv4 address, not 999.1.1.1
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and all(_HOSTNAME_LABEL.fullmatch(label) for label in labels)


class ControlClient:
    """The StackControl service of one instance, at `url`
    (see `parse_control_url`). A context manager: leaving it closes the
    channel. Calls take `timeout` seconds at most.

    Raises: ValueError for a malformed URL or timeout.
    """

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.url = url
        self.target = parse_control_url(url)
        self.timeout = timeout
        # Never route the control API through $http_proxy and the like.
        self._channel = grpc.insecure_channel(self.target, options=[("grpc.enable_http_proxy", 0)])
        self._stub = stack_pb2_grpc.StackControlStub(self._channel)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def info(self) -> stack_pb2.StackInfo:
        """Returns: the instance's identity and configuration.
        Raises: ControlError."""
        return self._unary(self._stub.GetInfo, stack_pb2.GetInfoRequest())

    def connections(
        self,
        connection_id: int = 0,
        states: Iterable[str] = (),
        limit: int = 0,
        after_id: int = 0,
    ) -> stack_pb2.ListConnectionsResponse:
        """Sockets of the instance: all, or the one `connection_id`, or
        those in `states` (RFC 9293 names), with an id above `after_id`,
        lowest ids first, at most `limit` (0: the server's page, 500).

        Returns: the connections and how many matched before `limit`.
        Raises: ControlError (NOT_FOUND for an unknown id, INVALID_ARGUMENT
        for an unknown state).
        """
        request = stack_pb2.ListConnectionsRequest(
            connection_id=connection_id, states=list(states), limit=limit, after_id=after_id
        )
        return self._unary(self._stub.ListConnections, request)

    def stats(self) -> stack_pb2.Stats:
        """Returns: every counter, absolute. Raises: ControlError."""
        return self._unary(self._stub.GetStats, stack_pb2.GetStatsRequest())

    def sessions(self) -> stack_pb2.ListSessionsResponse:
        """Returns: the attached applications. Raises: ControlError."""
        return self._unary(self._stub.ListSessions, stack_pb2.ListSessionsRequest())

    def watch_stats(self, interval_ms: int) -> Iterator[stack_pb2.Stats]:
        """Counters every `interval_ms`: the first message absolute, the
        following ones changes since the previous message. The stream has
        no overall deadline, but each message must come within
        `interval_ms` plus the timeout.

        Returns: an iterator, ending when the instance ends the stream.
        Raises: ValueError for an interval outside 10..60000 ms (at once);
        ControlError while iterating.
        """
        low, high = WATCH_INTERVAL_MS
        if not low <= interval_ms <= high:
            raise ValueError(f"watch interval must be {low}..{high} ms, not {interval_ms}")
        call = self._stub.WatchStats(stack_pb2.WatchStatsRequest(interval_ms=interval_ms))
        return self._stream(call, interval_ms / 1000 + self.timeout)

    def _stream(self, call: grpc.Call, stall: float) -> Iterator[stack_pb2.Stats]:
        stalled = threading.Event()

        def give_up() -> None:
            stalled.set()
            call.cancel()

        try:
            while True:
                # Armed only while waiting, so a slow reader is not a stall.
                watchdog = threading.Timer(stall, give_up)
                watchdog.daemon = True
                watchdog.start()
                try:
                    stats = next(call)
                except StopIteration:
                    return
                except grpc.RpcError as exc:
                    if stalled.is_set():
                        raise ControlError(
                            "DEADLINE_EXCEEDED", f"no update from {self.url} within {stall:g} s"
                        ) from exc
                    raise self._error(exc) from exc
                finally:
                    watchdog.cancel()
                yield stats
        finally:
            call.cancel()

    def _unary(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: grpc.RpcError) -> ControlError:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = " ".join(((exc.details() if isinstance(exc, grpc.Call) else "") or "").split())
        if code is grpc.StatusCode.UNAVAILABLE:
            if details.startswith("failed to connect to all addresses"):
                # "...; last error: ...: connect failed: ... error: No such file or directory"
                details = details.rsplit(": ", 1)[-1]
            message = f"cannot reach the instance at {self.url}: {details or 'unavailable'}"
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"deadline exceeded: no answer from {self.url} within {self.timeout:g} s"
        elif code is grpc.StatusCode.UNIMPLEMENTED:
            message = f"the instance at {self.url} does not serve this call" + (
                f": {details}" if details else ""
            )
        else:
            message = details or code.name.lower().replace("_", " ")
        return ControlError(code.name, message)
