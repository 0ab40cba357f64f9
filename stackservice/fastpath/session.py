"""A session: one attached application, served over its shared-memory
segment (vfstack.shm) from inside the stack loop.

The manager calls `Session.poll(now)` once per pass. The pass drains a
bounded batch of commands from the command ring and executes them
(stackservice.fastpath.commands), pumps the slots their engine sockets
marked dirty (SocketTable.pump_dirty), publishes the resulting events in
one batch and rings the app's doorbell once, only if the app said it
sleeps (need-wakeup, docs/architecture.md principle 2).

Trust (principle 4): records are checked by `decode_command` on a private
copy, ring indices by the rings; a `Violation` leaves `poll` for the
manager, which ends the session.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from vfstack.shm import Doorbell, Segment, decode_command

from stackservice.fastpath import commands
from stackservice.fastpath.sockets import SocketTable
from stackservice.metrics.apps import detached_counters
from stackservice.metrics.counters import Histogram
from stackservice.tcp.engine import NoHistogram, TcpEngine

__all__ = ["COMMAND_BATCH", "Session"]

COMMAND_BATCH = 256  # commands executed per session per pass at most


class Session:
    """One attached application: who it is, its files, its sockets, its pass."""

    __slots__ = (
        "session_id",
        "app",
        "pid",
        "attached_at",
        "opened",
        "token",
        "segment",
        "segment_path",
        "app_bell",
        "stack_bell",
        "closed",
        "app_index",
        "sockets",
        "event_delivery",
    )

    def __init__(
        self,
        engine: TcpEngine,
        session_id: int,
        app: str,
        pid: int,
        now: int,
        token: bytes,
        segment: Segment,
        segment_path: Path,
        app_bell: Doorbell,
        stack_bell: Doorbell,
        scratch: memoryview,
        app_index: int = -1,
        app_stats: memoryview | None = None,
        event_delivery: Histogram | NoHistogram | None = None,
    ) -> None:
        """`app_index`: the app's slot in the app table (-1: none);
        `app_stats`: its u64 words there (SocketTable); `event_delivery`:
        where each published event's delay since its posting goes."""
        self.session_id = session_id
        self.app = app
        self.pid = pid
        self.attached_at = now
        self.opened = False  # the app has taken its segment's liveness lock
        self.token = token
        self.segment = segment
        self.segment_path = segment_path
        self.app_bell = app_bell
        self.stack_bell = stack_bell
        self.closed = False
        self.app_index = app_index
        if app_stats is None:
            app_stats = detached_counters()
        self.sockets = SocketTable(engine, segment, app, scratch, app_stats)
        self.event_delivery = NoHistogram() if event_delivery is None else event_delivery

    def busy(self) -> bool:
        """Work is pending that the next pass should do without sleeping:
        dirty slots, or events waiting for room that the app has made."""
        sockets = self.sockets
        if sockets.dirty:
            return True
        out = sockets.out
        return bool(out) and self.segment.events.reserve(len(out)) > 0

    def poll(self, now: int) -> bool:
        """One pass. Returns whether it did any work.

        Raises:
            Violation: the app broke the segment's contract.
        """
        sockets = self.sockets
        sockets.now = now
        work = False
        if not sockets.out:  # back-pressure: an app not reading events sends no more
            records = self.segment.commands.pop_many(COMMAND_BATCH)
            if records:
                work = True
                slots = self.segment.geometry.socket_slots
                execute = commands.execute
                for record in records:
                    execute(sockets, decode_command(record, slots), now)
        if sockets.dirty:
            work = True
            sockets.pump_dirty(now)
        if sockets.out and sockets.flush_events(self.event_delivery):
            work = True
            if self.segment.events.needs_wakeup():
                self.app_bell.ring()
        return work

    def close(self, now: int) -> None:
        """Reset every connection, close every listener, tell the app (the
        segment's `ended`, then the hang-up of its doorbell when ours
        closes: vfstack.shm "Liveness"), remove the files."""
        if self.closed:
            return
        self.closed = True
        self.segment.end()
        try:
            self.sockets.close_all(now)
        finally:  # even if that fails, the app hears of it and the files go
            for bell in (self.app_bell, self.stack_bell):
                bell.close()
                bell.unlink()
            with contextlib.suppress(BufferError):
                self.segment.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.segment_path)
