"""API parity: the same test functions against Python's `socket`/`select.epoll`
on the Linux kernel and against vfstack's `Stack.socket()`/`Stack.epoll()`.

Both variants sit at the same place on the same wire of a private emulated
port: the kernel variant's "app" lives in a namespace on a macvlan of the
PF (198.18.0.50), the vfstack variant's app is a session of a stack on VF 0
(198.18.0.10). The far end is always a kernel socket in the peer namespace,
so every difference a test sees is a difference between the two APIs.

vfstack runs twice: with one worker, and with two (`--workers 2`), where
the app's Stack is a session per worker merged into one (listeners on
both, sockets on either, one Epoll over both).
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
import time

import pytest
import vfstack

from stackservice.nic.netconf import inside_netns
from tests.support.netns import kernel_host
from tests.support.stack import running_stack

pytestmark = pytest.mark.root

PORT = 8080
PEER_ONLY_PORT = 9  # nothing listens there in the peer namespace


class Api:
    """The app-side API under test plus a kernel peer to talk to it."""

    def __init__(self, name: str, app_ip: str, peer_ns: str, socket_fn, epoll_fn, app_ns=None):
        self.name, self.app_ip, self.peer_ns = name, app_ip, peer_ns
        self._socket_fn, self._epoll_fn, self._app_ns = socket_fn, epoll_fn, app_ns
        self._opened: list = []

    def _in_app_ns(self):
        return inside_netns(self._app_ns) if self._app_ns else contextlib.nullcontext()

    def socket(self):
        with self._in_app_ns():
            sock = self._socket_fn()
        self._opened.append(sock)
        return sock

    def epoll(self):
        ep = self._epoll_fn()
        self._opened.append(ep)
        return ep

    def listener(self, backlog: int = 16):
        s = self.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", PORT))
        s.listen(backlog)
        return s

    def peer_connect(self, port: int = PORT):
        with inside_netns(self.peer_ns):
            sock = socket.create_connection((self.app_ip, port), timeout=10)
        self._opened.append(sock)
        return sock

    def peer_listener(self):
        with inside_netns(self.peer_ns):
            sock = socket.create_server(("0.0.0.0", 0))
        self._opened.append(sock)
        return sock

    def accepted(self, listener):
        """(app-side connection, kernel peer socket)."""
        peer = self.peer_connect()
        conn, _ = listener.accept()
        self._opened.append(conn)
        return conn, peer

    def close(self) -> None:
        for thing in reversed(self._opened):
            with contextlib.suppress(OSError):
                thing.close()


@pytest.fixture(params=["kernel", "vfstack", "vfstack-2-workers"])
def api(request, emulated_port):
    if request.param == "kernel":
        with kernel_host(emulated_port) as host_ns:
            api = Api(
                "kernel", "198.18.0.50", emulated_port.netns,
                socket.socket, select.epoll, app_ns=host_ns,
            )  # fmt: skip
            try:
                yield api
            finally:
                api.close()
        return
    workers = ("--workers", "2") if request.param == "vfstack-2-workers" else ()
    with running_stack(emulated_port.vf(0), "198.18.0.10/24", "vf0", *workers) as instance:
        stack = vfstack.connect(f"unix://{instance.run_dir / 'vf0.sock'}", app="parity")
        api = Api("vfstack", "198.18.0.10", emulated_port.netns, stack.socket, stack.epoll)
        try:
            yield api
        finally:
            api.close()
            stack.close()


def events_until(ep, wanted: int, timeout: float = 5.0) -> int:
    """Poll `ep` (one socket registered) until its events include `wanted`
    or `timeout` passes; returns the last events reported."""
    deadline = time.monotonic() + timeout
    events = 0
    while time.monotonic() < deadline and not events & wanted:
        found = ep.poll(1)
        events = found[0][1] if found else 0
    return events


def recv_exactly(sock, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


# ----------------------------------------------------------------- sockets


def test_echo_through_accepted_socket(api):
    listener = api.listener()
    conn, peer = api.accepted(listener)
    payload = bytes(range(256)) * 400
    peer.sendall(payload)
    conn.sendall(recv_exactly(conn, len(payload)))
    assert recv_exactly(peer, len(payload)) == payload
    assert conn.getpeername() == peer.getsockname()
    assert conn.getsockname() == (api.app_ip, PORT)


def test_half_close_from_peer_then_app_still_sends(api):
    conn, peer = api.accepted(api.listener())
    peer.sendall(b"request")
    peer.shutdown(socket.SHUT_WR)
    assert recv_exactly(conn, 7) == b"request"
    assert conn.recv(100) == b""
    conn.sendall(b"answer after your FIN")
    conn.close()
    assert recv_exactly(peer, 100) == b"answer after your FIN"


def test_recv_after_peer_close_returns_empty_bytes(api):
    conn, peer = api.accepted(api.listener())
    peer.close()
    conn.settimeout(5)
    assert conn.recv(10) == b""
    assert conn.recv(10) == b""


def test_accept_timeout_raises_timeout_error(api):
    listener = api.listener()
    listener.settimeout(0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        listener.accept()
    assert time.monotonic() - started >= 0.15


def test_recv_timeout_raises_timeout_error_and_socket_stays_usable(api):
    conn, peer = api.accepted(api.listener())
    conn.settimeout(0.2)
    with pytest.raises(TimeoutError):
        conn.recv(10)
    peer.sendall(b"late")
    assert conn.recv(10) == b"late"


def test_sendall_timeout_raises_timeout_error_when_the_peer_reads_nothing(api):
    """The timeout covers the wait for room: a peer that never reads fills
    its window and the send buffers, and sendall gives up after it."""
    conn, peer = api.accepted(api.listener())
    conn.settimeout(0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        conn.sendall(bytes(64 << 20))
    assert time.monotonic() - started >= 0.25
    peer.setblocking(False)
    assert peer.recv(1 << 16)  # what got through is there to read


def test_makefile_reads_lines_and_the_socket_closes_with_its_last_file(api):
    conn, peer = api.accepted(api.listener())
    conn.settimeout(5)
    reader, writer = conn.makefile("rb"), conn.makefile("wb")
    peer.sendall(b"first line\nsecond line\n")
    assert reader.readline() == b"first line\n"
    assert reader.readline() == b"second line\n"
    writer.write(b"answer\n")
    writer.flush()
    assert recv_exactly(peer, 7) == b"answer\n"
    conn.close()  # the files still hold it, as Python's sockets do
    assert conn.fileno() != -1
    reader.close()
    writer.close()
    assert conn.fileno() == -1
    peer.settimeout(5)
    assert peer.recv(10) == b""  # and then it is closed for real


def test_nonblocking_accept_with_nothing_pending_raises_blocking_io_error(api):
    listener = api.listener()
    listener.setblocking(False)
    with pytest.raises(BlockingIOError) as caught:
        listener.accept()
    assert caught.value.errno == errno.EAGAIN


def test_nonblocking_recv_with_nothing_pending_raises_blocking_io_error(api):
    conn, _ = api.accepted(api.listener())
    conn.setblocking(False)
    with pytest.raises(BlockingIOError):
        conn.recv(10)


def test_connect_to_a_closed_port_is_refused(api):
    sock = api.socket()
    sock.settimeout(5)
    with pytest.raises(ConnectionRefusedError):
        sock.connect(("198.18.0.1", PEER_ONLY_PORT))
    assert api.socket().connect_ex(("198.18.0.1", PEER_ONLY_PORT)) == errno.ECONNREFUSED


def test_send_after_reset_raises_connection_reset_error(api):
    conn, peer = api.accepted(api.listener())
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # RST
    ep = api.epoll()
    ep.register(conn, select.EPOLLIN)
    assert events_until(ep, select.EPOLLERR) & select.EPOLLERR  # it arrived; not read yet
    with pytest.raises(ConnectionResetError):
        conn.send(b"x")
    with pytest.raises(BrokenPipeError):
        conn.send(b"x")


def test_close_with_so_linger_zero_resets_the_peer(api):
    conn, peer = api.accepted(api.listener())
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == struct.pack("ii", 1, 0)
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER) == 1
    conn.close()
    peer.settimeout(5)
    with pytest.raises(ConnectionResetError):
        peer.recv(10)


def test_so_linger_is_inherited_by_accepted_sockets(api):
    listener = api.listener()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 7))
    conn, _ = api.accepted(listener)
    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == struct.pack("ii", 1, 7)


def test_socket_options_round_trip(api):
    sock = api.socket()
    for level, name, value in (
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4),
    ):
        sock.setsockopt(level, name, value)
        assert sock.getsockopt(level, name) == value, name
    with pytest.raises(OSError) as caught:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 0)
    assert caught.value.errno == errno.EINVAL


def test_bind_to_a_port_in_use_raises_eaddrinuse(api):
    api.listener()
    other = api.socket()
    with pytest.raises(OSError) as caught:
        other.bind(("0.0.0.0", PORT))
    assert caught.value.errno == errno.EADDRINUSE


def test_recv_on_unconnected_socket_raises_enotconn(api):
    with pytest.raises(OSError) as caught:
        api.socket().recv(1)
    assert caught.value.errno == errno.ENOTCONN


def test_operations_on_closed_socket_raise_ebadf(api):
    sock = api.socket()
    sock.close()
    assert sock.fileno() == -1
    with pytest.raises(OSError) as caught:
        sock.bind(("0.0.0.0", 0))
    assert caught.value.errno == errno.EBADF


# ------------------------------------------------------------------- epoll


def test_epoll_level_triggered_reports_a_pending_connection_until_accepted(api):
    listener = api.listener()
    listener.setblocking(False)
    ep = api.epoll()
    ep.register(listener, select.EPOLLIN)
    assert ep.poll(0) == []
    api.peer_connect()
    assert ep.poll(5) == [(listener.fileno(), select.EPOLLIN)]
    assert ep.poll(0) == [(listener.fileno(), select.EPOLLIN)]  # still pending
    conn, _ = listener.accept()
    api._opened.append(conn)
    assert ep.poll(0) == []


def test_epoll_edge_triggered_reports_data_once_per_arrival(api):
    conn, peer = api.accepted(api.listener())
    conn.setblocking(False)
    ep = api.epoll()
    ep.register(conn, select.EPOLLIN | select.EPOLLET)
    ep.poll(0)  # whatever registration found
    peer.sendall(b"first")
    assert ep.poll(5) == [(conn.fileno(), select.EPOLLIN)]
    assert ep.poll(0.2) == []  # unread, but no new edge
    peer.sendall(b"second")
    assert ep.poll(5) == [(conn.fileno(), select.EPOLLIN)]
    assert recv_exactly(conn, 11) == b"firstsecond"


def test_epoll_oneshot_disables_until_modify(api):
    conn, peer = api.accepted(api.listener())
    ep = api.epoll()
    ep.register(conn, select.EPOLLIN | select.EPOLLONESHOT)
    peer.sendall(b"data")
    assert ep.poll(5) == [(conn.fileno(), select.EPOLLIN)]
    assert ep.poll(0.2) == []
    ep.modify(conn, select.EPOLLIN | select.EPOLLONESHOT)
    assert ep.poll(5) == [(conn.fileno(), select.EPOLLIN)]


def test_epoll_reports_writable_and_peer_half_close(api):
    conn, peer = api.accepted(api.listener())
    ep = api.epoll()
    ep.register(conn, select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP)
    assert ep.poll(5) == [(conn.fileno(), select.EPOLLOUT)]
    peer.shutdown(socket.SHUT_WR)
    events = events_until(ep, select.EPOLLRDHUP)
    assert events == select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP


def test_epoll_register_twice_and_unknown_fds_raise_like_linux(api):
    sock = api.socket()
    ep = api.epoll()
    ep.register(sock, select.EPOLLIN)
    with pytest.raises(FileExistsError):
        ep.register(sock, select.EPOLLIN)
    ep.unregister(sock)
    with pytest.raises(FileNotFoundError):
        ep.modify(sock, select.EPOLLIN)
    with pytest.raises(FileNotFoundError):
        ep.unregister(sock)
    ep.close()
    with pytest.raises(ValueError):
        ep.poll(0)


def test_epoll_forgets_a_closed_socket(api):
    conn, peer = api.accepted(api.listener())
    ep = api.epoll()
    ep.register(conn, select.EPOLLIN)
    peer.sendall(b"x")
    assert ep.poll(5) != []
    conn.close()
    assert ep.poll(0.1) == []


def test_epoll_maxevents_limits_and_rotates_level_triggered_reports(api):
    listener = api.listener()
    ep = api.epoll()
    pairs = [api.accepted(listener) for _ in range(3)]
    for conn, peer in pairs:
        ep.register(conn, select.EPOLLIN)
        peer.sendall(b"x")
    fds = {conn.fileno() for conn, _ in pairs}
    seen: set[int] = set()
    deadline = time.monotonic() + 5
    while seen != fds and time.monotonic() < deadline:
        found = ep.poll(1, maxevents=1)
        assert len(found) <= 1
        seen.update(fd for fd, _ in found)
    assert seen == fds
