"""mTCP's evaluation (NSDI 2014, §5) reproduced: vfstack vs. Linux kernel TCP.

Every workload runs, in the same run, against two servers that are the
same Python program (the SDK examples, `vfstack.examples.*`):

    stack   the example on a vfstack instance (`--control URL`) that owns
            an emulated VF (198.18.0.10)
    kernel  the example on Linux kernel sockets (`--kernel`) in a namespace
            of its own on the same wire (198.18.0.50)

with the clients on the kernel in the peer namespace (198.18.0.1):

    fig7a    short transactions (64 B response, one request per
             connection; ab) at concurrency 64..1024
    fig7b    messages per connection 1..64 (wrk, every M-th request says
             `Connection: close`; the Python client if wrk is missing)
    fig7c    message size 64 B..8 KiB (ab, one request per connection)
    fig8     connection accept rate: connect, the server accepts and closes
             with a RST (http_server --rst; bench.eval_client accept)
    table2   response times at fixed concurrency: min/mean/median/p99/max/
             stdev of connect, processing and total (ab -g, whole ms)
    fairness N parallel bulk downloads: per-flow rates, Jain's index (§5.2)
    bulk     one download (server -> client) and one echo stream (both ways)
    cost     the stack's own cost: the in-stack diag HTTP (no app) next to
             both apps, the TCP engine alone (bench._engine), and per-call SDK
             cost of send / recv / epoll vs. kernel sockets (bench.eval_opcost)
    paced    CPU-seconds per 1000 transactions at a fixed offered rate
             (whole machine from /proc/stat less idle, bench._measure)
             for a few of the points above: a single-threaded client on 2
             cores saturates before the kernel server does, so peak rates
             understate the kernel; CPU at equal load does not

Repeats alternate which server goes first; figures are medians with
min..max. Results: a JSON file, a markdown summary with stack/kernel
ratios and PNG plots in `--out` (default bench/out/eval-<time>/), the
only files a run leaves (its temporary files are removed; bench/out/ is
not tracked by git); the last line printed names the summary.

    python3 -m bench [--quick | --smoke] [--json] [--out DIR] [--only fig7a,fig8]   (as root)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import eval_report
from bench._engine import engine_bulk, engine_transactions, harness_us_per_segment
from bench._measure import (
    AB_FIELDS,
    QUIET_CPU_PER_S,
    Quieter,
    affinity,
    charge_idle,
    idle_baseline,
    machine_cpu,
    machine_sample,
    process_cpu_s,
)
from bench.eval_client import latency_stats
from stackservice.nic.emulate import PEER_ADDRESS
from tests.support.netns import KERNEL_HOST_ADDRESS, kernel_host, private_port
from tests.support.process import stop as stop_process
from tests.support.stack import StackProcess, running_stack

REPO = Path(__file__).resolve().parents[1]
STACK_ADDRESS = "198.18.0.10"
KERNEL_ADDRESS = KERNEL_HOST_ADDRESS
APP_PORT = 8080
ECHO_PORT = 7007
DIAG_HTTP_PORT = 80
SIDES = ("stack", "kernel")
WORKLOADS = ("fig7a", "fig7b", "fig7c", "fig8", "table2", "fairness", "bulk", "cost")

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Profile:
    """How much of everything one run measures."""

    name: str
    repeats: int
    seconds: int  # one peak-rate run (ab -t / wrk -d / client --seconds)
    concurrency: tuple[int, ...]  # fig 7a
    mpc: tuple[int, ...]  # fig 7b
    sizes: tuple[int, ...]  # fig 7c
    base_concurrency: int  # figs 7b, 7c, 8 and the diag comparison
    table2_concurrency: int
    table2_seconds: int
    flows: int
    flow_bytes: int
    bulk_bytes: int
    paced_rate: float
    paced_seconds: float
    paced_mpc: tuple[int, ...]  # paced points on the 64 B server
    paced_sizes: tuple[int, ...]  # paced points in fig 7c (MPC 1)
    paced_accept: bool  # a paced point in fig 8
    paced_attempts: int  # retries of a paced run that had load come or go around it
    idle_seconds: float  # the idle sample after a paced run
    engine_mb: int
    engine_transactions: int
    opcost_rounds: int
    quiet_budget_s: float


QUICK = Profile(
    "quick", repeats=1, seconds=2, concurrency=(64, 256, 1024), mpc=(1, 4, 16, 64),
    sizes=(64, 512, 2048, 8192), base_concurrency=64, table2_concurrency=1024,
    table2_seconds=3, flows=16,
    flow_bytes=1 << 20, bulk_bytes=1 << 23, paced_rate=1000.0, paced_seconds=2.0,
    paced_mpc=(1, 16), paced_sizes=(8192,), paced_accept=True, paced_attempts=1,
    idle_seconds=1.0, engine_mb=5, engine_transactions=2000, opcost_rounds=10,
    quiet_budget_s=20.0,
)  # fmt: skip
SMOKE = dataclasses.replace(
    QUICK, name="smoke", seconds=1, concurrency=(64,), mpc=(1, 16), sizes=(1024,),
    base_concurrency=32, table2_concurrency=64, table2_seconds=1, flows=4, flow_bytes=1 << 18,
    bulk_bytes=1 << 21,
    paced_rate=300.0, paced_seconds=1.0, paced_mpc=(1,), paced_sizes=(), paced_accept=False,
    idle_seconds=0.5, engine_mb=1, engine_transactions=200, opcost_rounds=3, quiet_budget_s=0.0,
)  # fmt: skip
FULL = dataclasses.replace(
    QUICK, name="full", repeats=3, seconds=4, concurrency=(64, 128, 256, 512, 1024),
    mpc=(1, 2, 4, 8, 16, 32, 64), sizes=(64, 128, 256, 512, 1024, 2048, 4096, 8192),
    table2_seconds=5, flows=32, flow_bytes=1 << 21, bulk_bytes=1 << 25, paced_seconds=4.0,
    paced_mpc=(1, 8, 64), paced_sizes=(1024, 8192), paced_attempts=2,
    engine_mb=20, engine_transactions=10000, opcost_rounds=20, quiet_budget_s=180.0,
)  # fmt: skip
PROFILES = {"smoke": SMOKE, "quick": QUICK, "full": FULL}


# ----------------------------------------------------------------- test bed


@dataclasses.dataclass
class Server:
    """One example app serving one side."""

    side: str
    address: str
    port: int
    pids: list[int]  # whose CPU time is the server's: the app (and the stack)
    proc: subprocess.Popen


class Bed:
    """The emulated wire, the kernel's namespace, one stack instance, and
    the knobs every run shares (progress, idle waits, CPU placement)."""

    def __init__(
        self, port, host_ns: str, stack: StackProcess, args: argparse.Namespace, progress: Progress
    ) -> None:
        self.port = port
        self.peer_ns = port.netns
        self.host_ns = host_ns
        self.stack = stack
        self.control = f"unix://{stack.run_dir / f'{stack.name}.sock'}"
        self.progress = progress
        self.pin = args.pin
        self.quieter = Quieter(args.profile.quiet_budget_s, progress)
        self.idle_seconds = args.profile.idle_seconds
        self.placement: dict[str, str] = {"bench": affinity(os.getpid())}
        self.wrk = shutil.which("wrk") is not None and not args.no_wrk
        if self.pin:
            pin(stack.proc.pid, self.pin[0])
        self.placement["stack"] = affinity(stack.proc.pid)

    def client_argv(self, *argv: str) -> list[str]:
        """A client command in the peer namespace (pinned with --pin)."""
        prefix = ["taskset", "-c", self.pin[1]] if self.pin else []
        return ["ip", "netns", "exec", self.peer_ns, *prefix, *argv]

    def run_client(self, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.client_argv(*argv), capture_output=True, text=True, timeout=timeout, cwd=REPO
        )

    @contextlib.contextmanager
    def server(self, side: str, example: str, *args: str) -> Iterator[Server]:
        """`python -m vfstack.examples.EXAMPLE ARGS` for one side, until
        the block ends (SIGTERM: the example detaches and says goodbye)."""
        argv = [sys.executable, "-m", f"vfstack.examples.{example}", *args]
        if side == "stack":
            argv += ["--control", self.control, "--app", f"bench-{example}"]
            address = STACK_ADDRESS
        else:
            argv = ["ip", "netns", "exec", self.host_ns, *argv]
            argv += ["--kernel", "--host", KERNEL_ADDRESS]
            address = KERNEL_ADDRESS
        port = int(args[args.index("--port") + 1])
        pids = [] if side == "kernel" else [self.stack.proc.pid]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        server = Server(side, address, port, [proc.pid, *pids], proc)
        try:
            line = proc.stdout.readline()
            if "listening on" not in line:
                raise RuntimeError(f"{example} ({side}) did not start: {line}{proc.stderr.read()}")
            if self.pin:
                pin(proc.pid, self.pin[0])
            self.placement[f"{side} {example}"] = affinity(proc.pid)
            yield server
        finally:
            stop_process(proc, timeout=15)

    @contextlib.contextmanager
    def servers(self, example: str, *args: str) -> Iterator[dict[str, Server]]:
        with self.server("stack", example, *args) as s, self.server("kernel", example, *args) as k:
            yield {"stack": s, "kernel": k}


def pin(pid: int, cpus: str) -> None:
    """Set the CPU affinity of every thread of `pid` (new threads inherit)."""
    mask: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        mask.update(range(int(first), int(last or first) + 1))
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), mask)


def order(rep: int) -> tuple[str, ...]:
    """Alternate who goes first, so drifting machine load hits both."""
    return SIDES if rep % 2 == 0 else SIDES[::-1]


# ------------------------------------------------------------------ clients

_WRK_SCRIPT = """
local every, n = 1, 0
local keep, close
function init(args)
  every = tonumber(args[1])
  keep = wrk.format("GET", "/")
  close = wrk.format("GET", "/", {["Connection"] = "close"})
end
function request()
  n = n + 1
  if n % every == 0 then return close end
  return keep
end
"""
_WRK_FIELDS = {
    "complete": re.compile(r"(\d+) requests in"),
    "requests_per_s": re.compile(r"Requests/sec:\s+([\d.]+)"),
}
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def ab(bed: Bed, server: Server, concurrency: int, seconds: int, times: bool = False) -> dict:
    """`ab -t seconds` (one request per connection, HTTP/1.0) from the peer
    namespace; with `times`, per-request connect/processing/total from -g."""
    with tempfile.NamedTemporaryFile("r", prefix="vfstack-ab-", suffix=".tsv") as tsv:
        argv = ["ab", "-q", "-r", "-s", "20", "-t", str(seconds), "-n", str(40000 * seconds)]
        argv += ["-c", str(concurrency)] + (["-g", tsv.name] if times else [])
        done = bed.run_client(
            *argv, f"http://{server.address}:{server.port}/", timeout=seconds + 120
        )
        rows = [line.split("\t") for line in tsv if line[:1].isalpha() and "ctime" not in line]
    figures: dict = {}
    for name, pattern in AB_FIELDS.items():
        match = pattern.search(done.stdout)
        if match is None and name != "non_2xx":
            raise RuntimeError(f"ab failed ({done.returncode}): {done.stdout}{done.stderr}")
        figures[name] = float(match.group(1)) if match else 0.0
    figures["failed"] += figures.pop("non_2xx")
    if times:  # starttime, seconds, ctime, dtime, ttime, wait (whole ms)
        columns = {"connect": 2, "processing": 3, "total": 4}
        figures["latency_ms"] = {
            name: latency_stats([int(r[i]) / 1000 for r in rows]) for name, i in columns.items()
        }
    figures["tool"] = "ab"
    return figures


def wrk(bed: Bed, server: Server, concurrency: int, seconds: int, mpc: int) -> dict:
    """wrk, one thread, keep-alive with every mpc-th request closing."""
    with tempfile.NamedTemporaryFile("w", prefix="vfstack-wrk-", suffix=".lua") as script:
        script.write(_WRK_SCRIPT)
        script.flush()
        os.chmod(script.name, 0o644)
        url = f"http://{server.address}:{server.port}/"
        argv = ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{seconds}s", "-s", script.name]
        done = bed.run_client(*argv, url, "--", str(mpc), timeout=seconds + 120)
    figures: dict = {"tool": "wrk"}
    for name, pattern in _WRK_FIELDS.items():
        match = pattern.search(done.stdout)
        if match is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
        figures[name] = float(match.group(1))
    errors = _WRK_ERRORS.search(done.stdout)
    non_2xx = _WRK_NON_2XX.search(done.stdout)
    figures["failed"] = sum(int(x) for x in errors.groups()) if errors else 0
    figures["failed"] += int(non_2xx.group(1)) if non_2xx else 0
    return figures


def client(bed: Bed, server: Server, mode: str, *flags: str, seconds: float = 0) -> dict:
    """One `bench.eval_client` run in the peer namespace: its JSON line."""
    argv = [sys.executable, "-m", "bench.eval_client", mode, "--target", server.address]
    argv += ["--port", str(server.port), "--seconds", str(seconds or 1), *flags]
    done = bed.run_client(*argv, timeout=seconds + 180)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"eval_client {mode} failed: {done.stderr[-2000:]}")
    result = json.loads(lines[-1])
    result["tool"] = "eval_client"
    if mode in ("http", "accept"):
        result["requests_per_s"] = result["rate"]
    return result


def with_cpu(server: Server, measure: Callable[[], dict]) -> dict:
    """`measure()`'s figures and the CPU each transaction it completed
    took, in µs: `server_cpu_us`, the server's own processes (the kernel
    side's app; the stack side's app and stack), and `machine_cpu_us`, the
    whole machine's busy time (clients, the kernel's work wherever it ran).
    A saturated run spends the machine: its rate is the CPUs over that."""
    machine = machine_sample()
    cpu = sum(process_cpu_s(pid) for pid in server.pids)
    result = measure()
    cpu = sum(process_cpu_s(pid) for pid in server.pids) - cpu
    busy = machine_cpu(machine, machine_sample())[0]
    done = result.get("complete") or result.get("completed")
    if done:
        result["server_cpu_us"] = 1e6 * cpu / done
        result["machine_cpu_us"] = 1e6 * busy / done
    return result


def paced(bed: Bed, server: Server, mode: str, rate: float, seconds: float, mpc: int) -> dict:
    """CPU per 1000 transactions at `rate`/s, between two idle samples
    (bench._measure: whole machine less idle, and the processes' own)."""
    before = bed.quieter.wait()
    cpu0 = sum(process_cpu_s(pid) for pid in server.pids)
    flags = ["--rate", str(rate)] + (["--mpc", str(mpc)] if mode == "http" else [])
    result = client(bed, server, mode, *flags, seconds=seconds)
    result["server_process_cpu_s"] = sum(process_cpu_s(pid) for pid in server.pids) - cpu0
    after = idle_baseline(bed.idle_seconds)
    charge_idle(result, tuple((x + y) / 2 for x, y in zip(before, after, strict=True)))
    completed = max(result["completed"], 1)
    result["steady"] = max(before[0], after[0]) < QUIET_CPU_PER_S
    result["server_process_cpu_s_per_1000"] = 1000 * result["server_process_cpu_s"] / completed
    result["client_cpu_s_per_1000"] = 1000 * result["client_cpu_s"] / completed
    return result


# ---------------------------------------------------------------- the runs


class Runner:
    """Runs the workloads, collecting every run under figures[fig][point][side]."""

    def __init__(self, bed: Bed, profile: Profile, progress: Progress) -> None:
        self.bed = bed
        self.p = profile
        self.say = progress
        self.started = time.monotonic()
        self.figures: dict[str, dict] = {}

    def log(self, text: str) -> None:
        self.say(f"[{time.monotonic() - self.started:5.0f}s] {text}")

    def record(self, fig: str, point: str, side: str, measure: Callable[[], dict]) -> dict:
        """One run; a failure is recorded (and shown), not fatal."""
        runs = self.figures.setdefault(fig, {}).setdefault(point, {s: [] for s in SIDES})
        try:
            result = measure()
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"[-2000:]}
            self.log(f"{fig} {point} {side}: FAILED {result['error'][:300]}")
        else:
            self.log(f"{fig} {point} {side}: {_brief(result)}")
        runs[side].append(result)
        return result

    def each(self, fig: str, label: str) -> Iterator[tuple[int, tuple[str, ...]]]:
        """Repeats of one block, each after waiting for an idle machine."""
        for rep in range(self.p.repeats):
            if self.p.quiet_budget_s:
                self.bed.quieter.wait()
            self.log(f"{fig} [{rep + 1}/{self.p.repeats}] {label} ...")
            yield rep, order(rep)

    def sweep(
        self,
        fig: str,
        label: str,
        servers: dict[str, Server],
        points: dict,
        measure: Callable[..., dict],
        *args,
        **kwargs,
    ) -> None:
        """For each repeat, each point, each side:
        measure(bed, server, points[point], *args, **kwargs)."""
        for _, sides in self.each(fig, label):
            for point, value in points.items():
                for side in sides:
                    server = servers[side]
                    run = functools.partial(measure, self.bed, server, value, *args, **kwargs)
                    self.record(fig, str(point), side, functools.partial(with_cpu, server, run))

    def paced_points(
        self, servers: dict[str, Server], points: list[tuple[str, int]], mode: str = "http"
    ) -> None:
        """Fixed-rate CPU runs for (point label, mpc) on these servers; a
        run that had load come or go around it is retried (attempts)."""
        p = self.p
        for point, mpc in points:
            for _, sides in self.each("paced", f"{point} at {p.paced_rate:.0f}/s"):
                for side in sides:
                    run = functools.partial(
                        paced, self.bed, servers[side], mode, p.paced_rate, p.paced_seconds, mpc
                    )
                    for attempt in range(p.paced_attempts):
                        if attempt:
                            self.figures["paced"][point][side].pop()
                        if self.record("paced", point, side, run).get("steady"):
                            break

    def warm(self, servers: dict[str, Server], mode: str = "http") -> None:
        """Warm-up before measuring (ARP, code paths, caches)."""
        for server in servers.values():
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                client(self.bed, server, mode, "--concurrency", "8", seconds=0.3)

    # ---------------------------------------------------------- workloads

    def base(self, only: set[str]) -> None:
        """Everything on the 64 B HTTP server: 7a, 7b, table 2, paced."""
        p = self.p
        with self.bed.servers("http_server", "--port", str(APP_PORT), "--size", "64") as servers:
            self.warm(servers)
            if "fig7a" in only:
                self.sweep(
                    "fig7a",
                    "short transactions by concurrency",
                    servers,
                    {c: c for c in p.concurrency},
                    ab,
                    p.seconds,
                )
            if "fig7b" in only:
                self.sweep(
                    "fig7b",
                    "messages per connection",
                    servers,
                    {m: m for m in p.mpc},
                    _mpc_run,
                    p.base_concurrency,
                    p.seconds,
                )
            if only & {"fig7a", "fig7b"}:
                self.paced_points(servers, [(f"mpc {m}", m) for m in p.paced_mpc])
            if "table2" in only:
                c = p.table2_concurrency
                self.sweep(
                    "table2",
                    f"response times at c={c}",
                    servers,
                    {c: c},
                    ab,
                    p.table2_seconds,
                    True,
                )

    def fig7c(self) -> None:
        p = self.p
        for size in p.sizes:
            args = ("--port", str(APP_PORT + 1), "--size", str(size))
            with self.bed.servers("http_server", *args) as servers:
                self.warm(servers)
                self.sweep(
                    "fig7c",
                    f"message size {size} B",
                    servers,
                    {size: p.base_concurrency},
                    ab,
                    p.seconds,
                )
                if size in p.paced_sizes:
                    self.paced_points(servers, [(f"size {size}", 1)])

    def fig8(self) -> None:
        p = self.p
        with self.bed.servers("http_server", "--port", str(APP_PORT + 2), "--rst") as servers:
            self.warm(servers, "accept")
            self.sweep(
                "fig8",
                "accept and reset",
                servers,
                {"accept": "accept"},
                client,
                "--concurrency",
                str(p.base_concurrency),
                seconds=p.seconds,
            )
            if p.paced_accept:
                self.paced_points(servers, [("accept", 1)], mode="accept")

    def fairness(self) -> None:
        p = self.p
        args = ("--port", str(APP_PORT + 3), "--size", str(p.flow_bytes))
        with self.bed.servers("http_server", *args) as servers:
            self.warm(servers, "flows")
            self.sweep(
                "fairness",
                f"{p.flows} parallel flows",
                servers,
                {p.flows: "flows"},
                client,
                "--flows",
                str(p.flows),
            )

    def bulk(self) -> None:
        p = self.p
        args = ("--port", str(APP_PORT + 4), "--size", str(p.bulk_bytes))
        with self.bed.servers("http_server", *args) as servers:
            self.sweep(
                "bulk", "one download", servers, {"download": "flows"}, client, "--flows", "1"
            )
        with self.bed.servers("echo_server", "--port", str(ECHO_PORT)) as servers:
            self.sweep(
                "bulk",
                "one echo stream",
                servers,
                {"echo": "echo"},
                client,
                "--bytes",
                str(p.bulk_bytes // 2),
            )

    def cost(self) -> None:
        """The stack's own cost: diag HTTP, the engine alone, per-call SDK cost."""
        p, bed = self.p, self.bed
        stack = bed.stack.proc
        diag = Server("stack", STACK_ADDRESS, DIAG_HTTP_PORT, [stack.pid], stack)
        c = p.base_concurrency
        with bed.servers("http_server", "--port", str(APP_PORT), "--size", "64") as servers:
            targets = {"diag": diag, "app": servers["stack"], "kernel": servers["kernel"]}
            for rep, _ in self.each("cost", f"diag HTTP vs. the apps, c={c}"):
                for name in list(targets)[:: 1 if rep % 2 == 0 else -1]:
                    side = "kernel" if name == "kernel" else "stack"
                    self.record(
                        "cost",
                        f"http {name}",
                        side,
                        functools.partial(ab, bed, targets[name], c, p.seconds),
                    )
        self.log("cost: engine alone (warm-up) ...")
        engine_bulk(1)
        engine_transactions(200, 16)
        for _ in self.each("cost", "engine alone"):
            self.record("cost", "engine", "stack", functools.partial(_engine, p))
        with self._echo_peer():
            for _, sides in self.each("cost", "per-call cost"):
                for side in sides:
                    self.record(
                        "cost",
                        "opcost",
                        side,
                        functools.partial(_opcost, bed, side, p.opcost_rounds),
                    )

    @contextlib.contextmanager
    def _echo_peer(self) -> Iterator[None]:
        """A kernel echo server in the peer namespace for eval_opcost."""
        argv = self.bed.client_argv(
            sys.executable,
            "-m",
            "vfstack.examples.echo_server",
            "--kernel",
            "--host",
            PEER_ADDRESS,
            "--port",
            str(ECHO_PORT),
        )
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            if "listening on" not in proc.stdout.readline():
                raise RuntimeError("the peer's echo server did not start")
            yield
        finally:
            stop_process(proc, timeout=15)


def _mpc_run(bed: Bed, server: Server, mpc: int, concurrency: int, seconds: int) -> dict:
    """Fig. 7b: wrk if installed, else the Python client (recorded as `tool`)."""
    if bed.wrk:
        return wrk(bed, server, concurrency, seconds, mpc)
    flags = ("--concurrency", str(concurrency), "--mpc", str(mpc))
    return client(bed, server, "http", *flags, seconds=seconds)


def _engine(p: Profile) -> dict:
    return {
        "bulk": engine_bulk(p.engine_mb),
        "bulk_offload": engine_bulk(p.engine_mb, offload=True),
        "transactions": engine_transactions(p.engine_transactions, 16),
        "harness_us_per_segment": harness_us_per_segment(),
    }


def _opcost(bed: Bed, side: str, rounds: int) -> dict:
    argv = [
        sys.executable,
        "-m",
        "bench.eval_opcost",
        "--peer",
        PEER_ADDRESS,
        "--port",
        str(ECHO_PORT),
        "--rounds",
        str(rounds),
    ]
    if side == "stack":
        argv += ["--control", bed.control]
    else:  # a kernel socket on the same wire: from the kernel server's namespace
        argv = ["ip", "netns", "exec", bed.host_ns, *argv, "--kernel"]
    if bed.pin:
        argv = ["taskset", "-c", bed.pin[0], *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"eval_opcost failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _brief(result: dict) -> str:
    """A few words for the progress line."""
    if "requests_per_s" in result:
        failed = result.get("failed", 0)
        text = f"{result['requests_per_s']:,.0f}/s".replace(",", " ")
        if "cpu_s_per_1000" in result:
            text += f", {result['cpu_s_per_1000']:.2f} CPU-s/1000"
        return text + (f", {failed:.0f} failed" if failed else "")
    if "jain_index" in result:
        return f"{result['aggregate_mb_per_s']:.1f} MB/s, Jain {result['jain_index']:.3f}"
    if "mb_per_s" in result:
        return f"{result['mb_per_s']:.1f} MB/s"
    if "us" in result:
        return ", ".join(f"{k} {min(v):.2f} µs" for k, v in result["us"].items() if v)
    if "bulk" in result:
        return f"{result['bulk']['segments_per_s']:,.0f} segments/s".replace(",", " ")
    return "done"


# ------------------------------------------------------------ the machine


def _commit() -> str:
    """HEAD's commit, read from .git without running git."""
    git = REPO / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return "unknown"


def _first_line(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else ""


def machine() -> dict:
    with open("/proc/cpuinfo") as cpuinfo:
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
        ]
    with open("/proc/meminfo") as meminfo:
        memory = meminfo.readline().split(":", 1)[1].strip()
    with open("/proc/loadavg") as loadavg:
        load = [float(x) for x in loadavg.read().split()[:3]]
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "nproc": os.cpu_count(),
        "cpu": models[0] if models else platform.machine(),
        "memory": memory,
        "loadavg": load,
    }


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("vfstack", "matplotlib", "grpcio"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    found["ab"] = _first_line("ab", "-V").replace("This is ApacheBench, Version", "ab")
    wrk_version = _first_line("wrk", "--version") if shutil.which("wrk") else "not installed"
    found["wrk"] = wrk_version.split(" [")[0]
    return found


# ------------------------------------------------------------------ driver


def run(args: argparse.Namespace, progress: Progress) -> dict:
    profile: Profile = args.profile
    only = set(args.only)
    started = time.time()
    report: dict = {
        "schema": "vfstack-eval/1",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "command": "python3 -m bench " + " ".join(args.argv),
        "profile": dataclasses.asdict(profile),
        "machine": machine(),
        "versions": versions(),
        "commit": _commit(),
        "addresses": {"stack": STACK_ADDRESS, "kernel": KERNEL_ADDRESS, "clients": PEER_ADDRESS},
    }
    with (
        private_port(vfs=1) as port,
        kernel_host(port, address=KERNEL_ADDRESS) as host_ns,
        running_stack(port.vf(0), f"{STACK_ADDRESS}/24", "vf0", "--diag-services") as stack,
    ):
        bed = Bed(port, host_ns, stack, args, progress)
        runner = Runner(bed, profile, progress)
        runner.log(f"profile {profile.name}: {', '.join(w for w in WORKLOADS if w in only)}")
        if only & {"fig7a", "fig7b", "table2"}:
            runner.base(only)
        steps = (
            ("fig7c", runner.fig7c),
            ("fig8", runner.fig8),
            ("fairness", runner.fairness),
            ("bulk", runner.bulk),
            ("cost", runner.cost),
        )
        for name, step in steps:
            if name in only:
                step()
        counters = stack.counters()
        report["placement"] = {
            "nproc": os.cpu_count(),
            "pinned": bool(args.pin),
            "pin": {"servers": args.pin[0], "clients": args.pin[1]} if args.pin else None,
            "cpus_allowed": bed.placement,
        }
        report["quiet"] = bed.quieter.summary()
        report["clients"] = {"fig7b": "wrk" if bed.wrk else "eval_client"}
    report["figures"] = runner.figures
    report["stack_counters"] = {
        section: {k: v for k, v in values.items() if v}
        for section, values in counters.items()
        if section != "tcp_states" and any(values.values())
    }
    report["duration_s"] = time.time() - started
    report["summary"] = eval_report.summarize(report)
    return report


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a short run (~3 min)")
    size.add_argument("--smoke", action="store_true", help="a tiny run for the test suite")
    parser.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder, the only place a run leaves files (default bench/out/eval-TIME)",
    )
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}"
    )
    parser.add_argument(
        "--pin",
        metavar="SERVERS:CLIENTS",
        help="pin the stack and the apps to CPUs SERVERS, the clients to CLIENTS (e.g. 1:0); "
        "default: nothing pinned, every process's CPU mask recorded",
    )
    parser.add_argument("--no-wrk", action="store_true", help="fig 7b with the Python client")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv
    args.profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(args.only) - set(WORKLOADS)
    if unknown:
        parser.error(f"--only: unknown workloads {sorted(unknown)}")
    if args.pin:
        servers, _, clients = args.pin.partition(":")
        if not servers or not clients:
            parser.error("--pin takes SERVERS:CLIENTS, e.g. 1:0")
        args.pin = (servers, clients)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if os.geteuid() != 0:
        sys.exit("python -m bench needs root (network namespaces, AF_PACKET)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or REPO / "bench" / "out" / f"eval-{stamp}"

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = run(args, progress)
    report["outputs"] = eval_report.write(report, out, plots=not args.no_plots)
    progress(f"wrote {out}")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(eval_report.text(report))
        print(eval_report.written(report))
    return 0
