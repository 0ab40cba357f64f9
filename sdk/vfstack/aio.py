"""asyncio over vfstack: servers and connections on any asyncio event loop,
at the level of protocols (`create_server`, `create_connection`) and of
streams (`start_server`, `open_connection`), and one line that moves an
existing app or framework over (`install`, `new_event_loop`, `loop_factory`).

    import asyncio, vfstack, vfstack.aio

    async def handle(reader, writer):
        writer.write(await reader.read(100)); await writer.drain(); writer.close()

    async def main():
        stack = vfstack.connect("unix:///run/vfstack/vf0.sock", app="aio")
        server = await vfstack.aio.start_server(handle, "0.0.0.0", 8080, stack=stack)
        async with server:
            await server.serve_forever()

Moving an app: `install(stack)` makes the running loop's `create_server`,
`create_connection` (and so asyncio's `start_server`, `open_connection`)
and `sock_*` calls go through the instance for the addresses it owns or
reaches, and through the kernel for the others:
- a server whose host is the instance's address or a wildcard (None,
  "", "0.0.0.0") listens on the instance;
- a connection to an address on the instance's subnet, or anywhere but
  loopback, link-local and multicast when the instance has a gateway,
  leaves through the instance;
- a socket of the stack given as `sock=` is always the instance's.
`new_event_loop(stack)` is a new loop with that done, `loop_factory(stack)`
a factory of such loops (asyncio.Runner, uvicorn). Frameworks that make
their client sockets themselves (aiohttp's connector) take
`socket_factory(stack)`. The lines for aiohttp, uvicorn and websockets
are in the README. TLS (`ssl=`) on the instance's connections is not
supported: such a call raises ValueError.

Transports are vfstack.\\_aio_transport's: `get_extra_info("socket")` is
the `vfstack.Socket` itself (setsockopt, getsockopt, getpeername), write
buffer limits and flow control, pause/resume reading, `write_eof` and
`abort` behave as asyncio's selector transports.

When the session ends (the stack ended it or died), the doorbell hangs
up: the loop stops watching it, every transport loses its connection
(ConnectionResetError, after the bytes it had received) and every
`Server` closes, its `serve_forever()` raising `vfstack.StackGone`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import select
import socket as _socket

from vfstack._aio_transport import Driver, StackTransport, connect, driver_for, wait_ready
from vfstack._errors import StackGone
from vfstack.sockets.socket import Socket

__all__ = [
    "Server",
    "create_connection",
    "create_server",
    "install",
    "loop_factory",
    "new_event_loop",
    "open_connection",
    "socket_factory",
    "start_server",
]

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_WILDCARDS = (None, "", "0.0.0.0")


# ---------------------------------------------------------------- protocols


async def create_connection(
    protocol_factory, host: str | None = None, port: int | None = None, *, stack,
    local_addr: tuple[str, int] | None = None, sock: Socket | None = None,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:  # fmt: skip
    """Connect through `stack` (a `vfstack.Stack`) like
    `loop.create_connection`: to (host, port), or over `sock`, a connected
    socket of the stack. Returns (transport, protocol) once the protocol's
    `connection_made` has run.

    Raises: ConnectionRefusedError, TimeoutError, OSError (the errno Linux gives).
    """
    driver = driver_for(stack)
    if sock is None:
        sock = stack.socket()
        try:
            sock.setblocking(False)
            if local_addr is not None:
                sock.bind(local_addr)
            await connect(driver, sock, (host, port))
        except BaseException:
            sock.close()
            raise
    elif host is not None or port is not None or local_addr is not None:
        raise ValueError("host/port/local_addr and sock can not be specified at the same time")
    made = driver.loop.create_future()
    protocol = protocol_factory()
    transport = StackTransport(driver, sock, protocol, made)
    try:
        await made
    except BaseException:
        transport.close()
        raise
    return transport, protocol


class Server:
    """What `create_server` returns: `asyncio.Server`'s interface over one
    listening socket of the stack (`sockets`, `close`, `wait_closed`,
    `serve_forever`, `close_clients`, async with)."""

    def __init__(self, driver: Driver, listener: Socket, protocol_factory, serving: bool) -> None:
        self._driver, self._listener = driver, listener
        self._protocol_factory = protocol_factory
        self._clients: set[StackTransport] = set()
        self._closed = driver.loop.create_future()
        self._gone: StackGone | None = None  # why it closed by itself
        self._serving = False
        if serving:
            self._start()

    @property
    def sockets(self) -> tuple:
        return () if self._closed.done() else (self._listener,)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._driver.loop

    def is_serving(self) -> bool:
        return self._serving and not self._closed.done()

    def _start(self) -> None:
        if not self._serving and not self._closed.done():
            self._serving = True
            self._driver.watch(self._listener, _IN, self._accept_all)

    async def start_serving(self) -> None:
        self._start()

    def _accept_all(self, _events: int) -> None:
        loop = self._driver.loop
        while not self._closed.done():
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except StackGone as exc:
                self._gone = exc
                self.close()
                return
            except OSError as exc:
                loop.call_exception_handler(
                    {"message": "vfstack.aio: accept failed", "exception": exc}
                )
                return
            try:
                protocol = self._protocol_factory()
            except Exception as exc:  # the app's factory: this connection only
                sock.close()
                loop.call_exception_handler(
                    {"message": "vfstack.aio: the protocol factory failed", "exception": exc}
                )
                continue
            self._clients.add(StackTransport(self._driver, sock, protocol, server=self))

    def _detach(self, transport: StackTransport) -> None:
        self._clients.discard(transport)

    def close(self) -> None:
        """Stop listening; connections already accepted stay open (as asyncio's)."""
        if self._closed.done():
            return
        self._driver.unwatch(self._listener)
        self._listener.close()
        self._closed.set_result(None)

    def close_clients(self) -> None:
        for transport in list(self._clients):
            transport.close()

    def abort_clients(self) -> None:
        for transport in list(self._clients):
            transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        """Serve until closed. Raises: vfstack.StackGone if the session ended."""
        self._start()
        try:
            await asyncio.shield(self._closed)
        finally:
            self.close()
        if self._gone is not None:
            raise self._gone

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()
        await self.wait_closed()


async def create_server(
    protocol_factory, host: str | None = "0.0.0.0", port: int = 0, *, stack,
    sock: Socket | None = None, backlog: int = 100, start_serving: bool = True,
) -> Server:  # fmt: skip
    """Listen through `stack` like `loop.create_server`: on (host, port)
    (None or "" is "0.0.0.0"), or on `sock`, a bound or listening socket of
    the stack. Each connection gets a protocol from `protocol_factory()`.
    """
    driver = driver_for(stack)
    own = sock is None
    listener = stack.socket() if own else sock
    try:
        if own:
            listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            listener.bind((host or "0.0.0.0", port or 0))
        listener.listen(backlog)
        listener.setblocking(False)
    except BaseException:
        if own:
            listener.close()
        raise
    return Server(driver, listener, protocol_factory, start_serving)


# ---------------------------------------------------------------- streams


def _stream_protocol(loop, limit: int, client_connected_cb) -> asyncio.StreamReaderProtocol:
    # With a callback, the protocol keeps its reader alive itself.
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)


async def open_connection(
    host: str | None = None, port: int | None = None, *, stack, limit: int = 2**16, **kwds
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect through `stack`, like `asyncio.open_connection` (`kwds`:
    `create_connection`'s).

    Raises: ConnectionRefusedError, OSError (the errno Linux gives), as asyncio does.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)  # holds it weakly only
    transport, _ = await create_connection(lambda: protocol, host, port, stack=stack, **kwds)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def start_server(
    client_connected_cb, host: str | None = "0.0.0.0", port: int = 0, *, stack,
    limit: int = 2**16, **kwds,
) -> Server:  # fmt: skip
    """Listen through `stack`, like `asyncio.start_server`: for each
    connection `client_connected_cb(reader, writer)` (a coroutine becomes
    a task). `kwds`: `create_server`'s.
    """
    loop = asyncio.get_running_loop()
    factory = functools.partial(_stream_protocol, loop, limit, client_connected_cb)
    return await create_server(factory, host, port, stack=stack, **kwds)


# ---------------------------------------------------------------- routing


def reaches(stack, host: str) -> bool:
    """Whether a connection to the IPv4 address `host` leaves through the
    instance: on its subnet, or, if it has a gateway, anywhere but
    loopback, link-local, multicast and the unspecified address."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    if address in stack.network:
        return True
    return stack.gateway is not None and not (
        address.is_loopback or address.is_link_local or address.is_multicast
        or address.is_unspecified
    )  # fmt: skip


def _no_tls(ssl) -> None:
    if ssl:
        raise ValueError("vfstack.aio: TLS (ssl=) is not supported on the instance's connections")


class _Routes:
    """The loop methods `install` replaces: the instance's for what it owns
    or reaches, the loop's own (`kernel`) for the rest."""

    NAMES = (
        "create_server", "create_connection", "sock_connect", "sock_accept",
        "sock_recv", "sock_recv_into", "sock_sendall",
    )  # fmt: skip

    def __init__(self, stack, loop: asyncio.AbstractEventLoop) -> None:
        self.stack = stack
        self.kernel = {name: getattr(loop, name) for name in self.NAMES}

    def _serves_here(self, host) -> bool:
        hosts = [host] if host is None or isinstance(host, str) else list(host)
        here = [h in _WILDCARDS or h == self.stack.local_ip for h in hosts]
        if any(here) and not all(here):
            raise ValueError(
                f"vfstack.aio: {hosts!r} mixes the instance's address with others; "
                "start one server for each"
            )
        return all(here)

    async def _destination(self, host, port, family: int) -> tuple[str, int] | None:
        """The address to reach through the instance, None if the kernel's."""
        if family not in (0, _socket.AF_INET) or host is None:
            return None
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, family=_socket.AF_INET, type=_socket.SOCK_STREAM
            )
        except OSError:
            return None  # the kernel path raises the same
        for *_, address in infos:
            if reaches(self.stack, address[0]):
                return address[0], address[1]
        return None

    async def create_server(
        self, protocol_factory, host=None, port=None, *, sock=None, ssl=None, family=0,
        backlog=100, start_serving=True, **kwds,
    ) -> Server | asyncio.AbstractServer:  # fmt: skip
        if isinstance(sock, Socket) or (
            sock is None and family in (0, _socket.AF_INET) and self._serves_here(host)
        ):
            _no_tls(ssl)
            host = None if sock is not None else host
            return await create_server(
                protocol_factory, host, port or 0, stack=self.stack, sock=sock,
                backlog=backlog, start_serving=start_serving,
            )  # fmt: skip
        return await self.kernel["create_server"](
            protocol_factory, host, port, sock=sock, ssl=ssl, family=family, backlog=backlog,
            start_serving=start_serving, **kwds,
        )  # fmt: skip

    async def create_connection(
        self, protocol_factory, host=None, port=None, *, sock=None, ssl=None, family=0,
        local_addr=None, **kwds,
    ):  # fmt: skip
        if isinstance(sock, Socket):
            _no_tls(ssl)
            return await create_connection(protocol_factory, stack=self.stack, sock=sock)
        if sock is None:
            address = await self._destination(host, port, family)
            if address is not None:
                _no_tls(ssl)
                return await create_connection(
                    protocol_factory, *address, stack=self.stack, local_addr=local_addr
                )
        return await self.kernel["create_connection"](
            protocol_factory, host, port, sock=sock, ssl=ssl, family=family,
            local_addr=local_addr, **kwds,
        )  # fmt: skip

    async def sock_connect(self, sock, address) -> None:
        if not isinstance(sock, Socket):
            return await self.kernel["sock_connect"](sock, address)
        await connect(driver_for(self.stack), sock, address)

    async def _when_ready(self, sock, mask: int, attempt):
        """`attempt()` on non-blocking `sock` until it does not block."""
        driver = driver_for(self.stack)
        while True:
            try:
                return attempt()
            except BlockingIOError:
                await wait_ready(driver, sock, mask)

    async def sock_accept(self, sock):
        if not isinstance(sock, Socket):
            return await self.kernel["sock_accept"](sock)
        conn, address = await self._when_ready(sock, _IN, sock.accept)
        conn.setblocking(False)
        return conn, address

    async def sock_recv(self, sock, nbytes: int) -> bytes:
        if not isinstance(sock, Socket):
            return await self.kernel["sock_recv"](sock, nbytes)
        return await self._when_ready(sock, _IN, lambda: sock.recv(nbytes))

    async def sock_recv_into(self, sock, buf) -> int:
        if not isinstance(sock, Socket):
            return await self.kernel["sock_recv_into"](sock, buf)
        return await self._when_ready(sock, _IN, lambda: sock.recv_into(buf))

    async def sock_sendall(self, sock, data) -> None:
        if not isinstance(sock, Socket):
            return await self.kernel["sock_sendall"](sock, data)
        view = memoryview(data).cast("B")
        while view:
            sent = await self._when_ready(sock, _OUT, functools.partial(sock.send, view))
            view = view[sent:]


def install(stack, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.AbstractEventLoop:
    """Route `loop`'s (default: the running loop's) servers and connections
    through `stack` for the addresses the instance owns or reaches (see the
    module's text); everything else stays the kernel's. For asyncio's own
    loops (not uvloop's, whose methods cannot be replaced). Installing
    again on the same loop changes the stack. Returns the loop."""
    loop = asyncio.get_running_loop() if loop is None else loop
    routes = getattr(loop, "_vfstack_routes", None)
    if routes is not None:
        routes.stack = stack
        return loop
    routes = _Routes(stack, loop)
    for name in _Routes.NAMES:
        setattr(loop, name, getattr(routes, name))
    loop._vfstack_routes = routes
    return loop


def new_event_loop(stack) -> asyncio.AbstractEventLoop:
    """A new asyncio loop with `install(stack)` done: for
    `aiohttp.web.run_app(app, loop=...)` and code that makes its own loop."""
    return install(stack, asyncio.new_event_loop())


def loop_factory(stack):
    """A factory of `new_event_loop(stack)` loops: for
    `asyncio.Runner(loop_factory=...)`, `asyncio.run(..., loop_factory=...)`
    (Python 3.12+) and `uvicorn.run(app, loop=...)`."""
    return functools.partial(new_event_loop, stack)


def socket_factory(stack):
    """For clients that make their sockets themselves, as aiohttp's
    `TCPConnector(socket_factory=...)`: given an address info (family,
    type, proto, canonname, sockaddr), a socket of the stack if the
    instance reaches sockaddr, else a kernel socket. The loop must have
    `install(stack)` done, to connect and wrap the stack's sockets."""

    def make(addr_info):
        family, kind, proto, _, address = addr_info
        if family == _socket.AF_INET and reaches(stack, address[0]):
            return stack.socket()
        return _socket.socket(family, kind, proto)

    return make
