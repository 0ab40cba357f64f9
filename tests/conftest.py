from __future__ import annotations

import os

import pytest

from tests.support.netns import private_port


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
