"""A hostile application: attaches like any app, then attacks its stack
instance with what an app holds, for `--seconds`:

    python -m tests.support.hostile_app --control URL --attack KIND [--seconds S] [--seed N]

- `scribble`: random bytes over its whole shared-memory segment (ring
  indices, records, socket rings), ringing the stack's doorbell each time;
- `resize`: every change it can try on its segment's memfd: truncate it
  (to nothing, smaller, larger), grow it with fallocate, unseal it, punch
  holes in it, and the same through a second open of /proc/self/fd/N,
  while it drives its sockets so the stack keeps touching the segment;
- `ring`: rings the stack's doorbell as fast as it can, from two threads,
  and tops its counter up to the maximum;
- `hog`: takes all the shared memory it can: sockets in one session until
  refused, then sessions until refused, touching every page of its first
  segment; then holds it all for `--seconds`;
- `squat`: attaches again and again (gRPC Attach), never taking a
  session's descriptors, so as to hold every session the instance has;
- `list`: asks for every connection (ListConnections, no limit) without
  pause, from four threads;
- `ports`: tries to listen on each of `--ports` (comma-separated), as an
  app grabbing a port from its owner;
- `hoard`: asks for 64 MiB send and receive buffers on a listener on
  `--ports` (the first), prints {"listening": ..., what getsockopt says},
  then makes no call into its session for `--seconds` while its peers
  connect and send (its events wait, unread); then accepts every
  connection, reads them all to their ends and reports their SHA-256s;
- `scans`: holds every ephemeral port to `--target` (HOST:PORT, a peer
  that never acknowledges a close), prints {"holding": N}, then sends batches of 256
  connects to it and of 256 listener closes, each one pass's worth of
  commands, for `--seconds`.

Prints one JSON line: what it did, what the kernel refused, and whether
its session was still listed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import random
import socket
import threading
import time

import vfstack
from vfstack._control import ControlClient
from vfstack.shm import (
    APP_BELL,
    SEGMENT,
    STACK_BELL,
    Op,
    Segment,
    encode_command_into,
    redeem,
)
from vfstack.v1 import stack_pb2

FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


class RawSession:
    """A session attached through the public pieces (gRPC Attach, then the
    handoff), keeping the raw descriptors an SDK would not leave lying
    around."""

    def __init__(self, control: str) -> None:
        self.client = ControlClient(control)
        reply = self.client._unary(
            self.client._stub.Attach, stack_pb2.AttachRequest(app="hostile", pid=os.getpid())
        )
        self.session_id = reply.session_id
        fds = redeem(reply.handoff_path, reply.session_id, reply.token, 10.0)
        self.memfd, self.app_bell, self.stack_bell = fds[SEGMENT], fds[APP_BELL], fds[STACK_BELL]
        self.segment = Segment.open(os.dup(self.memfd))
        self.request = 0

    def command(self, op: int, slot: int = 0, a1: int = 0, a2: int = 0) -> None:
        ring = self.segment.commands
        if ring.reserve(1):
            self.request += 1
            encode_command_into(
                ring.data, ring.write_offset(0), op, slot, self.request, a1, a2, 0, 0, 0
            )
            ring.publish(1)
            os.eventfd_write(self.stack_bell, 1)
        self.segment.events.release(self.segment.events.available())

    def listed(self) -> bool:
        return any(s.session_id == self.session_id for s in self.client.sessions().sessions)


def scribble(args, rng: random.Random) -> dict:
    stack = vfstack.connect(args.control, app="hostile")
    # Some honest use first, so there are sockets and rings to corrupt.
    listener = stack.socket()
    listener.bind(("0.0.0.0", 6000))
    listener.listen(4)
    for _ in range(3):
        stack.socket()
    lane = stack._lanes[0]  # one worker: the session's only lane
    segment = lane.segment
    g = segment.geometry
    memory = segment._view
    size = len(memory)
    words = memory.cast("Q")  # ring indices are aligned u64s
    command_head = g.command_offset // 8
    event_tail = g.event_offset // 8 + 8
    tx_heads = [g.tx_offset(slot) // 8 for slot in range(4)]
    scribbles = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        move = rng.randrange(5)
        if move == 0:  # random bytes anywhere
            start = rng.randrange(0, size)
            length = min(rng.choice((1, 8, 64, 4096)), size - start)
            memory[start : start + length] = rng.randbytes(length)
        elif move == 1:  # garbage records, published with a plausible head
            data = g.command_offset + 192
            memory[data : data + 64 * 8] = rng.randbytes(64 * 8)
            words[command_head] = words[command_head] + rng.randrange(1, 9)
        elif move == 2:  # well-formed opcodes with wild arguments
            data = g.command_offset + 192 + (words[command_head] % g.command_slots) * 64
            memory[data : data + 64] = bytes([rng.choice(list(Op))]) + rng.randbytes(63)
            words[command_head] = words[command_head] + 1
        elif move == 3:  # a socket's TX ring claims more bytes than it holds
            words[rng.choice(tx_heads)] = rng.getrandbits(64)
        else:  # the consumer index of the event ring jumps
            words[event_tail] = rng.getrandbits(64)
        scribbles += 1
        lane.stack_bell.ring()
        time.sleep(0.001)
    listed = any(s.session_id == stack.session_id for s in stack._client.sessions().sessions)
    words.release()
    return {"scribbles": scribbles, "still_attached": listed}


def _try(change) -> str:
    """What the kernel said to one change: "done" or the errno's name."""
    try:
        change()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "done"


def resize(args, rng: random.Random) -> dict:
    session = RawSession(args.control)
    size = session.segment.geometry.file_bytes
    fds = [session.memfd]
    with contextlib.suppress(OSError):  # a second open file of the same memfd
        fds.append(os.open(f"/proc/self/fd/{session.memfd}", os.O_RDWR))
    outcomes: dict[str, set[str]] = {}
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        for fd in fds:
            for name, change in (
                ("truncate_to_0", lambda fd=fd: os.ftruncate(fd, 0)),
                ("truncate_smaller", lambda fd=fd: os.ftruncate(fd, size // 2)),
                ("truncate_larger", lambda fd=fd: os.ftruncate(fd, 2 * size)),
                ("fallocate_beyond", lambda fd=fd: os.posix_fallocate(fd, size, 1 << 20)),
                ("drop_seals", lambda fd=fd: fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0)),
                ("seal_writes", lambda fd=fd: fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 8)),
            ):
                outcomes.setdefault(name, set()).add(_try(change))
        # Allowed, and harmless to the stack: the pages it maps come back
        # as zeros (which it checks like any other bytes), never SIGBUS.
        start = rng.randrange(0, size // 4096) * 4096
        outcomes.setdefault("punch_hole", set()).add(
            _try(lambda s=start: _punch(session.memfd, s, 4096))
        )
        session.command(Op.SOCKET)  # keep the stack at the segment's pages
        time.sleep(0.002)
    return {
        "opens": len(fds),
        "refused": {name: sorted(seen) for name, seen in outcomes.items()},
        "size_after": os.fstat(session.memfd).st_size,
        "size": size,
        "still_attached": session.listed(),
    }


def _punch(fd: int, offset: int, length: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
        raise OSError(ctypes.get_errno(), "fallocate")


def ring(args, rng: random.Random) -> dict:
    session = RawSession(args.control)
    rings = [0, 0]
    stop = threading.Event()

    def hammer(k: int) -> None:
        fd = session.stack_bell
        while not stop.is_set():
            with contextlib.suppress(BlockingIOError):
                os.eventfd_write(fd, 1)
            rings[k] += 1

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + args.seconds
    topped = 0
    while time.monotonic() < deadline:
        try:
            os.eventfd_write(session.stack_bell, 2**64 - 2 - rng.randrange(4))
            topped += 1
        except BlockingIOError:
            pass
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    return {"rings": sum(rings), "topped_up": topped, "still_attached": session.listed()}


def hog(args, rng: random.Random) -> dict:
    report: dict = {"sockets": 0, "sessions": 0}
    first = vfstack.connect(args.control, app="hog")
    stacks, sockets = [first], []
    try:
        while True:
            sockets.append(first.socket())
    except OSError as exc:
        report["socket_refused"] = errno.errorcode.get(exc.errno, str(exc.errno))
    report["sockets"] = len(sockets)
    try:
        while len(stacks) < 1000:
            stacks.append(vfstack.connect(args.control, app="hog"))
    except vfstack.ControlError as exc:
        report["attach_refused"] = exc.code
    report["sessions"] = len(stacks)
    # Every page of the first segment, those of slots the stack never
    # committed too: written as they are (a fault in, the bytes unchanged).
    memory = first._lanes[0].segment._view
    for offset in range(0, len(memory), 4096):
        memory[offset] = memory[offset]
    report["pages_touched"] = len(memory) // 4096
    print(json.dumps({"holding": True}), flush=True)
    time.sleep(args.seconds)
    return report


def squat(args, rng: random.Random) -> dict:
    client = ControlClient(args.control)
    request = stack_pb2.AttachRequest(app="squatter", pid=os.getpid())
    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        try:
            client._unary(client._stub.Attach, request)
            code = "OK"
        except vfstack.ControlError as exc:
            code = exc.code
        outcomes[code] = outcomes.get(code, 0) + 1
    return {"attaches": outcomes}


def listing(args, rng: random.Random) -> dict:
    rows, calls, errors = [], [0], {}
    deadline = time.monotonic() + args.seconds

    def hammer() -> None:
        with ControlClient(args.control, timeout=30) as client:
            while time.monotonic() < deadline:
                try:
                    reply = client.connections()
                    rows.append(len(reply.connections))
                except vfstack.ControlError as exc:
                    errors[exc.code] = errors.get(exc.code, 0) + 1
                calls[0] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "calls": calls[0], "most_rows": max(rows, default=0), "errors": errors,
        "seconds": time.monotonic() - started,
    }  # fmt: skip


def ports(args, rng: random.Random) -> dict:
    outcomes = {}
    with vfstack.connect(args.control, app="grabber") as stack:
        for port in (int(p) for p in args.ports.split(",")):
            with stack.socket() as sock:
                try:
                    sock.bind(("0.0.0.0", port))
                    sock.listen(4)
                    outcomes[port] = "OK"
                except OSError as exc:
                    outcomes[port] = errno.errorcode.get(exc.errno, str(exc.errno))
    return {"listen": outcomes}


def scans(args, rng: random.Random) -> dict:
    """Every ephemeral port to `--target` held (connections closed as soon
    as they are up: the stack keeps each, an orphan, until its FIN is
    acknowledged or its orphan_retries are spent, about 100 s),
    then, without pause, a batch of 256 connects to that destination and
    one of 256 listeners closed, each batch one pass's worth of commands."""
    host, target_port = args.target.rsplit(":", 1)
    port, ip = int(target_port), int.from_bytes(socket.inet_aton(host), "big")
    stack = vfstack.connect(args.control, app="scanner")
    report: dict = {"held": 0, "connects": {}, "listeners_closed": 0}
    started, code = time.monotonic(), errno.EINPROGRESS
    while code == errno.EINPROGRESS and time.monotonic() < started + 90:  # none given up yet
        batch, epoll = [], stack.epoll()
        while len(batch) < 256:
            sock = stack.socket()
            sock.setblocking(False)
            code = sock.connect_ex((host, port))
            if code != errno.EINPROGRESS:
                sock.close()
                break
            epoll.register(sock, vfstack.EPOLLOUT)
            batch.append(sock)
        done: dict[int, int] = {}  # fd: events (level-triggered: again each poll)
        deadline = time.monotonic() + 30
        while len(done) < len(batch) and time.monotonic() < deadline:
            done.update(epoll.poll(1.0))
        report["held"] += sum(not e & (vfstack.EPOLLERR | vfstack.EPOLLHUP) for e in done.values())
        for sock in batch:
            sock.close()
        epoll.close()
    report["held_refused"] = errno.errorcode.get(code, str(code))  # EINPROGRESS: out of time
    report["seconds_to_hold"] = round(time.monotonic() - started, 1)
    print(json.dumps({"holding": report["held"]}), flush=True)
    sock = stack.socket()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        requests = [stack._submit(sock._lane, Op.CONNECT, sock._slot, ip, port) for _ in range(256)]
        results, last = stack._results, requests[-1]  # answered in order
        stack._wait(lambda: last in results, time.monotonic() + 60)  # noqa: B023
        for request in requests:
            result = results.pop(request).result
            name = errno.errorcode.get(-result, str(-result)) if result < 0 else "OK"
            report["connects"][name] = report["connects"].get(name, 0) + 1
        if "OK" in report["connects"]:  # a port came free: that socket is taken
            sock = stack.socket()
        listeners = [stack.socket() for _ in range(256)]
        for listener in listeners:
            listener.listen(16)
        for listener in listeners:
            listener.close()
        report["listeners_closed"] += len(listeners)
    return report


def hoard(args, rng: random.Random) -> dict:
    """Findings 6 and 10: the largest buffers anyone may ask for, and
    events never read while the peers fill them."""
    stack = vfstack.connect(args.control, app="hoarder")
    listener = stack.socket()
    for name in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        listener.setsockopt(socket.SOL_SOCKET, name, 64 << 20)
    listener.bind(("0.0.0.0", int(args.ports.split(",")[0])))
    listener.listen(128)
    got = {
        name: listener.getsockopt(socket.SOL_SOCKET, getattr(socket, name))
        for name in ("SO_SNDBUF", "SO_RCVBUF")
    }
    print(json.dumps({"listening": listener.getsockname()[1]} | got), flush=True)
    time.sleep(args.seconds)  # no call: the session's events wait unread
    listener.settimeout(5)  # every peer has connected long since
    conns = []
    with contextlib.suppress(TimeoutError):
        while True:
            conns.append(listener.accept()[0])
    # Read them all at once, as an app with an epoll does: their peers are
    # in RTO backoff from the drops, and one read after another would wait
    # out each one's backoff in turn.
    digests = {conn.fileno(): hashlib.sha256() for conn in conns}
    epoll = stack.epoll()
    for conn in conns:
        conn.setblocking(False)
        epoll.register(conn, vfstack.EPOLLIN)
    by_fd = {conn.fileno(): conn for conn in conns}
    deadline = time.monotonic() + 240
    while by_fd and time.monotonic() < deadline:
        for fd, _ in epoll.poll(1.0):
            conn = by_fd[fd]
            with contextlib.suppress(BlockingIOError):
                while chunk := conn.recv(65536):
                    digests[fd].update(chunk)
                epoll.unregister(conn)
                conn.close()
                del by_fd[fd]
    finished = sorted(d.hexdigest() for d in digests.values())
    return got | {"unfinished": len(by_fd), "digests": finished}


ATTACKS = {
    "scribble": scribble, "resize": resize, "ring": ring, "hog": hog, "squat": squat,
    "list": listing, "ports": ports, "scans": scans, "hoard": hoard,
}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--control", required=True)
    parser.add_argument("--attack", choices=sorted(ATTACKS), default="scribble")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ports", default="")
    parser.add_argument("--target", default="198.18.0.250:9999")
    args = parser.parse_args(argv)
    report = ATTACKS[args.attack](args, random.Random(args.seed))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
