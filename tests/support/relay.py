"""A user-space impairing relay: this kernel has no netem.

Two layers, as the stack itself is built:

* A sans-IO core. `Impairment` decides, per frame and from a seeded PRNG,
  whether it is lost, duplicated, corrupted, held back (reordered) or
  delayed, and queues each surviving copy in a `Scheduler` keyed by release
  time. The caller passes `now` (int microseconds) and asks for
  `due(now)` and `next_deadline()`. Same seed + same frames in the same
  order -> same decisions; the decisions never depend on `now`.
* The relay process, `python -m tests.support.relay --a IFA --b IFB
  [--loss P] [--seed N] [--netns NS] ...`: AF_PACKET on both interfaces,
  one `Impairment` per direction (seed derived per direction), epoll with
  the next deadline as timeout, all ready frames drained per wake-up.
  SIGUSR1 prints the statistics as one JSON line on stdout; SIGTERM/SIGINT
  print them once more and exit 0. `ImpairedRelay` runs it as a context
  manager.

Corruption flips one bit of an IPv4 packet (past the Ethernet header and
inside the IPv4 total length), so the frame still reaches its MAC and every
corruption is detectable by the IPv4 header or L4 checksum. Other frames
(ARP) pass intact: a flipped ARP bit would silently poison a neighbour cache.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import heapq
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ETH_HEADER_LEN = 14
ETHERTYPE_IPV4 = 0x0800
IPV4_MIN_HEADER_LEN = 20
# A held-back frame is released after `reorder_gap` later frames have
# overtaken it, or after this long if no later frame comes.
DEFAULT_REORDER_HOLD_US = 10_000

DIRECTIONS = ("a_to_b", "b_to_a")


def direction_seed(seed: int, direction: str) -> int:
    """The PRNG seed of one direction, derived from the relay's seed."""
    digest = hashlib.sha256(f"{seed}/{direction}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in 0..1, got {value}")
    return float(value)


@dataclass(slots=True)
class DirectionStats:
    """Counters of one direction. `received` frames came in; `forwarded`
    copies went out (received - dropped + duplicated - pending when idle)."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    pending: int = 0
    tx_errors: int = 0
    overruns: int = 0  # frames the kernel dropped: the relay's socket buffer was full

    @classmethod
    def from_dict(cls, data: dict) -> DirectionStats:
        return cls(**{f.name: int(data.get(f.name, 0)) for f in dataclasses.fields(cls)})


@dataclass(frozen=True, slots=True)
class RelayStats:
    """Both directions of one relay; in `impaired_port`, a is the peer side."""

    a_to_b: DirectionStats
    b_to_a: DirectionStats

    @classmethod
    def from_json(cls, line: str) -> RelayStats:
        data = json.loads(line)
        return cls(*(DirectionStats.from_dict(data[d]) for d in DIRECTIONS))


class Scheduler:
    """Frames waiting for their release time, earliest first (FIFO on ties).

    A frame pushed with `overtakes=n` is held back: it leaves right after the
    n-th frame pushed later than it has left (it has then been overtaken),
    or at its `release_us` if that comes first.
    """

    __slots__ = ("_early", "_heap", "_held", "_seq", "reordered")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, bytes]] = []
        # seq -> [overtakes still needed, frame, base release, overtaken yet]
        self._held: dict[int, list] = {}
        self._early: set[int] = set()  # held seqs already released: stale heap entries
        self._seq = 0
        self.reordered = 0  # held frames that left after a later one

    def __len__(self) -> int:
        return len(self._heap) - len(self._early)

    def push(self, frame: bytes, release_us: int, overtakes: int = 0, base_us: int = 0) -> None:
        """Queue `frame` for `release_us`. With `overtakes` > 0 it is held
        until that many later frames have left (never before `base_us`)."""
        seq = self._seq
        self._seq = seq + 1
        heapq.heappush(self._heap, (release_us, seq, frame))
        if overtakes > 0:
            self._held[seq] = [overtakes, frame, base_us, False]

    def next_deadline(self) -> int | None:
        heap = self._heap
        while heap and heap[0][1] in self._early:
            self._early.discard(heapq.heappop(heap)[1])
        return heap[0][0] if heap else None

    def due(self, now: int) -> list[bytes]:
        """Every frame whose time has come, in release order."""
        out: list[bytes] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, frame = heapq.heappop(heap)
            if self._early and seq in self._early:
                self._early.discard(seq)
                continue
            if self._held:
                entry = self._held.pop(seq, None)
                if entry is not None and entry[3]:
                    self.reordered += 1
                out.append(frame)
                self._overtake(seq, now, out)
            else:
                out.append(frame)
        return out

    def _overtake(self, seq: int, now: int, out: list[bytes]) -> None:
        """Frame `seq` just left: it overtakes every frame held before it."""
        released = []
        for held_seq, entry in self._held.items():
            if held_seq > seq:  # insertion order is seq order
                break
            entry[0] -= 1
            entry[3] = True
            if entry[0] <= 0:
                released.append(held_seq)
        for held_seq in released:
            entry = self._held.pop(held_seq)
            self._early.add(held_seq)
            if entry[2] <= now:
                out.append(entry[1])
                self.reordered += 1
            else:  # its plain delay (jitter) is not over yet: wait for that, unheld
                heapq.heappush(self._heap, (entry[2], self._seq, entry[1]))
                self._seq += 1
                self.reordered += 1


class Impairment:
    """The sans-IO decisions for one direction of a link.

    Per frame, in this order: lost with probability `loss`; else one extra
    copy with probability `duplicate`; then per copy: one bit flipped with
    probability `corrupt` (IPv4 only, see the module docstring), released
    after `delay_us` +/- a uniform `jitter_us` (jitter may reorder, as
    netem's does), and held back with probability `reorder` until
    `reorder_gap` later frames have overtaken it (at most `reorder_hold_us`).

    Raises:
        ValueError: a probability outside 0..1 or a negative time.
    """

    __slots__ = (
        "_rng",
        "corrupt",
        "delay_us",
        "duplicate",
        "jitter_us",
        "loss",
        "reorder",
        "reorder_gap",
        "reorder_hold_us",
        "scheduler",
        "seed",
        "stats",
    )

    def __init__(
        self,
        loss: float = 0.0,
        reorder: float = 0.0,
        duplicate: float = 0.0,
        corrupt: float = 0.0,
        delay_us: int = 0,
        jitter_us: int = 0,
        seed: int = 0,
        reorder_gap: int = 1,
        reorder_hold_us: int = DEFAULT_REORDER_HOLD_US,
    ) -> None:
        self.loss = _probability("loss", loss)
        self.reorder = _probability("reorder", reorder)
        self.duplicate = _probability("duplicate", duplicate)
        self.corrupt = _probability("corrupt", corrupt)
        if min(delay_us, jitter_us, reorder_hold_us) < 0 or reorder_gap < 1:
            raise ValueError("times must be >= 0 and reorder_gap >= 1")
        self.delay_us = int(delay_us)
        self.jitter_us = int(jitter_us)
        self.reorder_gap = int(reorder_gap)
        self.reorder_hold_us = int(reorder_hold_us)
        self.seed = seed
        self._rng = random.Random(seed)
        self.scheduler = Scheduler()
        self.stats = DirectionStats()

    def offer(self, frame: bytes, now: int) -> int:
        """Take one frame arriving at `now`. Returns how many copies were queued."""
        rng = self._rng
        stats = self.stats
        stats.received += 1
        if self.loss and rng.random() < self.loss:
            stats.dropped += 1
            return 0
        copies = 1
        if self.duplicate and rng.random() < self.duplicate:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            self._queue(frame, now, rng)
        return copies

    def _queue(self, frame: bytes, now: int, rng: random.Random) -> None:
        if self.corrupt and rng.random() < self.corrupt:
            flipped = corrupt_one_bit(frame, rng)
            if flipped is not None:
                frame = flipped
                self.stats.corrupted += 1
        release = now + self.delay_us
        if self.jitter_us:
            release = max(now, release + rng.randint(-self.jitter_us, self.jitter_us))
        if self.reorder and rng.random() < self.reorder:
            self.scheduler.push(frame, release + self.reorder_hold_us, self.reorder_gap, release)
        else:
            self.scheduler.push(frame, release)

    def due(self, now: int) -> list[bytes]:
        """The copies to send at `now`, in order."""
        frames = self.scheduler.due(now)
        self.stats.forwarded += len(frames)
        return frames

    def next_deadline(self) -> int | None:
        return self.scheduler.next_deadline()

    def snapshot(self) -> DirectionStats:
        stats = dataclasses.replace(self.stats)
        stats.reordered = self.scheduler.reordered
        stats.pending = len(self.scheduler)
        return stats


def corrupt_one_bit(frame: bytes, rng: random.Random) -> bytes | None:
    """A copy of an IPv4 frame with one bit flipped inside the IPv4 packet,
    or None if the frame is not IPv4 (nothing a checksum would catch)."""
    if len(frame) < ETH_HEADER_LEN + IPV4_MIN_HEADER_LEN:
        return None
    if int.from_bytes(frame[12:14], "big") != ETHERTYPE_IPV4:
        return None
    end = len(frame)
    total = int.from_bytes(frame[ETH_HEADER_LEN + 2 : ETH_HEADER_LEN + 4], "big")
    if IPV4_MIN_HEADER_LEN <= total < end - ETH_HEADER_LEN:
        end = ETH_HEADER_LEN + total  # leave Ethernet padding alone
    bit = rng.randrange(ETH_HEADER_LEN * 8, end * 8)
    out = bytearray(frame)
    out[bit >> 3] ^= 1 << (bit & 7)
    return bytes(out)


# ---------------------------------------------------------------------------
# The relay process.

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
SO_SNDBUFFORCE = 32  # <asm-generic/socket.h>; not exported by Python 3.11
SO_RCVBUFFORCE = 33
SOCKET_BUFFER = 32 * 1024 * 1024
BATCH = 512  # frames read from one side per wake-up before serving the other
READY = "relay ready"


def _open_port(ifname: str) -> socket.socket:
    # Protocol 0 until bound, so no frame of another interface slips in first.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    for opt in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
        sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    sock.bind((ifname, ETH_P_ALL))
    index = socket.if_nametoindex(ifname)
    mreq = index.to_bytes(4, sys.byteorder) + PACKET_MR_PROMISC.to_bytes(2, sys.byteorder)
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq + bytes(10))
    sock.setblocking(False)
    return sock


class _Side:
    """One interface: frames read here go through `impairment` to `out`."""

    __slots__ = ("impairment", "out", "overruns", "sock", "tx_errors")

    def __init__(self, sock: socket.socket, impairment: Impairment) -> None:
        self.sock = sock
        self.impairment = impairment
        self.out: socket.socket = sock
        self.tx_errors = 0
        self.overruns = 0

    def drain(self, buf: bytearray, view: memoryview, now: int) -> int:
        """Read up to BATCH frames. Returns how many."""
        recv_into = self.sock.recv_into
        offer = self.impairment.offer
        count = 0
        while count < BATCH:
            try:
                n = recv_into(buf)
            except BlockingIOError:
                break
            offer(bytes(view[:n]), now)
            count += 1
        return count

    def flush(self, now: int) -> None:
        send = self.out.send
        for frame in self.impairment.due(now):
            try:
                send(frame)
            except OSError:  # ENOBUFS / EAGAIN: the wire dropped it
                self.tx_errors += 1

    def snapshot(self) -> dict:
        # struct tpacket_stats {tp_packets, tp_drops}; reading resets it.
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        self.overruns += int.from_bytes(raw[4:8], sys.byteorder)
        stats = self.impairment.snapshot()
        stats.tx_errors = self.tx_errors
        stats.overruns = self.overruns
        return dataclasses.asdict(stats)


def _now_us() -> int:
    return time.monotonic_ns() // 1000


def impairments_from_args(args: argparse.Namespace) -> dict[str, Impairment]:
    """One Impairment per direction; a direction not selected passes clean."""
    params = {
        "loss": args.loss,
        "reorder": args.reorder,
        "duplicate": args.duplicate,
        "corrupt": args.corrupt,
        "delay_us": args.delay_us,
        "jitter_us": args.jitter_us,
        "reorder_gap": args.reorder_gap,
        "reorder_hold_us": args.reorder_hold_us,
    }
    out = {}
    for direction in DIRECTIONS:
        seed = direction_seed(args.seed, direction)
        if args.direction in ("both", direction):
            out[direction] = Impairment(seed=seed, **params)
        else:
            out[direction] = Impairment(seed=seed)
    return out


def _poll_timeout(*sides: _Side) -> float:
    """Seconds until the earliest release (epoll rounds up to 1 ms), -1 if none."""
    deadlines = [d for d in (s.impairment.next_deadline() for s in sides) if d is not None]
    if not deadlines:
        return -1.0
    return max(0, min(deadlines) - _now_us()) / 1e6


def _print_stats(sides: dict[str, _Side], started: float) -> None:
    record = {d: side.snapshot() for d, side in sides.items()}
    record["elapsed_s"] = round(time.monotonic() - started, 6)
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    """The relay loop. Returns the exit status."""
    if args.netns:
        from pyroute2 import netns  # only the relay process changes namespace

        netns.setns(args.netns)
    impairments = impairments_from_args(args)
    sock_a, sock_b = _open_port(args.a), _open_port(args.b)
    ab = _Side(sock_a, impairments["a_to_b"])
    ba = _Side(sock_b, impairments["b_to_a"])
    ab.out, ba.out = sock_b, sock_a
    sides = {"a_to_b": ab, "b_to_a": ba}

    flags = {"stop": False, "dump": False}
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda *_: flags.__setitem__("stop", True))
    signal.signal(signal.SIGINT, lambda *_: flags.__setitem__("stop", True))
    signal.signal(signal.SIGUSR1, lambda *_: flags.__setitem__("dump", True))

    ep = select.epoll()
    by_fd = {sock_a.fileno(): ab, sock_b.fileno(): ba}
    for fd in (*by_fd, wake_r.fileno()):
        ep.register(fd, select.EPOLLIN)
    buf = bytearray(65536)
    view = memoryview(buf)
    started = time.monotonic()
    print(f"{READY} a={args.a} b={args.b}", file=sys.stderr, flush=True)

    while not flags["stop"]:
        ready = ep.poll(_poll_timeout(ab, ba))
        now = _now_us()
        for fd, _ in ready:
            side = by_fd.get(fd)
            if side is None:
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(4096)
            else:
                while side.drain(buf, view, now) == BATCH:
                    ab.flush(now)  # keep the other way moving under a flood
                    ba.flush(now)
        ab.flush(now)
        ba.flush(now)
        if flags["dump"]:
            flags["dump"] = False
            _print_stats(sides, started)
    _print_stats(sides, started)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.support.relay", description=__doc__)
    p.add_argument("--a", required=True, help="interface of side A")
    p.add_argument("--b", required=True, help="interface of side B")
    p.add_argument("--netns", help="network namespace to run in")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--reorder", type=float, default=0.0)
    p.add_argument("--duplicate", type=float, default=0.0)
    p.add_argument("--corrupt", type=float, default=0.0)
    p.add_argument("--delay-us", type=int, default=0)
    p.add_argument("--jitter-us", type=int, default=0)
    p.add_argument("--reorder-gap", type=int, default=1)
    p.add_argument("--reorder-hold-us", type=int, default=DEFAULT_REORDER_HOLD_US)
    p.add_argument(
        "--direction", choices=("both", *DIRECTIONS), default="both", help="which way to impair"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


# ---------------------------------------------------------------------------
# The wrapper tests use.

_REPO = Path(__file__).resolve().parents[2]
IMPAIRMENT_OPTIONS = (
    "seed",
    "loss",
    "reorder",
    "duplicate",
    "corrupt",
    "delay_us",
    "jitter_us",
    "reorder_gap",
    "reorder_hold_us",
    "direction",
)


class ImpairedRelay:
    """Runs the relay process between interfaces `a` and `b`.

    `with ImpairedRelay("x", "y", netns="ns", loss=0.1, seed=1) as relay:`
    starts it and waits until both sockets are bound; `relay.stats()` asks a
    running relay for its counters; leaving the block (or `stop()`) sends
    SIGTERM and keeps the final counters in `relay.final`.

    Raises:
        ValueError: an unknown impairment option.
        RuntimeError: the relay did not start or did not stop cleanly.
    """

    def __init__(
        self, a: str, b: str, netns: str | None = None, start_timeout: float = 10.0, **impairment
    ) -> None:
        unknown = set(impairment) - set(IMPAIRMENT_OPTIONS)
        if unknown:
            raise ValueError(f"unknown impairment options: {sorted(unknown)}")
        Impairment(**{k: v for k, v in impairment.items() if k != "direction"})  # validate
        self.argv = [sys.executable, "-m", "tests.support.relay", "--a", a, "--b", b]
        if netns:
            self.argv += ["--netns", netns]
        for key, value in impairment.items():
            self.argv += [f"--{key.replace('_', '-')}", str(value)]
        self.impairment = dict(impairment)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.final: RelayStats | None = None
        self._out = b""

    def __enter__(self) -> ImpairedRelay:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, cwd=_REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        seen = self._read_until(self.proc.stderr, READY.encode(), self.start_timeout)
        if READY.encode() not in seen:
            with contextlib.suppress(RuntimeError):
                self.stop()
            raise RuntimeError(f"relay did not start: {seen.decode(errors='replace').strip()}")

    def stats(self, timeout: float = 5.0) -> RelayStats:
        """The counters of the running relay (SIGUSR1, one JSON line back)."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("relay is not running")
        self.proc.send_signal(signal.SIGUSR1)
        end = time.monotonic() + timeout
        while b"\n" not in self._out:
            chunk = self._read_some(self.proc.stdout, end - time.monotonic())
            if not chunk:
                raise RuntimeError("relay did not report its statistics")
            self._out += chunk
        line, self._out = self._out.split(b"\n", 1)
        return RelayStats.from_json(line.decode())

    def stop(self, timeout: float = 10.0) -> RelayStats | None:
        """SIGTERM, wait, parse the last line. Returns the final counters."""
        proc = self.proc
        if proc is None:
            return self.final
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError("relay ignored SIGTERM; killed") from None
        lines = (self._out + out).decode().strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"relay exited {proc.returncode}: {err.decode().strip()}")
        self.final = RelayStats.from_json(lines[-1])
        return self.final

    @staticmethod
    def _read_some(stream, timeout: float) -> bytes:
        fd = stream.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        return os.read(fd, 65536) if ready else b""

    def _read_until(self, stream, marker: bytes, timeout: float) -> bytes:
        """What `stream` said until `marker`, EOF or the timeout."""
        end = time.monotonic() + timeout
        seen = b""
        while marker not in seen:
            chunk = self._read_some(stream, end - time.monotonic())
            if not chunk:
                break
            seen += chunk
        return seen


if __name__ == "__main__":
    sys.exit(main())
