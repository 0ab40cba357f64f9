"""An active open from the stack: a stack instance whose in-process client
connects to a kernel server in the peer namespace, streams N seeded random
bytes and reads what comes back. Prints one JSON line.

    python -m tests.support.stack_client --iface VF --ip 198.18.0.10/24 \\
        --connect 198.18.0.1:5001 --bytes N [--expect echo|source]

`echo`: the server returns our bytes; `source`: the server sends N bytes of
its own and we send nothing.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import ipaddress
import json
import random
import socket
import tempfile
import threading

from stackservice.clock import monotonic_us
from stackservice.config import InstanceConfig
from stackservice.instance import open_instance
from stackservice.tcp.engine import SocketError, TcpEngine
from stackservice.tcp.tcb import ERROR, HANGUP, SHUT_WR, Tcb

CHUNK = 1 << 16


class StreamClient:
    """Owner of one connection: writes `payload`, reads until EOF."""

    def __init__(self, engine: TcpEngine, payload: bytes, done: socket.socket) -> None:
        self.engine = engine
        self.payload = memoryview(payload)
        self.sent = 0
        self.received = hashlib.sha256()
        self.received_bytes = 0
        self.error = ""
        self.done = done
        self.scratch = memoryview(bytearray(CHUNK))

    def on_ready(self, tcb: Tcb, now: int) -> None:
        engine = self.engine
        try:
            while self.sent < len(self.payload):
                written = engine.send(tcb, self.payload[self.sent : self.sent + CHUNK], now)
                if not written:
                    break
                self.sent += written
            if self.sent == len(self.payload) and not tcb.write_closed:
                engine.shutdown(tcb, SHUT_WR, now)
            while True:
                count = engine.receive_into(tcb, self.scratch, now)
                if count == 0:
                    engine.close(tcb, now)
                    self.done.send(b"x")
                    return
                self.received.update(self.scratch[:count])
                self.received_bytes += count
        except SocketError as exc:
            if exc.errno == errno.EAGAIN:
                return
            self.error = errno.errorcode.get(exc.errno, str(exc.errno))
            self.done.send(b"x")
        if engine.readiness(tcb) & (ERROR | HANGUP) and not self.error:
            self.error = "hangup"
            self.done.send(b"x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", required=True)
    parser.add_argument("--ip", default="198.18.0.10/24")
    parser.add_argument("--connect", required=True, help="HOST:PORT of the kernel server")
    parser.add_argument("--bytes", type=int, default=1 << 20)
    parser.add_argument("--expect", choices=["echo", "source"], default="echo")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    host, _, port = args.connect.rpartition(":")
    payload = random.Random(args.seed).randbytes(args.bytes) if args.expect == "echo" else b""
    with tempfile.TemporaryDirectory() as run_dir:
        config = InstanceConfig.build(
            iface=args.iface,
            ip=args.ip,
            name="client",
            run_dir=run_dir,
            busy_poll_us=50,
            strict=True,  # a test's instance: a bug must fail it (tests/conftest.py)
        )
        stop_reader, stop_writer = socket.socketpair()
        timer = threading.Timer(args.timeout, lambda: stop_writer.send(b"t"))
        timer.start()
        with open_instance(config) as instance:
            client = StreamClient(instance.engine, payload, stop_writer)
            tcb = instance.engine.connect(
                int(ipaddress.IPv4Address(host)), int(port), monotonic_us(), owner=client
            )
            instance.run(stop_reader.fileno())
            state = tcb.state
        timer.cancel()
    print(
        json.dumps(
            {
                "sent_sha256": hashlib.sha256(payload).hexdigest(),
                "received_sha256": client.received.hexdigest(),
                "sent": client.sent,
                "received": client.received_bytes,
                "error": client.error,
                "final_state": int(state),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
