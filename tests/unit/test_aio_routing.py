"""Which addresses `vfstack.aio.install` sends through the instance: a
server on the instance's address or a wildcard, a connection to what the
instance reaches (its subnet; with a gateway, anything routable), and
nothing else (loopback stays the kernel's, whatever the gateway)."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace

import pytest
from vfstack.aio import _Routes, reaches


def stack(gateway: str | None = None):
    return SimpleNamespace(
        local_ip="198.18.0.10",
        network=ipaddress.IPv4Network("198.18.0.0/24"),
        gateway=gateway,
    )


@pytest.mark.parametrize(
    ("host", "without_gateway", "with_gateway"),
    [
        ("198.18.0.1", True, True),  # on the subnet
        ("198.18.0.255", True, True),
        ("198.18.1.1", False, True),  # off the subnet: only through a gateway
        ("10.1.2.3", False, True),
        ("127.0.0.1", False, False),  # the host's own loopback, never the VF's
        ("169.254.1.1", False, False),
        ("224.0.0.1", False, False),
        ("0.0.0.0", False, False),
        ("::1", False, False),  # IPv4 only
        ("example.com", False, False),  # names are resolved before asking
    ],
)
def test_reaches(host, without_gateway, with_gateway):
    assert reaches(stack(), host) is without_gateway
    assert reaches(stack("198.18.0.254"), host) is with_gateway


class _Loop:
    """What _Routes takes from a loop: its own methods, to fall back on."""

    def __getattr__(self, name):
        return name


@pytest.mark.parametrize(
    ("host", "here"),
    [
        (None, True),
        ("", True),
        ("0.0.0.0", True),
        ("198.18.0.10", True),
        (["198.18.0.10", "0.0.0.0"], True),
        ("127.0.0.1", False),
        ("::", False),
        (["127.0.0.1", "::1"], False),
    ],
)
def test_servers_route_by_host(host, here):
    assert _Routes(stack(), _Loop())._serves_here(host) is here


def test_a_server_cannot_be_on_the_instance_and_elsewhere():
    with pytest.raises(ValueError, match="mixes"):
        _Routes(stack(), _Loop())._serves_here(["198.18.0.10", "127.0.0.1"])


def test_connections_route_by_resolved_address():
    routes = _Routes(stack(), _Loop())

    async def destinations():
        return [
            await routes._destination("198.18.0.1", 80, 0),
            await routes._destination("localhost", 80, 0),
            await routes._destination("198.18.0.1", 80, 10),  # AF_INET6 asked: the kernel's
        ]

    assert asyncio.run(destinations()) == [("198.18.0.1", 80), None, None]
