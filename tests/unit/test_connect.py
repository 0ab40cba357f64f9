"""vfstack.connect(wait=...): how long it keeps trying an instance that
cannot answer (a live instance answering at last: tests/integration)."""

from __future__ import annotations

import time

import pytest
import vfstack


def test_without_wait_an_absent_instance_fails_at_once(tmp_path):
    start = time.monotonic()
    with pytest.raises(vfstack.ControlError) as caught:
        vfstack.connect(f"unix://{tmp_path}/vf0.sock", timeout=2)
    assert caught.value.code == "UNAVAILABLE"
    assert time.monotonic() - start < 1.5


def test_with_wait_an_absent_instance_is_tried_until_the_wait_is_over(tmp_path):
    start = time.monotonic()
    with pytest.raises(vfstack.ControlError) as caught:
        vfstack.connect(f"unix://{tmp_path}/vf0.sock", timeout=2, wait=0.5)
    assert caught.value.code == "UNAVAILABLE"
    assert 0.3 <= time.monotonic() - start < 3  # pauses 0.05, 0.1, 0.2: the next would pass 0.5


def test_a_malformed_url_is_not_waited_for():
    start = time.monotonic()
    with pytest.raises(ValueError):
        vfstack.connect("ftp://nowhere", wait=10)
    assert time.monotonic() - start < 1
