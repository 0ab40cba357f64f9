"""Short transactions served through a shared-memory session, no kernel and
no NIC: `bench._engine`'s two engines back to back, with the server's side
an application attached to a `SessionManager` as the stack loop runs it.

The application speaks the session's records itself (vfstack.shm), as the
SDK does underneath its sockets, less the SDK's locks, epoll and waiting:
it listens on port 80 and, for each connection, reads the 64 B request
from the connection's RX ring, writes the 64 B response into its TX ring
and sends TX and CLOSE. So the figure covers what the stack does for an
app (commands, pumps, events: stackservice/fastpath) and the rings on both
sides, on top of the engines' work.

Measured by `bench.engine_instructions` (workload `sessions`).
"""

from __future__ import annotations

from vfstack.shm import (
    APP_BELL,
    EVENT_ACCEPTED,
    EVENT_READY,
    EVENT_RESULT,
    OP_BIND,
    OP_CLOSE,
    OP_LISTEN,
    OP_SOCKET,
    OP_TX,
    SEGMENT,
    STACK_BELL,
    Doorbell,
    Segment,
    decode_event,
    encode_command_into,
)

from bench._engine import _REQUEST, _RESPONSE, HTTP_PORT, _now_us, _pair, drive_transactions
from stackservice.fastpath import SessionManager

ROOT = 0  # the app's uid: root may listen on port 80
BACKLOG = 4096
EVENT_BATCH = 256


class _App:
    """The application's end of one session: a listener on port 80 that
    answers each connection's request and closes it."""

    def __init__(self, reply: dict) -> None:
        fds = reply["fds"]
        self.segment = Segment.open(fds[SEGMENT])
        self.bells = (Doorbell.adopt(fds[APP_BELL]), Doorbell.adopt(fds[STACK_BELL]))
        self.slots = self.segment.geometry.socket_slots
        self.request = 0
        self.results: dict[int, int] = {}  # request -> (result, a1) of its RESULT
        self.reading: dict[int, int] = {}  # connection slot -> request bytes read
        self.buffer = bytearray(4096)

    def command(self, op: int, slot: int = 0, a1: int = 0, a2: int = 0) -> int:
        self.request += 1
        ring = self.segment.commands
        if ring.reserve(1) != 1:
            raise RuntimeError("the session's command ring is full")
        encode_command_into(ring.data, ring.write_offset(0), op, slot, self.request, a1, a2)
        ring.publish(1)
        return self.request

    def step(self) -> None:
        """Take the events the stack published and answer what they make ready."""
        for record in self.segment.events.pop_many(EVENT_BATCH):
            event = decode_event(record, self.slots)
            if event.kind == EVENT_RESULT:
                if event.result < 0:
                    raise RuntimeError(f"command {event.request} failed: {-event.result}")
                self.results[event.request] = event.slot
            elif event.kind == EVENT_ACCEPTED:
                self.reading[event.a1] = 0
                self._read(event.a1)
            elif event.kind == EVENT_READY and event.slot in self.reading:
                self._read(event.slot)

    def _read(self, slot: int) -> None:
        got = self.reading[slot] + self.segment.rx(slot).read_into(self.buffer)
        if got < len(_REQUEST):
            self.reading[slot] = got
            return
        del self.reading[slot]
        if self.segment.tx(slot).write(_RESPONSE) != len(_RESPONSE):
            raise RuntimeError("the response does not fit the TX ring")
        self.command(OP_TX, slot)
        self.command(OP_CLOSE, slot)

    def close(self) -> None:
        for bell in self.bells:
            bell.close()
        self.segment.close()


def session_transactions(count: int, concurrency: int) -> dict[str, float]:
    """`count` transactions, `concurrency` at a time, from engine A's
    clients to the app served through engine B's session."""
    a, b = _pair()
    manager = SessionManager(b.engine, "bench")
    app = _App(manager.attach("bench", ROOT, 0, now=_now_us()))

    def serve(now: int) -> None:  # the stack loop's sessions step, then the app's turn
        manager.poll(now)
        app.step()

    listener = app.command(OP_SOCKET)
    while listener not in app.results:
        b.run_pass(_now_us(), serve)
    slot = app.results[listener]
    app.command(OP_BIND, slot, 0, HTTP_PORT)
    listening = app.command(OP_LISTEN, slot, BACKLOG)
    while listening not in app.results:
        b.run_pass(_now_us(), serve)
    done = drive_transactions(a, b, count, concurrency, serve)
    manager.close(_now_us())
    app.close()
    return done
