"""Shared-memory rings vs. a kernel socketpair, between two processes.

The fast path's lowest layer (`vfstack.shm`: its rings and doorbells)
measured cross-process (one process per CPU when there are two), each
figure next to the same transfer through `socket.socketpair()`:

- records/s one way: 16-byte records moved `batch` at a time (1, 16, 64,
  256) by `push_many`/`pop_many`, vs. one AF_UNIX SOCK_SEQPACKET message
  per batch (`send` / `recv_into`, split into records like `pop_many`);
- MB/s one way through a 256 KiB ByteRing written 64 B, 1448 B (an MSS)
  or 64 KiB at a time and read into a 64 KiB buffer, vs. `sendall` /
  `recv_into` on an AF_UNIX SOCK_STREAM pair;
- round trip of a 16-byte ping-pong, median and p99: busy-polling both
  sides (rings: `pop_many` spin; kernel: non-blocking `recv_into` spin),
  and sleeping both sides (rings: need-wakeup flag + FIFO doorbells;
  kernel: blocking `recv_into`).

    python3 -m bench.rings [--quick] [--json]     (no root needed)
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from vfstack.shm import ByteRing, Doorbell, RecordRing

from bench._cli import summary_main
from tests.support.shm import mapped, other_process, session_file

RECORD = 16
SLOTS = 1024
BYTE_RING = 1 << 18
READ_BUF = 1 << 16
BATCHES = (1, 16, 64, 256)
WRITE_SIZES = (64, 1448, 1 << 16)


# -- plumbing: a session file, a second process, pinning -------------------------------


@contextlib.contextmanager
def session(size: int):
    """A file in a tmpfs (as the stack uses), mapped here; yields (path, view)."""
    where = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        path = session_file(Path(tmp), size)
        with mapped(path) as view:
            yield path, view


# -- records one way -------------------------------------------------------------------


def _push_records(path: str, total: int, batch: int) -> float:
    with mapped(path) as view:
        ring = RecordRing(view, SLOTS, RECORD)
        ring.attach()
        records = [bytes(RECORD)] * batch
        start = time.monotonic()
        sent = 0
        while sent < total:
            sent += ring.push_many(records)
        ring.close()
    return start


def records_rings(total: int, batch: int) -> float:
    with session(RecordRing.region_size(SLOTS, RECORD)) as (path, view):
        ring = RecordRing(view, SLOTS, RECORD)
        ring.init()
        with other_process(_push_records, path, total, batch) as started:
            got = 0
            while got < total:
                got += len(ring.pop_many(batch))
            end = time.monotonic()
            elapsed = end - started()
        ring.close()
    return total / elapsed


def _send_records(sock: socket.socket, total: int, batch: int) -> float:
    blob = bytes(RECORD * batch)
    start = time.monotonic()
    for _ in range(total // batch):
        sock.send(blob)
    return start


def records_kernel(total: int, batch: int) -> float:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b, other_process(_send_records, b, total, batch) as started:
        buf = bytearray(RECORD * batch)
        got = 0
        while got < total:
            n = a.recv_into(buf)
            blob = bytes(buf[:n])
            got += len([blob[k : k + RECORD] for k in range(0, n, RECORD)])
        end = time.monotonic()
        return total / (end - started())


# -- bytes one way ---------------------------------------------------------------------


def _write_bytes(path: str, total: int, size: int) -> float:
    with mapped(path) as view:
        ring = ByteRing(view, BYTE_RING)
        ring.attach()
        chunk = bytes(size)
        view_chunk = memoryview(chunk)
        start = time.monotonic()
        sent = 0
        while sent < total:
            done = ring.write(chunk)
            while done < size:
                done += ring.write(view_chunk[done:])
            sent += size
        view_chunk.release()
        ring.close()
    return start


def bytes_rings(total: int, size: int) -> float:
    with session(ByteRing.region_size(BYTE_RING)) as (path, view):
        ring = ByteRing(view, BYTE_RING)
        ring.init()
        buf = bytearray(READ_BUF)
        with other_process(_write_bytes, path, total, size) as started:
            got = 0
            while got < total:
                got += ring.read_into(buf)
            end = time.monotonic()
            elapsed = end - started()
        ring.close()
    return total / elapsed / 1e6


def _sendall_bytes(sock: socket.socket, total: int, size: int) -> float:
    chunk = bytes(size)
    start = time.monotonic()
    for _ in range(total // size):
        sock.sendall(chunk)
    return start


def bytes_kernel(total: int, size: int) -> float:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b, other_process(_sendall_bytes, b, total, size) as started:
        buf = bytearray(READ_BUF)
        got = 0
        while got < total:
            got += a.recv_into(buf)
        end = time.monotonic()
        return total / (end - started()) / 1e6


# -- round trips -------------------------------------------------------------------------


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    samples = sorted(samples_ns[len(samples_ns) // 10 :])  # the first 10% warm up
    return {
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[len(samples) * 99 // 100] / 1000,
    }


def _ring_pair(view: memoryview) -> tuple[RecordRing, RecordRing]:
    size = RecordRing.region_size(64, RECORD)
    return (
        RecordRing(view[:size], 64, RECORD),
        RecordRing(view[size : 2 * size], 64, RECORD),
    )


def _receive_sleeping(ring: RecordRing, bell: Doorbell) -> list[bytes]:
    """The need-wakeup consumer: never spins, sleeps whenever idle."""
    while True:
        got = ring.pop_many(1)
        if got:
            return got
        if ring.prepare_sleep():
            bell.wait(1.0)
            ring.sleep_done()


def _send(ring: RecordRing, bell: Doorbell, records: list[bytes]) -> None:
    ring.push_many(records)
    if ring.needs_wakeup():
        bell.ring()


def _pong_rings(
    path: str, bell_ping: Doorbell, bell_pong: Doorbell, rounds: int, sleeping: bool
) -> int:
    """The other process (forked: it inherits the doorbells' descriptors)."""
    with mapped(path) as view:
        to_pong, to_ping = _ring_pair(view)
        to_pong.attach()
        to_ping.attach()
        for _ in range(rounds):
            if sleeping:
                _send(to_ping, bell_ping, _receive_sleeping(to_pong, bell_pong))
            else:
                got = to_pong.pop_many(1)
                while not got:
                    got = to_pong.pop_many(1)
                to_ping.push_many(got)
        to_pong.close()
        to_ping.close()
    return rounds


def round_trip_rings(rounds: int, sleeping: bool) -> dict[str, float]:
    size = 2 * RecordRing.region_size(64, RECORD)
    with session(size) as (path, view):
        # As in a session: the pong side waits on an eventfd (the stack's
        # doorbell), the ping side on a pipe (the app's).
        bell_pong = Doorbell.eventfd()
        ping_waiting, ping_ringing = Doorbell.pipe()
        to_pong, to_ping = _ring_pair(view)
        to_pong.init()
        to_ping.init()
        ping, samples = [bytes(RECORD)], []
        clock = time.perf_counter_ns
        with other_process(_pong_rings, path, ping_ringing, bell_pong, rounds, sleeping) as done:
            for _ in range(rounds):
                t0 = clock()
                if sleeping:
                    _send(to_pong, bell_pong, ping)
                    _receive_sleeping(to_ping, ping_waiting)
                else:
                    to_pong.push_many(ping)
                    while not to_ping.pop_many(1):
                        pass
                samples.append(clock() - t0)
            done()
        for thing in (bell_pong, ping_waiting, ping_ringing, to_pong, to_ping):
            thing.close()
    return _percentiles(samples)


def _pong_kernel(sock: socket.socket, rounds: int, sleeping: bool) -> int:
    buf = bytearray(RECORD)
    sock.setblocking(sleeping)
    for _ in range(rounds):
        while True:
            try:
                sock.recv_into(buf)
                break
            except BlockingIOError:
                pass
        sock.send(buf)
    return rounds


def round_trip_kernel(rounds: int, sleeping: bool) -> dict[str, float]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b, other_process(_pong_kernel, b, rounds, sleeping) as done:
        a.setblocking(sleeping)
        buf, ping, samples = bytearray(RECORD), bytes(RECORD), []
        clock = time.perf_counter_ns
        for _ in range(rounds):
            t0 = clock()
            a.send(ping)
            while True:
                try:
                    a.recv_into(buf)
                    break
                except BlockingIOError:
                    pass
            samples.append(clock() - t0)
        done()
    return _percentiles(samples)


# -- the run ---------------------------------------------------------------------------------


def run(quick: bool, progress) -> dict:
    repeats = 1 if quick else 3
    scale = 1 if quick else 5
    records = 256 * 4000 * scale  # a multiple of every batch size
    byte_totals = {64: scale * 16 << 20, 1448: scale * 1448 * 80_000, 1 << 16: scale * 512 << 20}
    rounds = {"busy-poll": scale * 20_000, "sleeping": scale * 5_000}
    cases = []  # (name, {who: a callable taking no argument})
    for batch in BATCHES:
        n = records if batch > 1 else records // 4
        cases.append(
            (
                f"records batch {batch}",
                {
                    "rings": partial(records_rings, n, batch),
                    "kernel": partial(records_kernel, n, batch),
                },
            )
        )
    for size in WRITE_SIZES:
        total = byte_totals[size]
        cases.append(
            (
                f"bytes write {size} B",
                {
                    "rings": partial(bytes_rings, total, size),
                    "kernel": partial(bytes_kernel, total, size),
                },
            )
        )
    for mode, n in rounds.items():
        sleeping = mode == "sleeping"
        cases.append(
            (
                f"round trip {mode}",
                {
                    "rings": partial(round_trip_rings, n, sleeping),
                    "kernel": partial(round_trip_kernel, n, sleeping),
                },
            )
        )
    results: dict[str, dict[str, list]] = {name: {"rings": [], "kernel": []} for name, _ in cases}
    for rep in range(repeats):
        for name, by_who in cases:
            # Alternate who goes first, so drifting machine load hits both.
            order = ("rings", "kernel") if rep % 2 == 0 else ("kernel", "rings")
            for who in order:
                progress(f"[{rep + 1}/{repeats}] {name}: {who} ...")
                results[name][who].append(by_who[who]())
    return {
        "params": {
            "repeats": repeats,
            "records": records,
            "record_size": RECORD,
            "record_slots": SLOTS,
            "byte_ring": BYTE_RING,
            "byte_totals": {str(k): v for k, v in byte_totals.items()},
            "rounds": rounds,
            "cpus": len(os.sched_getaffinity(0)),
        },
        "results": results,
    }


def summarize(report: dict) -> list[dict]:
    rows = []
    for name, by_who in report["results"].items():
        if name.startswith("round trip"):
            for key, label in (("p50_us", "µs p50"), ("p99_us", "µs p99")):
                rings = statistics.median(r[key] for r in by_who["rings"])
                kernel = statistics.median(r[key] for r in by_who["kernel"])
                rows.append(_row(name, label, rings, kernel))
        else:
            unit = "records/s" if name.startswith("records") else "MB/s"
            rows.append(
                _row(
                    name,
                    unit,
                    statistics.median(by_who["rings"]),
                    statistics.median(by_who["kernel"]),
                )
            )
    return rows


def _row(measure: str, unit: str, rings: float, kernel: float) -> dict:
    return {
        "measure": measure,
        "unit": unit,
        "rings": rings,
        "kernel": kernel,
        "ratio": rings / kernel,
    }


def table(rows: list[dict]) -> str:
    head = f"{'measure':<26} {'unit':<10} {'rings':>12} {'kernel':>12} {'rings/kernel':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['measure']:<26} {r['unit']:<10} {r['rings']:>12,.1f} {r['kernel']:>12,.1f} "
            f"{r['ratio']:>13.2f}"
        )
    lines.append("(throughput: higher is better; µs: lower is better)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return summary_main(__doc__, argv, run, summarize, table)


if __name__ == "__main__":
    sys.exit(main())
