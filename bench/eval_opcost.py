"""What one socket call costs an application: vfstack's SDK vs. kernel sockets.

One connected socket whose peer is a kernel echo server (the example
`echo_server --kernel`, in the peer namespace), opened through
`vfstack.examples._api` so both runs are the same code:

    send      `sock.send(64 B)` with TCP_NODELAY, a batch at a time
    recv      `sock.recv_into(buf, 64)` of bytes already buffered (the
              batch's echo, after it had time to come back)
    poll      `ep.poll(0)` with one registered socket that is readable
    poll idle `ep.poll(0)` with one registered socket and nothing ready

Each figure is µs per call over a batch; one JSON line lists every batch.

    python -m bench.eval_opcost --control unix:///run/vfstack/vf0.sock --peer 198.18.0.1
    python -m bench.eval_opcost --kernel --peer 198.18.0.1     (in a namespace on the wire)
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time

from vfstack.examples._api import add_arguments, open_api

SETTLE_S = 0.05  # time for a batch's echo to come back before timing recv
MESSAGE = bytes(64)


def _timed_sends(sock, batch: int) -> tuple[float, int]:
    """(µs per send call, bytes sent)."""
    sent = 0
    started = time.perf_counter()
    for _ in range(batch):
        sent += sock.send(MESSAGE)
    return 1e6 * (time.perf_counter() - started) / batch, sent


def _timed_recvs(sock, buf: bytearray, due: int) -> tuple[float | None, int]:
    """(µs per recv call that found data, bytes read); stops at the first
    call that would block, so only calls on buffered bytes are timed. The
    last 64 bytes stay unread (for the readable poll)."""
    sock.setblocking(False)
    calls = got = 0
    started = time.perf_counter()
    try:
        while got < due - 64:
            got += sock.recv_into(buf, min(64, due - 64 - got))
            calls += 1
    except BlockingIOError:
        pass
    elapsed = time.perf_counter() - started
    sock.settimeout(10.0)
    return (1e6 * elapsed / calls if calls else None), got


def _timed_polls(ep, rounds: int, expect: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        found = ep.poll(0)
    elapsed = time.perf_counter() - started
    if len(found) != expect:
        raise RuntimeError(f"poll(0) found {len(found)} ready sockets, expected {expect}")
    return 1e6 * elapsed / rounds


def _drain(sock, buf: bytearray, due: int) -> None:
    while due > 0:
        n = sock.recv_into(buf, min(len(buf), due))
        if n == 0:
            raise RuntimeError("the echo server closed the connection")
        due -= n


def measure(api, peer: tuple[str, int], batch: int, rounds: int) -> dict:
    sock = api.socket()
    sock.settimeout(10.0)
    sock.connect(peer)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ep = api.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    buf = bytearray(65536)
    figures: dict[str, list[float]] = {"send": [], "recv": [], "poll": [], "poll_idle": []}
    try:
        for i in range(rounds + 1):  # round 0 is a warm-up
            send_us, due = _timed_sends(sock, batch)
            time.sleep(SETTLE_S)
            recv_us, got = _timed_recvs(sock, buf, due)
            _drain(sock, buf, due - got - 64)  # 64 echoed bytes left to read
            if not ep.poll(10.0):
                raise RuntimeError("the last echoed bytes never came back")
            poll_us = _timed_polls(ep, batch, 1)
            _drain(sock, buf, 64)
            idle_us = _timed_polls(ep, batch, 0)
            if i == 0:
                continue
            figures["send"].append(send_us)
            if recv_us is not None:
                figures["recv"].append(recv_us)
            figures["poll"].append(poll_us)
            figures["poll_idle"].append(idle_us)
    finally:
        ep.close()
        sock.close()
    return {"api": "kernel" if api.kernel else "vfstack", "batch": batch, "us": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.eval_opcost",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser, app="opcost")
    parser.add_argument("--peer", default="198.18.0.1", help="the echo server's address")
    parser.add_argument("--port", type=int, default=7007)
    parser.add_argument("--batch", type=int, default=200, help="calls timed together")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    api = open_api(args)
    try:
        result = measure(api, (args.peer, args.port), args.batch, args.rounds)
    finally:
        api.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
