"""WorkerLinks: the control process asks an instance's workers as one.

Each worker here is a real LinkServer on a real socket pair, served by a
thread, answering from a table of sockets as ControlRequests would (ids
step by the worker count, as TcpEngine's do)."""

from __future__ import annotations

import select
import threading

import pytest

from stackservice.control.link import FDS, LinkServer, link_pair
from stackservice.control.requests import MAX_ROWS
from stackservice.control.workers import WorkerLinks

WORKERS = 3


class Worker:
    """A loop's end of one link, answering listings of `ids`."""

    def __init__(self, ids: list[int], sessions: list[dict] | None = None) -> None:
        self.ids = ids
        self.sessions = sessions or []
        self.error: dict | None = None
        self.loop_end, self.control_end = link_pair()
        self.server = LinkServer(self.loop_end, self.answer)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def answer(self, request: dict) -> dict:
        if self.error is not None:
            return dict(self.error)
        if request["op"] == "sessions":
            return {"sessions": self.sessions}
        if request["op"] in ("attach", "detach", "expired"):  # what this worker was asked
            return {"asked": {**request, "by": self.ids[0] - 1}}
        wanted, after = request.get("connection_id") or 0, request.get("after_id") or 0
        chosen = [i for i in self.ids if i > after and (not wanted or i == wanted)]
        if wanted and not chosen:
            return {"error": "not_found", "message": f"no socket with id {wanted}"}
        limit = request.get("limit") or MAX_ROWS
        rows = [{"connection_id": i, "state": "ESTABLISHED"} for i in chosen[:limit]]
        return {"connections": rows, "total": len(chosen)}

    def _serve(self) -> None:
        while not self._stop.is_set():
            if select.select([self.loop_end], [], [], 0.05)[0] and not self.server.on_readable():
                return

    def stall(self) -> None:
        """Stop answering, the link still open: a stuck loop."""
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        self.stall()
        self.loop_end.close()


@pytest.fixture
def workers():
    # Worker w's ids: w + 1, w + 1 + N, ... (TcpEngine with PortShare(w, N)).
    made = [Worker(list(range(w + 1, 3 * MAX_ROWS, WORKERS))) for w in range(WORKERS)]
    yield made
    for worker in made:
        worker.close()


@pytest.fixture
def links(workers):
    events: list[str] = []
    linked = WorkerLinks([w.control_end for w in workers], events.append)
    linked.start()
    linked.events = events
    return linked


def test_a_listing_merges_every_workers_page_by_id(links, workers):
    reply = links.request("connections", 5, limit=7, after_id=10)
    assert [row["connection_id"] for row in reply["connections"]] == list(range(11, 18))
    # Each row names the worker that answered it: id i is worker (i - 1) % N's.
    rows = reply["connections"]
    assert all(row["worker"] == (row["connection_id"] - 1) % WORKERS for row in rows)
    everyone = sum(len([i for i in w.ids if i > 10]) for w in workers)
    assert reply["total"] == everyone
    assert reply[FDS] == []
    # No limit: at most MAX_ROWS, the lowest ids of all workers.
    rows = links.request("connections", 5)["connections"]
    assert [row["connection_id"] for row in rows] == list(range(1, MAX_ROWS + 1))


def test_one_connection_is_found_at_whichever_worker_has_it(links):
    for wanted in (1, 2, 3, 301):
        rows = links.request("connections", 5, connection_id=wanted)["connections"]
        assert [(row["connection_id"], row["worker"]) for row in rows] == [
            (wanted, (wanted - 1) % WORKERS)
        ]
    missing = links.request("connections", 5, connection_id=10**9)
    assert missing["error"] == "not_found"


def test_a_workers_error_is_the_answer(links, workers):
    workers[2].error = {"error": "invalid_argument", "message": "malformed"}
    assert links.request("connections", 5)["error"] == "invalid_argument"
    assert links.request("sessions", 5, viewer=0)["error"] == "invalid_argument"


def test_sessions_of_every_worker_in_one_list(links, workers):
    for index, worker in enumerate(workers):
        worker.sessions = [{"session_id": index}]
    sessions = links.request("sessions", 5, viewer=0)["sessions"]
    assert [(s["session_id"], s["worker"]) for s in sessions] == [(0, 0), (1, 1), (2, 2)]


def test_an_attach_that_names_no_worker_is_refused_with_a_reason(links):
    reply = links.request("attach", 5, app="x")
    assert reply["error"] == "failed_precondition"
    assert "several workers" in reply["message"]


def test_an_attach_reaches_the_worker_it_names_without_the_worker_field(links):
    for worker in (2, 0, 1):
        asked = links.request("attach", 5, app="x", worker=worker)["asked"]
        assert asked["by"] == worker
        assert asked["app"] == "x" and "worker" not in asked


@pytest.mark.parametrize("op", ["detach", "expired"])
def test_a_session_is_ended_at_the_worker_whose_id_it_is(links, op):
    # Worker w's session ids: w + 1, w + 1 + N, ... (SessionManager's, like sockets').
    for session_id in (1, 2, 3, 4, 3 * 7 + 3):
        asked = links.request(op, 5, session_id=session_id)["asked"]
        assert (asked["by"], asked["session_id"]) == ((session_id - 1) % WORKERS, session_id)
    for bad in ("1", None):
        assert links.request(op, 5, session_id=bad)["error"] == "invalid_argument"


def test_ready_once_every_worker_said_it_and_stopping_at_the_first(links, workers):
    for worker in workers[:-1]:
        worker.server.send_event("ready")
    assert _settled(links.events) == []
    workers[-1].server.send_event("ready")
    workers[0].server.send_event("ready")  # a restarted worker, again
    assert _settled(links.events, 1) == ["ready"]
    workers[1].server.send_event("stopping")
    assert _settled(links.events, 2) == ["ready", "stopping"]


def test_a_worker_that_does_not_answer_times_the_request_out(links, workers):
    workers[1].stall()
    with pytest.raises(TimeoutError):
        links.request("connections", 0.3)


def _settled(events: list[str], count: int = 0, timeout: float = 2.0) -> list[str]:
    """The events once `count` arrived (the links' reader threads deliver
    them), or after a short wait for none."""
    done = threading.Event()
    deadline = threading.Timer(timeout if count else 0.2, done.set)
    deadline.start()
    while not done.is_set() and len(events) < count:
        done.wait(0.01)
    deadline.cancel()
    return list(events)
