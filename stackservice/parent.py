"""A child process's tie to the process that started it."""

from __future__ import annotations

import ctypes

_PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent(signum: int) -> None:
    """Be sent `signum` when the parent exits, however it ends (kill -9
    included), so no child outlives its instance."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signum)
