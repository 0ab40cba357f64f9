"""The control process's links to the workers of one instance, as one link.

With `--workers N` every worker is a packet loop of its own, linked to
the control process by its own socket pair (stackservice.control.link).
`WorkerLinks` stands where a single `LinkClient` stands otherwise: the
servicer asks it as it would ask one loop, and it asks each worker and
merges their answers:

- `connections`: every worker's listing of the same page (ids above
  `after_id`), merged by id, cut to `limit`; `total` adds up. Socket ids
  never repeat across workers (TcpEngine's ids step by N). One
  `connection_id` is asked of every worker: the one that has it answers.
- `sessions`: every worker's sessions, one list.
- Every row says which worker answered it (`worker`).
- `attach`: the worker the request names (`worker`). An app attaches
  once per worker and merges the sessions' readiness (vfstack.sockets.stack);
  an attach that names none comes from an SDK that knows one session
  only, and is refused (FAILED_PRECONDITION).
- `detach`, `expired`: the worker whose session it is. Session ids step
  by N from worker + 1 (SessionManager), so the id says which.

Events: "ready" once every worker has said it (a restarted worker says
it again, to no effect); "stopping" and "closed" as soon as one says it,
since the supervisor holds every worker's end, a link closes only when
the whole instance is gone.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

from stackservice.control.link import FDS, LinkClient
from stackservice.control.requests import MAX_ROWS

READY = "ready"
_ONE_SESSION_REFUSED = {
    "error": "failed_precondition",
    "message": "this instance runs several workers: attach once per worker "
    "(an SDK of this version does)",
}


class WorkerLinks:
    """One `LinkClient` per worker, in worker order, asked as one."""

    def __init__(self, socks: list[socket.socket], on_event: Callable[[str], None]) -> None:
        self._on_event = on_event
        self._lock = threading.Lock()
        self._ready: set[int] = set()
        self._said_ready = False
        self._links = [
            LinkClient(sock, lambda event, worker=worker: self._event(worker, event))
            for worker, sock in enumerate(socks)
        ]

    def start(self) -> None:
        for link in self._links:
            link.start()

    def _event(self, worker: int, event: str) -> None:
        with self._lock:
            if event == READY:
                self._ready.add(worker)
                if self._said_ready or len(self._ready) < len(self._links):
                    return
                self._said_ready = True
        self._on_event(event)

    def request(self, op: str, timeout: float, **fields) -> dict:
        """Like LinkClient.request; raises TimeoutError when the workers'
        answers together take longer than `timeout`, ConnectionError when
        one is gone."""
        if op == "connections":
            return self._connections(self._ask_all(op, timeout, fields), fields)
        if op == "sessions":
            replies = self._ask_all(op, timeout, fields)
            failed = _first_error(replies)
            if failed is not None:
                return failed
            sessions = [
                {**session, "worker": worker}
                for worker, reply in enumerate(replies)
                for session in reply["sessions"]
            ]
            return {"sessions": sessions, FDS: []}
        if op == "attach":
            worker = fields.pop("worker", None)
            if worker is None:
                return {**_ONE_SESSION_REFUSED, FDS: []}
            return self._links[worker].request(op, timeout, **fields)
        session_id = fields.get("session_id")
        if op in ("detach", "expired") and isinstance(session_id, int):
            # A worker that has no such session says so (not_found).
            return self._links[(session_id - 1) % len(self._links)].request(op, timeout, **fields)
        return {"error": "invalid_argument", "message": f"no worker serves {op}", FDS: []}

    def _ask_all(self, op: str, timeout: float, fields: dict) -> list[dict]:
        deadline = time.monotonic() + timeout
        replies = []
        for link in self._links:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the workers did not all answer {op} in {timeout:.3f}s")
            reply = link.request(op, left, **fields)
            for fd in reply.pop(FDS, ()):  # listings carry none
                os.close(fd)
            replies.append(reply)
        return replies

    @staticmethod
    def _connections(replies: list[dict], fields: dict) -> dict:
        answers = list(enumerate(replies))  # (worker, reply)
        if fields.get("connection_id"):  # one worker has it, the others do not
            found = [(w, r) for w, r in answers if r.get("error") != "not_found"]
            answers = found or answers[:1]
        failed = _first_error([reply for _, reply in answers])
        if failed is not None:
            return failed
        rows = sorted(
            (
                {**row, "worker": worker}
                for worker, reply in answers
                for row in reply["connections"]
            ),
            key=lambda row: row["connection_id"],
        )
        limit = fields.get("limit") or 0
        rows = rows[: min(limit, MAX_ROWS) if limit > 0 else MAX_ROWS]
        total = sum(reply["total"] for _, reply in answers)
        return {"connections": rows, "total": total, FDS: []}


def _first_error(replies: list[dict]) -> dict | None:
    for reply in replies:
        if reply.get("error") is not None:
            return {**reply, FDS: []}
    return None
