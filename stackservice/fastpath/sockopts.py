"""Socket options: one table from (level, name) to how the option is
written and read, and the values it takes.

Levels and names are Linux's (Python's `socket` module has the same
numbers); a value is a command's `a64` (vfstack.shm OP_SETSOCKOPT; SO_LINGER
is `l_onoff | l_linger << 32` both ways). An option the table lacks, or a
write to a read-only one, is ENOPROTOOPT; a value out of the option's range
EINVAL; both raised as SocketError, as the kernel answers setsockopt(2).

Where a value lands: on a listener, in its SocketOptions, which the
connections it accepts inherit; on a slot that neither listens nor is
connected, in the slot's, applied at connect or listen; on a connection, in
the slot's and, at once, on the connection (`tcb`, None otherwise).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from stackservice.fastpath.sockets import Slot, SocketTable
from stackservice.tcp.engine import Listener, SocketError, SocketOptions
from stackservice.tcp.state import CLOSED
from stackservice.tcp.tcb import Tcb

__all__ = ["OPTIONS", "SocketOption", "getsockopt", "setsockopt"]

_INT_MAX = (1 << 31) - 1  # SO_SNDBUF / SO_RCVBUF are ints; above the clamp, clamped
_U64 = (1 << 64) - 1
_US = 1_000_000  # TCP_KEEPIDLE / TCP_KEEPINTVL are seconds, the engine counts µs

# (sockets, slot entry, the connection or None, where options land, value, now)
Write = Callable[[SocketTable, Slot, Tcb | None, SocketOptions, int, int], None]
# (sockets, slot, slot entry, the connection or None, where options land) -> value
Read = Callable[[SocketTable, int, Slot, Tcb | None, SocketOptions], int]


class SocketOption:
    """How one option is read and written (None: read-only), and the
    values a write takes (low .. high)."""

    __slots__ = ("read", "write", "low", "high")

    def __init__(self, read: Read, write: Write | None = None, low: int = 0, high: int = _U64):
        self.read = read
        self.write = write
        self.low = low
        self.high = high


def setsockopt(sockets: SocketTable, s: Slot, level: int, name: int, value: int, now: int) -> None:
    """Raises SocketError: ENOPROTOOPT (no such option, or read-only),
    EINVAL (value out of range)."""
    option = OPTIONS.get(level, _NONE).get(name)
    if option is None or option.write is None:
        raise SocketError(errno.ENOPROTOOPT)
    if not option.low <= value <= option.high:
        raise SocketError(errno.EINVAL)
    sock = s.sock
    tcb = sock if isinstance(sock, Tcb) and sock.state != CLOSED else None
    options = sock.options if isinstance(sock, Listener) else s.options
    option.write(sockets, s, tcb, options, value, now)


def getsockopt(sockets: SocketTable, slot: int, s: Slot, level: int, name: int) -> int:
    """Returns the value (encoded as a64). Raises SocketError: ENOPROTOOPT."""
    option = OPTIONS.get(level, _NONE).get(name)
    if option is None:
        raise SocketError(errno.ENOPROTOOPT)
    sock = s.sock
    tcb = sock if isinstance(sock, Tcb) else None
    options = sock.options if isinstance(sock, Listener) else s.options
    return option.read(sockets, slot, s, tcb, options)


# -- SOL_SOCKET ------------------------------------------------------------------


def _write_reuseaddr(sockets, s, tcb, options, value, now) -> None:
    s.reuseaddr = 1 if value else 0  # ports are never held after close here


def _read_reuseaddr(sockets, slot, s, tcb, options) -> int:
    return s.reuseaddr


def _write_keepalive(sockets, s, tcb, options, value, now) -> None:
    options.keepalive = bool(value)
    if tcb is not None:
        sockets.engine.set_keepalive(tcb, bool(value), now)


def _read_keepalive(sockets, slot, s, tcb, options) -> int:
    return int(tcb.keepalive if tcb is not None else options.keepalive)


def _write_sndbuf(sockets, s, tcb, options, value, now) -> None:
    value = min(value, sockets.engine.settings.max_socket_buffer)  # as Linux: wmem_max
    options.send_buffer = value
    if tcb is not None and tcb.send_buffer is not None:
        tcb.send_buffer.set_capacity(value)


def _read_sndbuf(sockets, slot, s, tcb, options) -> int:
    if tcb is not None and tcb.send_buffer is not None:
        return tcb.send_buffer.capacity
    return options.send_buffer or sockets.engine.settings.send_buffer


def _write_rcvbuf(sockets, s, tcb, options, value, now) -> None:
    value = min(value, sockets.engine.settings.max_socket_buffer)  # as Linux: rmem_max
    options.receive_buffer = value
    if tcb is not None and tcb.receive_buffer is not None:
        tcb.receive_buffer.set_capacity(value)


def _read_rcvbuf(sockets, slot, s, tcb, options) -> int:
    if tcb is not None and tcb.receive_buffer is not None:
        return tcb.receive_buffer.capacity
    return options.receive_buffer or sockets.engine.settings.receive_buffer


def _write_linger(sockets, s, tcb, options, value, now) -> None:
    seconds = value >> 32
    s.linger = seconds if value & 0xFFFFFFFF else -1


def _read_linger(sockets, slot, s, tcb, options) -> int:
    return 0 if s.linger < 0 else 1 | s.linger << 32


def _read_error(sockets, slot, s, tcb, options) -> int:
    code = s.error  # read and cleared, as the kernel does
    sockets.set_error(slot, s, 0)
    return code


# -- IPPROTO_TCP -----------------------------------------------------------------


def _write_nodelay(sockets, s, tcb, options, value, now) -> None:
    options.nodelay = bool(value)
    if tcb is not None:
        tcb.nodelay = bool(value)
        if value:
            sockets.engine.queue_data(tcb)  # Linux pushes what is pending


def _read_nodelay(sockets, slot, s, tcb, options) -> int:
    return int(tcb.nodelay if tcb is not None else options.nodelay)


def _write_keepidle(sockets, s, tcb, options, value, now) -> None:
    options.keepalive_idle = value * _US
    _rearm_keepalive(sockets, tcb, options, now)


def _write_keepintvl(sockets, s, tcb, options, value, now) -> None:
    options.keepalive_interval = value * _US
    _rearm_keepalive(sockets, tcb, options, now)


def _rearm_keepalive(sockets, tcb, options, now) -> None:
    if tcb is not None:
        sockets.engine.set_keepalive(
            tcb, tcb.keepalive, now, options.keepalive_idle, options.keepalive_interval
        )


def _read_keepidle(sockets, slot, s, tcb, options) -> int:
    us = tcb.keepalive_idle if tcb is not None else options.keepalive_idle
    return (us or sockets.engine.settings.keepalive_idle_us) // _US


def _read_keepintvl(sockets, slot, s, tcb, options) -> int:
    us = tcb.keepalive_interval if tcb is not None else options.keepalive_interval
    return (us or sockets.engine.settings.keepalive_interval_us) // _US


def _write_keepcnt(sockets, s, tcb, options, value, now) -> None:
    options.keepalive_count = value
    if tcb is not None:
        sockets.engine.set_keepalive(tcb, tcb.keepalive, now, count=value)


def _read_keepcnt(sockets, slot, s, tcb, options) -> int:
    count = tcb.keepalive_count if tcb is not None else options.keepalive_count
    return count or sockets.engine.settings.keepalive_probes


# level -> name -> option (two lookups, no key to build per command)
OPTIONS: dict[int, dict[int, SocketOption]] = {
    socket.SOL_SOCKET: {
        socket.SO_REUSEADDR: SocketOption(_read_reuseaddr, _write_reuseaddr),
        socket.SO_KEEPALIVE: SocketOption(_read_keepalive, _write_keepalive),
        socket.SO_SNDBUF: SocketOption(_read_sndbuf, _write_sndbuf, 1, _INT_MAX),
        socket.SO_RCVBUF: SocketOption(_read_rcvbuf, _write_rcvbuf, 1, _INT_MAX),
        # l_linger must fit an int: below 2**31 seconds
        socket.SO_LINGER: SocketOption(_read_linger, _write_linger, 0, (1 << 63) - 1),
        socket.SO_ERROR: SocketOption(_read_error),
    },
    socket.IPPROTO_TCP: {
        socket.TCP_NODELAY: SocketOption(_read_nodelay, _write_nodelay),
        socket.TCP_KEEPIDLE: SocketOption(_read_keepidle, _write_keepidle, 1, 32767),
        socket.TCP_KEEPINTVL: SocketOption(_read_keepintvl, _write_keepintvl, 1, 32767),
        socket.TCP_KEEPCNT: SocketOption(_read_keepcnt, _write_keepcnt, 1, 127),
    },
}
_NONE: dict[int, SocketOption] = {}
