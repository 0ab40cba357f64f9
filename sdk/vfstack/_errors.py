"""Errors of the SDK: the `OSError` subclasses Python's own sockets raise.

`OSError(errno, strerror)` picks the subclass from the errno by itself
(ECONNREFUSED -> ConnectionRefusedError, EAGAIN -> BlockingIOError, ...),
so one constructor covers every mapping and `exc.errno` stays right.
"""

from __future__ import annotations

import os

__all__ = ["SDKError", "check", "error", "timed_out"]


class SDKError(RuntimeError):
    """The session itself is broken (the stack went away or wrote a bad record)."""


def error(code: int) -> OSError:
    """The exception Python's sockets raise for errno `code` (positive)."""
    code = abs(code)
    return OSError(code, os.strerror(code))


def check(result: int) -> int:
    """A RESULT's `result` field: 0 or more passes through, -errno raises."""
    if result < 0:
        raise error(-result)
    return result


def timed_out() -> TimeoutError:
    """What a socket with a timeout raises when it expires (like `socket.timeout`)."""
    return TimeoutError("timed out")
