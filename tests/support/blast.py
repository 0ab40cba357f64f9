"""A paced frame sender for the relay's tests and benchmark, run in the
peer namespace: `python -m tests.support.blast IFACE COUNT RATE` sends
COUNT frames at RATE frames/s and prints the rate it achieved.

The frames go to a MAC nobody has, with a local experimental EtherType:
no host answers, so the relay sees them and nothing else.
"""

from __future__ import annotations

import socket
import sys
import time

FRAME = bytes.fromhex("0200000000fe0200000000fd88b5") + bytes(50)


def blast(ifname: str, count: int, rate: float) -> float:
    """Send `count` frames at `rate`/s; returns the rate achieved."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        sock.bind((ifname, 0))
        t0 = time.monotonic()
        sent = 0
        while sent < count:
            target = min(count, int((time.monotonic() - t0) * rate) + 1)
            while sent < target:
                sock.send(FRAME)
                sent += 1
            time.sleep(0.0005)
        return sent / (time.monotonic() - t0)


if __name__ == "__main__":
    print(blast(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])), flush=True)
