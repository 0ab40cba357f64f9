"""Python servers as people write them, on vfstack: aiohttp, uvicorn with
Starlette, websockets and the standard library's ThreadingHTTPServer,
unmodified but for the one line that moves them (vfstack.aio,
vfstack.socketserver), driven by kernel clients from the peer namespace
(curl, ab with and without keep-alive, wrk, a websockets client); and
aiohttp's client and asyncio's streams against kernel servers. Bodies are
compared byte for byte, connections are closed by either side (ab without
keep-alive: the server closes first, with the SO_KEEPALIVE aiohttp sets),
and the instance counts no internal error."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading

import pytest
import vfstack
import vfstack.aio
from vfstack.examples.http_server import body
from vfstack.socketserver import ThreadingStackHTTPServer

from tests.integration.test_examples import example
from tests.integration.test_sdk import PEER, STACK, kernel_server
from tests.support.netns import in_netns, spawn_in_netns
from tests.support.process import stop
from tests.support.stack import running_stack

pytestmark = pytest.mark.root

MB = 1 << 20


@pytest.fixture
def served(emulated_port):
    """(instance, port): a stack instance on VF 0, checked for internal
    errors once the test is done with it."""
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0") as instance:
        yield instance, emulated_port
        errors = instance.counters().get("internal_errors", {})
        assert not any(errors.values()), errors


def control(instance) -> str:
    return f"unix://{instance.run_dir / 'vf0.sock'}"


def curl(netns: str, *args: str, timeout: float = 60) -> bytes:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-sS", "--fail", "--max-time", "30", *args],
        capture_output=True, timeout=timeout, check=True,
    )  # fmt: skip
    return done.stdout


def ab(netns: str, url: str, n: int, c: int, keep_alive: bool, kept: bool = True) -> str:
    """ab -n n -c c (-k: asking for keep-alive; `kept`: and getting it)."""
    extra = ["-k"] if keep_alive else []
    out = in_netns(
        netns, "ab", *extra, "-q", "-n", str(n), "-c", str(c), "-s", "20", url, timeout=240
    ).stdout
    assert re.search(rf"Complete requests:\s+{n}\b", out), out
    assert re.search(r"Failed requests:\s+0\b", out), out
    assert "Non-2xx" not in out, out
    if keep_alive and kept:
        assert re.search(rf"Keep-Alive requests:\s+{n}\b", out), out
    return out


def wrk(netns: str, url: str, connections: int = 32, seconds: int = 3) -> int:
    out = in_netns(
        netns, "wrk", "-t", "1", "-c", str(connections), "-d", str(seconds), url, timeout=60
    ).stdout
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    assert requests > 0, out
    return requests


def random_file(tmp_path, size: int):
    path = tmp_path / f"payload-{size}"
    path.write_bytes(os.urandom(size))
    return path


def http_battery(netns: str, base: str, tmp_path, size: int, http10_keep_alive: bool) -> None:
    """What every HTTP server here must survive, byte-exact: GET, a 1 MB
    POST echoed, ab short (the server closes first) and keep-alive (kept if
    the framework keeps HTTP/1.0 connections alive: uvicorn's h11 does
    not, on kernel sockets too), wrk (HTTP/1.1 keep-alive)."""
    assert curl(netns, f"{base}/") == body(size)
    payload = random_file(tmp_path, MB)
    echoed = curl(netns, "--data-binary", f"@{payload}", f"{base}/echo")
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload.read_bytes()).digest()
    ab(netns, f"{base}/", 2000, 16, keep_alive=False)
    ab(netns, f"{base}/", 4000, 16, keep_alive=True, kept=http10_keep_alive)
    wrk(netns, f"{base}/")


def serve_example(served, tmp_path, name: str, size: int, http10_keep_alive: bool, probe: str):
    """Run example `name` through `http_battery`, then GET `probe` (JSON);
    Ctrl-C must end it cleanly (exit 0). Returns the probe's answer."""
    instance, port = served
    base = f"http://{STACK}:8080"
    argv = ("--control", control(instance), "--port", "8080", "--size", str(size))
    with example(name, *argv) as app:
        http_battery(port.netns, base, tmp_path, size, http10_keep_alive)
        answer = json.loads(curl(port.netns, f"{base}/{probe}"))
        app.send_signal(2)  # Ctrl-C: the framework's graceful exit
        out, _ = app.communicate(timeout=20)
    assert app.returncode == 0, out
    return answer


def test_aiohttp_app_by_run_app_with_one_line(served, tmp_path):
    report = serve_example(served, tmp_path, "aiohttp_app", 100000, True, "socket")
    # aiohttp set both options on the vfstack socket itself, as on a kernel one.
    assert report["vfstack"] is True
    assert report["keepalive"] == 1 and report["nodelay"] == 1, report
    assert report["peer"].startswith(f"{PEER}:")


def test_starlette_on_uvicorn_with_one_line(served, tmp_path):
    # uvicorn's h11 keeps no HTTP/1.0 connection alive, on kernel sockets either.
    addresses = serve_example(served, tmp_path, "asgi_app", 5000, False, "addresses")
    assert addresses["local"] == f"{STACK}:8080"
    assert addresses["peer"].startswith(f"{PEER}:")


@contextlib.contextmanager
def loop_thread(stack):
    """A `vfstack.aio.new_event_loop(stack)` loop running in a thread;
    yields run(coroutine) -> its result."""
    loop = vfstack.aio.new_event_loop(stack)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    try:
        yield run
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def attached(served):
    """(instance, port, stack): an SDK session on the instance."""
    instance, port = served
    stack = vfstack.connect(control(instance), app="frameworks")
    try:
        yield instance, port, stack
    finally:
        stack.close()


WEBSOCKET_CLIENT = """
import json, os, sys
from websockets.sync.client import connect
sizes = [1, 125, 126, 65535, 65536, 1 << 20]
ok = 0
with connect("ws://198.18.0.10:8765", max_size=None) as ws:
    for size in sizes:
        message = os.urandom(size)
        ws.send(message)
        ok += ws.recv() == message
        ws.send("é" * size)
        ok += ws.recv() == "é" * size
with connect("ws://198.18.0.10:8765") as ws:  # the server closes this one
    ws.send("bye")
    try:
        ws.recv()
        closed = False
    except Exception as exc:
        closed = type(exc).__name__ == "ConnectionClosedOK"
print(json.dumps({"echoed": ok, "expected": 2 * len(sizes), "server_closed": closed}))
"""


def test_websockets_echo_server(attached):
    from websockets.asyncio.server import serve

    _, port, stack = attached

    async def echo(ws) -> None:
        async for message in ws:
            if message == "bye":
                await ws.close()
                return
            await ws.send(message)

    async def start():
        return await serve(echo, "0.0.0.0", 8765, max_size=None)

    async def finish(server) -> None:
        server.close()
        await server.wait_closed()

    with loop_thread(stack) as run:
        server = run(start())
        assert isinstance(server.sockets[0], vfstack.Socket)
        client = in_netns(port.netns, sys.executable, "-c", WEBSOCKET_CLIENT, timeout=120)
        run(finish(server))
    result = json.loads(client.stdout)
    assert result == {"echoed": result["expected"], "expected": 12, "server_closed": True}


def test_aiohttp_client_and_asyncio_streams_against_kernel_servers(attached, tmp_path):
    import aiohttp

    _, port, stack = attached
    served_file = random_file(tmp_path, 2 * MB)
    web = spawn_in_netns(
        port.netns, sys.executable, "-m", "http.server", "8000", "--bind", PEER,
        "--directory", str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    echo = kernel_server(port.netns, 5001)
    local = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)

    async def fetch() -> tuple[bytes, object]:
        connector = aiohttp.TCPConnector(socket_factory=vfstack.aio.socket_factory(stack))
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(100):  # the kernel server may not listen yet
                try:
                    async with session.get(f"http://{PEER}:8000/{served_file.name}") as response:
                        sock = response.connection.transport.get_extra_info("socket")
                        return await response.read(), sock
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)
        raise AssertionError("the kernel web server never answered")

    async def streams() -> tuple:
        # asyncio's own functions, through the routed loop: the peer through
        # the instance, loopback through the kernel.
        reader, writer = await asyncio.open_connection(PEER, 5001)
        writer.write(b"ping" * 1000)
        echoed = await reader.readexactly(4000)
        through = writer.get_extra_info("socket")
        writer.close()
        await writer.wait_closed()
        _, local_writer = await asyncio.open_connection(*local.server_address)
        kernel = type(local_writer.get_extra_info("socket")).__name__
        local_writer.close()
        return echoed, through, kernel

    try:
        with loop_thread(stack) as run:
            data, sock = run(fetch())
            echoed, through, kernel = run(streams())
    finally:
        local.server_close()
        stop(web)
        stop(echo)
    assert hashlib.sha256(data).digest() == hashlib.sha256(served_file.read_bytes()).digest()
    assert isinstance(sock, vfstack.Socket)
    assert echoed == b"ping" * 1000
    assert isinstance(through, vfstack.Socket)
    assert kernel == "TransportSocket"  # asyncio's wrapper of a kernel socket


def test_threading_http_server_from_the_standard_library(attached, tmp_path):
    _, port, stack = attached
    (tmp_path / "big").write_bytes(os.urandom(MB))
    (tmp_path / "small").write_bytes(body(1000))

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as ab -k asks

        def end_headers(self) -> None:
            if not self.close_connection:  # what an HTTP/1.0 client (ab -k) waits for
                self.send_header("Connection", "keep-alive")
            super().end_headers()

        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Handler, directory=str(tmp_path))
    server = ThreadingStackHTTPServer(("0.0.0.0", 8080), handler, stack=stack)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        assert isinstance(server.socket, vfstack.Socket)
        big = curl(port.netns, f"http://{STACK}:8080/big")
        assert big == (tmp_path / "big").read_bytes()
        ab(port.netns, f"http://{STACK}:8080/small", 1000, 8, keep_alive=False)
        ab(port.netns, f"http://{STACK}:8080/small", 2000, 8, keep_alive=True)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    assert not thread.is_alive()
    with stack.socket() as after:  # the session outlived the server
        assert after.fileno() >= 0


def test_install_keeps_other_addresses_on_the_kernel(attached):
    """A server on loopback stays the kernel's; one mixing the instance's
    address with another is refused (it cannot be both)."""
    _, _, stack = attached

    async def servers() -> tuple:
        loop = asyncio.get_running_loop()
        kernel = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        ours = await loop.create_server(asyncio.Protocol, STACK, 0)
        try:
            with pytest.raises(ValueError, match="mixes"):
                await loop.create_server(asyncio.Protocol, [STACK, "127.0.0.1"], 0)
            return type(kernel.sockets[0]).__name__, ours.sockets[0]
        finally:
            kernel.close()
            ours.close()

    with loop_thread(stack) as run:
        kernel, ours = run(servers())
    assert kernel == "TransportSocket"
    assert isinstance(ours, vfstack.Socket)


@pytest.mark.parametrize("name", ["aiohttp_app", "asgi_app"])
def test_a_framework_app_exits_when_its_stack_dies_to_be_restarted(emulated_port, name):
    """An app whose framework owns the loop cannot serve again on its own
    once its listener is gone: the example exits 1 for its supervisor
    (compose's restart policy) to start it again."""
    with (
        running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0") as instance,
        example(name, "--control", control(instance), "--port", "8080") as app,
    ):
        instance.kill()
        out, _ = app.communicate(timeout=30)
    assert app.returncode == 1, out
    assert "the stack ended this session" in out
