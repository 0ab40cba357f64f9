"""The randomized soak: everything at once on one stack instance.

Topology: a private emulated port; one `stackservice run --diag-services
--time-wait-ms 500 --metrics-port P` instance on its VF; one SDK app per
style (threads, epoll, selector, asyncio: tests/support/soak_actor.py),
each its own process and session, listening on a port of its own and
connecting out to the kernel peer; and the kernel peer, one process in
the peer namespace, listening for the apps and connecting to each app's
listener. Every connection runs a seeded plan (tests/support/soak_plan.py)
both ends know. Meanwhile operators run `vfstack conns/stats/sessions/
status` (text and --json), `stats --watch` and `conns --watch` stream all
along, and /metrics is scraped and parsed.

Checks: the instance stays alive and exits cleanly on SIGTERM; no
connection meets an error nobody caused, and every byte received is the
byte sent; every admin command succeeds; `internal_errors` stays 0 (when
the instance has that counter section); once the actors are done and
TIME-WAIT has passed, no connection is left but the listeners and no
session either; the instance's memory is back near where it was after
warm-up.

`run_soak(SoakSettings(seed, seconds), progress)` returns the report;
tests/integration/test_soak.py and `python -m bench.soak` call it. The
seed decides every choice (each actor's own stream derives from it), so
a failure names the seed to replay and each failed connection its plan.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.support.netns import in_netns, private_port
from tests.support.process import stop
from tests.support.soak_actor import APP_STYLES
from tests.support.soak_drivers import THREADS_MARK
from tests.support.soak_plan import HANG_SECONDS
from tests.support.stack import StackProcess, running_stack, wait_until

ROOT = Path(__file__).resolve().parents[2]
STACK_IP = "198.18.0.10"
PEER_IP = "198.18.0.1"
APP_PORT_BASE = 7000  # app i listens on 7000 + i
PEER_PORT_BASE = 9000  # the peer listens on 9000 + i for app i
CLOSED_ON_STACK = 7999  # nothing listens there: refused plans of the peer
CLOSED_ON_PEER = 1  # nor there: refused plans of the apps
READY_SECONDS = 60.0
DRAIN_SECONDS = HANG_SECONDS + 90  # an endpoint without progress gives up first
EXIT_SECONDS = HANG_SECONDS + 90
QUIET_SECONDS = 60.0  # for the last connections to leave TIME-WAIT
DYING_SECONDS = 5.0  # a stack whose loop raised can take this long to exit
LIVE_FAILURES = 5  # failure headlines shown per look at the actors (twice a second)
RSS_SLACK_BYTES = 16 << 20  # see SoakSettings.rss_slack_bytes
ADMIN_COMMANDS = (
    ("conns",),
    ("conns", "--json"),
    ("stats",),
    ("stats", "--json"),
    ("sessions",),
    ("sessions", "--json"),
    ("status",),
    ("conns", "--state", "time-wait", "--json"),
)


@dataclass
class SoakSettings:
    seed: int
    seconds: float
    styles: tuple[str, ...] = APP_STYLES  # one app per style
    admin_interval: float = 2.0  # seconds between admin commands
    time_wait_ms: int = 500
    progress_seconds: float = 10.0
    # RSS after warm-up is the baseline (pools, imports and caches are
    # full by then); at the end, every connection gone and the loop idle
    # (it runs a full GC), the instance's loop and control processes
    # together may exceed it by this much. Measured here: the end was 3.7
    # to 5.8 MB *below* the baseline in 60 s runs and in a 30 min run of
    # 125,000 connections (which grew 2 MB under load, 118 -> 120 MB).
    # 16 MiB stays clear of that noise and of allocator retention, and
    # fails a leak of 130 bytes per connection over such a long run; a
    # 60 s run (~3,000 connections) can only catch gross (>5 KB) leaks.
    rss_slack_bytes: int = RSS_SLACK_BYTES
    warmup_seconds: float = -1.0  # default: a quarter of the run, at most 60 s
    plan: int | None = None  # replay: every connection runs this plan (a failed one's seed)
    workers: int = 1  # the instance's (stackservice run --workers): apps span them all

    def __post_init__(self) -> None:
        if self.warmup_seconds < 0:
            self.warmup_seconds = min(self.seconds / 4, 60.0)


def actor_seed(seed: int, name: str) -> int:
    """Each actor's own seed, derived from the run's."""
    return random.Random(f"{seed}/{name}").getrandbits(63)


class ActorProcess:
    """A soak actor child: its JSON lines read by a thread as they come."""

    def __init__(self, name: str, style: str, argv: list[str], log_dir: Path) -> None:
        self.name, self.style = name, style
        self.stderr_path = log_dir / f"{name}.stderr"
        self.dump_path = log_dir / f"{name}.dump"
        with self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                [*argv, "--dump", str(self.dump_path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
            )  # fmt: skip
        self.counts: dict = {}
        self.final: dict | None = None
        self.failures: list[tuple[float, str]] = []  # (monotonic time, what)
        self.ready = threading.Event()
        self.drained = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                self.failures.append((time.monotonic(), f"{self.name} printed {line!r}"))
                continue
            kind = record.pop("type")
            if kind == "progress":
                self.counts = record
            elif kind == "failure":
                self.failures.append((time.monotonic(), record["text"]))
            elif kind == "ready":
                self.ready.set()
            elif kind == "drained":
                self.drained.set()
            elif kind == "final":
                self.final = self.counts = record

    def send(self, command: str) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, chars: int = 6000) -> str:
        text = self.stderr_path.read_text(errors="replace")
        return text[-chars:]

    def post_mortem(self, threads: bool) -> str:
        """What the actor has in flight (its SIGUSR1 dump), and with `threads`
        where each of its threads is; then kill it."""
        if self.alive():
            self.proc.send_signal(signal.SIGUSR1)
            wait_until(lambda: self.dump_path.exists() and THREADS_MARK in self._dump(), 5.0)
        self.kill()
        dump = self._dump()
        if not dump:
            return f"(no dump) stderr:\n{self.stderr_tail()}"
        return dump if threads else dump.split(THREADS_MARK)[0]

    def _dump(self) -> str:
        with contextlib.suppress(OSError):
            return self.dump_path.read_text(errors="replace")
        return ""

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)


class ActorGroup:
    """Actor processes told what to do together: go, drain, exit."""

    def __init__(self) -> None:
        self.actors: list[ActorProcess] = []

    def broadcast(self, command: str) -> None:
        for actor in self.actors:
            actor.send(command)

    def wait_for(self, what: str, seconds: float, give_up=lambda: False) -> list[str]:
        """Wait until every actor says `what` ("ready", "drained").
        Returns the names of those that did not (an actor that died, a
        deadline passed, or `give_up()`)."""
        deadline = time.monotonic() + seconds
        for actor in self.actors:
            event = getattr(actor, what)
            while not event.wait(0.2):
                if give_up() or time.monotonic() > deadline or not actor.alive():
                    return [a.name for a in self.actors if not getattr(a, what).is_set()]
        return []

    def finish(self, seconds: float) -> list[tuple[str, str]]:
        """Tell every actor to exit and wait. Returns (name, problem) for
        each that is stuck (with where its threads are), failed or gave
        no final report."""
        self.broadcast("exit")
        deadline = time.monotonic() + seconds
        problems = []
        for actor in self.actors:
            with contextlib.suppress(subprocess.TimeoutExpired):
                actor.proc.wait(max(deadline - time.monotonic(), 0.1))
            if actor.alive():
                problems.append((actor.name, f"still running:\n{actor.post_mortem(threads=True)}"))
            elif actor.proc.returncode != 0 or actor.final is None:
                problems.append((
                    actor.name,
                    f"exit {actor.proc.returncode}, final report "
                    f"{'given' if actor.final else 'missing'}:\n{actor.stderr_tail()}",
                ))  # fmt: skip
        return problems

    def failures(self) -> list[tuple[float, str]]:
        return [failure for actor in self.actors for failure in actor.failures]

    def kill(self) -> None:
        for actor in self.actors:
            actor.kill()


def run_kernel_pair(seed: int, seconds: float) -> dict:
    """Two kernel-socket actors against each other on loopback (no root):
    the plans the soak holds the stack to, held to Linux itself. Returns
    {"finals": each actor's counts, "failures": texts, "problems": texts}."""
    module = [sys.executable, "-m", "tests.support.soak_actor", "--style", "kernel"]
    ports, closed = [_free_port(), _free_port()], _free_port()
    group = ActorGroup()
    with tempfile.TemporaryDirectory(prefix="vfstack-soak-pair-") as logs:
        for i, name in enumerate(("left", "right")):
            argv = [
                *module, "--name", name, "--seed", str(actor_seed(seed, name)),
                "--listen", str(ports[i]), "--target", f"127.0.0.1:{ports[1 - i]}",
                "--refused", f"127.0.0.1:{closed}",
            ]  # fmt: skip
            group.actors.append(ActorProcess(name, "kernel", argv, Path(logs)))
        try:
            late = group.wait_for("ready", READY_SECONDS)
            group.broadcast("go")
            time.sleep(seconds)
            group.broadcast("drain")
            late += group.wait_for("drained", DRAIN_SECONDS)
            problems = [f"{name}: {text}" for name, text in group.finish(EXIT_SECONDS)]
        finally:
            group.kill()
    return {
        "finals": [actor.final for actor in group.actors],
        "failures": [text for _, text in group.failures()],
        "problems": [f"not ready or drained: {name}" for name in late] + problems,
    }


class Admin:
    """Operators at work while the soak runs: one admin command after
    another (text and JSON), a /metrics scrape parsed after each, and
    `stats --watch` and `conns --watch` streaming all along."""

    def __init__(self, control: str, metrics_port: int, interval: float, log_dir: Path) -> None:
        self.control = control
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.interval = interval
        self.runs: Counter = Counter()  # what ran successfully, by name
        self.failures: list[tuple[float, str]] = []  # (monotonic time, what)
        self._done = threading.Event()
        self._watchers = [
            self._watch(log_dir, "stats-watch", "stats", "--watch", "0.5"),
            self._watch(log_dir, "conns-watch", "conns", "--watch", "2", "--json"),
        ]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _watch(self, log_dir: Path, name: str, *args: str) -> tuple:
        """A --watch command streaming to files (a pipe nobody reads would stall it)."""
        out, err = log_dir / f"{name}.out", log_dir / f"{name}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            proc = subprocess.Popen(
                vfstack_cli(self.control, *args), stdout=stdout, stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        return name, proc, out, err

    def _run(self) -> None:
        rounds = 0
        while not self._done.is_set():
            args = ADMIN_COMMANDS[rounds % len(ADMIN_COMMANDS)]
            rounds += 1
            self.command(*args)
            self.scrape()
            self._done.wait(self.interval)

    def command(self, *args: str) -> str:
        """Run `vfstack ARGS`; a failure is recorded. Returns its output."""
        name = " ".join(args)
        try:
            done = subprocess.run(
                vfstack_cli(self.control, *args), capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            self._fail(f"vfstack {name}: no answer in 60 s")
            return ""
        if done.returncode != 0:
            self._fail(f"vfstack {name}: exit {done.returncode}: {done.stderr[-2000:]}")
            return ""
        if "--json" in args:
            try:
                json.loads(done.stdout)
            except ValueError as exc:
                self._fail(f"vfstack {name}: not JSON ({exc}): {done.stdout[:500]!r}")
                return ""
        self.runs[f"vfstack {name}"] += 1
        return done.stdout

    def scrape(self) -> dict[str, float]:
        """GET /metrics and parse it as Prometheus does: {name{labels}: value}."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(self.metrics_url, timeout=30) as reply:
                text = reply.read().decode()
            samples = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    samples[f"{sample.name}{{{labels}}}"] = sample.value
        except Exception as exc:  # any failure to fetch or parse is the finding
            self._fail(f"scrape {self.metrics_url}: {exc!r}")
            return {}
        self.runs["scrape /metrics"] += 1
        return samples

    def _fail(self, text: str) -> None:
        self.failures.append((time.monotonic(), text))

    def stop(self) -> None:
        """Stop the rounds; each --watch must still be running, with output."""
        self._done.set()
        self._thread.join(timeout=120)
        for name, proc, out, err in self._watchers:
            if proc.poll() is not None:
                text = err.read_text(errors="replace")[-2000:]
                self._fail(f"vfstack {name} exited {proc.returncode}: {text}")
                continue
            stop(proc)
            lines = len(out.read_text(errors="replace").splitlines())
            if not lines:
                self._fail(f"vfstack {name}: no output")
            self.runs[f"vfstack {name} (lines)"] += lines


def vfstack_cli(control: str, *args: str) -> list[str]:
    """The argv of `vfstack ARGS --control URL`, this tree's (not the installed one's)."""
    return [sys.executable, "-m", "vfstack.cli", *args, "--control", control]


def _listeners(control: str) -> list[str]:
    """The instance's LISTEN sockets now, as "LISTEN <port>" (sorted)."""
    done = subprocess.run(
        vfstack_cli(control, "conns", "--json"), capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    entries = json.loads(done.stdout).get("connections", [])
    return sorted(f"LISTEN {c['local_port']}" for c in entries if c.get("state") == "LISTEN")


def _failure_list(texts: list[str], full: int = 5, most: int = 20) -> str:
    """The first failures in full, then the headlines of some more."""
    lines = [f"{len(texts)} failures:", *texts[:full]]
    lines += [text.splitlines()[0] for text in texts[full:most]]
    if len(texts) > most:
        lines.append(f"(+{len(texts) - most} more)")
    return "\n".join(lines)


def _kernel_counters(netns: str) -> dict[str, int]:
    """The Linux peer's non-zero TCP counters (`nstat`): its side of the
    story (challenge ACKs it sent or skipped, data it pruned, resets)."""
    done = in_netns(netns, "nstat", "-asz", check=False)
    counters = {}
    for line in done.stdout.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith(("Tcp", "TcpExt")) and rest.split() and rest.split()[0] != "0":
            counters[name] = int(rest.split()[0])
    return counters


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def rss_bytes(pid: int) -> int:
    """VmRSS of `pid` and its children (the stack's loop and control
    processes; with several workers, the supervisor's workers too)."""
    total = 0
    for each in (pid, *_children(pid)):
        with contextlib.suppress(OSError):
            status = (Path("/proc") / str(each) / "status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
    return total


class Soak:
    """One run: the actors, the admin, the checks; `report()` at the end."""

    def __init__(self, settings: SoakSettings, progress: Callable[[str], None]) -> None:
        self.settings = settings
        self.progress = progress
        self.checks: list[dict] = []
        self.failures: list[str] = []
        self.group = ActorGroup()
        self.actors = self.group.actors
        self.rss: dict[str, int] = {}
        self.rss_trend: list[tuple[int, int]] = []  # (seconds in, RSS) at each progress line
        self.stack_died = ""  # its exit status and stderr
        self.died_at = float("inf")  # when the soak saw it dead
        self.started = time.monotonic()
        # Each actor's stderr and post-mortem dump, the --watch outputs:
        # kept when the run fails (the report says where).
        self.log_dir = Path(tempfile.mkdtemp(prefix="vfstack-soak-"))
        self.kept_logs = ""
        self.stack_counters: dict[str, dict[str, int]] = {}  # non-zero, at the end
        self.peer_counters: dict[str, int] = {}  # the peer namespace's kernel TCP counters

    # ------------------------------------------------------------ checks

    def check(self, name: str, ok: bool | None, detail: str = "") -> bool:
        """Record a check: ok True (pass), False (fail), None (skipped)."""
        status = {True: "pass", False: "FAIL", None: "skip"}[ok]
        self.checks.append({"check": name, "status": status, "detail": detail})
        if ok is False:
            self.failures.append(f"{name}: {detail}")
        return ok is not False

    # --------------------------------------------------------------- run

    def run(self) -> dict:
        settings = self.settings
        metrics_port = _free_port()
        with (
            private_port(vfs=1) as port,
            running_stack(
                port.vf(0), f"{STACK_IP}/24", "vf0", "--diag-services",
                "--time-wait-ms", str(settings.time_wait_ms),
                "--metrics-port", str(metrics_port), "--workers", str(settings.workers),
            ) as stack,
        ):  # fmt: skip
            control = f"unix://{stack.run_dir / 'vf0.sock'}"
            listening = _listeners(control)  # the diag services'
            self._start_actors(port.netns, control, self.log_dir)
            admin = Admin(control, metrics_port, settings.admin_interval, self.log_dir)
            try:
                if self._all_say("ready", READY_SECONDS):
                    self.group.broadcast("go")
                    self._soak(stack)
                self._wind_down(stack)
                if not self.stack_died:
                    self._quiet_checks(stack, admin, listening)
            finally:
                admin.stop()
                self.group.kill()
            self.peer_counters = _kernel_counters(port.netns)
            self._connection_checks()
            self._stderr_checks()
            self._admin_checks(admin)
            self._stop_stack(stack)
        if self.failures:
            self.kept_logs = str(self.log_dir)
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        return self.report(admin)

    def _start_actors(self, netns: str, control: str, log_dir: Path) -> None:
        seed = self.settings.seed
        module = [sys.executable, "-m", "tests.support.soak_actor"]
        if self.settings.plan is not None:
            module += ["--plan", str(self.settings.plan)]
        targets = []
        for i, style in enumerate(self.settings.styles):
            name = f"app{i}-{style}"
            argv = [
                *module, "--name", name, "--seed", str(actor_seed(seed, name)),
                "--style", style, "--control", control,
                "--listen", str(APP_PORT_BASE + i),
                "--target", f"{PEER_IP}:{PEER_PORT_BASE + i}",
                "--refused", f"{PEER_IP}:{CLOSED_ON_PEER}",
            ]  # fmt: skip
            self.actors.append(ActorProcess(name, style, argv, log_dir))
            targets += ["--target", f"{STACK_IP}:{APP_PORT_BASE + i}"]
        listens = [
            arg
            for i in range(len(self.settings.styles))
            for arg in ("--listen", str(PEER_PORT_BASE + i))
        ]
        argv = [
            "ip", "netns", "exec", netns, *module, "--name", "peer",
            "--seed", str(actor_seed(seed, "peer")), "--style", "kernel", *listens, *targets,
            "--refused", f"{STACK_IP}:{CLOSED_ON_STACK}",
        ]  # fmt: skip
        self.actors.append(ActorProcess("peer", "kernel", argv, log_dir))

    def _all_say(self, what: str, seconds: float) -> bool:
        """Wait until every actor says `what`; a failed check if one does not."""
        late = self.group.wait_for(what, seconds, give_up=lambda: bool(self.stack_died))
        return self.check(f"actors {what}", not late, f"not {what}: {', '.join(late)}")

    def _soak(self, stack: StackProcess) -> None:
        """The timed part: watch the stack and the actors, print progress."""
        settings = self.settings
        start = time.monotonic()
        next_progress = start + settings.progress_seconds
        told = 0  # failures already shown
        while (now := time.monotonic()) < start + settings.seconds:
            time.sleep(0.5)
            if stack.proc.poll() is not None:
                self._stack_death(stack)
                return
            if "baseline" not in self.rss and now - start >= settings.warmup_seconds:
                self.rss["baseline"] = rss_bytes(stack.proc.pid)
            self.rss["peak"] = max(self.rss.get("peak", 0), rss_bytes(stack.proc.pid))
            failures = self.group.failures()
            new = failures[told:]  # as they come: a long run shows them at once
            for _, text in new[:LIVE_FAILURES]:
                self.progress(f"  failure: {text.splitlines()[0]}")
            if len(new) > LIVE_FAILURES:
                self.progress(f"  (+{len(new) - LIVE_FAILURES} more failures)")
            told = len(failures)
            if now >= next_progress:
                self.progress(self._progress_line(now - start))
                self.rss_trend.append((round(now - start), rss_bytes(stack.proc.pid)))
                next_progress += settings.progress_seconds
            dead = [a for a in self.actors if not a.alive()]
            if dead:
                for actor in dead:
                    self.check(
                        f"{actor.name} alive", False,
                        f"exit {actor.proc.returncode} during the soak:\n{actor.stderr_tail()}",
                    )  # fmt: skip
                return

    def _progress_line(self, elapsed: float) -> str:
        totals = self.totals()
        failures = totals["failures"] + len(self.failures)
        return (
            f"[{elapsed:5.0f}/{self.settings.seconds:.0f} s] ops {totals['ops']:,}  "
            f"bytes {totals['bytes'] / 1e6:,.1f} MB  connections {totals['connections']:,} "
            f"(open {totals['open']})  failures {failures}  "
            f"stack RSS {self.rss.get('peak', 0) / 1e6:.0f} MB"
        )

    def _stack_death(self, stack: StackProcess) -> None:
        """The instance is gone: say how, and what each actor had in flight."""
        self.died_at = time.monotonic()
        err = stack.proc.stderr.read() if stack.proc.stderr else ""
        self.stack_died = f"exit {stack.proc.returncode}\n{err[-8000:]}"
        self.check("stack alive", False, self.stack_died)
        for actor in self.actors:
            self.failures.append(
                f"{actor.name} when the stack died:\n{actor.post_mortem(threads=False)}"
            )

    def _failures_check(self, name: str, failures: list[tuple[float, str]]) -> None:
        """A check over failures reported along the run. Once the stack is
        dying everything fails: what came after its death began (it takes
        the process a while to exit) is its consequence, only counted, and
        the check is skipped for it; the death is the finding."""
        cutoff = self.died_at - DYING_SECONDS
        before = [text for at, text in failures if at < cutoff]
        after = [text for at, text in failures if at >= cutoff]
        detail = _failure_list(before)
        if after:
            heads = "; ".join(text.splitlines()[0] for text in after[:3])
            detail += f"\n{len(after)} more as or after the stack died, e.g. {heads}"
        self.check(name, None if after and not before else not before, detail)

    def _wind_down(self, stack: StackProcess) -> None:
        """drain (no new connections), then exit once those started are closed."""
        if self.stack_died:
            return
        self.group.broadcast("drain")
        self._all_say("drained", DRAIN_SECONDS)
        for name, problem in self.group.finish(EXIT_SECONDS):
            self.check(f"{name} exits", False, problem)
        if stack.proc.poll() is not None:
            self._stack_death(stack)

    def _connection_checks(self) -> None:
        self._failures_check(
            "connections: no unexpected error, every stream exact", self.group.failures()
        )

    def _quiet_checks(self, stack: StackProcess, admin: Admin, listening: list[str]) -> None:
        """With every actor gone: connections and sessions drain, memory is back."""
        wait = self.settings.time_wait_ms / 1000 + QUIET_SECONDS

        def states() -> dict[str, int]:
            counts = stack.counters()["tcp_states"]
            return {k: v for k, v in counts.items() if v and k != "listen"}

        quiet = wait_until(lambda: not states(), timeout=wait, interval=0.2)
        self.check(
            "tcp_states all 0 but the diag listeners once TIME-WAIT is over",
            quiet,
            f"after {wait:.0f} s: {states()}",
        )
        listed = admin.command("conns", "--json")
        entries = json.loads(listed).get("connections", []) if listed else []
        left = sorted(f"{c.get('state')} {c.get('local_port')}" for c in entries)
        self.check(
            "vfstack conns lists only the listeners of before",
            bool(listed) and left == listening,
            f"before the apps: {listening}; at the end: {left[:10]}",
        )
        listeners = stack.counters()["tcp_states"]["listen"]
        self.check(
            "the listen gauge counts those listeners",
            listeners == len(listening),
            f"gauge {listeners}, listed {len(listening)}",
        )

        # An app that exited without Detach is noticed by the loop's
        # liveness check (every 0.4 s), which may come after the quiet above.
        def attached() -> int:
            return stack.counters()["sessions"]["attached"]

        ended = wait_until(lambda: attached() == 0, timeout=QUIET_SECONDS, interval=0.1)
        self.check("sessions end with their apps", ended, f"{attached()} still attached")
        self._internal_errors_check(stack, admin)
        time.sleep(2.0)  # idle: the loop runs its full garbage collection
        self.rss["final"] = rss_bytes(stack.proc.pid)
        self._memory_check()

    def _internal_errors_check(self, stack: StackProcess, admin: Admin) -> None:
        """Contained faults (docs/architecture.md principle 5) are bugs too: the counter
        section `internal_errors` and `vfstack_internal_errors_total{where}`
        must say 0, where the instance has them."""
        section = stack.counters().get("internal_errors")
        scraped = {
            k: v for k, v in admin.scrape().items() if k.startswith("vfstack_internal_errors_total")
        }
        if section is None and not scraped:
            self.check("internal_errors is 0", None, "this instance does not count them yet")
            return
        errors = {k: v for k, v in (section or {}).items() if v}
        errors.update({k: v for k, v in scraped.items() if v})
        self.check("internal_errors is 0", not errors, str(errors))

    def _memory_check(self) -> None:
        baseline, final = self.rss.get("baseline"), self.rss.get("final", 0)
        if baseline is None:
            self.check("memory back near its baseline", None, "the run ended before warm-up did")
            return
        slack = self.settings.rss_slack_bytes
        self.check(
            "memory back near its baseline",
            final <= baseline + slack,
            f"RSS {final / 1e6:.1f} MB at the end, {baseline / 1e6:.1f} MB after warm-up "
            f"(allowed +{slack / 1e6:.0f} MB)",
        )

    def _stderr_checks(self) -> None:
        """An actor that ran clean wrote nothing to stderr (an asyncio
        "Exception in callback", an SDK warning: all are findings)."""
        for actor in self.actors:
            text = actor.stderr_tail(4000)
            if text.strip() and not self.stack_died:
                self.check(f"{actor.name} stderr is empty", False, text)

    def _admin_checks(self, admin: Admin) -> None:
        self._failures_check("admin commands and scrapes succeed", admin.failures)

    def _stop_stack(self, stack: StackProcess) -> None:
        if self.stack_died:
            return
        counters = stack.counters()  # for the report: what the stack counted and dropped
        for section in ("tcp", "tcp_drops", "drops"):
            self.stack_counters[section] = {k: v for k, v in counters[section].items() if v}
        code, _, err = stack.stop(timeout=30, check=False)  # judged here, in the report
        self.check(
            "stack exits cleanly on SIGTERM",
            code == 0 and "Traceback" not in err,
            f"exit {code}: {err[-4000:]}",
        )

    # ------------------------------------------------------------ report

    def totals(self) -> dict:
        counts = [actor.counts for actor in self.actors]
        outcomes: Counter = Counter()
        for each in counts:
            outcomes.update(each.get("outcomes", {}))
        sent = sum(c.get("sent", 0) for c in counts)
        received = sum(c.get("received", 0) for c in counts)
        return {
            "ops": sum(c.get("ops", 0) for c in counts),
            "bytes": sent + received,
            "verified_bytes": sum(c.get("verified", 0) for c in counts),
            "connections": sum(c.get("connections", 0) for c in counts),
            "open": sum(c.get("open", 0) for c in counts),
            "failures": sum(c.get("failures", 0) for c in counts),
            "outcomes": dict(sorted(outcomes.items())),
        }

    def report(self, admin: Admin) -> dict:
        passed = not self.failures
        seed, minutes = self.settings.seed, self.settings.seconds / 60
        return {
            "passed": passed,
            "seed": seed,
            "settings": asdict(self.settings),
            "elapsed_seconds": time.monotonic() - self.started,
            "totals": self.totals(),
            "actors": [
                {"actor": actor.name, "style": actor.style, **actor.counts} for actor in self.actors
            ],
            "admin": dict(sorted(admin.runs.items())),
            "rss_bytes": self.rss,
            "rss_trend": self.rss_trend,
            "stack_counters": self.stack_counters,
            "peer_kernel_counters": self.peer_counters,
            "checks": self.checks,
            "failures": self.failures,
            "replay": f"python -m bench.soak --minutes {minutes:g} --seed {seed}",
            "logs": self.kept_logs,
        }


def run_soak(settings: SoakSettings, progress: Callable[[str], None] = print) -> dict:
    """Run the soak (as root); returns its report (`report["passed"]`)."""
    return Soak(settings, progress).run()


def failure_text(report: dict) -> str:
    """What a failed run says: the seed to replay, then each failure."""
    head = f"soak failed with seed {report['seed']}; replay: {report['replay']}"
    if report.get("logs"):
        head += f"\nactor logs and dumps kept in {report['logs']}"
    return "\n\n".join([head, *report["failures"]])
