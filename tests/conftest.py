from __future__ import annotations

import contextlib
import os
import signal

import pytest

from tests.support.impaired import impaired_port
from tests.support.netns import private_port, remove_orphans

# Every stack instance a test starts is strict (stackservice.faults): an
# internal error ends it, and tests/support/stack.py turns its traceback into
# the test's failure, so fault containment never hides a bug from the suite.
# The tests of containment itself pass --no-strict.
os.environ["VFSTACK_STRICT"] = "1"


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() != 0:
        return
    # A SIGTERM (`timeout`, a CI runner) ends the run through pytest's own
    # interrupt path, so every fixture's teardown still removes its network.
    # Only in this process: a forked child (pyroute2's netns helpers, which
    # their parent stops with SIGTERM) would otherwise unwind through the
    # copy of pytest's stack it inherited and tear down the live test's
    # network.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.register_at_fork(after_in_child=_default_sigterm)
    orphans = remove_orphans()  # what runs killed outright left behind
    if orphans:
        print(f"removed the test networks of ended runs: {', '.join(orphans)}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, AF_PACKET)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def emulated_port():
    """A private emulated port with two VFs, removed after the test."""
    with private_port(vfs=2) as port:
        yield port


@pytest.fixture
def impaired_port_factory():
    """Build emulated ports with the impairing relay in their wire:
    `ip = impaired_port_factory(loss=0.1, seed=1, vfs=2)` (see
    tests/support/impaired.py). All are removed after the test."""
    with contextlib.ExitStack() as stack:

        def make(vfs: int = 2, **impairment):
            return stack.enter_context(impaired_port(vfs=vfs, **impairment))

        yield make
