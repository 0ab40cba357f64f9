"""One process of the soak: an SDK app on a stack instance, or the kernel peer.

    python -m tests.support.soak_actor --name app0 --seed S --style epoll \\
        --control unix:///RUN/vf0.sock --listen 7000 --target 198.18.0.1:9000 \\
        --refused 198.18.0.1:1
    ip netns exec NS python -m tests.support.soak_actor --name peer --seed S \\
        --style kernel --listen 9000 --target 198.18.0.10:7000 --refused 198.18.0.10:7999

Styles: `kernel` (Linux sockets, a selector), and for SDK apps `threads`
(blocking sockets with timeouts), `epoll` (a vfstack Epoll), `selector`
(`vfstack.StackSelector`), `asyncio` (`vfstack.aio` streams).

Once it listens it prints {"type": "ready"}; standard input then takes
commands: `go` (start connecting), `drain` (start no more connections; prints
{"type": "drained"} once those it started are closed), `exit` (close the
listeners, let accepted connections finish, print {"type": "final", ...}
and exit). EOF counts as `exit`. Standard output carries one JSON object
a line: "progress" every second, "failure" at once, "drained", "final".
SIGUSR1 writes every connection in flight, and where each thread is, to
the --dump file (a post-mortem).

Every decision comes from --seed (see tests/support/soak_drivers.py).
"""

from __future__ import annotations

import argparse
import os
import random
import selectors
import signal
import socket
import sys
import threading

from tests.support.soak_drivers import (
    THREADS_MARK,
    Actor,
    AsyncioDriver,
    EpollPoller,
    ReadinessDriver,
    SelectorPoller,
    ThreadDriver,
    all_threads_dump,
)

APP_STYLES = ("threads", "epoll", "selector", "asyncio")
STYLES = ("kernel", *APP_STYLES)
PROGRESS_SECONDS = 1.0


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _read_commands(actor: Actor) -> None:
    for line in sys.stdin:
        command = line.strip()
        if command == "go":
            actor.going.set()
        elif command == "drain":
            actor.draining.set()
        elif command == "exit":
            break
    actor.going.set()
    actor.draining.set()
    actor.exiting.set()


def _report_progress(actor: Actor, done: threading.Event) -> None:
    while not done.wait(PROGRESS_SECONDS):
        actor.emit({"type": "progress", **actor.counts()})


def _dump(actor: Actor, path: str) -> None:
    with open(path, "w") as out:
        out.write(f"{actor.dump()}\n{THREADS_MARK}\n{all_threads_dump()}\n")


def _driver(style: str, actor: Actor, stack, rng: random.Random):
    if style == "kernel":
        return ReadinessDriver(actor, socket.socket, SelectorPoller(selectors.DefaultSelector()))
    if style == "threads":
        return ThreadDriver(actor, stack.socket)
    if style == "epoll":
        poller = EpollPoller(stack.epoll(), oneshot=rng.random() < 0.5)
        return ReadinessDriver(actor, stack.socket, poller)
    if style == "selector":
        import vfstack

        return ReadinessDriver(actor, stack.socket, SelectorPoller(vfstack.StackSelector(stack)))
    return AsyncioDriver(actor, stack)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--style", choices=STYLES, required=True)
    parser.add_argument("--control", help="the stack's control URL (SDK styles)")
    parser.add_argument("--listen", type=int, action="append", default=[], metavar="PORT")
    parser.add_argument("--target", type=_address, action="append", default=[])
    parser.add_argument("--refused", type=_address, required=True, help="a port nothing serves")
    parser.add_argument("--dump", help="where SIGUSR1 writes what is in flight")
    parser.add_argument("--plan", type=int, help="replay: start only connections of this plan")
    args = parser.parse_args(argv)
    rng = random.Random(f"{args.seed}/actor")
    actor = Actor(args.name, args.seed, args.target, args.refused, rng.randint(1, 3), args.plan)
    stack = None
    if args.style != "kernel":
        import vfstack

        stack = vfstack.connect(args.control, app=args.name)
    driver = _driver(args.style, actor, stack, rng)
    if args.dump:
        signal.signal(signal.SIGUSR1, lambda *_: _dump(actor, args.dump))
    threading.Thread(target=_read_commands, args=(actor,), daemon=True).start()
    done = threading.Event()
    threading.Thread(target=_report_progress, args=(actor, done), daemon=True).start()
    try:
        driver.run(args.listen)
    except Exception as exc:
        actor.fail(f"the {args.style} driver raised {exc!r}")
        raise
    finally:
        done.set()
    actor.emit({"type": "final", **actor.counts()})
    if stack is not None and rng.random() < 0.5:
        # The other half exit with the session attached: the stack must
        # notice the app is gone (its lock on the segment) and clean up.
        stack.close()
    sys.stdout.flush()
    os._exit(0)  # daemon threads may sit in SDK calls: do not wait for them


if __name__ == "__main__":
    sys.exit(main())
