"""The sessions of one instance: attach, detach, liveness, and the
passes that serve them, each session's faults contained.

The loop drives a `SessionManager`: `poll(now)` once per pass serves every
session (Session.poll) and goes on with the ring occupancy sweep;
`prepare_sleep`/`sleep_done` bracket the loop's sleep (need-wakeup on
every command ring); `watched()` names the descriptors the loop polls for
them and `on_fd` takes what poll saw there: a stack doorbell rung, or an
app's doorbell whose reader is gone (the app's process ended, or never
took its descriptors: vfstack.shm "Liveness"); a stack doorbell rung
again and again for nothing is muted for a back-off
(stackservice.fastpath.backoff), and `poll_at()` says when the loop must
look at it anyway. Attach and Detach come
from the control process over the loop's link (stackservice.control),
and are answered with dicts that mirror the gRPC replies; Attach's
carries the session's descriptors for the handoff (under "fds").

Trust (docs/architecture.md principle 4): a `Violation` of the
shared-memory contract (vfstack.shm: a bad record, a corrupt ring) ends
that session only (it is detached: connections reset, descriptors
closed) and is counted; `poll` never raises. Any other exception while
serving a session is a bug (principle 5): it ends that session only, is
counted and logged by the instance's `Containment` (stackservice.faults,
site SESSION), or re-raised when strict.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import select
from collections import Counter

from vfstack.shm import LAYOUT_VERSION, RECORD_SIZE, Doorbell, Geometry, Segment, Violation

from stackservice.control.link import FDS
from stackservice.fastpath.memory import SharedMemory
from stackservice.fastpath.occupancy import OccupancySweep
from stackservice.fastpath.ports import PortPolicy
from stackservice.fastpath.session import COMMAND_BATCH, Session
from stackservice.fastpath.sockets import SocketTable
from stackservice.faults import Containment, FaultSite
from stackservice.limits import Limits, MemoryPool, Refusal
from stackservice.metrics.apps import DEFAULT_SLOTS, AppStatsTable
from stackservice.metrics.counters import Histogram
from stackservice.tcp.engine import TcpEngine

__all__ = ["SessionManager"]

log = logging.getLogger(__name__)

DEFAULT_COMMAND_SLOTS = 1024
DEFAULT_EVENT_SLOTS = 4096
DEFAULT_SOCKET_SLOTS = 1024
DEFAULT_SOCKET_RING_BYTES = 64 << 10
MAX_APP_NAME = 128
_GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL
_EVENT_BACKLOG = int(MemoryPool.EVENT_BACKLOG)
_TCP_BUFFERS = int(MemoryPool.TCP_BUFFERS)
_DOORBELL_FLOOD = int(Refusal.DOORBELL_FLOOD)


class SessionManager:
    """All sessions of one instance; driven by the run loop."""

    def __init__(
        self,
        engine: TcpEngine,
        instance: str,
        limits: Limits | None = None,
        app_stats: AppStatsTable | None = None,
        contain: Containment | None = None,
        counters: dict | None = None,
        event_delivery: Histogram | None = None,
    ) -> None:
        """`limits`: what apps may take (stackservice.limits), by default
        the defaults. `app_stats`: the app table the exporter reads (the
        instance's file); by default one in private memory. `contain`: the
        instance's fault policy; by default a strict one. `counters`: the
        instance's sections "memory", "memory_limits" and "refusals" (u64
        arrays); by default private ones. `event_delivery`: the histogram
        of events' delays from posting to publishing, in every session (µs)."""
        self.engine = engine
        self.instance = instance
        self._contain = contain or Containment()
        self._event_delivery = event_delivery
        self.limits = limits = limits or Limits()
        counters = counters or {
            name: [0] * len(enum)
            for name, enum in (
                ("memory", MemoryPool), ("memory_limits", MemoryPool), ("refusals", Refusal)
            )
        }  # fmt: skip
        self._memory_gauges = counters["memory"]
        self._memory_limits = counters["memory_limits"]
        self._memory_limits[_TCP_BUFFERS] = engine.buffer_memory.limit
        self._refusals = counters["refusals"]
        self.ports = PortPolicy(limits, counters["refusals"])
        self.memory = SharedMemory(
            limits, counters["memory"], counters["memory_limits"], counters["refusals"]
        )
        self._backlog_bound = 0  # events that may wait, over all sessions
        self._sessions: dict[int, Session] = {}
        self._per_uid: Counter[int] = Counter()  # sessions attached, by uid
        self._by_fd: dict[int, Session] = {}  # stack doorbells and apps' doorbells
        self._muted: set[Session] = set()  # sessions whose stack doorbell is muted
        # Session ids step by the number of workers from worker + 1, like
        # socket ids: unique across an instance's workers, so the control
        # process's handoff and Detach can tell whose a session is.
        self._next_id = engine.ports.worker + 1
        self._now = 0
        if app_stats is None:
            app_stats = AppStatsTable(max(DEFAULT_SLOTS, limits.sessions))
        self.app_stats = app_stats
        self._occupancy = OccupancySweep(app_stats)
        # Counters (the lead may export them).
        self.violations = 0  # sessions ended for a bad record / corrupt ring
        self.failures = 0  # sessions ended for an unexpected error (a bug)
        self.dead_apps = 0  # sessions ended because the app's process is gone

    # ------------------------------------------------------------ control

    def attach(
        self,
        app: str,
        uid: int,
        pid: int,
        command_slots: int = 0,
        event_slots: int = 0,
        socket_slots: int = 0,
        socket_ring_bytes: int = 0,
        now: int = 0,
    ) -> dict:
        """Create a session for the app `app` (its own name for itself) of
        `uid` (the kernel's word, from the control socket's peer
        credentials, as `pid`, 0 when the caller's PID namespace is not
        ours); the reply mirrors AttachResponse (token in
        base64) and carries, under "fds", the descriptors the app is to
        get: the segment, the read end of its doorbell, the stack's
        doorbell (vfstack.shm SEGMENT, APP_BELL, STACK_BELL). The reply
        owns them: whoever sends it closes them. A bug met on the way fails
        this attach only (error "internal"), and what it had made of the
        session goes."""
        self._now = max(self._now, now)
        sizes = (command_slots, event_slots, socket_slots, socket_ring_bytes)
        try:
            return self._attach(app, uid, pid, sizes, now)
        except Exception as exc:  # _attach let go of what it had made
            self._contain.fault(FaultSite.SESSION, exc, f"attaching {app!r} fails")
            self.failures += 1
            return _error("internal", f"attach failed: {type(exc).__name__}")

    def _attach(
        self, app: str, uid: int, pid: int, sizes: tuple[int, int, int, int], now: int
    ) -> dict:
        if not isinstance(app, str) or not 0 < len(app) <= MAX_APP_NAME:
            return _error("invalid_argument", f"app must be 1..{MAX_APP_NAME} characters")
        if not all(isinstance(v, int) and v >= 0 for v in (uid, pid, *sizes)):
            return _error("invalid_argument", "uid, pid and sizes must be non-negative integers")
        limits = self.limits
        if len(self._sessions) >= limits.sessions:
            self._refusals[Refusal.SESSIONS_INSTANCE] += 1
            return _error("resource_exhausted", f"{limits.sessions} sessions attached already")
        if uid != 0 and self._per_uid[uid] >= limits.app_sessions:
            self._refusals[Refusal.SESSIONS_APP] += 1
            return _error(
                "resource_exhausted", f"uid {uid} has {limits.app_sessions} sessions already"
            )
        try:
            geometry = Geometry(
                sizes[0] or DEFAULT_COMMAND_SLOTS,
                sizes[1] or DEFAULT_EVENT_SLOTS,
                sizes[2] or DEFAULT_SOCKET_SLOTS,
                sizes[3] or DEFAULT_SOCKET_RING_BYTES,
            )
        except ValueError as exc:
            return _error("invalid_argument", str(exc))
        why = self.memory.charge(uid, geometry.socket_offset)
        if why is not None:
            return _error("resource_exhausted", why)
        session_id = self._next_id
        self._next_id += self.engine.ports.workers  # never reused, even by a failed attach
        token = secrets.token_bytes(32)
        made: list = []
        given: list[int] = []
        app_index = -1
        try:
            segment = Segment.create(
                geometry, session_id, token, pid, f"vfstack:{self.instance}:s{session_id}"
            )
            made.append(segment)
            app_wait, app_bell = Doorbell.pipe()
            made += (app_bell, app_wait)
            stack_bell = Doorbell.eventfd()
            made.append(stack_bell)
            given += (os.dup(segment.fd), os.dup(app_wait.fileno()), os.dup(stack_bell.fileno()))
            app_wait.close()  # the reply's copy is the only one left: the app's to be
            app_index = self.app_stats.attach(app)
            session = Session(
                self.engine, session_id, app, uid, pid, now, token, segment, app_bell,
                stack_bell, self.memory, self.ports, app_index,
                self._app_counters(session_id, app, app_index), self._event_delivery,
            )  # fmt: skip
        except BaseException as exc:
            self.memory.release(uid, geometry.socket_offset)
            if app_index >= 0:
                self.app_stats.detach(app_index, now)
            for fd in given:
                os.close(fd)
            for thing in made:
                thing.close()
            if isinstance(exc, OSError):
                self.memory.refused_allocation()
                return _error("resource_exhausted", f"cannot make the session's memory: {exc}")
            raise
        self._backlog_bound += 2 * geometry.socket_slots + COMMAND_BATCH
        self._memory_limits[_EVENT_BACKLOG] = RECORD_SIZE * self._backlog_bound
        self._sessions[session_id] = session
        self._per_uid[uid] += 1
        self._by_fd[stack_bell.fileno()] = session
        self._by_fd[app_bell.fileno()] = session
        return {
            "session_id": session_id,
            "segment_bytes": geometry.file_bytes,
            "layout_version": LAYOUT_VERSION,
            "token": base64.b64encode(token).decode("ascii"),
            FDS: given,  # the pipe's read end goes with them: the app's alone
        }

    def _app_counters(self, session_id: int, app: str, app_index: int) -> memoryview | None:
        """The app's words in the app table (None when it is full)."""
        if app_index < 0:
            log.warning("session %d (%s): app table full, its bytes are not exported",
                        session_id, app)  # fmt: skip
            return None
        if self.app_stats.sessions(app_index) == 1:
            self._occupancy.forget(app_index)
        return self.app_stats.counters(app_index)

    def detach(self, session_id: int, token: bytes, now: int) -> dict:
        self._now = max(self._now, now)
        session = self._sessions.get(session_id) if isinstance(session_id, int) else None
        if session is None:
            return _error("not_found", f"no session {session_id}")
        if not secrets.compare_digest(token, session.token):
            return _error("permission_denied", f"wrong token for session {session_id}")
        self._end(session, now)
        return {}

    def expire(self, session_id: int, now: int) -> dict:
        """The control process says the app never came for the session's
        descriptors within the attach timeout: the session ends (if it has
        not already, as they were dropped), and the refusal is counted."""
        self._now = max(self._now, now)
        self._refusals[Refusal.ATTACH_TIMEOUT] += 1
        session = self._sessions.get(session_id) if isinstance(session_id, int) else None
        if session is not None:
            self._end(session, now)
        return {}

    def sessions(self, now: int | None = None, viewer: int = 0) -> list[dict]:
        """Rows with the proto's Session field names: the sessions of the
        app of uid `viewer`, or every one for root (0)."""
        now = self._now if now is None else now
        return [
            {
                "session_id": s.session_id,
                "app": s.app,
                "uid": s.uid,
                "pid": s.pid,
                "attached_ms": max(0, now - s.attached_at) // 1000,
                "sockets": s.sockets.in_use,
            }
            for s in self._sessions.values()
            if not viewer or s.uid == viewer
        ]

    def socket_tables(self, uid: int) -> list[SocketTable]:
        """The socket tables of `uid`'s sessions (at most
        limits.app_sessions): together they own every socket an app of
        that uid has (SocketTable.engine_sockets), so a listing for it
        looks at those and nothing else."""
        return [s.sockets for s in self._sessions.values() if s.uid == uid]

    def close(self, now: int) -> None:
        """Shutting down: every session ends (connections reset, files removed)."""
        for session in list(self._sessions.values()):
            self._end(session, now)

    def _end(self, session: Session, now: int) -> None:
        if self._sessions.pop(session.session_id, None) is not None:
            self._per_uid[session.uid] -= 1
            if not self._per_uid[session.uid]:
                del self._per_uid[session.uid]
            if session.app_index >= 0:
                self.app_stats.detach(session.app_index, now)
            self._backlog_bound -= 2 * session.segment.geometry.socket_slots + COMMAND_BATCH
            self._memory_limits[_EVENT_BACKLOG] = RECORD_SIZE * self._backlog_bound
        self._by_fd.pop(session.stack_bell.fileno(), None)
        self._by_fd.pop(session.app_bell.fileno(), None)
        self._muted.discard(session)
        try:
            session.close(now)
        except Exception as exc:  # never let one session's teardown stop the loop
            where = f"session {session.session_id} ({session.app}): teardown is cut short"
            self._contain.fault(FaultSite.SESSION, exc, where)

    def _violation(self, session: Session, exc: Violation, now: int) -> None:
        """The app broke the segment's contract: its session ends."""
        self.violations += 1
        log.warning("session %d (%s): ended: %s", session.session_id, session.app, exc.reason)
        self._end(session, now)

    def _fail(self, session: Session, exc: Exception, now: int) -> None:
        """A bug met while serving `session`: it ends, the others go on."""
        where = f"session {session.session_id} ({session.app}) ends"
        self._contain.fault(FaultSite.SESSION, exc, where)
        self.failures += 1
        self._end(session, now)

    # --------------------------------------------------------------- loop

    def watched(self) -> dict[int, int]:
        """The descriptors to poll, with their events (they change on
        attach and detach, and as doorbells are muted): each stack doorbell
        for POLLIN, each app's doorbell for nothing (poll reports POLLERR
        once its reader is gone regardless). A muted stack doorbell
        (stackservice.fastpath.backoff) is left out: polled for no event,
        each ring would still wake the sleeping loop in the kernel."""
        watched = {}
        for fd, session in self._by_fd.items():
            if fd != session.stack_bell.fileno():
                watched[fd] = 0
            elif not session.backoff.muted:
                watched[fd] = select.POLLIN
        return watched

    def poll_at(self) -> int | None:
        """When the first muted doorbell is due to be looked at again: the
        loop must not sleep past it (None: none is muted)."""
        muted = self._muted
        return min(s.backoff.muted_until for s in muted) if muted else None

    def on_fd(self, fd: int, revents: int) -> None:
        """What poll saw on a watched descriptor: a stack doorbell rung
        (its rings consumed, one read), or an app's doorbell whose reader
        is gone: the app's process ended, or it never took its descriptors
        within the attach timeout (the control process then dropped them).
        """
        session = self._by_fd.get(fd)
        if session is None:
            return
        if fd == session.app_bell.fileno():
            if revents & _GONE:
                self.dead_apps += 1
                log.info("session %d (%s, pid %d): the app is gone", session.session_id,
                         session.app, session.pid)  # fmt: skip
                self._end(session, self._now)
            return
        try:
            if session.stack_bell.drain():
                session.rang = True  # judged by the pass (poll)
        except Exception as exc:
            self._fail(session, exc, self._now)

    def poll(self, now: int) -> bool:
        """One pass over every session. Returns True if any work was done.
        Never raises: a misbehaving session is ended, the others go on."""
        self._now = now
        work = False
        backlog = 0
        for session in list(self._sessions.values()):
            try:
                backoff = session.backoff
                if backoff.due(now):
                    # The mute is over: the rings it held back, in one read.
                    backoff.unmute()
                    self._muted.discard(session)
                    if session.stack_bell.drain():
                        session.rang = True
                if session.poll(now):
                    work = True
                if session.took:  # the app had work for us: rung or not, fine
                    if backoff.spurious:
                        backoff.served()
                        self._muted.discard(session)
                elif session.rang and backoff.rang_for_nothing(now):
                    self._muted.add(session)
                    self._refusals[_DOORBELL_FLOOD] += 1
                session.rang = False
                backlog += len(session.sockets.out)
            except Violation as exc:
                self._violation(session, exc, now)
                work = True
            except Exception as exc:
                self._fail(session, exc, now)
                work = True
        self._memory_gauges[_EVENT_BACKLOG] = RECORD_SIZE * backlog
        self._memory_gauges[_TCP_BUFFERS] = self.engine.buffer_memory.held
        occupancy = self._occupancy
        if now >= occupancy.next_at:
            for session, exc in occupancy.step(now, self._sessions):
                if isinstance(exc, Violation):
                    self._violation(session, exc, now)
                else:
                    self._fail(session, exc, now)
        return work

    def busy(self) -> bool:
        """Some session has work for the next pass (do not sleep)."""
        return self._occupancy.running or any(s.busy() for s in self._sessions.values())

    def prepare_sleep(self) -> bool:
        """Before the loop sleeps: set every command ring's need-wakeup flag.
        False (flags cleared again) if a command arrived or work is pending."""
        if self._occupancy.running:
            return False  # an occupancy sweep is half done: finish it first
        prepared: list[Session] = []
        for session in list(self._sessions.values()):
            try:
                ok = not session.busy() and session.segment.commands.prepare_sleep()
            except Violation as exc:
                self._violation(session, exc, self._now)
                continue
            except Exception as exc:
                self._fail(session, exc, self._now)
                continue
            if not ok:
                for other in prepared:
                    other.segment.commands.sleep_done()
                return False
            prepared.append(session)
        return True

    def sleep_done(self) -> None:
        for session in self._sessions.values():
            session.segment.commands.sleep_done()


def _error(code: str, message: str) -> dict:
    return {"error": code, "message": message}
