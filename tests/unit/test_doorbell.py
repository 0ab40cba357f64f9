"""vfstack.shm._doorbell: FIFO doorbells, and the need-wakeup protocol with the rings.

The last test runs the documented protocol between two real processes that
both sleep whenever they are idle, and counts any wake-up that never came.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import stat
import subprocess
import sys
import threading
import time

import pytest
from vfstack.shm import Doorbell, RecordRing

from tests.support.shm import mapped, other_process, session_file

PIPE_CAPACITY = 1 << 16  # Linux default


@pytest.fixture
def bell(tmp_path):
    with Doorbell.create(str(tmp_path / "bell")) as bell:
        yield bell


def test_create_makes_a_fifo_with_exactly_the_mode_asked(tmp_path):
    path = str(tmp_path / "bell")
    old = os.umask(0o077)
    try:
        bell = Doorbell.create(path, mode=0o660)
    finally:
        os.umask(old)
    st = os.stat(path)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    bell.close()


def test_create_refuses_an_existing_path(tmp_path):
    (tmp_path / "bell").write_bytes(b"")
    with pytest.raises(FileExistsError):
        Doorbell.create(str(tmp_path / "bell"))


def test_open_refuses_a_regular_file(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ValueError, match="not a FIFO"):
        Doorbell.open(str(tmp_path / "file"))


def test_open_refuses_a_symlink(tmp_path, bell):
    os.symlink(bell.path, tmp_path / "link")
    with pytest.raises(OSError):
        Doorbell.open(str(tmp_path / "link"))


def test_open_does_not_wait_for_the_other_side(tmp_path):
    """open(2) of a FIFO blocks until the other end opens unless O_NONBLOCK
    (fifo(7)); the stack must never wait on an app that is not there."""
    os.mkfifo(tmp_path / "bell")
    opened = threading.Event()

    def open_and_ring() -> None:
        with Doorbell.open(str(tmp_path / "bell")) as bell:
            bell.ring()  # nobody else has it open: still no EPIPE, no block
            assert bell.wait(0)
            opened.set()

    opener = threading.Thread(target=open_and_ring, daemon=True)
    opener.start()
    # A blocking open never returns while nobody opens the other end; the
    # bound only keeps a broken implementation from hanging the suite.
    assert opened.wait(30), "Doorbell.open blocked waiting for the other end"
    opener.join()


def test_ring_before_wait_returns_at_once(bell):
    bell.ring()
    assert bell.wait(0) is True  # already rung: no waiting needed to see it


def test_wait_times_out_when_silent(bell):
    start = time.monotonic()
    assert bell.wait(0.05) is False
    assert time.monotonic() - start >= 0.045
    assert bell.wait(0) is False


def test_wait_consumes_every_pending_ring(bell):
    for _ in range(5):
        bell.ring()
    assert bell.wait(0) is True
    assert bell.wait(0) is False


def test_ring_on_one_descriptor_wakes_the_other(bell):
    with Doorbell.open(bell.path) as other:
        other.ring()
        assert bell.wait(1.0)
        assert not other.wait(0)


def test_ringing_a_full_pipe_is_fine(bell):
    for _ in range(PIPE_CAPACITY + 100):
        bell.ring()
    assert bell.drain() == PIPE_CAPACITY
    assert bell.drain() == 0


def test_fileno_works_with_selectors(bell):
    with selectors.DefaultSelector() as sel:
        sel.register(bell, selectors.EVENT_READ)
        assert sel.select(0) == []
        bell.ring()
        assert [key.fileobj for key, _ in sel.select(1.0)] == [bell]
        bell.drain()
        assert sel.select(0) == []


def test_fileno_works_with_asyncio(bell):
    async def main():
        loop = asyncio.get_running_loop()
        woke = asyncio.Event()
        loop.add_reader(bell.fileno(), lambda: (bell.drain(), woke.set()))
        loop.call_later(0.01, bell.ring)
        await asyncio.wait_for(woke.wait(), 2.0)
        loop.remove_reader(bell.fileno())

    asyncio.run(main())


def test_a_read_only_end_hangs_up_for_good_when_the_ringing_end_closes(bell):
    with Doorbell.open(bell.path, ring=False) as waiter:
        bell.ring()
        assert waiter.wait(1.0) and not waiter.hung_up()
        bell.close()
        assert waiter.wait(30.0) is True  # woken by the hang-up, not timed out
        assert waiter.hung_up() and waiter.hung_up()
        assert waiter.drain() == 0


def test_a_read_only_end_hangs_up_when_the_ringing_process_is_killed(tmp_path):
    path = str(tmp_path / "bell")
    child = subprocess.Popen(
        [sys.executable, "-c", CREATE_AND_SLEEP, path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline() == "made\n"
        with Doorbell.open(path, ring=False) as waiter:
            assert not waiter.hung_up() and not waiter.wait(0.05)
            child.kill()
            assert waiter.wait(30.0) is True  # the kill wakes a sleeper, no timeout
            assert waiter.hung_up()
    finally:
        child.kill()
        child.wait()


CREATE_AND_SLEEP = """
import sys, time
from vfstack.shm import Doorbell
bell = Doorbell.create(sys.argv[1])
print("made", flush=True)
time.sleep(60)
"""


def test_unlink_removes_the_name_but_descriptors_keep_working(bell):
    with Doorbell.open(bell.path) as other:
        bell.unlink()
        assert not os.path.exists(bell.path)
        bell.unlink()  # idempotent
        other.ring()
        assert bell.wait(1.0)


def test_close_is_idempotent(bell):
    fd = bell.fileno()
    bell.close()
    bell.close()
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
def endpoint(path: str, bell_dir: str, me: str):
    """One side: its receive ring and bell, the other side's send ring and bell."""
    size = RecordRing.region_size(SLOTS, SIZE)
    with mapped(path) as view:
        rings = {
            "a": RecordRing(view[0:size], SLOTS, SIZE),
            "b": RecordRing(view[size : 2 * size], SLOTS, SIZE),
        }
        bells = {k: Doorbell.open(os.path.join(bell_dir, k)) for k in "ab"}
        other = "b" if me == "a" else "a"
        try:
            yield rings[me], bells[me], rings[other], bells[other]
        finally:
            for ring in rings.values():
                ring.close()
            for b in bells.values():
                b.close()


def _ponger(path: str, bell_dir: str, rounds: int) -> dict:
    stats = new_stats()
    with endpoint(path, bell_dir, "b") as (inbox, my_bell, outbox, their_bell):
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
    bells = [Doorbell.create(str(tmp_path / k)) for k in "ab"]
    with mapped(path) as view:
        for offset in (0, size):
            RecordRing(view[offset : offset + size], SLOTS, SIZE).init()
    stats = new_stats()
    with (
        endpoint(path, str(tmp_path), "a") as (inbox, my_bell, outbox, their_bell),
        other_process(_ponger, path, str(tmp_path), rounds) as pong_stats,
    ):
        inbox.attach()
        outbox.attach()
        for i in range(rounds):
            ping = i.to_bytes(SIZE, "little")
            send(outbox, their_bell, ping, stats)
            assert receive(inbox, my_bell, stats) == ping
        other = pong_stats(120)
    for b in bells:
        b.close()
    assert stats["lost"] == other["lost"] == 0, f"lost wake-ups: {stats['lost']}, {other['lost']}"
    # Both really slept: nearly every handoff went through a doorbell.
    assert stats["sleeps"] > rounds // 2 and other["sleeps"] > rounds // 2
    assert stats["rings"] > rounds // 2 and other["rings"] > rounds // 2
