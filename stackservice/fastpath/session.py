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

from vfstack.shm import Doorbell, Segment, decode_command

from stackservice.fastpath import commands
from stackservice.fastpath.backoff import RingBackoff
from stackservice.fastpath.memory import SharedMemory
from stackservice.fastpath.ports import PortPolicy
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
        "uid",
        "pid",
        "attached_at",
        "token",
        "segment",
        "app_bell",
        "stack_bell",
        "closed",
        "app_index",
        "memory",
        "committed",
        "sockets",
        "event_delivery",
        "backoff",
        "rang",
        "took",
        "waiting",
    )

    def __init__(
        self,
        engine: TcpEngine,
        session_id: int,
        app: str,
        uid: int,
        pid: int,
        now: int,
        token: bytes,
        segment: Segment,
        app_bell: Doorbell,
        stack_bell: Doorbell,
        memory: SharedMemory,
        ports: PortPolicy,
        app_index: int = -1,
        app_stats: memoryview | None = None,
        event_delivery: Histogram | NoHistogram | None = None,
        backoff: RingBackoff | None = None,
    ) -> None:
        """`app_bell`: the ringing end of the app's doorbell (a pipe whose
        read end only the app holds), `stack_bell` the stack's (an eventfd);
        `memory`: where its shared memory is charged (the segment up to the
        socket rings is, by the manager, before this); `ports`: who may
        bind what (SocketTable);
        `app_index`: the app's slot in the app table (-1: none);
        `app_stats`: its u64 words there (SocketTable); `event_delivery`:
        where each published event's delay since its posting goes;
        `backoff`: its doorbell's (by default the default one)."""
        self.session_id = session_id
        self.app = app  # what it calls itself
        self.uid = uid  # who it is: the kernel's word (SO_PEERCRED)
        self.pid = pid
        self.attached_at = now
        self.token = token
        self.segment = segment
        self.app_bell = app_bell
        self.stack_bell = stack_bell
        self.closed = False
        self.app_index = app_index
        self.memory = memory
        self.committed = segment.geometry.socket_offset  # bytes charged to `memory`
        if app_stats is None:
            app_stats = detached_counters()
        self.sockets = SocketTable(engine, segment, app, uid, app_stats, self.commit_slot, ports)
        self.event_delivery = NoHistogram() if event_delivery is None else event_delivery
        # The doorbell's back-off (stackservice.fastpath.backoff), run by
        # the manager: `rang`, its doorbell was rung since the last pass;
        # `took`, the last pass took work from the app; `waiting`, events
        # left for want of room in its event ring after the last pass.
        self.backoff = backoff or RingBackoff()
        self.rang = False
        self.took = False
        self.waiting = 0

    def commit_slot(self, slot: int) -> bool:
        """Charge and preallocate a socket slot's rings (SocketTable.has_room).
        Returns False if the shared-memory limits or the kernel refuse."""
        stride = self.segment.geometry.socket_stride
        if self.memory.charge(self.uid, stride) is not None:
            return False
        try:
            self.segment.commit_slot(slot)
        except OSError:
            self.memory.release(self.uid, stride)
            self.memory.refused_allocation()
            return False
        self.committed += stride
        return True

    def busy(self) -> bool:
        """Work is pending that the next pass should do without sleeping:
        dirty slots, or events waiting for room that the app has made."""
        sockets = self.sockets
        if sockets.dirty:
            return True
        out = sockets.out
        return bool(out) and self.segment.events.reserve(len(out)) > 0

    def poll(self, now: int) -> bool:
        """One pass. Returns whether it did any work, and sets `took`:
        whether that work was the app's doing (commands it published,
        events it made room for), what a ring of its doorbell is for.

        Raises:
            Violation: the app broke the segment's contract.
        """
        sockets = self.sockets
        sockets.now = now
        work = took = False
        if not sockets.out:  # back-pressure: an app not reading events sends no more
            records = self.segment.commands.pop_many(COMMAND_BATCH)
            if records:
                work = took = True
                slots = self.segment.geometry.socket_slots
                execute = commands.execute
                for record in records:
                    execute(sockets, decode_command(record, slots), now)
        if sockets.dirty:
            work = True
            sockets.pump_dirty(now)
        if sockets.out and sockets.flush_events(self.event_delivery):
            work = True
            took = took or self.waiting > 0  # room the app made for waiting events
            if self.segment.events.needs_wakeup():
                self.app_bell.ring()
        self.took = took
        self.waiting = len(sockets.out)
        return work

    def close(self, now: int) -> None:
        """Reset every connection, close every listener, tell the app (the
        segment's `ended`, then the hang-up of its doorbell when ours
        closes: vfstack.shm "Liveness"), release the memory (the kernel
        frees the memfd once the app's mapping is gone too)."""
        if self.closed:
            return
        self.closed = True
        self.memory.release(self.uid, self.committed)
        self.segment.end()
        try:
            self.sockets.close_all(now)
        finally:  # even if that fails, the app hears of it and the memory goes
            self.app_bell.close()
            self.stack_bell.close()
            with contextlib.suppress(BufferError):
                self.segment.close()
