from __future__ import annotations

import contextlib
import os

import pytest

from tests.support.impaired import impaired_port
from tests.support.netns import private_port, remove_orphans
from tests.support.process import unwind_on_sigterm

# Every stack instance a test starts is strict (stackservice.faults): an
# internal error ends it, and tests/support/stack.py turns its traceback into
# the test's failure, so fault containment never hides a bug from the suite.
# The tests of containment itself pass --no-strict.
os.environ["VFSTACK_STRICT"] = "1"


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() != 0:
        return
    unwind_on_sigterm()  # so every fixture's teardown still removes its network
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
