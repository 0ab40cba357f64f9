"""Private network namespaces and emulated ports for tests.

Every test network gets a unique name prefix ("vft" + 4 hex digits), so
concurrent runs never collide, and is removed however the test ends. A run
killed outright (SIGKILL, or SIGTERM to a process without a handler)
cannot run its teardown: each prefix has an owner file that its creator
holds an exclusive flock on for as long as it lives, and `remove_orphans`
(at the start of every test session) removes the networks of prefixes
whose lock is free. A lock, unlike a pid, is seen by every process that
shares the filesystem, whatever PID namespace it runs in: a run in another
container is never mistaken for a dead one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns

from stackservice.nic.emulate import (
    PEER_ADDRESS,
    PREFIX_LEN,
    EmulatedPort,
    emulate_down,
    emulate_up,
)
from stackservice.nic.netconf import disable_offloads, inside_netns, link_index, write_sysctl

TEST_PREFIX = "vft"
PREFIX_LEN_CHARS = len(TEST_PREFIX) + 4
OWNERS = Path("/run/vfstack-tests")  # a file per prefix, locked by its creator
_held: dict[str, int] = {}  # prefix -> the open, locked owner file


def unique_prefix() -> str:
    """A fresh prefix, owned (locked) by this process before anything is built."""
    OWNERS.mkdir(parents=True, exist_ok=True)
    while True:
        prefix = f"{TEST_PREFIX}{secrets.token_hex(2)}"
        try:
            fd = os.open(OWNERS / prefix, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue  # another run's, live or not yet cleaned up
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())  # for people; the lock is the truth
        _held[prefix] = fd
        return prefix


def release_prefix(prefix: str) -> None:
    """Give up a prefix whose networks are gone."""
    fd = _held.pop(prefix, None)
    (OWNERS / prefix).unlink(missing_ok=True)
    if fd is not None:
        os.close(fd)


def _orphaned(prefix: str) -> bool:
    """Whether the prefix's owner file exists and nobody holds its lock.
    A prefix without a file is left alone: its owner is unknown."""
    try:
        fd = os.open(OWNERS / prefix, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def remove_orphans() -> list[str]:
    """Remove the namespaces and host links of every recorded test prefix
    whose creator is no longer running, and its record. Returns the
    prefixes whose networks were removed."""
    with IPRoute() as ipr:
        links = {link.get_attr("IFLA_IFNAME"): link["index"] for link in ipr.get_links()}
    names = [n for n in (*netns.listnetns(), *links) if n.startswith(TEST_PREFIX)]
    in_use = {name[:PREFIX_LEN_CHARS] for name in names}
    removed = []
    for prefix in sorted(p.name for p in OWNERS.glob(f"{TEST_PREFIX}*")):
        if not _orphaned(prefix):
            continue
        if prefix in in_use:
            for name in netns.listnetns():
                if name.startswith(prefix):
                    netns.remove(name)
            # Macvlans before the wire they sit on; a name may already be
            # gone with its namespace or its lower link.
            for name in sorted((n for n in links if n.startswith(prefix)), key=len, reverse=True):
                subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
            removed.append(prefix)
        (OWNERS / prefix).unlink(missing_ok=True)
    return removed


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
        release_prefix(port.prefix)


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


_LIVE_TCP = ("state", "connected", "exclude", "time-wait")  # an `ss` filter


def kernel_live_connections(netns: str) -> int:
    """The namespace kernel's TCP connections still open or closing: neither
    listening nor in TIME-WAIT."""
    return len(in_netns(netns, "ss", "-Htan", *_LIVE_TCP).stdout.splitlines())


def abort_kernel_connections(netns: str) -> None:
    """Abort (SOCK_DESTROY, a RST where one can go) every TCP connection of
    the namespace that is still open or closing."""
    in_netns(netns, "ss", "-HKtan", *_LIVE_TCP)


def spawn_in_netns(netns: str, *argv: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", netns, *argv], **kwargs)


KERNEL_HOST_ADDRESS = "198.18.0.50"
KERNEL_HOST_MAC = "02:00:00:00:01:50"


@contextlib.contextmanager
def kernel_host(
    ip: EmulatedPort,
    address: str = KERNEL_HOST_ADDRESS,
    mac: str = KERNEL_HOST_MAC,
    static_neighbours: bool = True,
) -> Iterator[str]:
    """A Linux host behind the PF of an emulated or impaired port: a
    bridge-mode macvlan of the PF in a private namespace, with `address`/24,
    on the same wire as the stack's VFs. Yields that namespace's name.

    With `static_neighbours`, both kernels get permanent neighbour entries
    for each other, so no ARP crosses the relay and it sees only the test's
    own traffic.
    """
    name = f"{ip.prefix}host"
    ifname = f"{ip.prefix}k0"
    try:
        netns.create(name)
        with IPRoute() as ipr:
            ipr.link(
                "add",
                ifname=ifname,
                kind="macvlan",
                link=link_index(ipr, ip.pf),
                macvlan_mode="bridge",
                address=mac,
            )
            ipr.link("set", index=link_index(ipr, ifname), net_ns_fd=name)
        with NetNS(name) as hns, inside_netns(name):
            index = link_index(hns, ifname)
            disable_offloads(ifname)
            write_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", 1)
            hns.addr("add", index=index, address=address, prefixlen=PREFIX_LEN)
            hns.link("set", index=index, state="up")
            hns.link("set", index=link_index(hns, "lo"), state="up")
        if static_neighbours:
            _pin_neighbours(ip, name, ifname, address, mac)
        yield name
    finally:
        if name in netns.listnetns():
            netns.remove(name)  # the macvlan goes with it


def _pin_neighbours(ip: EmulatedPort, host_ns: str, ifname: str, address: str, mac: str) -> None:
    with NetNS(ip.netns) as pns:
        wire = pns.get_links(link_index(pns, ip.wire))[0]
        wire_mac = wire.get("IFLA_ADDRESS")
    in_netns(ip.netns, "ip", "neigh", "replace", address, "lladdr", mac, "dev", ip.wire)
    in_netns(host_ns, "ip", "neigh", "replace", PEER_ADDRESS, "lladdr", wire_mac, "dev", ifname)


def kernel_peer(netns: str, *args: str, timeout: float = 240, check: bool = True) -> dict:
    """Run `python -m tests.support.kernel_peer ARGS --timeout T` in `netns`
    and return its JSON result. With check=False a failure comes back as
    {"error": stderr} instead of raising."""
    done = in_netns(
        netns, sys.executable, "-m", "tests.support.kernel_peer", *args,
        "--timeout", str(timeout), timeout=timeout + 30, check=check,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": done.stderr}
    return json.loads(lines[-1])
