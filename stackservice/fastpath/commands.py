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
from stackservice.tcp.engine import Listener, SocketError, SocketOptions
from stackservice.tcp.tcb import Tcb

__all__ = ["execute"]


def execute(sockets: SocketTable, cmd: Command, now: int) -> None:
    """Run one command and post what the app is owed for it."""
    op = cmd.op
    slot = cmd.slot
    if op in (OP_TX, OP_RX_DONE):
        if sockets.slots[slot] is not None:  # else a stale or confused app: harmless
            sockets.dirty.add(slot)  # the pass pumps it
        return
    if op == OP_CLOSE:
        s = sockets.slots[slot]
        if s is not None:
            _close(sockets, slot, s, now)
        return
    try:  # the ops answered by a RESULT: 0 and (a1, a64), or -errno
        if op == OP_SOCKET:
            slot = _socket(sockets)
            a1, a64 = sockets.generation[slot], 0
        else:
            s = sockets.slots[slot]
            if s is None:
                raise SocketError(errno.EBADF)  # a FREE slot: as a closed fd
            a1, a64 = _ANSWERS[op](sockets, slot, s, cmd, now)
    except SocketError as exc:
        sockets.post(EVENT_RESULT, slot, cmd.request, -exc.errno)
        return
    sockets.post(EVENT_RESULT, slot, cmd.request, 0, a1, a64=a64)


# Each answering op: (sockets, slot, its entry, the command, now) -> (a1, a64)
# of its RESULT; a failure raises SocketError with the errno.


def _socket(sockets: SocketTable) -> int:
    """SOCKET: a new slot (its RESULT names it, a1 its generation); EMFILE
    when none is free, ENOBUFS when its rings would take the app's or the
    instance's shared memory over the limit (as Linux's socket() when out
    of buffer space)."""
    if not sockets.free:
        raise SocketError(errno.EMFILE)
    if not sockets.has_room():
        raise SocketError(errno.ENOBUFS)
    return sockets.new_slot(SLOT_OPEN)


def _bind(sockets: SocketTable, slot: int, s: Slot, cmd: Command, now: int) -> tuple[int, int]:
    """BIND a1 ip, a2 port (0: any free one); a1 = the port. As Linux, a
    port the app may not have is EACCES before one in use is EADDRINUSE
    (stackservice.fastpath.ports: privileged, or reserved to another app)."""
    engine = sockets.engine
    ip, port = cmd.a1, cmd.a2
    if s.state != SLOT_OPEN or s.port:
        raise SocketError(errno.EINVAL)
    if ip not in (0, engine.local_ip):
        raise SocketError(errno.EADDRNOTAVAIL)
    if port == 0:
        port = _free_port(sockets, now)
    else:
        refused = sockets.ports.check(port, sockets.uid, now)
        if refused:
            raise SocketError(refused)
        if port in engine.listeners:
            raise SocketError(errno.EADDRINUSE)
    s.port = port
    return port, 0


def _free_port(sockets: SocketTable, now: int) -> int:
    """A random ephemeral port of this worker's share nobody listens on
    and no other app keeps. Raises SocketError: EADDRINUSE."""
    engine, ports, uid = sockets.engine, sockets.ports, sockets.uid
    listeners, share = engine.listeners, engine.ports
    for _ in range(64):
        port = share.port(secrets.randbelow(share.count))
        if port not in listeners and ports.free_for(port, uid, now):
            return port
    raise SocketError(errno.EADDRINUSE)


def _listen(sockets: SocketTable, slot: int, s: Slot, cmd: Command, now: int) -> tuple[int, int]:
    """LISTEN a1 backlog; a1 = the port."""
    backlog = cmd.a1
    if s.state == SLOT_LISTENING:
        s.sock.backlog = backlog  # as Linux: listen() again changes the backlog
        return s.port, 0
    if s.state != SLOT_OPEN:
        raise SocketError(errno.EINVAL)
    port = s.port or _free_port(sockets, now)
    listener = sockets.engine.listen(port, backlog, owner=sockets)
    options = listener.options
    for name in SocketOptions.__slots__:
        setattr(options, name, getattr(s.options, name))
    s.sock, s.port, s.state = listener, port, SLOT_LISTENING
    sockets.slot_of[listener.sock_id] = slot
    sockets.listening.add(slot)
    sockets.segment.set_slot(slot, SLOT_LISTENING, 0, sockets.generation[slot], 0)
    return port, 0


def _connect(sockets: SocketTable, slot: int, s: Slot, cmd: Command, now: int) -> tuple[int, int]:
    """CONNECT a1 ip, a2 port; a1 = the local port (RESULT 0: in progress)."""
    if s.state == SLOT_CONNECTING:
        raise SocketError(errno.EALREADY)
    if s.state != SLOT_OPEN:
        raise SocketError(errno.EISCONN if s.state == SLOT_CONNECTED else errno.EINVAL)
    tcb = sockets.engine.connect(
        cmd.a1, cmd.a2, now, owner=sockets, options=s.options, local_port=s.port
    )
    s.sock, s.port, s.state = tcb, tcb.local_port, SLOT_CONNECTING
    s.error, s.eof, s.readiness = 0, False, 0
    sockets.slot_of[tcb.sock_id] = slot
    sockets.segment.set_slot(slot, SLOT_CONNECTING, 0, sockets.generation[slot], 0)
    return tcb.local_port, 0


def _shutdown(sockets: SocketTable, slot: int, s: Slot, cmd: Command, now: int) -> tuple[int, int]:
    """SHUTDOWN a1 how."""
    tcb = s.sock
    how = cmd.a1
    if s.state not in (SLOT_CONNECTED, SLOT_CONNECTING) or not isinstance(tcb, Tcb):
        raise SocketError(errno.ENOTCONN)
    if how != 0:  # SHUT_WR / SHUT_RDWR: what the app wrote goes first
        sockets.drain_tx(slot, s, tcb, now)
    sockets.engine.shutdown(tcb, how, now)
    sockets.dirty.add(slot)
    return 0, 0


def _setsockopt(
    sockets: SocketTable, slot: int, s: Slot, cmd: Command, now: int
) -> tuple[int, int]:
    """SETSOCKOPT a1 level, a2 name, a64 value."""
    sockopts.setsockopt(sockets, s, cmd.a1, cmd.a2, cmd.a64, now)
    return 0, 0


def _getsockopt(
    sockets: SocketTable, slot: int, s: Slot, cmd: Command, now: int
) -> tuple[int, int]:
    """GETSOCKOPT a1 level, a2 name; a64 = the value."""
    return 0, sockopts.getsockopt(sockets, slot, s, cmd.a1, cmd.a2)


_ANSWERS = {
    OP_BIND: _bind,
    OP_LISTEN: _listen,
    OP_CONNECT: _connect,
    OP_SHUTDOWN: _shutdown,
    OP_SETSOCKOPT: _setsockopt,
    OP_GETSOCKOPT: _getsockopt,
}


def _close(sockets: SocketTable, slot: int, s: Slot, now: int) -> None:
    """CLOSE: no RESULT; SLOT_FREED tells when the slot may be reused."""
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
    produced = sockets.segment.rx(slot).produced
    sockets.post(EVENT_SLOT_FREED, slot, 0, 0, 0, 0, 0, produced)  # a64: produced
    for listening in sockets.listening:  # a free slot may unblock accepts
        sockets.dirty.add(listening)
