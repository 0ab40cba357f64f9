"""Private network namespaces and emulated ports for tests.

Every test network gets a unique name prefix ("vft" + 4 hex digits), so
concurrent runs never collide, and is removed however the test ends.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator

from stackservice.nic.emulate import EmulatedPort, emulate_down, emulate_up

TEST_PREFIX = "vft"


def unique_prefix() -> str:
    return f"{TEST_PREFIX}{secrets.token_hex(2)}"


def quiet(_: str) -> None:
    """A `say` callback for emulate_up/down that prints nothing."""


@contextlib.contextmanager
def private_port(vfs: int = 2) -> Iterator[EmulatedPort]:
    """An emulated port under a unique prefix, torn down on exit."""
    port = EmulatedPort(prefix=unique_prefix())
    try:
        emulate_up(port, vfs, say=quiet)
        yield port
    finally:
        emulate_down(port, say=quiet)


def in_netns(
    netns: str, *argv: str, check: bool = True, timeout: float = 60, **kwargs
) -> subprocess.CompletedProcess[str]:
    """Run a command in a namespace and capture its text output."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv],
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def spawn_in_netns(netns: str, *argv: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", netns, *argv], **kwargs)
