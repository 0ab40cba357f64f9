"""Ending the child processes tests and benchmarks start."""

from __future__ import annotations

import signal
import subprocess


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
