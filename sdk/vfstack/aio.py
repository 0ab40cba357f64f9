"""asyncio over vfstack: `start_server` and `open_connection` with asyncio's
own `StreamReader`/`StreamWriter`, on any running event loop.

    import asyncio, vfstack, vfstack.aio

    async def handle(reader, writer):
        writer.write(await reader.read(100)); await writer.drain(); writer.close()

    async def main():
        stack = vfstack.connect("unix:///run/vfstack/vf0.sock", app="aio")
        server = await vfstack.aio.start_server(handle, "0.0.0.0", 8080, stack=stack)
        async with server:
            await server.serve_forever()

How it plugs in: the loop watches the stack's doorbell (`Stack.fileno()`)
with `add_reader`. The session's event ring stays announced as sleeping
(`Stack._aio_driver`), so the stack rings once per batch of events; the reader
callback then polls an `Epoll` of the session and calls each transport,
which moves bytes between the socket's rings and its protocol as asyncio's
own selector transports do (read until EAGAIN, write what fits, wait for
EPOLLOUT with the rest, pause the protocol above the high-water mark).

When the session ends (the stack ended it or died), the doorbell hangs
up: the loop stops watching it, every transport loses its connection
(ConnectionResetError, after the bytes it had received) and every
`Server` closes, its `serve_forever()` raising `vfstack.StackGone`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import socket as _socket

from vfstack._errors import StackGone

__all__ = ["Server", "open_connection", "start_server"]

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_TROUBLE = select.EPOLLERR | select.EPOLLHUP
_READ_CHUNK = 256 * 1024
_HIGH_WATER = 64 * 1024


class _Driver:
    """The bridge between one Stack and one event loop."""

    def __init__(self, stack, loop: asyncio.AbstractEventLoop) -> None:
        self.stack, self.loop = stack, loop
        self.epoll = stack.epoll()
        self.handlers: dict[int, object] = {}  # slot -> callable(events)
        self._scheduled = False
        stack._aio_driver = self
        self.bell = stack.fileno()
        loop.add_reader(self.bell, self._wake, True)
        self._arm()

    def wake(self) -> None:
        """From any thread: events were dispatched behind the loop's back."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
            self.loop.call_soon_threadsafe(self._schedule)

    def watch(self, sock, mask: int, handler) -> None:
        slot = sock.fileno()
        if slot in self.handlers:
            self.epoll.modify(sock, mask)
        else:
            self.epoll.register(sock, mask)
        self.handlers[slot] = handler
        self._schedule()  # what is ready already: see modify

    def modify(self, sock, mask: int) -> None:
        """New interest; none at all takes the socket out of the Epoll (a
        hang-up is reported whatever the mask, and level-triggered, it
        would keep the loop spinning), as asyncio removes a reader."""
        if not mask:
            with contextlib.suppress(FileNotFoundError):
                self.epoll.unregister(sock)
            return
        try:
            self.epoll.modify(sock, mask)
        except FileNotFoundError:
            self.epoll.register(sock, mask)
        # The Epoll reports what is ready already at its next poll, but the
        # driver polls only when the doorbell rings. A transport resumed
        # over a full RX ring gets no news from the stack (it has no room to
        # move bytes into), so without a poll now it would wait for ever.
        self._schedule()

    def unwatch(self, sock) -> None:
        slot = sock.fileno()
        if self.handlers.pop(slot, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(sock)

    def _arm(self) -> None:
        """Ask for the doorbell; if events came meanwhile, run at once."""
        if self.stack.closed:
            return
        if not self.stack._sleep_begin():
            self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._wake)

    def _wake(self, readable: bool = False) -> None:
        """Dispatch; `readable`: called because the doorbell was."""
        self._scheduled = False
        stack = self.stack
        if stack.closed:  # Stack.close removed the reader
            return
        stack._sleep_end(readable)
        stack._driving = True
        try:
            found = self.epoll.poll(0)
            for slot, events in found:
                handler = self.handlers.get(slot)
                if handler is not None:
                    try:
                        handler(events)
                    except Exception as exc:  # one transport's bug: the loop stays armed
                        self.loop.call_exception_handler(
                            {"message": "vfstack.aio: a transport's event handler failed",
                             "exception": exc}
                        )  # fmt: skip
        finally:
            stack._driving = False
        if stack._ended is not None:  # hung up: readable for ever, rung by nobody
            self.loop.remove_reader(self.bell)
        if found:
            self._schedule()  # level-triggered leftovers: look again after other callbacks
        elif stack._ended is None:
            self._arm()


def _driver(stack) -> _Driver:
    loop = asyncio.get_running_loop()
    driver = stack._aio_driver
    if driver is None or driver.loop is not loop:
        driver = _Driver(stack, loop)
    return driver


class _StackTransport(asyncio.Transport):
    """A stream transport over one vfstack socket."""

    def __init__(self, driver: _Driver, sock, protocol, waiter=None) -> None:
        super().__init__(
            {"socket": sock, "sockname": sock.getsockname(), "peername": sock.getpeername()}
        )
        self._driver, self._loop = driver, driver.loop
        self._sock, self._protocol = sock, protocol
        self._buffer = bytearray()
        self._reading = True
        self._closing = False
        self._eof_written = False
        self._lost = False
        self._protocol_paused = False
        self._high, self._low = _HIGH_WATER, _HIGH_WATER // 4
        sock.setblocking(False)
        self._mask = _IN
        driver.watch(sock, _IN, self._on_events)
        self._loop.call_soon(protocol.connection_made, self)
        if waiter is not None:
            self._loop.call_soon(lambda: waiter.done() or waiter.set_result(None))

    # -- driven by the loop ------------------------------------------------

    def _on_events(self, events: int) -> None:
        if self._reading and events & (_IN | _TROUBLE):
            self._read_ready()
        if self._buffer and events & (_OUT | _TROUBLE):
            self._write_ready()

    def _read_ready(self) -> None:
        while self._reading and not self._lost:
            try:
                data = self._sock.recv(_READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                self._force_close(exc)
                return
            if not data:
                self._set_reading(False)
                if not self._protocol.eof_received():
                    self.close()
                return
            self._protocol.data_received(data)

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._buffer)
        except BlockingIOError:
            return
        except OSError as exc:
            self._force_close(exc)
            return
        del self._buffer[:sent]
        self._maybe_resume_protocol()
        if self._buffer:
            return
        self._update_mask()
        if self._closing:
            self._call_connection_lost(None)
        elif self._eof_written:
            self._shutdown_write()

    def _update_mask(self) -> None:
        mask = (_IN if self._reading else 0) | (_OUT if self._buffer else 0)
        if mask != self._mask and not self._lost:
            self._mask = mask
            self._driver.modify(self._sock, mask)

    def _set_reading(self, on: bool) -> None:
        self._reading = on
        self._update_mask()

    # -- asyncio.Transport -------------------------------------------------

    def write(self, data) -> None:
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._lost or self._closing or not data:
            return
        if not self._buffer:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._force_close(exc)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._buffer += data
            self._update_mask()
        else:
            self._buffer += data
        self._maybe_pause_protocol()

    def writelines(self, list_of_data) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        if not self._buffer:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(_socket.SHUT_WR)
        except OSError as exc:
            self._force_close(exc)

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._set_reading(False)
        if not self._buffer:
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        self._force_close(None)

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        if not self._closing:
            self._set_reading(False)

    def resume_reading(self) -> None:
        if not self._closing and not self._reading:
            self._set_reading(True)  # the modify re-checks what is there already

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        high = _HIGH_WATER if high is None else high
        low = high // 4 if low is None else low
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def get_protocol(self):
        return self._protocol

    def set_protocol(self, protocol) -> None:
        self._protocol = protocol

    # -- endings and flow control -------------------------------------------

    def _force_close(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        # A new buffer, not clear(): the failed send's traceback (in `exc`)
        # may still hold a memoryview of the old one, and resizing a
        # bytearray with views raises BufferError.
        self._buffer = bytearray()
        self._closing = True
        self._reading = False
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._driver.unwatch(self._sock)
            self._sock.close()

    def _maybe_pause_protocol(self) -> None:
        if not self._protocol_paused and len(self._buffer) > self._high:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and len(self._buffer) <= self._low:
            self._protocol_paused = False
            self._protocol.resume_writing()


def _streams(driver: _Driver, sock, limit: int, client_connected_cb=None, waiter=None):
    loop = driver.loop
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)
    transport = _StackTransport(driver, sock, protocol, waiter)
    return reader, protocol, transport


async def open_connection(
    host: str, port: int, *, stack, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect through `stack` (a `vfstack.Stack`), like `asyncio.open_connection`.

    Raises: ConnectionRefusedError, OSError (the errno Linux gives), as asyncio does.
    """
    driver = _driver(stack)
    loop = driver.loop
    sock = stack.socket()
    try:
        sock.setblocking(False)
        code = sock.connect_ex((host, port))
        if code == errno.EINPROGRESS:
            connected = loop.create_future()
            driver.watch(sock, _OUT, lambda _: connected.done() or connected.set_result(None))
            try:
                await connected
            finally:
                driver.unwatch(sock)
            code = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if code:
            raise OSError(code, f"Connect call failed {(host, port)}: {os.strerror(code)}")
        made = loop.create_future()
        reader, protocol, transport = _streams(driver, sock, limit, waiter=made)
        await made
    except BaseException:
        sock.close()
        raise
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class Server:
    """What `start_server` returns: the subset of `asyncio.Server` apps use."""

    def __init__(self, driver: _Driver, listener, client_connected_cb, limit: int) -> None:
        self._driver, self._listener = driver, listener
        self._callback, self._limit = client_connected_cb, limit
        self._closed = driver.loop.create_future()
        self._gone: StackGone | None = None  # why it closed by itself
        driver.watch(listener, _IN, self._accept_all)

    @property
    def sockets(self) -> tuple:
        return () if self._closed.done() else (self._listener,)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._driver.loop

    def is_serving(self) -> bool:
        return not self._closed.done()

    async def start_serving(self) -> None:
        """Serving starts in `start_server` already."""

    def _accept_all(self, _events: int) -> None:
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
                self._driver.loop.call_exception_handler(
                    {"message": "vfstack.aio: accept failed", "exception": exc}
                )
                return
            _streams(self._driver, sock, self._limit, self._callback)

    def close(self) -> None:
        """Stop listening; connections already accepted stay open (as asyncio's)."""
        if self._closed.done():
            return
        self._driver.unwatch(self._listener)
        self._listener.close()
        self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        """Serve until closed. Raises: vfstack.StackGone if the session ended."""
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


async def start_server(
    client_connected_cb,
    host: str = "0.0.0.0",
    port: int = 0,
    *,
    stack,
    backlog: int = 128,
    limit: int = 2**16,
) -> Server:
    """Listen through `stack`, like `asyncio.start_server`: for each
    connection `client_connected_cb(reader, writer)` (a coroutine becomes a task).
    """
    driver = _driver(stack)
    listener = stack.socket()
    try:
        listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(backlog)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return Server(driver, listener, client_connected_cb, limit)
