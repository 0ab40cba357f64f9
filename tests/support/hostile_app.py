"""A hostile application: attaches like any app, then scribbles random
bytes over its whole shared-memory segment (ring indices, records, socket
rings) and rings the stack's doorbell, again and again.

    python -m tests.support.hostile_app --control URL --seconds S --seed N

Prints one JSON line: how many scribbles it made and whether its session
was still listed at the end, while it was alive (the stack should have
ended it).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import vfstack
from vfstack.shm import Op


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--control", required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    stack = vfstack.connect(args.control, app="hostile")
    # Some honest use first, so there are sockets and rings to corrupt.
    listener = stack.socket()
    listener.bind(("0.0.0.0", 6000))
    listener.listen(4)
    for _ in range(3):
        stack.socket()
    segment = stack._segment
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
        stack._stack_bell.ring()
        time.sleep(0.001)
    listed = any(s.session_id == stack.session_id for s in stack._client.sessions().sessions)
    words.release()
    print(json.dumps({"scribbles": scribbles, "still_attached": listed}), flush=True)


if __name__ == "__main__":
    main()
