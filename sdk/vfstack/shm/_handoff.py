"""The handoff: how an app gets its session's descriptors (vfstack.shm).

Attach (gRPC) makes the session and answers its id, a 32-byte token and
`handoff_path`, an AF_UNIX SOCK_SEQPACKET socket beside the control
socket. The app connects there and sends one request; the control
process checks it and answers one reply carrying, with SCM_RIGHTS, the
segment's memfd, the read end of the app's doorbell pipe and the stack's
doorbell eventfd, in that order (`SEGMENT`, `APP_BELL`, `STACK_BELL`)::

    request: 0 magic b"VFSTHND1"  8 session_id u64  16 token 32 bytes  (48 bytes)
    reply:   0 magic b"VFSTHND1"  8 errno i32 (0: the three descriptors come with it)

A session's descriptors are handed over once, to a process whose uid (the
socket's SO_PEERCRED) is the Attach caller's, with the right token, and
within the attach timeout; else the reply's errno says why: ENOENT (no
such session waiting, or too late), EACCES (wrong token or uid). Nobody
but the app ever gets them: the stack keeps no file in the run directory
that an app could open, resize, fill or remove.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

__all__ = ["APP_BELL", "HANDOFF_FDS", "SEGMENT", "STACK_BELL", "redeem"]

MAGIC = b"VFSTHND1"
REQUEST = struct.Struct("<8sQ32s")
REPLY = struct.Struct("<8si")
SEGMENT, APP_BELL, STACK_BELL = range(3)
HANDOFF_FDS = 3


def encode_request(session_id: int, token: bytes) -> bytes:
    return REQUEST.pack(MAGIC, session_id, token)


def decode_request(body: bytes) -> tuple[int, bytes]:
    """(session_id, token). Raises ValueError: not a handoff request."""
    if len(body) != REQUEST.size:
        raise ValueError(f"a handoff request has {REQUEST.size} bytes, not {len(body)}")
    magic, session_id, token = REQUEST.unpack(body)
    if magic != MAGIC:
        raise ValueError("not a handoff request")
    return session_id, token


def encode_reply(error: int) -> bytes:
    return REPLY.pack(MAGIC, error)


def redeem(path: str, session_id: int, token: bytes, timeout: float) -> list[int]:
    """App side: the session's descriptors, indexed by SEGMENT, APP_BELL,
    STACK_BELL (close-on-exec; the caller owns them).

    Raises:
        OSError: cannot reach `path`, or the refusal's errno.
        TimeoutError: no reply within `timeout` seconds.
        ValueError: the reply is not a handoff reply with three descriptors.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.send(encode_request(session_id, token))
        body, fds, flags, _ = socket.recv_fds(
            sock, REPLY.size + 1, HANDOFF_FDS + 1, socket.MSG_CMSG_CLOEXEC
        )
    try:
        if len(body) != REPLY.size or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ValueError("malformed handoff reply")
        magic, error = REPLY.unpack(body)
        if magic != MAGIC:
            raise ValueError("not a handoff reply")
        if error:
            raise OSError(error, f"{os.strerror(error)}: session {session_id} not handed over")
        if len(fds) != HANDOFF_FDS:
            raise ValueError(f"the handoff reply carries {len(fds)} descriptors, not 3")
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    return fds
