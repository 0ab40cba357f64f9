"""Run real `stackservice` instances for integration tests and benchmarks.

An instance must end as SIGTERM ends it, with status 0 and no traceback on
its stderr: `stop` (and so `running_stack`) fails the test with the
instance's stderr otherwise, so a stack that crashed during a test (tests
run it strict: VFSTACK_STRICT=1, see tests/conftest.py), or whose control
server or shutdown met an error it only logged, is a loud failure with its
traceback, never a quiet one. The tests of fault containment, whose
instances log the tracebacks of the bugs they contain, say so
(`logs_tracebacks`).
"""

from __future__ import annotations

import contextlib
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from stackservice.instance import counters_path
from stackservice.metrics.counters import read_counters
from stackservice.metrics.layout import INSTANCE_LAYOUT
from tests.support.process import stop


class StackCrashed(AssertionError):
    """The instance did not exit 0 on SIGTERM, or logged a traceback; the
    message holds its stderr."""


class StackProcess:
    """One `stackservice run` child process with its own run directory.
    `module`: what `python -m` runs instead of stackservice, taking the same
    arguments (tests.support.faults). `logs_tracebacks`: the instance is
    meant to log tracebacks (it contains injected faults, `--no-strict`),
    so only its exit status is judged."""

    def __init__(
        self, iface: str, ip: str, run_dir: Path, name: str, *extra: str,
        module: str = "stackservice", logs_tracebacks: bool = False,
    ) -> None:  # fmt: skip
        self.name = name
        self.run_dir = run_dir
        self.logs_tracebacks = logs_tracebacks
        self._stopped: tuple[int, str, str] | None = None
        self._killed = False  # by the test itself: its exit status says nothing
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                "run",
                "--iface",
                iface,
                "--ip",
                ip,
                "--name",
                name,
                "--run-dir",
                str(run_dir),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.startup_line = self._read_startup_line(timeout=20)

    def _read_startup_line(self, timeout: float) -> str:
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.proc.kill()
                raise TimeoutError(f"stackservice {self.name} printed nothing in {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"stackservice {self.name} exited: {self.proc.stderr.read()}")
        return line.strip()

    def counters(self) -> dict[str, dict[str, int]]:
        """The instance's counters: with several workers, added up."""
        single = counters_path(self.run_dir, self.name)
        if single.exists():
            return read_counters(single, INSTANCE_LAYOUT)
        return read_counters(
            sorted(self.run_dir.glob(f"{self.name}.worker*.counters")), INSTANCE_LAYOUT
        )

    def worker_counters(self, worker: int) -> dict[str, dict[str, int]]:
        return read_counters(counters_path(self.run_dir, self.name, worker), INSTANCE_LAYOUT)

    @property
    def stopped(self) -> bool:
        """`stop` was called (and has judged the exit, or was told not to)."""
        return self._stopped is not None

    def stop(self, timeout: float = 10, check: bool = True) -> tuple[int, str, str]:
        """SIGTERM, then wait: (exit status, rest of stdout, stderr); a
        second call returns the first one's. Without `check` the caller
        judges the exit itself.

        Raises:
            StackCrashed: with `check`, the status is not 0 (the instance
                died before, a crash with its traceback in the message, or
                did not stop cleanly), or its stderr holds a traceback
                (unless `logs_tracebacks`). Not after the test's own `kill`.
        """
        if self._stopped is None:
            out, err = stop(self.proc, timeout)
            self._stopped = (self.proc.returncode, out, err)
        status, out, err = self._stopped
        if check and not self._killed:
            if status != 0:
                raise StackCrashed(
                    f"stackservice {self.name} exited with status {status}, not 0 on SIGTERM; "
                    f"its stderr:\n{err}"
                )
            if "Traceback" in err and not self.logs_tracebacks:
                raise StackCrashed(
                    f"stackservice {self.name} exited 0 but logged a traceback; its stderr:\n{err}"
                )
        return status, out, err

    def kill(self, timeout: float = 10) -> None:
        """`kill -9` of the instance's process: no shutdown at all. Its
        control server (a child) is killed with it (PR_SET_PDEATHSIG), as
        in a container; waits for that too, so a successor never meets it."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        self._killed = True
        self.proc.kill()
        self.proc.wait(timeout)
        if not wait_until(lambda: not any(map(_running, children)), timeout):
            raise TimeoutError(f"the control server of {self.name} outlived it by {timeout}s")


@contextlib.contextmanager
def running_stack(
    iface: str, ip: str, name: str = "vf0", *extra: str, module: str = "stackservice",
    logs_tracebacks: bool = False,
) -> Iterator[StackProcess]:  # fmt: skip
    """A stack instance for the block; always stopped afterwards, and the
    test fails (StackCrashed) if it did not exit 0 on SIGTERM or logged a
    traceback (see StackProcess), unless the block stopped it itself."""
    with tempfile.TemporaryDirectory(prefix="vfstack-run-") as run_dir:
        stack = StackProcess(
            iface, ip, Path(run_dir), name, *extra, module=module, logs_tracebacks=logs_tracebacks
        )
        try:
            yield stack
        finally:
            if not stack.stopped:
                stack.stop()


def _running(pid: str) -> bool:
    """Neither gone nor a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# Connection states with nothing left to send or acknowledge.
_QUIET_STATES = ("closed", "listen", "time_wait")


def live_connections(stack: StackProcess) -> int:
    """The instance's connections still open or closing: neither listening
    nor in TIME-WAIT (from its state gauges)."""
    states = stack.counters()["tcp_states"]
    return sum(count for state, count in states.items() if state not in _QUIET_STATES)


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Whether `predicate()` came true within `timeout` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def sample_until(sample, done, timeout: float = 5.0, interval: float = 0.02):
    """`sample()` again until `done(value)` holds or `timeout` passes;
    returns the last value, for exact asserts on the state waited for (a
    timeout then fails them with what was seen)."""
    last = []

    def sampled_done() -> bool:
        last[:] = [sample()]
        return done(last[0])

    wait_until(sampled_done, timeout, interval)
    return last[0]
