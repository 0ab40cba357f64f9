"""vfstack sockets inside event loops: `vfstack.StackSelector` (a
`selectors.BaseSelector` mixing vfstack sockets and kernel fds) and
`vfstack.aio` (asyncio streams), against kernel peers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import subprocess
import sys
import threading
import time

import pytest
import vfstack
import vfstack.aio

from tests.integration.test_sdk import PEER, ROOT, STACK, kernel_server
from tests.support.netns import in_netns, kernel_peer, spawn_in_netns

pytestmark = pytest.mark.root

MB = 1 << 20


def test_selector_echo_server_and_a_kernel_pipe_in_one_select_loop(sdk):
    stack, port = sdk
    listener = stack.socket()
    listener.bind(("0.0.0.0", 7007))
    listener.listen(8)
    listener.setblocking(False)
    pipe_r, pipe_w = os.pipe()
    sel = vfstack.StackSelector(stack)
    sel.register(listener, selectors.EVENT_READ, "listener")
    sel.register(pipe_r, selectors.EVENT_READ, "pipe")
    assert sel.get_key(listener).data == "listener"
    assert sel.get_key(pipe_r).data == "pipe"
    assert set(sel.get_map()) == {listener, pipe_r}
    stop = threading.Event()
    errors: list = []

    def serve() -> None:
        pending: dict = {}
        try:
            while not stop.is_set():
                for key, events in sel.select(1.0):
                    if key.data == "pipe":
                        os.read(pipe_r, 100)
                        stop.set()
                    elif key.data == "listener":
                        conn, _ = listener.accept()
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, "conn")
                    elif events & selectors.EVENT_READ:
                        conn = key.fileobj
                        data = conn.recv(65536)
                        if not data:
                            sel.unregister(conn)
                            conn.close()
                            continue
                        pending[conn] = pending.get(conn, b"") + data
                        sel.modify(conn, selectors.EVENT_WRITE, "conn")
                    elif events & selectors.EVENT_WRITE:
                        conn = key.fileobj
                        sent = conn.send(pending[conn])
                        pending[conn] = pending[conn][sent:]
                        if not pending[conn]:
                            sel.modify(conn, selectors.EVENT_READ, "conn")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        result = kernel_peer(
            port.netns, "echo", "--host", STACK, "--port", "7007", "--bytes", str(4 * MB),
            "--seed", "3", timeout=60,
        )  # fmt: skip
        assert result["received_sha256"] == result["sent_sha256"]
        os.write(pipe_w, b"stop")  # the kernel fd wakes the same select()
        thread.join(10)
        assert not thread.is_alive()
        assert errors == []
    finally:
        stop.set()
        sel.close()
        os.close(pipe_r)
        os.close(pipe_w)


def test_aio_start_server_serves_ab_and_echoes_byte_exact(sdk):
    stack, port = sdk
    body = b"x" * 64

    async def http(reader, writer):
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 64\r\n\r\n" + body)
                await writer.drain()
                break
        finally:
            writer.close()

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        web = await vfstack.aio.start_server(http, "0.0.0.0", 8080, stack=stack)
        echoer = await vfstack.aio.start_server(echo, "0.0.0.0", 7007, stack=stack)
        assert web.sockets[0].getsockname()[1] == 8080
        ab = asyncio.to_thread(
            in_netns, port.netns, "ab", "-q", "-n", "3000", "-c", "50", "-s", "20",
            f"http://{STACK}:8080/", timeout=120,
        )  # fmt: skip
        big = asyncio.to_thread(
            kernel_peer, port.netns, "echo", "--host", STACK, "--port", "7007",
            "--bytes", str(8 * MB), "--seed", "9", timeout=90,
        )  # fmt: skip
        ab_done, echoed = await asyncio.gather(ab, big)
        async with web, echoer:
            pass
        assert not web.is_serving()
        return ab_done.stdout, echoed

    out, echoed = asyncio.run(main())
    assert re.search(r"Complete requests:\s+3000\b", out), out
    assert re.search(r"Failed requests:\s+0\b", out), out
    assert echoed["received_sha256"] == echoed["sent_sha256"]


def test_aio_open_connection_to_a_kernel_server(sdk):
    stack, port = sdk
    server = kernel_server(port.netns, 5002)
    payload = os.urandom(300_000)

    async def main():
        reader, writer = await vfstack.aio.open_connection(PEER, 5002, stack=stack)
        assert writer.get_extra_info("peername") == (PEER, 5002)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        received = await reader.read()  # to EOF
        writer.close()
        await writer.wait_closed()
        return received

    try:
        assert asyncio.run(main()) == payload
        out, _ = server.communicate(timeout=30)
        assert json.loads(out.strip().splitlines()[-1])["bytes"] == len(payload)
    finally:
        server.kill()


def test_aio_open_connection_to_a_closed_port_raises_connection_refused(sdk):
    stack, _ = sdk

    async def main():
        await vfstack.aio.open_connection(PEER, 9, stack=stack)

    with pytest.raises(ConnectionRefusedError):
        asyncio.run(main())


def test_aio_a_half_closed_idle_connection_does_not_spin_the_loop(sdk):
    """After EOF both ways the socket hangs up; while the handler keeps it
    open doing nothing, the loop must sleep, not poll the hang-up."""
    stack, port = sdk
    idle_cpu: list[float] = []

    async def handler(reader, writer):
        assert await reader.read() == b"bye"  # to EOF
        writer.write(b"ok")
        writer.write_eof()
        await asyncio.sleep(0.3)  # let the FIN exchange finish
        started = time.process_time()
        await asyncio.sleep(1.0)
        idle_cpu.append(time.process_time() - started)
        writer.close()

    async def main():
        server = await vfstack.aio.start_server(handler, "0.0.0.0", 7010, stack=stack)
        reply = await asyncio.to_thread(
            in_netns, port.netns, sys.executable, "-c",
            "import socket; s = socket.create_connection(('198.18.0.10', 7010));"
            "s.sendall(b'bye'); s.shutdown(socket.SHUT_WR); print(s.recv(10))",
            timeout=30,
        )  # fmt: skip
        assert reply.stdout.strip() == "b'ok'"
        while not idle_cpu:
            await asyncio.sleep(0.1)
        server.close()

    asyncio.run(main())
    assert idle_cpu[0] < 0.2, f"{idle_cpu[0]:.2f} CPU-s in 1 s of idling"


def test_aio_a_reader_that_paused_resumes_without_news_from_the_stack(sdk):
    """The soak's zero-window stall (seed 22): a StreamReader that stops
    reading pauses its transport; the RX ring fills and the stack, with no
    room to move bytes into, has nothing new to say. Reading again resumes
    the transport, and that alone must bring the bytes already in the ring,
    as asyncio's own transports do, with no other traffic on the session."""
    stack, port = sdk
    size = 1 * MB
    proc = spawn_in_netns(
        port.netns, sys.executable, "-m", "tests.support.kernel_peer", "serve",
        "--port", "5003", "--mode", "source", "--bytes", str(size), "--timeout", "30",
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert json.loads(proc.stdout.readline()) == {"listening": 5003}

    async def main():
        reader, writer = await vfstack.aio.open_connection(PEER, 5003, stack=stack, limit=4096)
        await asyncio.sleep(1.0)  # not reading: the transport pauses, the ring fills
        received = await asyncio.wait_for(reader.read(), 20)  # to EOF
        writer.close()
        return len(received)

    try:
        assert asyncio.run(main()) == size
    finally:
        proc.kill()
        proc.wait()
