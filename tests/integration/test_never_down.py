"""Ordinary use that once ended an instance, replayed the way a user meets
it: through the SDK against a live instance, the Linux kernel as peer."""

from __future__ import annotations

import subprocess
import sys

import pytest
import vfstack

from tests.support.netns import spawn_in_netns
from tests.support.stack import live_connections, running_stack, wait_until

pytestmark = pytest.mark.root

STACK = "198.18.0.10"

# Reads until EOF, then closes: the peer ACKs the server's FIN first and
# sends its own a little later, as curl or ab do.
READ_TO_EOF = f"""
import socket, time
for _ in range(2):
    c = socket.create_connection(("{STACK}", 8080), timeout=20)
    data = b""
    while chunk := c.recv(4096):
        data += chunk
    time.sleep(0.2)
    c.close()
    print(data.decode(), flush=True)
"""


def test_keepalive_server_closes_first_instance_survives(emulated_port):
    """accept, SO_KEEPALIVE, sendall, close (aiohttp's pattern): when the
    peer ACKed the FIN, the keepalive timer and the orphan FIN-WAIT-2
    timeout met on one TCB and the exception ended the instance. Now both
    connections are served and the instance is still up."""
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0") as instance:
        stack = vfstack.connect(f"unix://{instance.run_dir / 'vf0.sock'}", app="keepalive")
        try:
            listener = stack.socket()
            listener.bind(("0.0.0.0", 8080))
            listener.listen(16)
            client = spawn_in_netns(
                emulated_port.netns, sys.executable, "-c", READ_TO_EOF,
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            for greeting in (b"hi", b"again"):
                conn, _ = listener.accept()
                conn.setsockopt(vfstack.SOL_SOCKET, vfstack.SO_KEEPALIVE, 1)
                conn.setsockopt(vfstack.IPPROTO_TCP, vfstack.TCP_KEEPIDLE, 1)
                conn.sendall(greeting)
                conn.close()
            out, _ = client.communicate(timeout=30)
            assert out.split() == ["hi", "again"]
            # Both connections closed on both sides (the peer's FIN comes
            # after its ACK of ours): the timers that met have run.
            assert wait_until(lambda: live_connections(instance) == 0)
            assert instance.proc.poll() is None
            counters = instance.counters()["tcp"]
            assert counters["resets_out"] == counters["app_aborts"] == 0, counters
        finally:
            stack.close()
