"""vfstack.shm._doorbell: pipe and eventfd doorbells, and the need-wakeup
protocol with the rings.

The last test runs the documented protocol between two real processes that
both sleep whenever they are idle, and counts any wake-up that never came.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import subprocess
import sys
import time

import pytest
from vfstack.shm import Doorbell, RecordRing

from tests.support.shm import mapped, other_process, session_file

PIPE_CAPACITY = 1 << 16  # Linux default
EVENTFD_MAX = 2**64 - 2


@pytest.fixture
def app_bell():
    """(the app's waiting end, the stack's ringing end) of a new app doorbell."""
    waiting, ringing = Doorbell.pipe()
    yield waiting, ringing
    waiting.close()
    ringing.close()


@pytest.fixture
def stack_bell():
    with Doorbell.eventfd() as bell:
        yield bell


def test_ring_before_wait_returns_at_once(app_bell, stack_bell):
    waiting, ringing = app_bell
    for waiter, ringer in ((waiting, ringing), (stack_bell, stack_bell)):
        ringer.ring()
        assert waiter.wait(0) is True  # already rung: no waiting needed to see it
        assert waiter.wait(0) is False


def test_wait_times_out_when_silent(app_bell):
    waiting, _ = app_bell
    start = time.monotonic()
    assert waiting.wait(0.05) is False
    assert time.monotonic() - start >= 0.045


def test_an_eventfd_drain_takes_every_pending_ring_in_one_read(stack_bell):
    for _ in range(5):
        stack_bell.ring()
    assert stack_bell.drain() == 5
    assert stack_bell.drain() == 0


def test_ringing_a_full_pipe_or_a_full_counter_is_fine(app_bell, stack_bell):
    waiting, ringing = app_bell
    for _ in range(PIPE_CAPACITY + 100):
        ringing.ring()
    drained = 0
    while n := waiting.drain():
        drained += n
    assert drained == PIPE_CAPACITY
    os.eventfd_write(stack_bell.fileno(), EVENTFD_MAX)  # an app pushing it to the top
    stack_bell.ring()  # EAGAIN inside: harmless
    assert stack_bell.drain() == EVENTFD_MAX
    assert stack_bell.drain() == 0


def test_a_drain_is_one_read_however_fast_the_other_side_rings(stack_bell, monkeypatch):
    """A process ringing the stack's doorbell without pause cannot hold the
    loop in drain(): each drain is exactly one read (a read-until-empty
    loop would chase the ringer)."""
    ringer = subprocess.Popen(
        [sys.executable, "-c", RING_FOREVER, str(stack_bell.fileno())],
        pass_fds=[stack_bell.fileno()], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    reads = 0
    real_read = os.eventfd_read

    def counted(fd: int) -> int:
        nonlocal reads
        reads += 1
        return real_read(fd)

    try:
        assert ringer.stdout.readline() == "ringing\n"
        monkeypatch.setattr(os, "eventfd_read", counted)
        total = sum(stack_bell.drain() for _ in range(1000))
    finally:
        ringer.kill()
        ringer.wait()
    assert reads == 1000
    assert total > 0


RING_FOREVER = """
import os, sys
fd = int(sys.argv[1])
os.eventfd_write(fd, 1)
print("ringing", flush=True)
while True:
    try:
        os.eventfd_write(fd, 1)
    except BlockingIOError:
        pass
"""


def test_fileno_works_with_selectors(app_bell):
    waiting, ringing = app_bell
    with selectors.DefaultSelector() as sel:
        sel.register(waiting, selectors.EVENT_READ)
        assert sel.select(0) == []
        ringing.ring()
        assert [key.fileobj for key, _ in sel.select(1.0)] == [waiting]
        waiting.drain()
        assert sel.select(0) == []


def test_fileno_works_with_asyncio(app_bell):
    waiting, ringing = app_bell

    async def main():
        loop = asyncio.get_running_loop()
        woke = asyncio.Event()
        loop.add_reader(waiting.fileno(), lambda: (waiting.drain(), woke.set()))
        loop.call_later(0.01, ringing.ring)
        await asyncio.wait_for(woke.wait(), 2.0)
        loop.remove_reader(waiting.fileno())

    asyncio.run(main())


def test_the_waiting_end_hangs_up_for_good_when_the_ringing_end_closes(app_bell):
    waiting, ringing = app_bell
    ringing.ring()
    assert waiting.wait(1.0) and not waiting.hung_up()
    ringing.close()
    assert waiting.wait(30.0) is True  # woken by the hang-up, not timed out
    assert waiting.hung_up() and waiting.hung_up()
    assert waiting.drain() == 0


def test_the_ringing_end_sees_the_reader_gone_when_the_waiting_end_closes(app_bell):
    waiting, ringing = app_bell
    assert not ringing.reader_gone()
    waiting.close()
    assert ringing.reader_gone()
    ringing.ring()  # EPIPE: nobody to wake, and no error for the ringer


@pytest.mark.parametrize("holder", ["ringing", "waiting"])
def test_either_end_notices_at_once_when_the_other_process_is_killed(holder):
    """The stack holds the ringing end, the app the waiting end; a kill -9
    of either is seen by the other, in any PID namespace."""
    waiting, ringing = Doorbell.pipe()
    theirs, ours = (ringing, waiting) if holder == "ringing" else (waiting, ringing)
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('holding', flush=True); time.sleep(60)"],
        pass_fds=[theirs.fileno()], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    theirs.close()
    try:
        assert child.stdout.readline() == "holding\n"
        gone = ours.hung_up if holder == "ringing" else ours.reader_gone
        assert not gone()
        child.kill()
        child.wait()
        assert gone()
    finally:
        child.kill()
        child.wait()
        ours.close()


def test_adopt_takes_a_pipe_end_or_an_eventfd_and_nothing_else(tmp_path):
    read_end, write_end = os.pipe()  # blocking, as a sender might leave them
    with Doorbell.adopt(read_end) as waiting, Doorbell.adopt(write_end) as ringing:
        assert not os.get_blocking(read_end)
        ringing.ring()
        assert waiting.wait(0)
    with Doorbell.adopt(os.eventfd(0)) as bell:
        bell.ring()
        assert bell.drain() == 1
    with open(tmp_path / "file", "wb") as file, pytest.raises(ValueError, match="neither"):
        Doorbell.adopt(file.fileno())


def test_close_is_idempotent(stack_bell):
    fd = stack_bell.fileno()
    stack_bell.close()
    stack_bell.close()
    with pytest.raises(OSError):
        os.fstat(fd)


# -- the need-wakeup protocol between two sleeping processes --------------------------

SLOTS, SIZE = 64, 8
LOST = 2.0  # seconds: a wait this long with a record waiting means a lost wake-up


def receive(ring: RecordRing, bell: Doorbell, stats: dict) -> bytes:
    """Consumer side of the protocol: never spins, sleeps whenever idle."""
    while True:
        got = ring.pop_many(1)
        if got:
            return got[0]
        if ring.prepare_sleep():
            rung = bell.wait(LOST)
            ring.sleep_done()
            stats["sleeps"] += 1
            if not rung:
                if ring.available():
                    stats["lost"] += 1
                elif time.monotonic() > stats["give_up"]:
                    raise TimeoutError("the other process went silent")


def send(ring: RecordRing, bell: Doorbell, record: bytes, stats: dict) -> None:
    """Producer side of the protocol: publish, then ring only a sleeper."""
    while not ring.push_many((record,)):
        time.sleep(0)
    if ring.needs_wakeup():
        bell.ring()
        stats["rings"] += 1


def new_stats() -> dict:
    return {"sleeps": 0, "rings": 0, "lost": 0, "give_up": time.monotonic() + 120}


@contextlib.contextmanager
def endpoint(path: str, bells: dict, me: str):
    """One side: its receive ring and bell, the other side's send ring and
    bell (the bells' descriptors are inherited across the fork)."""
    size = RecordRing.region_size(SLOTS, SIZE)
    with mapped(path) as view:
        rings = {
            "a": RecordRing(view[0:size], SLOTS, SIZE),
            "b": RecordRing(view[size : 2 * size], SLOTS, SIZE),
        }
        other = "b" if me == "a" else "a"
        try:
            yield rings[me], bells[me], rings[other], bells[other]
        finally:
            for ring in rings.values():
                ring.close()


def _ponger(path: str, bells: dict, rounds: int) -> dict:
    stats = new_stats()
    with endpoint(path, bells, "b") as (inbox, my_bell, outbox, their_bell):
        inbox.attach()
        outbox.attach()
        for _ in range(rounds):
            send(outbox, their_bell, receive(inbox, my_bell, stats), stats)
    return stats


def test_need_wakeup_protocol_loses_no_wake_up_in_100k_handoffs(tmp_path):
    """50k ping-pongs = 100k handoffs, each to a process that sleeps as soon
    as its ring is empty (no spinning), so every handoff races a consumer
    going to sleep against a producer checking its flag. (Dropping the
    re-check from `prepare_sleep` loses a few wake-ups per run here.)"""
    rounds = 50_000
    size = RecordRing.region_size(SLOTS, SIZE)
    path = session_file(tmp_path, 2 * size)
    # As in a session: one way a pipe, the other an eventfd.
    pipe_waiting, pipe_ringing = Doorbell.pipe()
    eventfd = Doorbell.eventfd()
    bells = {"a": eventfd, "b": pipe_waiting}
    ringers = {"a": eventfd, "b": pipe_ringing}
    with mapped(path) as view:
        for offset in (0, size):
            RecordRing(view[offset : offset + size], SLOTS, SIZE).init()
    stats = new_stats()
    with (
        endpoint(path, {"a": bells["a"], "b": ringers["b"]}, "a") as (
            inbox,
            my_bell,
            outbox,
            their_bell,
        ),
        other_process(_ponger, path, {"a": ringers["a"], "b": bells["b"]}, rounds) as pong_stats,
    ):
        inbox.attach()
        outbox.attach()
        for i in range(rounds):
            ping = i.to_bytes(SIZE, "little")
            send(outbox, their_bell, ping, stats)
            assert receive(inbox, my_bell, stats) == ping
        other = pong_stats(120)
    for b in (pipe_waiting, pipe_ringing, eventfd):
        b.close()
    assert stats["lost"] == other["lost"] == 0, f"lost wake-ups: {stats['lost']}, {other['lost']}"
    # Both really slept: nearly every handoff went through a doorbell.
    assert stats["sleeps"] > rounds // 2 and other["sleeps"] > rounds // 2
    assert stats["rings"] > rounds // 2 and other["rings"] > rounds // 2
