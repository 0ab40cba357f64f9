"""The bridge between a vfstack session and an asyncio event loop, and the
stream transport over one vfstack socket (vfstack.aio builds its public
API on these).

How it plugs in: the loop watches the stack's doorbell (`Stack.fileno()`)
with `add_reader`. The session's event ring stays announced as sleeping
(`Stack._aio_driver`), so the stack rings once per batch of events; the reader
callback then polls an `Epoll` of the session and calls each watcher (a
transport, a listener, a one-off wait), and a transport moves bytes between
its socket's rings and its protocol as asyncio's own selector transports do
(read until EAGAIN, write what fits, wait for EPOLLOUT with the rest, pause
the protocol above the high-water mark).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import socket as _socket

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_TROUBLE = select.EPOLLERR | select.EPOLLHUP
_READ_CHUNK = 256 * 1024
_HIGH_WATER = 64 * 1024


class Driver:
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


def driver_for(stack) -> Driver:
    loop = asyncio.get_running_loop()
    driver = stack._aio_driver
    if driver is None or driver.loop is not loop:
        driver = Driver(stack, loop)
    return driver


class StackTransport(asyncio.Transport):
    """A stream transport over one vfstack socket."""

    def __init__(self, driver: Driver, sock, protocol, waiter=None, server=None) -> None:
        super().__init__(
            {"socket": sock, "sockname": sock.getsockname(), "peername": sock.getpeername()}
        )
        self._driver, self._loop = driver, driver.loop
        self._sock, self._protocol = sock, protocol
        self._server = server  # told when the connection is lost (Server.close_clients)
        self._buffer = bytearray()
        self._reading = True
        self._closing = False
        self._eof_written = False
        self._lost = False
        self._protocol_paused = False
        self._high, self._low = _HIGH_WATER, _HIGH_WATER // 4
        sock.setblocking(False)
        self._mask: int | None = None  # the interest the driver has; None: not watched yet
        self._loop.call_soon(protocol.connection_made, self)
        self._loop.call_soon(self._start_watching)
        if waiter is not None:
            self._loop.call_soon(lambda: waiter.done() or waiter.set_result(None))

    def _start_watching(self) -> None:
        """After `connection_made`, as asyncio adds its reader then: no data
        reaches a protocol before it is told of its transport."""
        if self._lost:
            return
        self._mask = _IN
        self._driver.watch(self._sock, _IN, self._on_events)
        self._update_mask()  # what connection_made asked for: reading paused, a write left over

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
        if self._mask is not None and mask != self._mask and not self._lost:
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
            if self._server is not None:
                self._server._detach(self)

    def _maybe_pause_protocol(self) -> None:
        if not self._protocol_paused and len(self._buffer) > self._high:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and len(self._buffer) <= self._low:
            self._protocol_paused = False
            self._protocol.resume_writing()


async def wait_ready(driver: Driver, sock, mask: int) -> int:
    """Until `sock` reports one of `mask` (or trouble): the events."""
    ready = driver.loop.create_future()
    driver.watch(sock, mask, lambda events: ready.done() or ready.set_result(events))
    try:
        return await ready
    finally:
        driver.unwatch(sock)


async def connect(driver: Driver, sock, address: tuple[str, int]) -> None:
    """Connect non-blocking `sock`, as `loop.sock_connect` does.

    Raises: ConnectionRefusedError, TimeoutError, OSError: the errno Linux gives.
    """
    code = sock.connect_ex(address)
    if code == errno.EINPROGRESS:
        await wait_ready(driver, sock, _OUT)
        code = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
    if code:
        raise OSError(code, f"Connect call failed {address}: {os.strerror(code)}")
