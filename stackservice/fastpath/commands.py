"""Commands: what one validated command record does to a session's sockets.

`execute` runs one command (vfstack.shm OP_*) against the engine's
in-process socket API and posts its answer: a RESULT with 0 or -errno for
the ops that have one, SLOT_FREED after a CLOSE, nothing for TX and RX_DONE
(they only mark the slot for the pass's pump). A well-formed command that
makes no sense (a FREE slot, a wrong state) is answered with the errno the
kernel would give; the record itself was checked by `decode_command`.
"""

from __future__ import annotations

import errno
import secrets

from vfstack.shm import (
    EVENT_RESULT,
    EVENT_SLOT_FREED,
    OP_BIND,
    OP_CLOSE,
    OP_CONNECT,
    OP_GETSOCKOPT,
    OP_LISTEN,
    OP_RX_DONE,
    OP_SETSOCKOPT,
    OP_SHUTDOWN,
    OP_SOCKET,
    OP_TX,
    SLOT_CONNECTED,
    SLOT_CONNECTING,
    SLOT_LISTENING,
    SLOT_OPEN,
    Command,
)

from stackservice.fastpath import sockopts
from stackservice.fastpath.sockets import Slot, SocketTable
from stackservice.tcp.engine import (
    EPHEMERAL_FIRST,
    EPHEMERAL_LAST,
    Listener,
    SocketError,
    SocketOptions,
)
from stackservice.tcp.tcb import Tcb

__all__ = ["execute"]


def execute(sockets: SocketTable, cmd: Command, now: int) -> None:
    """Run one command and post what the app is owed for it."""
    op = cmd.op
    if op == OP_SOCKET:
        _socket(sockets, cmd.request)
        return
    slot = cmd.slot
    s = sockets.slots[slot]
    if s is None:
        if op in (OP_TX, OP_RX_DONE, OP_CLOSE):
            return  # no reply to give; a stale or confused app, harmless
        sockets.post(EVENT_RESULT, slot, cmd.request, -errno.EBADF)
        return
    if op in (OP_TX, OP_RX_DONE):
        sockets.dirty.add(slot)
    elif op == OP_CLOSE:
        _close(sockets, slot, s, now)
    elif op == OP_BIND:
        sockets.post(EVENT_RESULT, slot, cmd.request, *_bind(sockets, s, cmd.a1, cmd.a2))
    elif op == OP_LISTEN:
        sockets.post(EVENT_RESULT, slot, cmd.request, *_listen(sockets, slot, s, cmd.a1))
    elif op == OP_CONNECT:
        result = _connect(sockets, slot, s, cmd.a1, cmd.a2, now)
        sockets.post(EVENT_RESULT, slot, cmd.request, *result)
    elif op == OP_SHUTDOWN:
        sockets.post(EVENT_RESULT, slot, cmd.request, _shutdown(sockets, slot, s, cmd.a1, now))
    elif op == OP_SETSOCKOPT:
        try:
            sockopts.setsockopt(sockets, s, cmd.a1, cmd.a2, cmd.a64, now)
        except SocketError as exc:
            sockets.post(EVENT_RESULT, slot, cmd.request, -exc.errno)
            return
        sockets.post(EVENT_RESULT, slot, cmd.request, 0)
    elif op == OP_GETSOCKOPT:
        try:
            value = sockopts.getsockopt(sockets, slot, s, cmd.a1, cmd.a2)
        except SocketError as exc:
            sockets.post(EVENT_RESULT, slot, cmd.request, -exc.errno)
            return
        sockets.post(EVENT_RESULT, slot, cmd.request, 0, a64=value)


def _socket(sockets: SocketTable, request: int) -> None:
    if not sockets.free:
        sockets.post(EVENT_RESULT, 0, request, -errno.EMFILE)
        return
    slot = sockets.new_slot(SLOT_OPEN)
    sockets.post(EVENT_RESULT, slot, request, 0, sockets.generation[slot])


def _bind(sockets: SocketTable, s: Slot, ip: int, port: int) -> tuple[int, int]:
    engine = sockets.engine
    if s.state != SLOT_OPEN or s.port:
        return -errno.EINVAL, 0
    if ip not in (0, engine.local_ip):
        return -errno.EADDRNOTAVAIL, 0
    if port == 0:
        port = _free_port(sockets)
        if not port:
            return -errno.EADDRINUSE, 0
    elif port in engine.listeners:
        return -errno.EADDRINUSE, 0
    s.port = port
    return 0, port


def _free_port(sockets: SocketTable) -> int:
    """A random ephemeral port nobody listens on (0: none found)."""
    listeners = sockets.engine.listeners
    for _ in range(64):
        port = EPHEMERAL_FIRST + secrets.randbelow(EPHEMERAL_LAST - EPHEMERAL_FIRST + 1)
        if port not in listeners:
            return port
    return 0


def _listen(sockets: SocketTable, slot: int, s: Slot, backlog: int) -> tuple[int, int]:
    if s.state == SLOT_LISTENING:
        s.sock.backlog = backlog  # as Linux: listen() again changes the backlog
        return 0, s.port
    if s.state != SLOT_OPEN:
        return -errno.EINVAL, 0
    port = s.port or _free_port(sockets)
    if not port:
        return -errno.EADDRINUSE, 0
    try:
        listener = sockets.engine.listen(port, backlog, owner=sockets)
    except SocketError as exc:
        return -exc.errno, 0
    options = listener.options
    for name in SocketOptions.__slots__:
        setattr(options, name, getattr(s.options, name))
    s.sock, s.port, s.state = listener, port, SLOT_LISTENING
    sockets.slot_of[listener.sock_id] = slot
    sockets.listening.add(slot)
    sockets.segment.set_slot(slot, SLOT_LISTENING, 0, sockets.generation[slot], 0)
    return 0, port


def _connect(
    sockets: SocketTable, slot: int, s: Slot, ip: int, port: int, now: int
) -> tuple[int, int]:
    if s.state == SLOT_CONNECTING:
        return -errno.EALREADY, 0
    if s.state != SLOT_OPEN:
        return -(errno.EISCONN if s.state == SLOT_CONNECTED else errno.EINVAL), 0
    try:
        tcb = sockets.engine.connect(
            ip, port, now, owner=sockets, options=s.options, local_port=s.port
        )
    except SocketError as exc:
        return -exc.errno, 0
    s.sock, s.port, s.state = tcb, tcb.local_port, SLOT_CONNECTING
    s.error, s.eof, s.readiness = 0, False, 0
    sockets.slot_of[tcb.sock_id] = slot
    sockets.segment.set_slot(slot, SLOT_CONNECTING, 0, sockets.generation[slot], 0)
    return 0, tcb.local_port


def _shutdown(sockets: SocketTable, slot: int, s: Slot, how: int, now: int) -> int:
    tcb = s.sock
    if s.state not in (SLOT_CONNECTED, SLOT_CONNECTING) or not isinstance(tcb, Tcb):
        return -errno.ENOTCONN
    if how != 0:  # SHUT_WR / SHUT_RDWR: what the app wrote goes first
        sockets.drain_tx(slot, s, tcb, now)
    try:
        sockets.engine.shutdown(tcb, how, now)
    except SocketError as exc:
        return -exc.errno
    sockets.dirty.add(slot)
    return 0


def _close(sockets: SocketTable, slot: int, s: Slot, now: int) -> None:
    sock = s.sock
    engine = sockets.engine
    if isinstance(sock, Listener):
        engine.close_listener(sock, now)
    elif sock is not None:  # (a positive linger does not block: close has no reply)
        if s.linger == 0:  # SO_LINGER {1, 0}: the engine's close resets, as Linux
            sock.linger_zero = True
        elif s.state == SLOT_CONNECTED:
            sockets.drain_tx(slot, s, sock, now)
        engine.close(sock, now)
    if sock is not None:
        sockets.disown(sock)
    tx = sockets.segment.tx(slot)
    left = tx.readable()
    if left:
        tx.release(left)  # the stack discards what it could not send
    sockets.release_slot(slot)
    # Bytes the app has not read up to here are the closed connection's:
    # it drops them (Segment.drop_stale_rx) even if the slot is reused.
    sockets.post(EVENT_SLOT_FREED, slot, a64=sockets.segment.rx(slot).produced)
    for listening in sockets.listening:  # a free slot may unblock accepts
        sockets.dirty.add(listening)
