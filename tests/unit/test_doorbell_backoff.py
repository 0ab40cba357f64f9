"""Doorbell back-off (stackservice.fastpath.backoff, issue 13's `ring`
attack): a session whose stack doorbell keeps ringing for nothing is
muted for an exponential back-off, its command ring still served when
the mute ends; any pass that takes work from the app ends it. Sans-IO,
on a fake clock: the state machine alone, then the SessionManager run
pass by pass as the loop runs it (on_fd for a rung doorbell, then poll)."""

from __future__ import annotations

import select

import pytest
from vfstack.shm import EventKind, Op

from stackservice.fastpath.backoff import CAP_US, FLOOR_US, THRESHOLD, RingBackoff
from stackservice.limits import Refusal
from stackservice.loop import StackLoop
from tests.unit.test_fastpath_session import Stack

# ------------------------------------------------------------ the state machine


def test_a_doorbell_is_muted_only_after_threshold_spurious_rings_in_a_row():
    backoff = RingBackoff(threshold=4, floor_us=100, cap_us=1000)
    assert [backoff.rang_for_nothing(10) for _ in range(3)] == [False] * 3
    assert not backoff.muted
    assert backoff.rang_for_nothing(10)
    assert backoff.muted and backoff.muted_until == 110


def test_work_found_starts_the_count_over():
    backoff = RingBackoff(threshold=4, floor_us=100, cap_us=1000)
    for _ in range(10):  # three spurious, then work, again and again
        for _ in range(3):
            assert not backoff.rang_for_nothing(0)
        backoff.served()
    assert not backoff.muted and backoff.spurious == 0


def test_mutes_double_up_to_the_cap_and_work_resets_the_delay():
    backoff = RingBackoff(threshold=2, floor_us=100, cap_us=1000)
    now, delays = 0, []
    backoff.rang_for_nothing(now)
    for _ in range(6):
        assert backoff.rang_for_nothing(now)
        delays.append(backoff.muted_until - now)
        now = backoff.muted_until
        assert backoff.due(now) and not backoff.due(now - 1)
        backoff.unmute()  # rings still pending at the mute's end: muted again
    assert delays == [100, 200, 400, 800, 1000, 1000]
    backoff.served()
    assert not backoff.rang_for_nothing(now)  # the count starts over
    assert backoff.rang_for_nothing(now) and backoff.muted_until - now == 100


def test_bad_parameters_are_refused():
    for bad in ({"threshold": 0}, {"floor_us": 0}, {"floor_us": 2000, "cap_us": 1000}):
        with pytest.raises(ValueError):
            RingBackoff(**bad)


# --------------------------------------------- the manager, pass by pass


class Loop:
    """One session's stack doorbell as the loop sees it: polled (when
    watched) before each pass, then the manager's pass, on a fake clock."""

    def __init__(self) -> None:
        self.stack = Stack()
        self.manager = self.stack.manager
        self.app = self.stack.attach("flooder")
        (self.session,) = self.manager._sessions.values()
        self.bell = self.session.stack_bell.fileno()  # the stack's descriptor
        self.flood = self.refusals  # mutes so far

    @property
    def refusals(self) -> int:
        return self.stack.counters["refusals"][Refusal.DOORBELL_FLOOD]

    def watched(self) -> bool:
        return self.manager.watched().get(self.bell) == select.POLLIN

    def ring(self) -> None:
        self.app.stack_bell.ring()

    def wake(self) -> None:
        """What poll(2) reports: the doorbell, if watched and rung."""
        if self.watched() and select.select([self.bell], [], [], 0)[0]:
            self.manager.on_fd(self.bell, select.POLLIN)

    def pass_(self, advance: int = 10) -> None:
        self.stack.now += advance
        self.manager.poll(self.stack.now)

    def rung_pass(self, advance: int = 10) -> None:
        self.ring()
        self.wake()
        self.pass_(advance)


@pytest.fixture
def loop():
    return Loop()


def flood_until_muted(loop: Loop) -> int:
    """Ring for nothing until muted; returns when the mute ends."""
    for _ in range(THRESHOLD):
        assert loop.watched()
        loop.rung_pass()
    assert not loop.watched()
    return loop.manager.poll_at()


def test_a_doorbell_rung_for_nothing_is_muted_and_counted(loop):
    for _ in range(THRESHOLD - 1):
        loop.rung_pass()
        assert loop.watched() and loop.manager.poll_at() is None
    loop.rung_pass()
    assert not loop.watched()  # left out of the loop's poll set
    assert loop.manager.poll_at() == loop.stack.now + FLOOR_US
    assert loop.refusals == 1


def test_a_flooder_costs_one_pass_per_mute_doubling_up_to_the_cap(loop):
    due = flood_until_muted(loop)
    delays = [due - loop.stack.now]
    for _ in range(6):
        for _ in range(50):
            loop.ring()  # rings while muted: nothing polls them
        loop.wake()
        loop.pass_(due - loop.stack.now)  # the loop sleeps until the mute's end
        assert not loop.watched()  # what was pending: muted again, longer
        due = loop.manager.poll_at()
        delays.append(due - loop.stack.now)
    assert delays == [FLOOR_US, 2 * FLOOR_US, 4 * FLOOR_US, CAP_US, CAP_US, CAP_US, CAP_US]
    assert loop.refusals == 7


def test_a_command_published_during_a_mute_is_served_when_it_ends(loop):
    due = flood_until_muted(loop)
    request = loop.app.command(Op.SOCKET)
    loop.ring()  # the app races the mute: the ring is not polled
    loop.wake()
    loop.pass_(due - loop.stack.now - 1)  # not yet due: still served on any pass
    events = loop.app.events()
    assert [(e.kind, e.request) for e in events] == [(EventKind.RESULT, request)]
    assert loop.watched() and loop.manager.poll_at() is None  # work ends the mute at once


def test_a_command_waiting_at_the_mutes_end_is_served_then(loop):
    flood_until_muted(loop)
    loop.rung_pass()  # (unmuted by nothing: still muted)
    assert not loop.watched()
    due = loop.manager.poll_at()
    request = loop.app.command(Op.SOCKET)
    loop.ring()
    loop.stack.now = due - 10
    loop.pass_()  # the loop's timeout, at the mute's end
    assert [e.request for e in loop.app.events()] == [request]
    assert loop.watched() and loop.manager.poll_at() is None
    assert loop.manager.sessions()[0]["app"] == "flooder"


def test_a_quiet_doorbell_is_polled_again_when_its_mute_ends(loop):
    due = flood_until_muted(loop)
    loop.pass_(due - loop.stack.now)
    assert loop.watched() and loop.manager.poll_at() is None
    loop.rung_pass()  # still a flooder: the next spurious ring mutes again, longer
    assert not loop.watched() and loop.manager.poll_at() == loop.stack.now + 2 * FLOOR_US


def test_an_honest_app_racing_the_loop_is_never_muted(loop):
    """The SDK rings after publishing a command, when the stack said it
    sleeps. If the loop wakes for something else first, the pass takes the
    command before the ring is drained, and the ring finds nothing: that
    spurious ring follows a pass that took work, every time."""
    for _ in range(100):
        loop.app.command(Op.SOCKET)
        loop.pass_()  # woken by a frame, say: the command is taken
        loop.ring()  # the app saw the need-wakeup flag before it was cleared
        loop.wake()
        loop.pass_()  # the ring: nothing left
        assert loop.watched()
        loop.app.events()
    assert loop.refusals == 0


def test_an_app_making_room_for_waiting_events_rings_usefully(loop):
    """The SDK also rings while its command ring is full (the stack takes
    no commands while events wait for room): after making room, that ring
    lets the waiting events out, which counts as work."""
    ring = loop.app.seg.commands
    for _ in range(2):
        while ring.reserve(1):  # results enough to overflow the event ring
            loop.app.command(Op.SOCKET)  # (EMFILE once the slots are taken)
        loop.pass_()
    assert loop.session.sockets.out  # results wait for room
    for _ in range(2 * THRESHOLD):
        loop.app.seg.events.pop_many(4)  # room for a few
        loop.rung_pass()
        assert loop.watched()
    assert loop.refusals == 0


def test_the_loop_sleeps_no_later_than_the_first_mutes_end():
    class Deadline:
        def __init__(self, at):
            self.at = at

        def poll_at(self):
            return self.at

    def sleep_ms(host, engine, fastpath, now):
        loop = StackLoop(None, Deadline(host), Deadline(engine), None, -1, 0,
                         fastpath=Deadline(fastpath))  # fmt: skip
        return loop._sleep_ms(now)

    assert sleep_ms(None, None, None, 0) == 1000
    assert sleep_ms(None, None, 10_250, 10_000) == 1  # rounded up
    assert sleep_ms(50_000, None, 12_000, 10_000) == 2
    assert sleep_ms(None, 11_000, 12_000, 10_000) == 1
