"""The sessions of one instance: attach, detach, liveness, and the
passes that serve them, each session's faults contained.

The loop drives a `SessionManager`: `poll(now)` once per pass serves every
session (Session.poll) and goes on with the ring occupancy sweep;
`prepare_sleep`/`sleep_done` bracket the loop's sleep (need-wakeup on
every command ring); `on_doorbell` drains a stack doorbell that woke it;
`check_apps` ends the sessions whose app is gone. Attach and Detach come
from the control process over the loop's link (stackservice.control), and
are answered with dicts that mirror the gRPC replies.

Trust (docs/architecture.md principle 4): a `Violation` of the
shared-memory contract (vfstack.shm: a bad record, a corrupt ring) ends
that session only (it is detached: connections reset, files removed) and
is counted; `poll` never raises. Any other exception while serving a
session is a bug (principle 5): it ends that session only, is counted and
logged by the instance's `Containment` (stackservice.faults, site
SESSION), or re-raised when strict.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
from pathlib import Path

from vfstack.shm import LAYOUT_VERSION, Doorbell, Geometry, Segment, Violation

from stackservice.fastpath.occupancy import OccupancySweep
from stackservice.fastpath.session import Session
from stackservice.faults import Containment, FaultSite
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
CHECK_APPS_INTERVAL_US = 400_000  # a dead app's peers see resets well within 1 s
ATTACH_GRACE_US = 10_000_000  # from Attach to the app opening its segment
_SCRATCH_BYTES = 64 << 10


class SessionManager:
    """All sessions of one instance; driven by the run loop."""

    def __init__(
        self,
        engine: TcpEngine,
        run_dir: Path,
        instance: str,
        max_sessions: int = 64,
        app_stats: AppStatsTable | None = None,
        app_group: int | None = None,
        contain: Containment | None = None,
        event_delivery: Histogram | None = None,
    ) -> None:
        """`app_stats`: the app table the exporter reads (the instance's
        file); by default one in private memory. `app_group`: the gid that
        gets read-write access to each session's files (else root only).
        `contain`: the instance's fault policy; by default a strict one.
        `event_delivery`: the histogram of events' delays from posting to
        publishing, in every session (µs)."""
        self.engine = engine
        self.run_dir = Path(run_dir)
        self.instance = instance
        self.app_group = app_group
        self._contain = contain or Containment()
        self._event_delivery = event_delivery
        self._unlink_files("[0-9]*")  # from a crashed run
        self.max_sessions = max_sessions
        self._sessions: dict[int, Session] = {}
        self._by_fd: dict[int, Session] = {}
        self._next_id = 1
        self._scratch = memoryview(bytearray(_SCRATCH_BYTES))
        self._now = 0
        self._apps_checked_at: int | None = None
        if app_stats is None:
            app_stats = AppStatsTable(max(DEFAULT_SLOTS, max_sessions))
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
        pid: int,
        command_slots: int = 0,
        event_slots: int = 0,
        socket_slots: int = 0,
        socket_ring_bytes: int = 0,
        now: int = 0,
    ) -> dict:
        """Create a session; the reply mirrors AttachResponse (token in base64).
        A bug met on the way fails this attach only (error "internal"), and
        what it had made of the session goes."""
        self._now = max(self._now, now)
        session_id = self._next_id
        sizes = (command_slots, event_slots, socket_slots, socket_ring_bytes)
        try:
            return self._attach(app, pid, sizes, now)
        except Exception as exc:
            self._contain.fault(FaultSite.SESSION, exc, f"attaching {app!r} fails")
            self.failures += 1
            session = self._sessions.get(session_id)
            if session is not None:
                self._end(session, now)
            else:
                self._unlink_files(f"{session_id}.*")
            return _error("internal", f"attach failed: {type(exc).__name__}")

    def _attach(self, app: str, pid: int, sizes: tuple[int, int, int, int], now: int) -> dict:
        if not isinstance(app, str) or not 0 < len(app) <= MAX_APP_NAME:
            return _error("invalid_argument", f"app must be 1..{MAX_APP_NAME} characters")
        if not isinstance(pid, int) or pid < 0 or not all(isinstance(v, int) for v in sizes):
            return _error("invalid_argument", "pid and ring sizes must be non-negative integers")
        if len(self._sessions) >= self.max_sessions:
            return _error("resource_exhausted", f"{self.max_sessions} sessions attached already")
        try:
            geometry = Geometry(
                sizes[0] or DEFAULT_COMMAND_SLOTS,
                sizes[1] or DEFAULT_EVENT_SLOTS,
                sizes[2] or DEFAULT_SOCKET_SLOTS,
                sizes[3] or DEFAULT_SOCKET_RING_BYTES,
            )
        except ValueError as exc:
            return _error("invalid_argument", str(exc))
        session_id = self._next_id
        self._next_id += 1
        # Unguessable names: with --app-group the run directory lets the
        # group reach a file by name but not list it, so only the app that
        # got the path in its AttachResponse can open its files.
        base = self.run_dir / f"{self.instance}.s{session_id}.{secrets.token_hex(16)}"
        segment_path = Path(f"{base}.shm")
        app_path, stack_path = f"{base}.app.bell", f"{base}.stack.bell"
        token = secrets.token_bytes(32)
        made: list = []
        group = self.app_group
        try:
            segment = Segment.create(str(segment_path), geometry, session_id, token, pid, group)
            made.append(segment)
            app_bell = Doorbell.create(app_path, group=group)
            made.append(app_bell)
            stack_bell = Doorbell.create(stack_path, group=group)
        except OSError as exc:
            for thing in made:
                thing.close()
            for path in (segment_path, app_path, stack_path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            return _error("resource_exhausted", f"cannot create the session's files: {exc}")
        app_index = self.app_stats.attach(app)
        counters = None
        if app_index < 0:
            log.warning("session %d (%s): app table full, its bytes are not exported",
                        session_id, app)  # fmt: skip
        else:
            counters = self.app_stats.counters(app_index)
            if self.app_stats.sessions(app_index) == 1:
                self._occupancy.forget(app_index)
        session = Session(
            self.engine, session_id, app, pid, now, token, segment, segment_path,
            app_bell, stack_bell, self._scratch, app_index, counters, self._event_delivery,
        )  # fmt: skip
        self._sessions[session_id] = session
        self._by_fd[stack_bell.fileno()] = session
        return {
            "session_id": session_id,
            "segment_path": str(segment_path),
            "segment_bytes": geometry.file_bytes,
            "layout_version": LAYOUT_VERSION,
            "app_doorbell": app_path,
            "stack_doorbell": stack_path,
            "token": base64.b64encode(token).decode("ascii"),
        }

    def detach(self, session_id: int, token: bytes, now: int) -> dict:
        self._now = max(self._now, now)
        session = self._sessions.get(session_id) if isinstance(session_id, int) else None
        if session is None:
            return _error("not_found", f"no session {session_id}")
        if not secrets.compare_digest(token, session.token):
            return _error("permission_denied", f"wrong token for session {session_id}")
        self._end(session, now)
        return {}

    def sessions(self, now: int | None = None) -> list[dict]:
        """Rows with the proto's Session field names."""
        now = self._now if now is None else now
        return [
            {
                "session_id": s.session_id,
                "app": s.app,
                "pid": s.pid,
                "attached_ms": max(0, now - s.attached_at) // 1000,
                "sockets": s.sockets.in_use,
            }
            for s in self._sessions.values()
        ]

    def close(self, now: int) -> None:
        """Shutting down: every session ends (connections reset, files removed)."""
        for session in list(self._sessions.values()):
            self._end(session, now)

    def _end(self, session: Session, now: int) -> None:
        if self._sessions.pop(session.session_id, None) is not None and session.app_index >= 0:
            self.app_stats.detach(session.app_index, now)
        self._by_fd.pop(session.stack_bell.fileno(), None)
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

    def _unlink_files(self, pattern: str) -> None:
        """Remove this instance's session files `NAME.s<pattern>`."""
        for path in self.run_dir.glob(f"{self.instance}.s{pattern}"):
            with contextlib.suppress(OSError):
                path.unlink()

    # --------------------------------------------------------------- loop

    def fds(self) -> list[int]:
        """The stack doorbells to poll (they change on attach/detach)."""
        return list(self._by_fd)

    def on_doorbell(self, fd: int) -> None:
        """A stack doorbell was readable: consume its rings."""
        session = self._by_fd.get(fd)
        if session is not None:
            try:
                session.stack_bell.drain()
            except Exception as exc:
                self._fail(session, exc, self._now)

    def poll(self, now: int) -> bool:
        """One pass over every session. Returns True if any work was done.
        Never raises: a misbehaving session is ended, the others go on."""
        self._now = now
        work = False
        for session in list(self._sessions.values()):
            try:
                if session.poll(now):
                    work = True
            except Violation as exc:
                self._violation(session, exc, now)
                work = True
            except Exception as exc:
                self._fail(session, exc, now)
                work = True
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

    def check_apps(self, now: int) -> None:
        """At most every CHECK_APPS_INTERVAL_US: end sessions whose app is gone, i.e. no
        longer holds its segment's liveness lock (vfstack.shm "Liveness"), or
        never took it within ATTACH_GRACE_US of attaching."""
        if self._apps_checked_at is not None and now - self._apps_checked_at < (
            CHECK_APPS_INTERVAL_US
        ):
            return
        self._apps_checked_at = now
        for session in list(self._sessions.values()):
            try:
                alive = session.segment.app_alive()
            except Exception as exc:
                self._fail(session, exc, now)
                continue
            if alive:
                session.opened = True
            elif session.opened or now - session.attached_at >= ATTACH_GRACE_US:
                self.dead_apps += 1
                log.info("session %d (%s, pid %d): the app is gone", session.session_id,
                         session.app, session.pid)  # fmt: skip
                self._end(session, now)


def _error(code: str, message: str) -> dict:
    return {"error": code, "message": message}
