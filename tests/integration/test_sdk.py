"""The SDK (`import vfstack`) against a live instance, the Linux kernel as peer.

Python's own socket semantics are the specification: each test does what
an application would do with `socket`, through `vfstack.Stack.socket()`."""

from __future__ import annotations

import errno
import json
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import vfstack

from tests.support.netns import kernel_peer, spawn_in_netns

pytestmark = pytest.mark.root

STACK = "198.18.0.10"
PEER = "198.18.0.1"
ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20

TWO_CLIENTS = """
import socket
c1 = socket.create_connection(("198.18.0.10", 8080), timeout=20)
c2 = socket.create_connection(("198.18.0.10", 8080), timeout=20)
c1.sendall(b"one"); print(c1.recv(16).decode(), flush=True)
c2.sendall(b"two"); print(c2.recv(16).decode(), flush=True)
print("eof" if c1.recv(16) == b"" else "data", flush=True)
c2.sendall(b"again"); print(c2.recv(16).decode(), flush=True)
"""


def kernel_server(netns: str, port: int) -> subprocess.Popen:
    """`kernel_peer serve --mode echo` in the peer namespace, once it listens."""
    proc = spawn_in_netns(
        netns, sys.executable, "-m", "tests.support.kernel_peer", "serve",
        "--port", str(port), "--mode", "echo", "--timeout", "30",
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert json.loads(proc.stdout.readline()) == {"listening": port}
    return proc


def echo_one(listener: vfstack.Socket, errors: list) -> None:
    try:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def test_blocking_echo_server_in_a_thread_echoes_1mb_byte_exact(sdk):
    stack, port = sdk
    with stack.socket() as listener:
        listener.setsockopt(vfstack.SOL_SOCKET, vfstack.SO_REUSEADDR, 1)
        assert listener.getsockopt(vfstack.SOL_SOCKET, vfstack.SO_REUSEADDR) == 1
        listener.bind(("0.0.0.0", 8080))
        listener.listen(4096)
        assert listener.getsockname() == ("0.0.0.0", 8080)
        errors: list = []
        server = threading.Thread(target=echo_one, args=(listener, errors), daemon=True)
        server.start()
        result = kernel_peer(port.netns, "echo", "--port", "8080", "--bytes", str(MB), timeout=60)
        server.join(timeout=10)
    assert not errors
    assert not server.is_alive()
    assert result.get("bytes") == MB, result
    assert result["received_sha256"] == result["sent_sha256"]
    assert result["clean_eof"]


def test_nonblocking_accept_with_nothing_pending_raises_blocking_io_error(sdk):
    stack, _ = sdk
    with stack.socket() as listener:
        listener.bind(("", 8080))
        listener.listen(0)  # clamped to 1
        listener.setblocking(False)
        assert listener.gettimeout() == 0.0
        with pytest.raises(BlockingIOError) as caught:
            listener.accept()
        assert caught.value.errno == errno.EAGAIN


def test_connect_to_kernel_server_and_exchange_data(sdk):
    stack, port = sdk
    server = kernel_server(port.netns, 5001)
    try:
        with stack.socket() as sock:
            sock.setsockopt(vfstack.IPPROTO_TCP, vfstack.TCP_NODELAY, 1)
            sock.connect((PEER, 5001))
            assert sock.getpeername() == (PEER, 5001)
            assert sock.getsockname()[0] == STACK
            assert sock.getsockopt(vfstack.IPPROTO_TCP, vfstack.TCP_NODELAY) == 1
            payload = bytes(range(256)) * 400  # 100 KiB: more than one TX ring
            sock.sendall(payload)
            sock.shutdown(vfstack.SHUT_WR)
            received = bytearray()
            buffer = bytearray(8192)
            while n := sock.recv_into(buffer):
                received += buffer[:n]
            assert bytes(received) == payload
        out, _ = server.communicate(timeout=30)
        assert json.loads(out.strip().splitlines()[-1])["bytes"] == len(payload)
    finally:
        server.kill()


def test_connect_to_a_closed_port_is_refused(sdk):
    stack, _ = sdk
    with stack.socket() as sock:
        with pytest.raises(ConnectionRefusedError):
            sock.connect((PEER, 5999))
        assert sock.getsockopt(vfstack.SOL_SOCKET, vfstack.SO_ERROR) == 0  # read and cleared
    with stack.socket() as sock:
        assert sock.connect_ex((PEER, 5999)) == errno.ECONNREFUSED


def test_nonblocking_connect_then_recv_timeout(sdk):
    stack, port = sdk
    server = kernel_server(port.netns, 5001)
    try:
        with stack.socket() as sock:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError) as caught:
                sock.connect((PEER, 5001))
            assert caught.value.errno == errno.EINPROGRESS
            with pytest.raises(BlockingIOError):
                sock.recv(10)  # not yet readable
            sock.settimeout(0.2)
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                sock.recv(10)
            # Not before its time (poll rounds to ms), and by its own timer:
            # nothing else would wake it within 10 s (a bound, not a speed).
            assert 0.15 < time.monotonic() - start < 10
            assert sock.getpeername() == (PEER, 5001)
            sock.sendall(b"late")
            assert sock.recv(10) == b"late"
    finally:
        server.kill()


def test_a_wait_that_slept_long_stops_the_busy_poll(sdk):
    """The pump spins before sleeping only when its last sleep was as short
    as a spin (vfstack.sockets.stack): a 0.1 s wait for data that does not
    come leaves the next wait without a spin, instead of 50 µs of CPU each."""
    stack, port = sdk
    server = kernel_server(port.netns, 5002)
    try:
        with stack.socket() as sock:
            sock.connect((PEER, 5002))
            sock.settimeout(0.1)
            with pytest.raises(TimeoutError):
                sock.recv(10)
            assert stack._spin == 0.0
    finally:
        server.kill()


def test_an_idle_poll_0_does_not_wait_for_another_threads_socket_call(sdk):
    """poll(0) with nothing listed and nothing published takes no lock
    (vfstack.sockets.epoll): it answers while another thread holds the
    stack's, and still sees data once it arrives."""
    stack, port = sdk
    server = kernel_server(port.netns, 5003)
    try:
        with stack.socket() as sock, stack.epoll() as ep:
            sock.connect((PEER, 5003))
            ep.register(sock, select.EPOLLIN)
            assert ep.poll(0) == []
            held, release = threading.Event(), threading.Event()

            def hold_the_lock() -> None:
                with stack._lock:
                    held.set()
                    release.wait(30)

            holder = threading.Thread(target=hold_the_lock)
            holder.start()
            try:
                held.wait(10)
                answers: list = []
                poller = threading.Thread(target=lambda: answers.append(ep.poll(0)))
                poller.start()
                poller.join(10)  # a bound, not a speed: locked, it waits 30 s
                assert answers == [[]]
            finally:
                release.set()
                holder.join()
            sock.sendall(b"ping")
            assert ep.poll(10) == [(sock.fileno(), select.EPOLLIN)]
    finally:
        server.kill()


def test_send_after_close_raises_ebadf(sdk):
    stack, _ = sdk
    sock = stack.socket()
    assert sock.fileno() >= 0
    sock.close()
    sock.close()  # idempotent
    assert sock.fileno() == -1
    with pytest.raises(OSError) as caught:
        sock.send(b"x")
    assert caught.value.errno == errno.EBADF
    with pytest.raises(OSError) as caught:
        sock.recv(1)
    assert caught.value.errno == errno.EBADF
    with stack.socket() as unconnected, pytest.raises(OSError) as caught:
        unconnected.send(b"x")
    assert caught.value.errno == errno.ENOTCONN


def test_two_sockets_on_one_stack_closing_one_leaves_the_other_working(sdk):
    stack, port = sdk
    with stack.socket() as listener:
        listener.bind((STACK, 8080))
        listener.listen()
        peer = spawn_in_netns(
            port.netns, sys.executable, "-c", TWO_CLIENTS, stdout=subprocess.PIPE, text=True
        )
        try:
            listener.settimeout(20)
            first, addr1 = listener.accept()
            second, addr2 = listener.accept()
            assert addr1[0] == addr2[0] == PEER and addr1 != addr2
            assert first.fileno() != second.fileno()
            first.settimeout(20)
            second.settimeout(20)
            first.sendall(first.recv(16))
            second.sendall(second.recv(16))
            first.close()
            assert second.recv(16) == b"again"
            second.sendall(b"again")
            out, _ = peer.communicate(timeout=30)
            assert out.split() == ["one", "two", "eof", "again"]
            second.close()
        finally:
            peer.kill()


def test_socket_after_stack_close_raises_ebadf(sdk):
    stack, _ = sdk
    sock = stack.socket()
    stack.close()
    with pytest.raises(OSError) as caught:
        sock.bind(("", 1234))
    assert caught.value.errno == errno.EBADF
    with pytest.raises(OSError) as caught:
        stack.socket()
    assert caught.value.errno == errno.EBADF
