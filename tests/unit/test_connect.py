"""vfstack.connect(wait=...): how long it keeps trying an instance that
cannot answer (a live instance answering at last: tests/integration).

The SDK's clock is a fake here: it stands still but for the pauses
between attempts, which it records, so the schedule is exact however
long each attempt takes on a busy machine."""

from __future__ import annotations

import time

import pytest
import vfstack
import vfstack.sockets.stack


class PausesOnly:
    """`time` for vfstack.sockets.stack: monotonic() moves only by sleep()."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch) -> PausesOnly:
    fake = PausesOnly()
    monkeypatch.setattr(vfstack.sockets.stack, "time", fake)
    return fake


def test_without_wait_an_absent_instance_fails_at_once(tmp_path, clock):
    with pytest.raises(vfstack.ControlError) as caught:
        vfstack.connect(f"unix://{tmp_path}/vf0.sock", timeout=2)
    assert caught.value.code == "UNAVAILABLE"  # not DEADLINE_EXCEEDED: no wait for the socket
    assert clock.pauses == []


def test_with_wait_an_absent_instance_is_tried_until_the_wait_is_over(tmp_path, clock):
    with pytest.raises(vfstack.ControlError) as caught:
        vfstack.connect(f"unix://{tmp_path}/vf0.sock", timeout=2, wait=0.5)
    assert caught.value.code == "UNAVAILABLE"
    assert clock.pauses == [0.05, 0.1, 0.2]  # doubling; the next, 0.4, would pass 0.5


def test_waits_longer_than_a_second_pause_a_second_at_most(tmp_path, clock):
    with pytest.raises(vfstack.ControlError):
        vfstack.connect(f"unix://{tmp_path}/vf0.sock", timeout=2, wait=5)
    assert clock.pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]  # 4.55 s, the next passes 5


def test_a_malformed_url_is_not_waited_for(clock):
    with pytest.raises(ValueError):
        vfstack.connect("ftp://nowhere", wait=10)
    assert clock.pauses == []
