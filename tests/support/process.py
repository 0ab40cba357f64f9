"""Ending the child processes tests and benchmarks start, and ending
themselves cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stop(proc: subprocess.Popen, timeout: float = 10) -> tuple:
    """SIGTERM (if still running), wait up to `timeout`, else SIGKILL.

    Returns: (rest of stdout, rest of stderr), as `communicate()` does.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def unwind_on_sigterm() -> None:
    """SIGTERM (`timeout`, a CI runner) unwinds like Ctrl-C, so every
    `finally` removes its namespaces and processes. Only in this process: a
    forked child (pyroute2's netns helpers, which their parent stops with
    SIGTERM) would otherwise unwind through the copy of the stack it
    inherited and tear down what this process built; it gets SIGTERM's
    default back."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.register_at_fork(after_in_child=_default_sigterm)


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def serving_app(*argv: str) -> Iterator[subprocess.Popen]:
    """`python -m *argv`, an example app, once it says it is listening;
    killed when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert "listening on" in proc.stdout.readline()
        yield proc
    finally:
        proc.kill()
        proc.wait()
