"""Kernel-socket clients for `python -m bench`, run in the peer namespace.

Where a stock client does the job the evaluation uses it (ab, wrk); these
cover what none of them does here:

    http    HTTP GET transactions, M per connection (the last one says
            `Connection: close`), either closed-loop (`--concurrency C`,
            for a peak rate) or open-loop (`--rate R` transactions/s, for
            CPU per transaction at a fixed offered load, with the machine's
            /proc/stat CPU over the window)
    accept  connect, wait for the server to close (RST or FIN), then close
            with SO_LINGER 0 so neither side keeps TIME-WAIT (mTCP Fig. 8)
    flows   N parallel downloads (`GET /`, a big response), per-flow rates
            (fairness: Jain's index, and bulk throughput)
    echo    one connection streaming N bytes to an echo server while
            reading them back

Each prints one JSON line. Latencies follow ab: connect = from the
connect call to the socket turning writable, processing = from then (or
from the request, on a kept-alive connection) to the last response byte.

    python -m bench.eval_client http --target 198.18.0.10 --port 8080 --concurrency 64 --seconds 2
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import select
import socket
import statistics
import struct
import sys
import time

from bench._measure import machine_cpu, machine_sample

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP
_LINGER_ZERO = struct.pack("ii", 1, 0)
_CHUNK = 1 << 18
_MAX_IN_FLIGHT = 20000  # an open-loop client stops adding connections here

# Connection phases.
_CONNECTING, _READING, _WAIT_EOF = 0, 1, 2


def latency_stats(seconds: list[float]) -> dict[str, float]:
    """min/mean/median/p99/max/stdev of a list of durations, in ms."""
    if not seconds:
        return dict.fromkeys(("min", "mean", "median", "p99", "max", "stdev"), 0.0)
    ordered = sorted(seconds)
    n = len(ordered)
    return {
        "min": 1000 * ordered[0],
        "mean": 1000 * statistics.fmean(ordered),
        "median": 1000 * ordered[n // 2],
        "p99": 1000 * ordered[min(n - 1, math.ceil(0.99 * n) - 1)],
        "max": 1000 * ordered[-1],
        "stdev": 1000 * statistics.pstdev(ordered),
    }


def jain_index(rates: list[float]) -> float:
    """Jain's fairness index: (sum x)^2 / (n * sum x^2), 1.0 when all equal."""
    squares = sum(x * x for x in rates)
    return sum(rates) ** 2 / (len(rates) * squares) if squares else 0.0


class _Conn:
    __slots__ = ("sock", "phase", "opened", "mark", "left", "head", "served", "body", "wait")

    def __init__(self, sock: socket.socket, opened: float) -> None:
        self.sock = sock
        self.phase = _CONNECTING
        self.opened = opened  # the connect call
        self.mark = opened  # start of what is being timed now
        self.left = -1  # response bytes still due; -1 until the head is in
        self.head = bytearray()
        self.served = 0  # responses completed on this connection
        self.body = 0  # body bytes received
        self.wait = 0.0  # connect time of the first transaction


class Client:
    """One epoll loop over many non-blocking connections to one server."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.address = (args.target, args.port)
        self.mpc = max(1, getattr(args, "mpc", 1))
        host = args.target.encode()
        self.keep = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host
        self.last = b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.buf = bytearray(_CHUNK)
        self.view = memoryview(self.buf)
        self.opened = self.completed = self.failed = 0
        self.errors: dict[str, int] = {}
        self.connect_s: list[float] = []
        self.processing_s: list[float] = []
        self.total_s: list[float] = []
        self.flows: list[tuple[float, float, int]] = []  # (opened, finished, body bytes)
        self.last_done = 0.0

    # ------------------------------------------------------------- opening

    def open(self, now: float) -> None:
        self.opened += 1
        sock = socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail(code)
            return
        conn = _Conn(sock, now)
        self.conns[sock.fileno()] = conn
        self.ep.register(sock.fileno(), EPOLLOUT)

    def fail(self, code: int) -> None:
        self.failed += 1
        name = errno.errorcode.get(code, str(code))
        self.errors[name] = self.errors.get(name, 0) + 1

    def end(self, conn: _Conn, reset: bool = False) -> None:
        fd = conn.sock.fileno()
        del self.conns[fd]
        self.ep.unregister(fd)
        if reset:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        conn.sock.close()

    def abandon(self) -> int:
        """Close whatever is still in flight (not counted as failed)."""
        left = len(self.conns)
        for conn in list(self.conns.values()):
            self.end(conn, reset=True)
        return left

    # ---------------------------------------------------------------- HTTP

    def service_http(self, conn: _Conn, events: int, now: float) -> None:
        sock = conn.sock
        if conn.phase == _CONNECTING:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.end(conn)
                self.fail(code)
                return
            conn.wait = now - conn.opened
            conn.mark = now
            self._request(conn)
            return
        while True:
            try:
                n = sock.recv_into(self.buf)
            except BlockingIOError:
                return
            except OSError as exc:
                self.end(conn)
                self.fail(exc.errno or errno.EIO)
                return
            if n == 0:
                self.end(conn)
                if conn.phase == _WAIT_EOF:
                    self.flows.append((conn.opened, conn.mark, conn.body))
                else:
                    self.fail(errno.ECONNRESET)
                return
            if conn.phase == _WAIT_EOF or not self._take(conn, n):
                self.end(conn, reset=True)
                self.fail(errno.EPROTO)
                return
            if conn.left == 0:
                self._response_done(conn, time.monotonic())
                if conn.phase == _READING and conn.sock.fileno() not in self.conns:
                    return  # the next request could not be sent

    def _request(self, conn: _Conn) -> None:
        last = conn.served + 1 >= self.mpc
        try:  # a few dozen bytes: an empty socket takes them at once
            conn.sock.send(self.last if last else self.keep)
        except OSError as exc:
            self.end(conn)
            self.fail(exc.errno or errno.EIO)
            return
        conn.phase = _READING
        conn.left = -1
        self.ep.modify(conn.sock.fileno(), EPOLLIN)

    def _take(self, conn: _Conn, n: int) -> bool:
        """Account for n bytes just read; False if the response is malformed."""
        if conn.left >= 0:
            conn.left -= n
            conn.body += n
            return conn.left >= 0
        head = conn.head
        head += self.view[:n]
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return len(head) < 65536
        lines = bytes(head[:end]).lower().split(b"\r\n")
        status = lines[0].split()
        length = [int(line[15:]) for line in lines if line.startswith(b"content-length:")]
        if len(status) < 2 or status[1] != b"200" or not length:
            return False
        extra = len(head) - end - 4
        conn.left = length[0] - extra
        conn.body += extra
        head.clear()
        return conn.left >= 0

    def _response_done(self, conn: _Conn, now: float) -> None:
        self.completed += 1
        self.last_done = now
        self.connect_s.append(conn.wait)
        self.processing_s.append(now - conn.mark)
        self.total_s.append(conn.wait + now - conn.mark)
        conn.served += 1
        conn.wait = 0.0
        conn.mark = now
        if conn.served < self.mpc:
            self._request(conn)
        else:
            conn.phase = _WAIT_EOF  # the server closes after `Connection: close`

    # -------------------------------------------------------------- accept

    def service_accept(self, conn: _Conn, events: int, now: float) -> None:
        """Connected, then closed by the server: one accepted connection."""
        sock = conn.sock
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if conn.phase == _CONNECTING:
            if code and code != errno.ECONNRESET:  # refused or timed out: never accepted
                self.end(conn)
                self.fail(code)
                return
            conn.phase = _WAIT_EOF
            conn.wait = now - conn.opened
            if not code and not events & (EPOLLHUP | EPOLLERR):
                self.ep.modify(sock.fileno(), EPOLLIN)
                return
        self.completed += 1
        self.last_done = now
        self.connect_s.append(conn.wait)
        self.total_s.append(now - conn.opened)
        self.end(conn, reset=True)

    # ---------------------------------------------------------------- loop

    def run(self, service, concurrency: int, rate: float, seconds: float, limit: int) -> dict:
        """Keep `concurrency` connections open (or open `rate` per second)
        for `seconds` or until `limit` connections were opened and done."""
        interval = 1.0 / rate if rate else 0.0
        cpu0, proc0 = machine_sample(), time.process_time()
        start = time.monotonic()
        end = start + seconds
        give_up = end + 20.0
        next_open = start
        ep, conns = self.ep, self.conns
        while True:
            now = time.monotonic()
            opening = now < end and (not limit or self.opened < limit)
            if opening and rate:
                while next_open <= now and len(conns) < _MAX_IN_FLIGHT:
                    self.open(next_open)
                    next_open += interval
            elif opening:
                while len(conns) < concurrency and (not limit or self.opened < limit):
                    self.open(now)
            elif not conns or now > give_up or not (rate or limit):
                break  # a closed loop stops at `end`, like ab -t
            wait = min(end, next_open if rate else end) - now if opening else give_up - now
            for fd, events in ep.poll(max(0.0, min(wait, 0.5))):
                conn = conns.get(fd)
                if conn is not None:
                    service(conn, events, time.monotonic())
        stop = time.monotonic()
        busy, irq, tick = machine_cpu(cpu0, machine_sample())
        in_flight = self.abandon()
        window = (self.last_done if rate or limit else stop) - start
        return {
            "opened": self.opened,
            "completed": self.completed,
            "failed": self.failed + (in_flight if rate or limit else 0),
            "errors": self.errors,
            "window_s": max(window, 1e-6),
            "rate": self.completed / max(window, 1e-6),
            "machine_cpu_s": busy,
            "machine_irq_cpu_s": irq,
            "machine_tick_cpu_s": tick,
            "client_cpu_s": time.process_time() - proc0,
            "latency_ms": {
                "connect": latency_stats(self.connect_s),
                "processing": latency_stats(self.processing_s),
                "total": latency_stats(self.total_s),
            },
        }


def flows_report(client: Client, result: dict) -> dict:
    """Per-flow download rates (MB/s), their Jain's index and the aggregate."""
    rates = [body / 1e6 / max(done - opened, 1e-9) for opened, done, body in client.flows]
    if client.flows:
        first = min(f[0] for f in client.flows)
        last = max(f[1] for f in client.flows)
        total = sum(f[2] for f in client.flows)
        result["aggregate_mb_per_s"] = total / 1e6 / max(last - first, 1e-9)
        result["bytes"] = total
    result["flow_mb_per_s"] = rates
    result["jain_index"] = jain_index(rates) if rates else 0.0
    return result


def echo(address: tuple[str, int], total: int, timeout: float) -> dict:
    """Stream `total` bytes to an echo server and read them all back."""
    sock = socket.create_connection(address, timeout=10)
    sock.setblocking(False)
    ep = select.epoll()
    ep.register(sock.fileno(), EPOLLIN | EPOLLOUT)
    chunk = memoryview(bytes(range(256)) * (_CHUNK // 256))
    buf = bytearray(_CHUNK)
    sent = received = 0
    start = time.monotonic()
    deadline = start + timeout
    while received < total and time.monotonic() < deadline:
        for _, events in ep.poll(0.5):
            if events & EPOLLOUT and sent < total:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(chunk[: min(_CHUNK, total - sent)])
                if sent >= total:
                    ep.modify(sock.fileno(), EPOLLIN)
            if events & (EPOLLIN | EPOLLHUP | EPOLLERR):
                while True:
                    try:
                        n = sock.recv_into(buf)
                    except BlockingIOError:
                        break
                    if n == 0:
                        deadline = 0.0
                        break
                    received += n
    elapsed = time.monotonic() - start
    sock.close()
    return {
        "bytes": total,
        "received": received,
        "seconds": elapsed,
        "mb_per_s": received / 1e6 / elapsed,
        "failed": int(received != total),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.eval_client",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("mode", choices=("http", "accept", "flows", "echo"))
    parser.add_argument("--target", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.0, help="open-loop transactions/s")
    parser.add_argument("--mpc", type=int, default=1, help="requests per connection")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--flows", type=int, default=8, help="flows: parallel downloads")
    parser.add_argument("--bytes", type=int, default=1 << 22, help="echo: bytes to stream")
    args = parser.parse_args(argv)
    if args.mode == "echo":
        result = echo((args.target, args.port), args.bytes, timeout=args.seconds + 60)
    else:
        client = Client(args)
        if args.mode == "accept":
            client.mpc = 1
            rate = args.rate
            result = client.run(client.service_accept, args.concurrency, rate, args.seconds, 0)
        elif args.mode == "http":
            # Open-loop: one new connection per `mpc` transactions.
            rate = args.rate / client.mpc
            result = client.run(client.service_http, args.concurrency, rate, args.seconds, 0)
        else:
            client.mpc = 1
            result = client.run(client.service_http, args.flows, 0.0, 3600.0, args.flows)
            result = flows_report(client, result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
