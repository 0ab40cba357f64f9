"""What the soak (tests/integration/test_soak.py) found, each reduced to a
few operations and kept as a regression test: each states the behaviour
we want, and its docstring the bug it caught."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import vfstack
import vfstack.aio

from tests.support.netns import spawn_in_netns
from tests.support.stack import running_stack, wait_until

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
STACK, PEER = "198.18.0.10", "198.18.0.1"

# Kernel servers in the peer namespace, on port 5001; each prints "ready".
HOLD = """
import socket, time
server = socket.create_server(("0.0.0.0", 5001)); print("ready", flush=True)
conn, _ = server.accept(); time.sleep(10)  # ACKs everything, closes nothing
"""
CLOSE_ON_EOF = """
import socket
server = socket.create_server(("0.0.0.0", 5001)); print("ready", flush=True)
conn, _ = server.accept()
while conn.recv(65536): pass
conn.close()
"""
SEND_THEN_CLOSE = """
import socket
server = socket.create_server(("0.0.0.0", 5001)); print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(b"y" * 200_000); conn.shutdown(socket.SHUT_WR)  # all of it, then FIN
    while conn.recv(65536): pass
    conn.close()
"""
FIN_THEN_RESET = """
import socket, struct, time
server = socket.create_server(("0.0.0.0", 5001)); print("ready", flush=True)
conn, _ = server.accept()
conn.shutdown(socket.SHUT_WR); time.sleep(1)  # FIN, and read nothing: the app's bytes pile up
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
conn.close(); time.sleep(5)
"""


@pytest.fixture
def app(emulated_port):
    """(instance, SDK stack, port): a stack on VF 0 and an app attached."""
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0") as instance:
        stack = vfstack.connect(f"unix://{instance.run_dir / 'vf0.sock'}", app="finding")
        try:
            yield instance, stack, emulated_port
        finally:
            stack.close()


@contextlib.contextmanager
def kernel(netns: str, code: str) -> Iterator[None]:
    """One of the servers above, in the peer namespace, for the block."""
    proc = spawn_in_netns(
        netns, sys.executable, "-c", code, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


def assert_alive(instance, stack: vfstack.Stack, state: str | None = None) -> None:
    """The instance survived: once one of its connections is in `state`
    (where the bug struck), if given, its loop still answers the app."""
    if state is not None:
        assert wait_until(
            lambda: instance.proc.poll() is not None or instance.counters()["tcp_states"][state]
        ), f"no connection reached {state}"
    if instance.proc.poll() is None:
        try:
            stack.socket().close()  # a command the loop answers
        except vfstack.StackGone:
            instance.proc.wait(timeout=10)
    if instance.proc.poll() is not None:
        pytest.fail(f"the instance died:\n{instance.proc.stderr.read()[-3000:]}")


def test_keepalive_socket_closed_before_the_peer_leaves_the_instance_alive(app):
    """Finding 1: an orphan entering FIN-WAIT-2 is pushed on the TIME-WAIT list while still
    on the keepalive list (one TimerEntry per TCB): LocalProtocolError 'entry is in another
    DeadlineList' in TcpEngine.arm_fin_wait_2 kills the instance."""
    instance, stack, port = app
    with kernel(port.netns, HOLD):
        sock = stack.socket()
        sock.setsockopt(vfstack.SOL_SOCKET, vfstack.SO_KEEPALIVE, 1)
        sock.connect((PEER, 5001))
        sock.close()  # FIN, the peer ACKs it: an orphan in FIN-WAIT-2
        assert_alive(instance, stack, "fin_wait_2")


def test_listing_connections_with_one_in_time_wait_leaves_the_instance_alive(app):
    """Finding 2: ListConnections reads tcb.cc.name of a TIME-WAIT TCB, whose congestion
    state TcpEngine._shed dropped: AttributeError in the loop kills the instance."""
    instance, stack, port = app
    with kernel(port.netns, CLOSE_ON_EOF), stack.socket() as sock:
        sock.connect((PEER, 5001))
        sock.shutdown(vfstack.SHUT_WR)
        assert sock.recv(1) == b""  # the peer closed after us: we are in TIME-WAIT
    control = f"unix://{instance.run_dir / 'vf0.sock'}"
    listing = subprocess.run(
        [sys.executable, "-m", "vfstack.cli", "conns", "--json", "--control", control],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert_alive(instance, stack)
    assert "TIME_WAIT" in [c["state"] for c in json.loads(listing.stdout)["connections"]]


def test_aio_peer_reset_with_data_buffered_reports_connection_lost(app):
    """Finding 3: vfstack.aio _StackTransport._force_close clears its write buffer while the
    failed send's traceback still holds a memoryview of it: BufferError escapes
    _Driver._wake, which never re-arms the doorbell: the app's loop goes deaf."""
    _, stack, port = app

    async def main() -> list:
        problems: list = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: problems.append(ctx))
        reader, writer = await vfstack.aio.open_connection(PEER, 5001, stack=stack)
        writer.write(b"x" * (4 << 20))  # more than TX ring and window: the transport keeps some
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the peer's FIN: reading stops
        with pytest.raises(ConnectionResetError):  # then its RST, met by a send
            await asyncio.wait_for(writer.drain(), 10)
        writer.close()
        return problems

    with kernel(port.netns, FIN_THEN_RESET):
        assert asyncio.run(main()) == []


def test_app_reads_every_byte_after_its_fin_completes_last_ack(app):
    """Finding 4: the app's FIN after the peer's completes LAST-ACK while more than an RX
    ring's worth is unread; _pump then publishes EPOLLHUP for the CLOSED TCB and the SDK's
    recv takes it for EOF: the app loses the tail of the stream."""
    instance, stack, port = app
    received = []
    with kernel(port.netns, SEND_THEN_CLOSE):
        for _ in range(5):  # the first connection of an instance often escapes
            with stack.socket() as sock:
                sock.connect((PEER, 5001))
                # The peer's bytes and FIN arrive: CLOSE-WAIT, RX ring full.
                assert wait_until(lambda: instance.counters()["tcp_states"]["close_wait"] == 1)
                sock.shutdown(vfstack.SHUT_WR)  # LAST-ACK; the peer's ACK closes the TCB
                received.append(0)
                while data := sock.recv(65536):
                    received[-1] += len(data)
    assert received == [200_000] * 5
