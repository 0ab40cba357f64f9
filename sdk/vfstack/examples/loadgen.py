"""An ab-like HTTP load generator: `-n` GET requests over `-c` concurrent
connections, one request per connection or keep-alive (`-k`), with latency
percentiles.

An epoll loop in the style of mTCP's Listing 1, with non-blocking
connects. Latency is measured per request from its start (the connect,
for a new connection) to the last byte of the response, as ab does.

    python -m vfstack.examples.loadgen --control unix:///run/vfstack/vf0.sock \\
        --url http://198.18.0.1:8080/ -n 10000 -c 50 [-k] [--json]
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import socket
import statistics
import sys
import time
import urllib.parse

from vfstack.examples._api import add_arguments, open_api

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
CHUNK = 65536


class Request:
    """One connection's current request."""

    __slots__ = ("sock", "started", "connecting", "inbox", "expected", "head_end", "keep")

    def __init__(self, sock, started: float) -> None:
        self.sock = sock
        self.started = started
        self.connecting = True
        self.inbox = bytearray()
        self.expected = -1  # bytes of the whole response, once the head is in
        self.head_end = -1
        self.keep = False


class LoadGen:
    def __init__(self, api, host: str, port: int, path: str, requests: int, keep_alive: bool):
        self.api, self.address = api, (host, port)
        connection = b"Keep-Alive" if keep_alive else b"close"
        self.request = (
            b"GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: vfstack-loadgen\r\n"
            b"Connection: %s\r\n\r\n" % (path.encode(), host.encode(), connection)
        )
        self.keep_alive = keep_alive
        self.total = requests
        self.started = self.completed = self.failed = 0
        self.body_bytes = 0
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def run(self, concurrency: int, progress) -> float:
        """Returns the wall-clock seconds the run took."""
        ep = self.api.epoll()
        live: dict[int, Request] = {}
        begin = time.perf_counter()
        try:
            for _ in range(min(concurrency, self.total)):
                self._open(ep, live)
            while live:
                for fd, events in ep.poll(1.0):
                    request = live.get(fd)
                    if request is not None:
                        self._service(ep, live, fd, request, events)
                progress(self)
        finally:
            for request in live.values():
                request.sock.close()
            ep.close()
        return time.perf_counter() - begin

    def _open(self, ep, live: dict) -> None:
        self.started += 1
        started = time.perf_counter()
        try:
            sock = self.api.socket()
            sock.setblocking(False)
            code = sock.connect_ex(self.address)
        except OSError as exc:
            self._fail(exc.strerror or str(exc))
            return
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            sock.close()
            self._fail(errno.errorcode.get(code, str(code)))
            return
        live[sock.fileno()] = Request(sock, started)
        ep.register(sock.fileno(), EPOLLOUT)

    def _fail(self, reason: str) -> None:
        self.failed += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def _next(self, ep, live: dict) -> None:
        if self.started < self.total:
            self._open(ep, live)

    def _service(self, ep, live: dict, fd: int, request: Request, events: int) -> None:
        sock = request.sock
        try:
            if request.connecting:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, errno.errorcode.get(code, str(code)))
                request.connecting = False
                sock.send(self.request)  # a few dozen bytes: an empty socket takes them
                ep.modify(fd, EPOLLIN)
                return
            while True:
                chunk = sock.recv(CHUNK)
                if not chunk:
                    raise OSError(errno.ECONNRESET, "connection closed mid-response")
                request.inbox += chunk
                if self._response_complete(request):
                    break
        except BlockingIOError:
            return
        except OSError as exc:
            self._end(ep, live, fd, request)
            self._fail(exc.strerror or str(exc))
            self._next(ep, live)
            return
        now = time.perf_counter()
        self.completed += 1
        self.latencies.append(now - request.started)
        self.body_bytes += request.expected - request.head_end
        if request.keep and self.started < self.total:
            self.started += 1
            request.started = now
            request.inbox.clear()
            request.expected = request.head_end = -1
            try:
                sock.send(self.request)
            except OSError as exc:
                self._end(ep, live, fd, request)
                self._fail(exc.strerror or str(exc))
                self._next(ep, live)
            return
        self._end(ep, live, fd, request)
        self._next(ep, live)

    def _response_complete(self, request: Request) -> bool:
        inbox = request.inbox
        if request.expected < 0:
            end = inbox.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(inbox[:end]).lower()
            status = head.split(b"\r\n", 1)[0].split()
            if len(status) < 2 or status[1] != b"200":
                raise OSError(errno.EPROTO, f"status {status[1:2]}")
            marker = head.find(b"\r\ncontent-length:")
            if marker < 0:
                raise OSError(errno.EPROTO, "no Content-Length")
            length = int(head[marker + 17 :].split(b"\r\n", 1)[0])
            request.head_end = end + 4
            request.expected = end + 4 + length
            request.keep = self.keep_alive and b"\r\nconnection: keep-alive" in head
        if len(inbox) > request.expected:
            raise OSError(errno.EPROTO, "more bytes than Content-Length")
        return len(inbox) == request.expected

    def _end(self, ep, live: dict, fd: int, request: Request) -> None:
        del live[fd]
        ep.unregister(fd)
        request.sock.close()


def summary(gen: LoadGen, seconds: float) -> dict:
    latencies = sorted(gen.latencies)

    def at(q: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6

    return {
        "completed": gen.completed,
        "failed": gen.failed,
        "errors": gen.errors,
        "seconds": round(seconds, 6),
        "requests_per_second": round(gen.completed / seconds, 1) if seconds > 0 else 0.0,
        "body_bytes": gen.body_bytes,
        "latency_us": {
            "min": round(at(0.0), 1),
            "mean": round(statistics.fmean(latencies) * 1e6, 1) if latencies else 0.0,
            "p50": round(at(0.50), 1),
            "p90": round(at(0.90), 1),
            "p99": round(at(0.99), 1),
            "max": round(latencies[-1] * 1e6, 1) if latencies else 0.0,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vfstack.examples.loadgen", description=__doc__.split("\n\n")[0]
    )
    add_arguments(parser, app="loadgen")
    parser.add_argument("--url", required=True, help="http://HOST:PORT/PATH (HOST an IPv4 address)")
    parser.add_argument("-n", "--requests", type=int, default=1000)
    parser.add_argument("-c", "--concurrency", type=int, default=10)
    parser.add_argument("-k", "--keepalive", action="store_true", help="HTTP keep-alive")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    url = urllib.parse.urlsplit(args.url)
    if url.scheme != "http" or not url.hostname:
        parser.error(f"--url must be http://HOST:PORT/PATH, not {args.url!r}")
    if args.requests < 1 or args.concurrency < 1:
        parser.error("-n and -c must be at least 1")
    api = open_api(args)
    gen = LoadGen(api, url.hostname, url.port or 80, url.path or "/", args.requests, args.keepalive)
    step = max(1, args.requests // 10)
    shown = [0]

    def progress(g: LoadGen) -> None:
        done = g.completed + g.failed
        if not args.quiet and done // step > shown[0]:
            shown[0] = done // step
            print(f"loadgen: {done}/{g.total} requests", file=sys.stderr, flush=True)

    try:
        seconds = gen.run(args.concurrency, progress)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        api.close()
    report = summary(gen, seconds)
    if args.json:
        print(json.dumps(report))
    else:
        lat = report["latency_us"]
        print(f"Complete requests:   {report['completed']}")
        print(f"Failed requests:     {report['failed']} {report['errors'] or ''}")
        print(f"Time taken:          {report['seconds']:.3f} s")
        print(f"Requests per second: {report['requests_per_second']:.1f}")
        print(f"Body bytes:          {report['body_bytes']}")
        print("Latency (us):        " + "  ".join(f"{k} {v:.0f}" for k, v in lat.items()))
    sys.exit(1 if report["failed"] else 0)


if __name__ == "__main__":
    main()
