"""Errors of the SDK: the `OSError` subclasses Python's own sockets raise.

Errno in, `OSError` out: the stack answers a command with 0 or -errno (a
RESULT's `result`, vfstack.shm) and keeps a pending errno in the slot
table; `check` and `error` are the one way such a number becomes an
exception. `OSError(errno, strerror)` picks the subclass from the errno by
itself (ECONNREFUSED -> ConnectionRefusedError, EAGAIN -> BlockingIOError,
...), so one constructor covers every mapping and `exc.errno` stays right.
"""

from __future__ import annotations

import os

__all__ = ["SDKError", "StackGone", "check", "error", "timed_out"]


class SDKError(RuntimeError):
    """The session itself is broken (the stack wrote a bad record or stopped answering)."""


class StackGone(OSError):
    """The session is over on the stack's side: the instance ended it
    (Detach, a bad record, a fault contained, shutdown) or its process
    died. Errno ENETDOWN, as Linux answers on a network that went down:
    raised by `Stack.socket()` and by what a socket asks of the stack
    (accept, connect, bind, listen, options, shutdown). Connections fail
    as after a reset instead (ConnectionResetError on recv and send), once
    the bytes they had received are read. `close()` the `Stack` and
    `vfstack.connect()` again. Made like any OSError:
    `StackGone(errno.ENETDOWN, reason)`.
    """


def error(code: int) -> OSError:
    """The exception Python's sockets raise for errno `code` (positive)."""
    code = abs(code)
    return OSError(code, os.strerror(code))


def check(result: int) -> int:
    """A RESULT's `result` field: 0 or more passes through, -errno raises.

    Raises:
        OSError: the subclass Python's sockets raise for that errno.
    """
    if result < 0:
        raise error(-result)
    return result


def timed_out() -> TimeoutError:
    """What a socket with a timeout raises when it expires (like `socket.timeout`)."""
    return TimeoutError("timed out")
