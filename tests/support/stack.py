"""Run real `stackservice` instances for integration tests and benchmarks."""

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


class StackProcess:
    """One `stackservice run` child process with its own run directory."""

    def __init__(self, iface: str, ip: str, run_dir: Path, name: str, *extra: str) -> None:
        self.name = name
        self.run_dir = run_dir
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stackservice",
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
        return read_counters(counters_path(self.run_dir, self.name), INSTANCE_LAYOUT)

    def stop(self, timeout: float = 10) -> tuple[int, str, str]:
        """SIGTERM, then wait: (exit status, rest of stdout, stderr)."""
        out, err = stop(self.proc, timeout)
        return self.proc.returncode, out, err


@contextlib.contextmanager
def running_stack(iface: str, ip: str, name: str = "vf0", *extra: str) -> Iterator[StackProcess]:
    """A stack instance for the block; always stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="vfstack-run-") as run_dir:
        stack = StackProcess(iface, ip, Path(run_dir), name, *extra)
        try:
            yield stack
        finally:
            stack.stop()


# Connection states with nothing left to send or acknowledge.
_QUIET_STATES = ("closed", "listen", "time_wait")


def live_connections(stack: StackProcess) -> int:
    """The instance's connections still open or closing: neither listening
    nor in TIME-WAIT (from its state gauges)."""
    states = stack.counters()["tcp_states"]
    return sum(count for state, count in states.items() if state not in _QUIET_STATES)


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
