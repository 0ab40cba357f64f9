"""What the packet loop answers for the control process: snapshots of its
sockets and sessions, taken between two loop passes so they need no lock.
Runs only when a request arrives; a listing that could be long is a job
the link runs a bounded step per pass (`connections`)."""

from __future__ import annotations

import base64
import heapq
import ipaddress
from collections.abc import Callable, Generator, Iterator
from itertools import islice

from stackservice.fastpath import SessionManager
from stackservice.tcp.engine import Listener, TcpEngine
from stackservice.tcp.state import TcpState
from stackservice.tcp.tcb import Tcb

_STATE_NAMES = frozenset(state.name for state in TcpState)
MAX_ROWS = 500  # sockets in one ListConnections reply; the next ones: after_id
SCAN_BUDGET = 2048  # sockets a listing looks at per loop pass
ROWS_PER_PASS = 128  # rows it builds per loop pass


def _owner(sock: Tcb | Listener) -> str:
    # Owners are the instance's own applications (diag services) or, with
    # the fast path, sessions; each names itself.
    return getattr(sock.owner, "app_name", "") if sock.owner is not None else ""


def _ip(address: int) -> str:
    return str(ipaddress.IPv4Address(address))


def connection_row(tcb: Tcb) -> dict:
    rtt, cc = tcb.rtt, tcb.cc
    return {
        "connection_id": tcb.sock_id,
        "state": TcpState(tcb.state).name,
        "local_ip": _ip(tcb.local_ip),
        "local_port": tcb.local_port,
        "remote_ip": _ip(tcb.remote_ip),
        "remote_port": tcb.remote_port,
        "send_queue": len(tcb.send_buffer) if tcb.send_buffer is not None else 0,
        "receive_queue": tcb.receive_buffer.readable() if tcb.receive_buffer is not None else 0,
        # A TIME-WAIT TCB has shed both (TcpEngine._shed); like ss, which
        # shows no tcp_info for it, its congestion fields read as none.
        "cwnd": cc.cwnd if cc is not None else 0,
        "ssthresh": min(cc.ssthresh, 2**63 - 1) if cc is not None else 0,
        "srtt_us": (rtt.srtt_us or 0) if rtt is not None else 0,
        "rttvar_us": (rtt.rttvar_us or 0) if rtt is not None else 0,
        "rto_us": rtt.rto_us if rtt is not None else 0,
        "retransmits": tcb.retransmitted,
        "mss": tcb.mss,
        "congestion_control": cc.name if cc is not None else "",
        "owner": _owner(tcb),
    }


def listener_row(listener: Listener, local_ip: int) -> dict:
    return {
        "connection_id": listener.sock_id,
        "state": "LISTEN",
        "local_ip": _ip(local_ip),
        "local_port": listener.port,
        "remote_ip": "",
        "remote_port": 0,
        "receive_queue": len(listener.accept_queue),  # as ss: the accept queue
        "send_queue": listener.backlog,
        "owner": _owner(listener),
    }


class ControlRequests:
    """The loop's handler for LinkServer: one method per request op.

    `clock` is the loop's (microseconds): requests are answered between
    two passes, with the time the loop would use.
    """

    __slots__ = ("_clock", "_engine", "_sessions")

    def __init__(
        self, engine: TcpEngine, sessions: SessionManager, clock: Callable[[], int]
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._clock = clock

    def __call__(self, request: dict) -> dict:
        op = request.get("op")
        if op == "connections":
            return self.connections(request)
        if op == "sessions":
            viewer = request.get("viewer")
            if not isinstance(viewer, int):
                return {"error": "invalid_argument", "message": "viewer must be a uid"}
            return {"sessions": self._sessions.sessions(self._clock(), viewer)}
        if op == "attach":
            return self._sessions.attach(
                request.get("app"), request.get("uid"), request.get("pid"),
                command_slots=request.get("command_ring_slots") or 0,
                event_slots=request.get("event_ring_slots") or 0,
                socket_ring_bytes=request.get("socket_ring_bytes") or 0,
                now=self._clock(),
            )  # fmt: skip
        if op == "expired":
            return self._sessions.expire(request.get("session_id"), self._clock())
        if op == "detach":
            session_id = request.get("session_id")
            if not isinstance(session_id, int):
                return {"error": "invalid_argument", "message": "session_id must be an integer"}
            try:
                token = base64.b64decode(request.get("token") or "", validate=True)
            except (ValueError, TypeError):
                return {"error": "invalid_argument", "message": "token must be base64"}
            return self._sessions.detach(session_id, token, self._clock())
        return {"error": "invalid_argument", "message": f"unknown request {op!r}"}

    def connections(self, request: dict) -> dict | Generator[None, None, dict]:
        """ListConnections for `viewer` (a uid: its app's sockets; root's
        0: all, those of the instance's own services and of no one too).
        A malformed request is answered at once; else
        the answer is a job (LinkServer.work) that looks at SCAN_BUDGET
        sockets a pass (an app's: its own only, found through its sessions'
        socket tables; root's: every one), then builds, ROWS_PER_PASS a
        pass, the rows of the
        `limit` (at most MAX_ROWS) lowest ids above `after_id` that match: a listing of
        60 000 sockets holds no pass for long, and no reply outgrows the
        link. A socket closed while the listing runs may be left out."""
        wanted_id = request.get("connection_id") or 0
        states = request.get("states") or []
        limit = request.get("limit") or 0
        after = request.get("after_id") or 0
        viewer = request.get("viewer")
        if not all(isinstance(v, int) for v in (wanted_id, limit, after, viewer)) or not (
            isinstance(states, list)
        ):
            return {"error": "invalid_argument", "message": "malformed connections request"}
        unknown = [s for s in states if s not in _STATE_NAMES]
        if unknown:
            return {
                "error": "invalid_argument",
                "message": f"unknown state {unknown[0]!r}; use RFC 9293 names, e.g. "
                "ESTABLISHED, TIME_WAIT, LISTEN",
            }
        limit = min(limit, MAX_ROWS) if limit > 0 else MAX_ROWS
        return self._listing(wanted_id, frozenset(states), after, limit, viewer)

    def _listing(
        self, wanted_id: int, states: frozenset[str], after: int, limit: int, viewer: int
    ) -> Generator[None, None, dict]:
        engine = self._engine
        wanted = frozenset(TcpState[name] for name in states)
        listeners = not states or "LISTEN" in states
        connections = states != {"LISTEN"}
        socks: Iterator[Tcb | Listener]
        if viewer:
            # An app may see its own sockets only: look at those alone (its
            # sessions' socket tables know them), never at the instance's
            # every flow, whatever their number.
            socks = self._owned(viewer, listeners, connections)
        else:
            every: list = list(engine.listeners.values()) if listeners else []
            if connections:
                every += engine.flows.values()
            socks = iter(every)
        chosen: list[tuple[int, Tcb | Listener]] = []  # the lowest ids: a max-heap on -id
        total = 0
        batch = list(islice(socks, SCAN_BUDGET))
        while batch:
            for sock in batch:
                sock_id = sock.sock_id
                if sock_id <= after or (wanted_id and sock_id != wanted_id):
                    continue
                if wanted and isinstance(sock, Tcb) and sock.state not in wanted:
                    continue
                if viewer and getattr(sock.owner, "uid", None) != viewer:
                    continue  # not the viewer's app's: the instance's own, or gone
                total += 1
                if len(chosen) < limit:
                    heapq.heappush(chosen, (-sock_id, sock))
                elif sock_id < -chosen[0][0]:
                    heapq.heapreplace(chosen, (-sock_id, sock))
            batch = list(islice(socks, SCAN_BUDGET))
            if batch:
                yield  # the rest next pass
        if wanted_id and not total:
            return {"error": "not_found", "message": f"no socket with id {wanted_id}"}
        local_ip = engine.local_ip
        rows = []
        for _, sock in sorted(chosen, reverse=True):
            if len(rows) % ROWS_PER_PASS == 0:
                yield  # a row costs some 10 µs: a page is built over a few passes
            rows.append(
                listener_row(sock, local_ip) if isinstance(sock, Listener) else connection_row(sock)
            )
        return {"connections": rows, "total": total}

    def _owned(self, uid: int, listeners: bool, connections: bool) -> Iterator[Tcb | Listener]:
        """The sockets of `uid`'s sessions (its listeners if `listeners`,
        its connections if `connections`) still in the engine's tables: a
        connection the engine has closed, while the app still holds its
        slot, is no longer listed, as with root's listing of the tables."""
        engine = self._engine
        flows, listening = engine.flows, engine.listeners
        for table in self._sessions.socket_tables(uid):
            for sock in table.engine_sockets():
                if isinstance(sock, Listener):
                    if listeners and listening.get(sock.port) is sock:
                        yield sock
                elif connections and flows.get(sock.key) is sock:
                    yield sock
