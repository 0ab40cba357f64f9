"""TCP: the engine's own cost, and a stack instance vs. the Linux kernel.

All in one run:

1. Engine only (bench._engine): two `TcpEngine`s back to back in this process (each one's
   `send_ipv4` wraps the segment in an IPv4 header and queues it for the
   other, which parses it as the IPv4 host would). A bulk transfer A -> B
   (segments/s both directions, MB/s, µs/segment) and short transactions
   (connect, 64 B request, 64 B response, close). No kernel, no NIC.
2. Short HTTP transactions/s: `ab -n N -c C` (HTTP/1.0, one request per
   connection, `GET /` -> 64 B) against the stack's diag HTTP server
   (198.18.0.10) and against a selectors-based Python server on kernel
   sockets (198.18.0.50, this module's `--serve-kernel`), both behind the
   same emulated wire, ab running in the peer namespace.
3. The same with keep-alive (`ab -k`).
4. CPU-seconds per 1000 transactions at one fixed offered rate for both:
   a paced client (this module's `--paced-client`, in the peer namespace)
   opens connections at R/s for T s; whole-machine busy CPU time from
   /proc/stat over the window (all CPUs' wall time less their idle time:
   the user/system/irq/softirq tick samples miss short bursts, see
   `machine_cpu`; the tick sum is in the JSON too), minus an idle baseline
   measured the same way just before and after, divided by completed
   transactions. A cross-check (`CPU-s/1000*`) adds up the server and
   client processes' own CPU time and irq+softirq time above idle. Every
   measurement first waits (within a budget) for the machine to be idle
   apart from us; a paced run is retried unless idle before and after.
   Nothing is pinned; the report records nproc and each CPU mask.

    python3 -m bench.tcp [--quick] [--json]     (as root)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import _cli as bench_cli
from bench._engine import engine_bulk, engine_transactions, harness_us_per_segment
from bench._measure import (
    AB_FIELDS,
    QUIET_CPU_PER_S,
    Progress,
    Quieter,
    affinity,
    charge_idle,
    idle_baseline,
    machine_cpu,
    machine_sample,
    process_cpu_s,
    ratio_row,
    table,
)
from stackservice.diag import PATTERN
from tests.support.process import stop as stop_process

STACK_ADDRESS = "198.18.0.10"
KERNEL_ADDRESS = "198.18.0.50"  # tests.support.netns.KERNEL_HOST_ADDRESS
HTTP_PORT = 80
CONCURRENCY = 100
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------- Python server on kernel TCP


def _http_response(size: int, keep_alive: bool) -> bytes:
    """The diag server's response, byte for byte."""
    body = (PATTERN * (size // len(PATTERN) + 1))[:size]
    return (
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {size}\r\nConnection: {'keep-alive' if keep_alive else 'close'}"
        "\r\n\r\n"
    ).encode() + body


class _KernelConnection:
    __slots__ = ("close_after", "out", "request", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.request = bytearray()
        self.out = b""
        self.close_after = False


def serve_kernel(address: str, port: int) -> int:
    """A single-threaded selectors HTTP server on kernel sockets, equivalent
    to the stack's diag HTTP: `GET /` -> 64 B, `GET /<n>` -> n bytes,
    HTTP/1.0 (keep-alive on request) and 1.1 keep-alive. Prints "ready"."""
    sel = selectors.DefaultSelector()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(4096)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    responses: dict[tuple[int, bool], bytes] = {}
    print("ready", flush=True)

    def close(conn: _KernelConnection) -> None:
        sel.unregister(conn.sock)
        conn.sock.close()

    def flush(conn: _KernelConnection) -> bool:
        """Send what is pending; False if the socket is gone or blocked."""
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            close(conn)
            return False
        conn.out = conn.out[sent:]
        if conn.out:
            sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return False
        if conn.close_after:
            close(conn)
            return False
        return True

    def serve(conn: _KernelConnection) -> None:
        while (end := conn.request.find(b"\r\n\r\n")) >= 0:
            lines = bytes(conn.request[:end]).decode("latin-1").split("\r\n")
            del conn.request[: end + 4]
            method, target, version = [*lines[0].split(" "), "", "", ""][:3]
            headers = {
                k.strip().lower(): v.strip().lower()
                for k, _, v in (line.partition(":") for line in lines[1:])
            }
            connection = headers.get("connection", "")
            keep = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
            path = target.split("?", 1)[0]
            size = 64 if path == "/" else int(path[1:]) if path[1:].isdigit() else -1
            if method != "GET" or not 0 <= size <= 1 << 20:
                conn.out += b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                conn.close_after = True
            else:
                key = (size, keep)
                if key not in responses:
                    responses[key] = _http_response(size, keep)
                conn.out += responses[key]
                conn.close_after = not keep
            if not flush(conn):
                return

    while not stop[0]:
        for key, _ in sel.select(1.0):
            if key.data is None:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except (BlockingIOError, ConnectionAbortedError):
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(sock, selectors.EVENT_READ, _KernelConnection(sock))
                continue
            conn = key.data
            if conn.out:  # was blocked on a full send buffer
                if flush(conn):
                    sel.modify(conn.sock, selectors.EVENT_READ, conn)
                    serve(conn)
                continue
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                close(conn)
                continue
            conn.request += data
            serve(conn)
    return 0


# ----------------------------------------------------------------------- ab


def ab(netns: str, address: str, count: int, concurrency: int, keep_alive: bool) -> dict:
    """One ab run from the peer namespace; its figures parsed (p99 from the
    -e percentile file, which has sub-millisecond resolution)."""
    with tempfile.NamedTemporaryFile("r", prefix="vfstack-ab-", suffix=".csv") as csv:
        argv = ["ab", "-q", "-r", "-s", "20", "-n", str(count), "-c", str(concurrency)]
        argv += ["-e", csv.name] + (["-k"] if keep_alive else [])
        done = subprocess.run(
            ["ip", "netns", "exec", netns, *argv, f"http://{address}/"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        percentiles = dict(line.strip().split(",") for line in csv if line[:1].isdigit())
    figures: dict[str, float] = {}
    for name, pattern in AB_FIELDS.items():
        match = pattern.search(done.stdout)
        if match is None and name != "non_2xx":
            raise RuntimeError(f"ab failed ({done.returncode}): {done.stdout}{done.stderr}")
        figures[name] = float(match.group(1)) if match else 0.0
    figures["failed"] += figures.pop("non_2xx") + count - figures["complete"]
    figures["p99_ms"] = float(percentiles["99"])
    return figures


# ------------------------------------------------------------ paced client


def paced_client(address: str, port: int, rate: float, duration: float) -> int:
    """Open one HTTP/1.0 connection every 1/rate s for `duration` s, each
    `GET /` read to EOF; print a JSON summary including the CPU ticks the
    whole machine spent from the first open to the last completion."""
    sel = selectors.DefaultSelector()
    request = f"GET / HTTP/1.0\r\nHost: {address}\r\n\r\n".encode()
    expected = len(_http_response(64, False))
    interval = 1.0 / rate
    latencies: list[float] = []
    opened = failed = 0
    cpu0, proc0 = machine_sample(), time.process_time()
    start = time.monotonic()
    next_open, end = start, start + duration
    give_up = end + 10.0
    while True:
        now = time.monotonic()
        while next_open <= now and next_open < end:
            sock = socket.socket()
            sock.setblocking(False)
            code = sock.connect_ex((address, port))
            if code not in (0, errno.EINPROGRESS):
                failed += 1
                sock.close()
            else:
                sel.register(sock, selectors.EVENT_WRITE, [next_open, 0])
            opened += 1
            next_open += interval
        pending = len(sel.get_map())
        if next_open >= end and (not pending or now > give_up):
            break
        wait = (next_open if next_open < end else give_up) - now
        for key, events in sel.select(max(0.0, wait)):
            sock, state = key.fileobj, key.data
            try:
                if events & selectors.EVENT_WRITE:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        raise ConnectionError
                    sock.send(request)
                    sel.modify(sock, selectors.EVENT_READ, state)
                    continue
                data = sock.recv(4096)
                if data:
                    state[1] += len(data)
                    continue
                if state[1] == expected:
                    latencies.append(time.monotonic() - state[0])
                else:
                    failed += 1
            except OSError:
                failed += 1
            sel.unregister(sock)
            sock.close()
    elapsed = time.monotonic() - start
    busy, irq, tick = machine_cpu(cpu0, machine_sample())
    failed += len(sel.get_map())
    latencies.sort()
    print(
        json.dumps(
            {
                "offered_rate": rate,
                "opened": opened,
                "completed": len(latencies),
                "failed": failed,
                "window_s": elapsed,
                "machine_cpu_s": busy,
                "machine_irq_cpu_s": irq,
                "machine_tick_cpu_s": tick,
                "client_cpu_s": time.process_time() - proc0,
                "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0.0,
                "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
            }
        ),
        flush=True,
    )
    return 0


def paced(netns: str, address: str, rate: float, duration: float, server_pid: int) -> dict:
    """One paced-client run; `cpu_s_per_1000` is filled in by the caller
    once the idle baselines on both sides of the run are known."""
    server_before = process_cpu_s(server_pid)
    done = subprocess.run(
        [
            "ip", "netns", "exec", netns, sys.executable, "-m", "bench.tcp", "--paced-client",
            "--target", address, "--rate", str(rate), "--duration", str(duration),
        ],
        capture_output=True, text=True, timeout=duration + 60, cwd=REPO, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout)
    completed = max(result["completed"], 1)
    result["server_process_cpu_s"] = process_cpu_s(server_pid) - server_before
    result["server_process_cpu_s_per_1000"] = 1000 * result["server_process_cpu_s"] / completed
    result["client_cpu_s_per_1000"] = 1000 * result["client_cpu_s"] / completed
    result["achieved_rate"] = result["completed"] / result["window_s"]
    return result


# ------------------------------------------------------------------- driver


@contextlib.contextmanager
def kernel_server(netns: str, address: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [
            "ip", "netns", "exec", netns, sys.executable, "-m", "bench.tcp", "--serve-kernel",
            "--bind", address, "--port", str(HTTP_PORT),
        ],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the kernel-socket server did not start")
        yield proc
    finally:
        stop_process(proc)


def placement(stack_pid: int, kernel_pid: int) -> dict:
    everything = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    allowed = {
        "bench": affinity(os.getpid()),
        "stack": affinity(stack_pid),
        "kernel_server": affinity(kernel_pid),
    }
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().split()[:3]
    return {
        "nproc": os.cpu_count(),
        "cpus_allowed": allowed,
        "pinned": any(a not in (everything, f"0-{os.cpu_count() - 1}") for a in allowed.values()),
        "loadavg_at_start": [float(x) for x in load],
    }


def run(quick: bool, progress: Progress, rate: float, concurrency: int) -> dict:
    from tests.support.netns import kernel_host, private_port
    from tests.support.stack import running_stack

    repeats = 1 if quick else 5
    params = {
        "repeats": repeats,
        "engine_bulk_mb": 10 if quick else 50,
        "engine_transactions": 2000 if quick else 20000,
        "engine_concurrency": 16,
        "ab_requests": 1000 if quick else 10000,
        "ab_keepalive_requests": 2000 if quick else 30000,
        "concurrency": concurrency,
        "paced_rate": rate,
        "paced_seconds": 2.0 if quick else 5.0,
        "idle_seconds": 1.0,
        "paced_attempts": 1 if quick else 3,
        "quiet_budget_s": 5.0 if quick else 240.0,
    }
    report: dict = {"quick": quick, "params": params}
    quieter = Quieter(params["quiet_budget_s"], progress)
    engine: dict[str, list] = {"bulk": [], "transactions": []}
    servers = {"stack": STACK_ADDRESS, "kernel": KERNEL_ADDRESS}
    ab_runs: dict[str, dict[str, list]] = {
        s: {"stack": [], "kernel": []} for s in ("short", "keepalive")
    }
    paced_runs: dict[str, list] = {"stack": [], "kernel": [], "idle_cpu_per_s": []}
    progress("engine: warm-up ...")
    engine_bulk(2)
    engine_transactions(500, params["engine_concurrency"])
    report["engine_harness_us_per_segment"] = harness_us_per_segment()
    with (
        private_port(vfs=1) as port,
        kernel_host(port, address=KERNEL_ADDRESS) as host_ns,
        running_stack(port.vf(0), f"{STACK_ADDRESS}/24", "vf0", "--diag-services") as stack,
        kernel_server(host_ns, KERNEL_ADDRESS) as kernel,
    ):
        report["placement"] = placement(stack.proc.pid, kernel.pid)
        pids = {"stack": stack.proc.pid, "kernel": kernel.pid}
        for who, address in servers.items():  # warm-up: ARP, code paths, caches
            progress(f"warm-up: {who} ...")
            ab(port.netns, address, 300, 10, False)
            ab(port.netns, address, 300, 10, True)
        for rep in range(repeats):
            step = f"[{rep + 1}/{repeats}]"
            quieter.wait()
            progress(f"{step} engine: bulk {params['engine_bulk_mb']} MB ...")
            engine["bulk"].append(engine_bulk(params["engine_bulk_mb"]))
            progress(f"{step} engine: {params['engine_transactions']} transactions ...")
            engine["transactions"].append(
                engine_transactions(params["engine_transactions"], params["engine_concurrency"])
            )
            # Alternate who goes first so drifting machine load hits both.
            order = list(servers.items()) if rep % 2 == 0 else list(servers.items())[::-1]
            for scenario, keep, count in (
                ("short", False, params["ab_requests"]),
                ("keepalive", True, params["ab_keepalive_requests"]),
            ):
                quieter.wait()
                for who, address in order:
                    progress(f"{step} ab {scenario} -c {concurrency}: {who} ...")
                    ab_runs[scenario][who].append(ab(port.netns, address, count, concurrency, keep))
            # Each paced run between two idle samples (the first one waits
            # for a quiet machine) and charged their mean; retried while a
            # neighbour's load came, went or was displaced by ours.
            for who, address in order:
                for attempt in range(params["paced_attempts"]):
                    progress(f"{step} paced {rate:.0f}/s: {who} (attempt {attempt + 1}) ...")
                    before = quieter.wait()
                    result = paced(port.netns, address, rate, params["paced_seconds"], pids[who])
                    after = idle_baseline(params["idle_seconds"])
                    paced_runs["idle_cpu_per_s"] += [before, after]
                    charge_idle(
                        result, tuple((x + y) / 2 for x, y in zip(before, after, strict=True))
                    )
                    result["steady"] = max(before[0], after[0]) < QUIET_CPU_PER_S
                    result["attempt"] = attempt + 1
                    if result["steady"]:
                        break
                paced_runs[who].append(result)
        counters = stack.counters()
    report["engine"] = engine
    report["ab"] = ab_runs
    report["paced"] = paced_runs
    report["quiet"] = quieter.summary()
    # The instance's own view (drops, retransmissions, loop passes), for
    # reading the figures; sections other than gauges, zeros left out.
    report["stack_counters"] = {
        section: {k: v for k, v in values.items() if v}
        for section, values in counters.items()
        if section != "tcp_states" and any(values.values())
    }
    return report


def summarize(report: dict) -> list[dict]:
    bulk, tx = report["engine"]["bulk"], report["engine"]["transactions"]
    rows = [
        ratio_row("engine bulk", "segments/s", [r["segments_per_s"] for r in bulk], None),
        ratio_row("engine bulk", "MB/s", [r["mb_per_s"] for r in bulk], None),
        ratio_row("engine bulk", "µs/segment", [r["us_per_segment"] for r in bulk], None),
        ratio_row(
            "engine 64 B transactions", "trans/s", [r["transactions_per_s"] for r in tx], None
        ),
        ratio_row(
            "engine 64 B transactions", "µs/segment", [r["us_per_segment"] for r in tx], None
        ),
    ]
    c = report["params"]["concurrency"]
    for scenario, label in (("short", f"ab -c {c}"), ("keepalive", f"ab -k -c {c}")):
        by = report["ab"][scenario]
        rows.append(
            ratio_row(
                label,
                "requests/s",
                [r["requests_per_s"] for r in by["stack"]],
                [r["requests_per_s"] for r in by["kernel"]],
            )
        )
        for field, unit in (("mean_ms", "mean ms"), ("p99_ms", "p99 ms")):
            # ab reports whole milliseconds: 0 means under 1 ms.
            rows.append(
                ratio_row(
                    label,
                    unit,
                    [max(r[field], 0.5) for r in by["stack"]],
                    [max(r[field], 0.5) for r in by["kernel"]],
                )
            )
        rows[-1]["failed"] = {w: int(sum(r["failed"] for r in by[w])) for w in by}
    paced_runs = report["paced"]
    rate = report["params"]["paced_rate"]
    # Whole-machine CPU less idle is only sound on runs with an idle
    # machine around them: use those when each side has one.
    steady = {w: [r for r in paced_runs[w] if r["steady"]] for w in ("stack", "kernel")}
    use = steady if all(steady.values()) else {w: paced_runs[w] for w in steady}
    rows.append(
        ratio_row(
            f"paced {rate:.0f} conn/s",
            "CPU-s/1000",
            [r["cpu_s_per_1000"] for r in use["stack"]],
            [r["cpu_s_per_1000"] for r in use["kernel"]],
        )
    )
    rows[-1]["runs"] = {w: f"{len(use[w])}/{len(paced_runs[w])}" for w in use}
    rows[-1]["steady_only"] = use is steady
    rows[-1]["failed"] = {
        w: int(sum(r["failed"] for r in paced_runs[w])) for w in ("stack", "kernel")
    }
    rows.append(
        ratio_row(
            f"paced {rate:.0f} conn/s",
            "CPU-s/1000*",
            [r["accounted_cpu_s_per_1000"] for r in paced_runs["stack"]],
            [r["accounted_cpu_s_per_1000"] for r in paced_runs["kernel"]],
        )
    )
    rows.append(
        ratio_row(
            f"paced {rate:.0f} conn/s",
            "p99 ms",
            [max(r["p99_ms"], 1e-3) for r in paced_runs["stack"]],
            [max(r["p99_ms"], 1e-3) for r in paced_runs["kernel"]],
        )
    )
    return rows


def footer(report: dict) -> str:
    p = report["placement"]
    bulk = report["engine"]["bulk"]
    phases = {
        k: statistics.median(r["phase_us_per_segment"][k] for r in bulk)
        for k in ("input", "app", "output")
    }
    paced_runs = report["paced"]
    idles = paced_runs["idle_cpu_per_s"]
    achieved = {
        w: statistics.median(r["achieved_rate"] for r in paced_runs[w]) for w in ("stack", "kernel")
    }
    tick = {
        w: statistics.median(r["tick_cpu_s_per_1000"] for r in paced_runs[w])
        for w in ("stack", "kernel")
    }
    client, server = (
        {w: statistics.median(r[field] for r in paced_runs[w]) for w in ("stack", "kernel")}
        for field in ("client_cpu_s_per_1000", "server_process_cpu_s_per_1000")
    )
    return "\n".join(
        [
            f"engine bulk µs/segment by phase: input {phases['input']:.1f}, app "
            f"{phases['app']:.1f}, output {phases['output']:.1f} (harness "
            f"{report['engine_harness_us_per_segment']:.1f} µs/segment included)",
            f"paced: achieved {achieved['stack']:.0f}/{achieved['kernel']:.0f} conn/s "
            f"(stack/kernel); CPU-s/1000 from tick samples {tick['stack']:.2f}/"
            f"{tick['kernel']:.2f}, of the server process alone "
            f"{server['stack']:.2f}/{server['kernel']:.2f}, of the client process "
            f"{client['stack']:.2f}/{client['kernel']:.2f}; idle baseline "
            f"{min(i[0] for i in idles):.2f}..{max(i[0] for i in idles):.2f} CPU-s/s "
            "(CPU-s/1000: whole machine less idle; CPU-s/1000*: server + client processes "
            "+ irq/softirq above idle)",
            f"quiet machine at {report['quiet']['quiet']}/{report['quiet']['checks']} checks "
            f"before measuring (waited {report['quiet']['waited_s']:.0f} s in all)",
            f"placement: nproc {p['nproc']}, cpus allowed {p['cpus_allowed']}, "
            f"{'PINNED' if p['pinned'] else 'nothing pinned'}, loadavg at start "
            f"{p['loadavg_at_start']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_cli.parser(__doc__)
    parser.add_argument("--rate", type=float, default=1000.0, help="paced connections/s")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="ab -c")
    helpers = parser.add_argument_group("helpers this benchmark runs in other namespaces")
    helpers.add_argument("--serve-kernel", action="store_true", help="the kernel-socket server")
    helpers.add_argument("--paced-client", action="store_true", help="the paced client")
    helpers.add_argument("--bind", default=KERNEL_ADDRESS)
    helpers.add_argument("--port", type=int, default=HTTP_PORT)
    helpers.add_argument("--target", default=STACK_ADDRESS)
    helpers.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.serve_kernel:
        return serve_kernel(args.bind, args.port)
    if args.paced_client:
        return paced_client(args.target, args.port, args.rate, args.duration)
    report = run(args.quick, bench_cli.progress, args.rate, args.concurrency)
    report["summary"] = summarize(report)
    print(json.dumps(report, indent=2) if args.json else table(report["summary"]))
    if not args.json:
        print(footer(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
