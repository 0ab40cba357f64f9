"""The handoff (stackservice.control.handoff, vfstack.shm._handoff): a
session's descriptors go once, to the caller with the token, in time;
nobody else gets them, and a silent or hostile client delays no one."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
import threading
from pathlib import Path

import pytest
from vfstack.shm import redeem
from vfstack.shm._handoff import encode_request

from stackservice.control.handoff import Handoff
from tests.support.stack import wait_until

TOKEN = bytes(range(32))


class Session:
    """What the loop makes for one session, as the test sees it: the
    descriptors the reply carries, and the ends it keeps."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()  # the app's doorbell
        self.eventfd = os.eventfd(0)
        self.memfd = os.memfd_create("segment")
        self.given = [os.dup(self.memfd), self.read_end, os.dup(self.eventfd)]

    def reader_gone(self) -> bool:
        """The stack's view of liveness: no read end left anywhere."""
        try:
            os.write(self.write_end, b"x")
        except BrokenPipeError:
            return True
        return False

    def close(self) -> None:
        for fd in (self.write_end, self.eventfd, self.memfd):
            os.close(fd)


@pytest.fixture
def handoff():
    with tempfile.TemporaryDirectory(prefix="vfh-") as path:
        handoff = Handoff(Path(path) / "vf0.attach", timeout=30.0)
        yield handoff
        handoff.close()


@pytest.fixture
def session():
    session = Session()
    yield session
    session.close()


def test_the_right_caller_gets_the_descriptors_once(handoff, session):
    handoff.on_expired = lambda session_id: pytest.fail("handed over, not expired")
    handoff.offer(5, TOKEN, session.given, os.getuid())
    segment, app_bell, stack_bell = redeem(str(handoff.path), 5, TOKEN, 5.0)
    assert os.fstat(segment).st_ino == os.fstat(session.memfd).st_ino
    assert os.readlink(f"/proc/self/fd/{stack_bell}") == "anon_inode:[eventfd]"
    os.write(session.write_end, b"!")
    assert os.read(app_bell, 1) == b"!"  # the app's doorbell, its read end
    assert handoff.waiting == 0
    with pytest.raises(FileNotFoundError):  # ENOENT: handed over already
        redeem(str(handoff.path), 5, TOKEN, 5.0)
    assert not session.reader_gone()  # the app's copy is the only one
    os.close(app_bell)
    assert session.reader_gone()
    for fd in (segment, stack_bell):
        os.close(fd)


def test_a_wrong_token_or_another_uid_gets_nothing(handoff, session):
    handoff.offer(5, TOKEN, session.given, os.getuid() + 1)
    with pytest.raises(PermissionError):
        redeem(str(handoff.path), 5, TOKEN, 5.0)  # right token, wrong uid
    with pytest.raises(FileNotFoundError):
        redeem(str(handoff.path), 6, TOKEN, 5.0)
    other = Session()
    handoff.offer(7, TOKEN, other.given, os.getuid())
    with pytest.raises(PermissionError):
        redeem(str(handoff.path), 7, bytes(32), 5.0)
    assert handoff.waiting == 2
    other.close()


def test_descriptors_nobody_comes_for_are_dropped_after_the_timeout(handoff, session):
    expired: list[int] = []
    handoff.on_expired = expired.append
    handoff.timeout = 0.05
    handoff.offer(5, TOKEN, session.given, os.getuid())
    assert wait_until(session.reader_gone, timeout=30)  # the loop then ends the session
    assert wait_until(lambda: expired == [5], timeout=30)  # and counts why
    assert handoff.waiting == 0
    with pytest.raises(FileNotFoundError):
        redeem(str(handoff.path), 5, TOKEN, 5.0)


def test_silent_and_garbled_clients_delay_nobody(handoff, session):
    silent = [socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(8)]
    for sock in silent:
        sock.connect(str(handoff.path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as garbled:
        garbled.connect(str(handoff.path))
        garbled.send(b"not a request")
        assert garbled.recv(64) == b""  # closed without an answer
    handoff.offer(5, TOKEN, session.given, os.getuid())
    fds = redeem(str(handoff.path), 5, TOKEN, 5.0)  # served while the others sit
    for fd in fds:
        os.close(fd)
    for sock in silent:
        sock.close()


def test_a_client_that_leaves_before_its_reply_ends_its_session(handoff, session):
    handoff.offer(5, TOKEN, session.given, os.getuid())
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.connect(str(handoff.path))
        sock.send(encode_request(5, TOKEN))
        sock.shutdown(socket.SHUT_RDWR)
    assert wait_until(session.reader_gone, timeout=30)


def test_close_drops_what_waits_and_removes_the_socket(session):
    with tempfile.TemporaryDirectory(prefix="vfh-") as path:
        handoff = Handoff(Path(path) / "vf0.attach", 30.0)
        handoff.offer(5, TOKEN, session.given, None)
        handoff.close()
        handoff.close()
        assert not handoff.path.exists()
        assert session.reader_gone()
        late = Session()
        handoff.offer(6, TOKEN, late.given, None)  # an Attach still in flight
        assert late.reader_gone()
        late.close()


def test_many_clients_at_once_are_all_served(handoff):
    sessions = [Session() for _ in range(20)]
    for n, s in enumerate(sessions):
        handoff.offer(n, TOKEN, s.given, os.getuid())
    errors: list[int] = []

    def take(n: int) -> None:
        try:
            for fd in redeem(str(handoff.path), n, TOKEN, 10.0):
                os.close(fd)
        except OSError as exc:
            errors.append(exc.errno or errno.EIO)

    threads = [threading.Thread(target=take, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and handoff.waiting == 0
    for s in sessions:
        s.close()
