"""`stackservice run --workers 2`: per-core workers with flow affinity,
driven by Linux clients (curl, ab, wrk, a 50 MB echo) through the diag
services every worker serves.

What proves the steering: each worker's own counters file. A frame that
reached a worker without the connection's TCB would be answered with a
reset (tcp_no_socket_rst) or dropped for want of a listener; both stay 0,
and the workers' passive opens add up to the connections made.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import vfstack
from vfstack._control import ControlClient
from vfstack.v1.stack_pb2 import AttachRequest

from stackservice.nic.emulate import PEER_ADDRESS
from stackservice.nic.fanout import worker_of
from tests.integration.test_metrics import _free_port, _scrape
from tests.support.netns import in_netns, kernel_peer, spawn_in_netns
from tests.support.stack import running_stack, wait_until

pytestmark = pytest.mark.root

STACK = "198.18.0.10"
PEER = PEER_ADDRESS
WORKERS = 2

# Opens argv[1] echo connections to the stack, prints their local ports,
# then for each line on stdin sends 4 bytes on every connection and prints
# what each got back: "echo", "reset" or "timeout".
HOLD_ECHOES = r"""
import json, socket, sys
conns = [socket.create_connection((sys.argv[2], 7), timeout=5) for _ in range(int(sys.argv[1]))]
print(json.dumps([c.getsockname()[1] for c in conns]), flush=True)
for _ in sys.stdin:
    result = {}
    for c in conns:
        port = c.getsockname()[1]
        try:
            c.settimeout(3)
            c.sendall(b"ping")
            result[port] = "echo" if c.recv(4) == b"ping" else "eof"
        except ConnectionResetError:
            result[port] = "reset"
        except (TimeoutError, OSError):
            result[port] = "timeout"
    print(json.dumps(result), flush=True)
"""


def two_workers(port, *extra: str):
    return running_stack(
        port.vf(0), f"{STACK}/24", "vf0", "--workers", str(WORKERS), "--diag-services", *extra
    )


def control(stack) -> str:
    return f"unix://{stack.run_dir}/vf0.sock"


def cli(stack, *argv: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "vfstack.cli", *argv, "--control", control(stack), "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def misdirected(counters: dict) -> int:
    """Frames a worker could not place: a flow's segment at the wrong
    worker finds no TCB (a reset) or no listener."""
    drops = counters["tcp_drops"]
    return drops["tcp_no_socket_rst"] + drops["tcp_no_listener"] + drops["tcp_listen_not_syn"]


# In the peer namespace: argv[1] echo exchanges with argv[2]:argv[3], each
# a connection of its own; prints [[client port, echoed exactly], ...].
ECHO_CLIENTS = r"""
import json, os, socket, sys
results = []
for i in range(int(sys.argv[1])):
    with socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10) as c:
        data = os.urandom(3000 + i)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := c.recv(65536):
            got += chunk
        results.append([c.getsockname()[1], got == data])
print(json.dumps(results), flush=True)
"""

# In the peer namespace: on argv[1], says "ok" to every connection and
# closes it; prints "listening" once it does.
GREETER = r"""
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[1])), backlog=1024)
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(b"ok")
    conn.close()
"""


def echo_clients(port, count: int) -> list:
    """`count` echo exchanges from the peer namespace with port 8080,
    each echoed exactly. Returns: [[client port, True], ...]."""
    done = in_netns(
        port.netns, sys.executable, "-c", ECHO_CLIENTS, str(count), STACK, "8080", timeout=120
    )
    echoes = json.loads(done.stdout)
    assert [exact for _, exact in echoes] == [True] * count
    return echoes


def serve_echo(app, listener, accepted: list, stop: threading.Event) -> None:
    """An epoll echo server over the app's one Stack (both workers'
    sessions): echoes until EOF, then closes; notes each connection's
    (fileno, peer port)."""
    ep = app.epoll()
    ep.register(listener, select.EPOLLIN)
    conns = {}
    while not stop.is_set():
        for fd, _ in ep.poll(0.1):
            if fd == listener.fileno():
                conn, peer = listener.accept()
                conn.setblocking(False)
                accepted.append((conn.fileno(), peer[1]))
                conns[conn.fileno()] = conn
                ep.register(conn, select.EPOLLIN)
                continue
            conn = conns[fd]
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            if data:
                conn.setblocking(True)
                conn.sendall(data)
                conn.setblocking(False)
            else:
                ep.unregister(conn)
                del conns[fd]
                conn.close()
    ep.close()


def test_one_sdk_app_listens_on_both_workers_and_opens_1000_connections_from_each(
    emulated_port,
):
    """An unmodified single-process app with --workers 2: its Stack is a
    session per worker. Its listener listens on both (each peer's
    connection is accepted from the worker the steering gives it), its
    sockets take the workers in turn, and each worker's active opens pick
    ports that bring the replies back to it."""
    metrics = _free_port()
    with running_stack(
        emulated_port.vf(0), f"{STACK}/24", "vf0", "--workers", "2", "--metrics-port", str(metrics)
    ) as stack:
        app = vfstack.connect(control(stack), app="lanes")
        greeter = spawn_in_netns(
            emulated_port.netns, sys.executable, "-c", GREETER, "9000",
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        stop = threading.Event()
        try:
            sessions = app._client.sessions().sessions
            assert sorted(s.worker for s in sessions if s.app == "lanes") == [0, 1]
            listener = app.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("0.0.0.0", 8080))
            listener.listen(128)
            accepted: list = []
            server = threading.Thread(target=serve_echo, args=(app, listener, accepted, stop))
            server.start()
            echoes = echo_clients(emulated_port, 40)
            # Each connection was accepted from the worker its port steers to.
            owner = {port: worker_of(8080, port, WORKERS) for port, _ in echoes}
            assert set(owner.values()) == {0, 1}, owner  # 40 ports: both, or re-run
            assert sorted((port, fd % WORKERS) for fd, port in accepted) == sorted(owner.items())
            stop.set()
            server.join()
            # The app's bytes, from both workers' app tables, added up.
            echoed = sum(3000 + i for i in range(40))
            scraped = _scrape(metrics)
            for direction in ("rx", "tx"):
                key = f"vfstack_app_bytes_total{{app=lanes,direction={direction}}}"
                assert scraped[key] == echoed

            assert greeter.stdout.readline().strip() == "listening"
            before = [stack.worker_counters(w)["tcp"]["active_opens"] for w in range(WORKERS)]
            for _ in range(2 * 1000):
                with app.socket() as sock:
                    sock.settimeout(10)
                    sock.connect((PEER, 9000))
                    assert sock.recv(2) == b"ok"
                    # Its port is one of its worker's: the replies came back to it.
                    assert sock.getsockname()[1] % WORKERS == sock.fileno() % WORKERS
            after = [stack.worker_counters(w)["tcp"]["active_opens"] for w in range(WORKERS)]
            assert [a - b for a, b in zip(after, before, strict=True)] == [1000, 1000]

            # Bound to a well-known port, a socket moves to the worker that
            # the peer's port steers to (one of two sockets had to) and
            # keeps its fileno: an Epoll that watched it before the
            # non-blocking connect reports it connected under that number.
            pair = [app.socket(), app.socket()]
            assert {s.fileno() % WORKERS for s in pair} == {0, 1}
            ep = app.epoll()
            for sock, port in zip(pair, (700, 701), strict=True):
                fd = sock.fileno()
                sock.bind(("0.0.0.0", port))
                sock.setblocking(False)
                ep.register(sock, select.EPOLLOUT)
                assert sock.connect_ex((PEER, 9000)) == errno.EINPROGRESS
                assert ep.poll(10) == [(fd, select.EPOLLOUT)]
                assert sock.fileno() == fd and sock.getpeername() == (PEER, 9000)
                flow = (port, 9000)
                # Not every socket: its page holds the 500 lowest ids, and the
                # 2000 closes above may have left more in TIME-WAIT than that.
                live = ("--state", "ESTABLISHED", "--state", "CLOSE_WAIT")
                rows = cli(stack, "conns", *live)["connections"]
                held = [r["worker"] for r in rows if (r["local_port"], r["remote_port"]) == flow]
                assert held == [worker_of(port, 9000, WORKERS)]
                sock.settimeout(10)
                assert sock.recv(2) == b"ok"
                ep.unregister(sock)
                sock.close()
            ep.close()
            # Moved by a connect that is refused, then connected to a port
            # whose flow its first worker receives: it moves back there.
            home = worker_of(700, 9000, WORKERS)
            spare, sock = app.socket(), app.socket()
            if sock.fileno() % WORKERS != home:
                spare, sock = sock, spare
            spare.close()
            fd = sock.fileno()
            sock.bind(("0.0.0.0", 700))
            sock.settimeout(10)
            closed = next(p for p in range(9001, 9100) if worker_of(700, p, WORKERS) != home)
            assert sock.connect_ex((PEER, closed)) == errno.ECONNREFUSED
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # set while away
            sock.connect((PEER, 9000))
            assert sock.fileno() == fd and sock.recv(2) == b"ok"
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            sock.close()
            per_worker = [stack.worker_counters(w) for w in range(WORKERS)]
            assert [misdirected(c) for c in per_worker] == [0, 0]
        finally:
            stop.set()
            greeter.kill()
            app.close()
    # Detached by close(): both workers' sessions ended.


def test_a_pre_forked_app_gets_each_process_the_connections_of_its_own_worker(emulated_port):
    """One Stack per worker (`vfstack.connect(worker=i)`, as N pre-forked
    processes would), each listening on the same port: each accepts
    exactly the connections its worker receives, like SO_REUSEPORT; a
    bound socket whose flow another worker receives cannot connect."""
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0", "--workers", "2") as stack:
        apps = [vfstack.connect(control(stack), app=f"fork{w}", worker=w) for w in range(WORKERS)]
        stop = threading.Event()
        servers, accepted = [], [[] for _ in apps]
        try:
            with ControlClient(control(stack)) as client:
                sessions = {s.app: s.worker for s in client.sessions().sessions}
            assert sessions == {"fork0": 0, "fork1": 1}
            for app, mine in zip(apps, accepted, strict=True):
                listener = app.socket()
                listener.bind(("0.0.0.0", 8080))
                listener.listen()
                server = threading.Thread(target=serve_echo, args=(app, listener, mine, stop))
                server.start()
                servers.append(server)
            echoes = echo_clients(emulated_port, 30)
            for worker, mine in enumerate(accepted):
                theirs = [port for port, _ in echoes if worker_of(8080, port, WORKERS) == worker]
                assert sorted(port for _, port in mine) == sorted(theirs)
            assert all(mine for mine in accepted), accepted  # 30 ports: both, or re-run
            owner = worker_of(700, 9, WORKERS)
            with apps[1 - owner].socket() as sock:
                sock.bind(("0.0.0.0", 700))
                assert sock.connect_ex((PEER, 9)) == errno.EADDRNOTAVAIL
        finally:
            stop.set()
            for server in servers:
                server.join()
            for app in apps:
                app.close()


def test_a_worker_s_restart_ends_the_app_s_stack_and_the_app_attaches_again(emulated_port):
    """A worker that dies takes its lane's session with it: the app's one
    Stack is then gone (its blocked accept raises StackGone), close()
    detaches the session the live worker still holds, and a new
    connect() attaches to both again."""
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0", "--workers", "2") as stack:
        app = vfstack.connect(control(stack), app="lanes")
        listener = app.socket()
        listener.bind(("0.0.0.0", 8080))
        listener.listen()
        failed: list = []

        def accept() -> None:
            try:
                listener.accept()
            except vfstack.StackGone as exc:
                failed.append(exc)

        waiter = threading.Thread(target=accept)
        waiter.start()
        assert wait_until(lambda: len(worker_pids(stack)) == WORKERS)
        os.kill(worker_pids(stack)[1], signal.SIGKILL)
        waiter.join(timeout=10)
        assert not waiter.is_alive() and len(failed) == 1
        assert app.gone
        app.close()

        def lanes_sessions() -> list[int]:
            with ControlClient(control(stack)) as client:
                return sorted(s.worker for s in client.sessions().sessions if s.app == "lanes")

        assert wait_until(lambda: lanes_sessions() == [])  # worker 0's detached too
        again = vfstack.connect(control(stack), app="lanes", wait=10)
        try:
            assert lanes_sessions() == [0, 1]
            listener = again.socket()
            listener.bind(("0.0.0.0", 8080))
            listener.listen()
            accepted: list = []
            stop = threading.Event()
            server = threading.Thread(target=serve_echo, args=(again, listener, accepted, stop))
            server.start()
            echo_clients(emulated_port, 12)
            stop.set()
            server.join()
            assert {fd % WORKERS for fd, _ in accepted} == {0, 1}
        finally:
            again.close()


def test_curl_ab_and_wrk_are_served_by_both_workers_each_connection_by_one(emulated_port):
    with two_workers(emulated_port) as stack:
        assert f"workers {WORKERS}" in stack.startup_line
        for size in (0, 1, 1460, 100_000):
            got = kernel_peer(emulated_port.netns, "fetch", "--port", "80", "--bytes", str(size))
            assert got["status"] == "200" and got["bytes"] == size and got["body_ok"], got
        done = in_netns(
            emulated_port.netns, "ab", "-q", "-n", "4000", "-c", "64", f"http://{STACK}/100",
            timeout=300,
        )  # fmt: skip
        assert re.search(r"Complete requests:\s+4000", done.stdout), done.stdout
        assert re.search(r"Failed requests:\s+0", done.stdout), done.stdout
        opens = [stack.worker_counters(w)["tcp"]["passive_opens"] for w in range(WORKERS)]
        # 4 fetches + 4000 ab connections (ab opens up to -c more that it
        # does not use), each opened by one worker; Linux's even client
        # ports spread over both (a port mod 2 would not).
        assert 4 + 4000 <= sum(opens) <= 4 + 4000 + 64, opens
        assert min(opens) > 1000, opens
        done = in_netns(
            emulated_port.netns, "wrk", "-t1", "-c16", "-d2s", f"http://{STACK}/100", timeout=60
        )
        assert "Socket errors" not in done.stdout and "Non-2xx" not in done.stdout, done.stdout
        assert re.search(r"Requests/sec:\s+[1-9]", done.stdout), done.stdout
        per_worker = [stack.worker_counters(w) for w in range(WORKERS)]
        assert [misdirected(c) for c in per_worker] == [0] * WORKERS
        assert [c["tcp"]["resets_out"] for c in per_worker] == [0] * WORKERS
        # Only worker 0 answers ARP: the peer's requests got one reply each.
        events = [c["events"] for c in per_worker]
        assert events[1]["arp_reply_out"] == events[1]["arp_gratuitous_out"] == 0
        assert events[0]["arp_gratuitous_out"] > 0


def test_a_50_mb_echo_through_two_workers_is_exact(emulated_port):
    with two_workers(emulated_port) as stack:
        for _ in range(4):  # client ports land on either worker
            result = kernel_peer(emulated_port.netns, "echo", "--port", "7", "--bytes", "50000000")
            assert result["bytes"] == 50_000_000
            assert result["received_sha256"] == result["sent_sha256"]
            assert result["clean_eof"]
        assert [misdirected(stack.worker_counters(w)) for w in range(WORKERS)] == [0, 0]


def test_the_control_api_shows_the_instance_whole_and_refuses_one_lane_sessions(emulated_port):
    metrics = _free_port()
    cpus = sorted(os.sched_getaffinity(0))[:WORKERS]
    pinning = ("--cpus", ",".join(map(str, cpus))) if len(cpus) == WORKERS else ()
    with two_workers(emulated_port, "--metrics-port", str(metrics), *pinning) as stack:
        assert wait_until(lambda: len(worker_pids(stack)) == WORKERS)
        if pinning:  # worker i runs on the i-th CPU given, and on it alone
            for worker, pid in worker_pids(stack).items():
                assert os.sched_getaffinity(pid) == {cpus[worker]}
        done = in_netns(
            emulated_port.netns, "ab", "-q", "-n", "300", "-c", "8", f"http://{STACK}/10",
            timeout=120,
        )  # fmt: skip
        assert "Failed requests:        0" in done.stdout, done.stdout
        assert cli(stack, "status")["workers"] == WORKERS
        stats = {g["name"]: {c["name"]: c["value"] for c in g["counters"]}
                 for g in cli(stack, "stats")["groups"]}  # fmt: skip
        per_worker = [stack.worker_counters(w)["tcp"]["passive_opens"] for w in range(WORKERS)]
        assert stats["tcp"]["passive_opens"] == sum(per_worker) >= 300
        listing = cli(stack, "conns", "--state", "LISTEN")["connections"]
        # Every worker listens on every diag port (mTCP's per-core listen).
        ports = sorted(row["local_port"] for row in listing)
        assert ports == [7, 7, 9, 9, 80, 80]
        everything = cli(stack, "conns")["connections"]
        ids = [row["connection_id"] for row in everything]
        # Every socket of both workers (TIME-WAITs, mostly), ids unique.
        states = [stack.worker_counters(w)["tcp_states"] for w in range(WORKERS)]
        assert len(ids) == len(set(ids)) == sum(sum(s.values()) for s in states) > 300
        assert ids == sorted(ids)
        # Each row names its worker; ids step by the worker count from it.
        assert {row["worker"] for row in everything} == {0, 1}
        assert all(row["worker"] == (row["connection_id"] - 1) % WORKERS for row in everything)
        table = subprocess.run(
            [sys.executable, "-m", "vfstack.cli", "conns", "--control", control(stack)],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.splitlines()  # fmt: skip
        assert table[0].split()[-1] == "worker"
        # An attach that names no worker (an SDK that knows one session
        # only) is refused; one beyond the last worker is invalid.
        with ControlClient(control(stack)) as client:
            for request, code in (
                (AttachRequest(app="one-lane"), "FAILED_PRECONDITION"),
                (AttachRequest(app="no-such-worker", worker=WORKERS), "INVALID_ARGUMENT"),
            ):
                with pytest.raises(vfstack.ControlError) as refused:
                    client._unary(client._stub.Attach, request)
                assert refused.value.code == code
        # /metrics: every series per worker; dashboards add them up.
        scraped = _scrape(metrics, by=("worker",))
        for worker, opens in enumerate(per_worker):
            assert scraped[f"vfstack_tcp_passive_opens_total{{worker={worker}}}"] == opens
            assert scraped[f"vfstack_tcp_connect_seconds_count{{worker={worker}}}"] == opens
        assert _scrape(metrics)["vfstack_tcp_passive_opens_total{}"] == sum(per_worker)


def test_a_killed_worker_is_restarted_and_only_its_connections_are_lost(emulated_port):
    with two_workers(emulated_port) as stack:
        holder = spawn_in_netns(
            emulated_port.netns, sys.executable, "-c", HOLD_ECHOES, "12", STACK,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            ports = json.loads(holder.stdout.readline())
            owner = {port: worker_of(7, port, WORKERS) for port in ports}
            assert set(owner.values()) == {0, 1}, owner  # 12 ports: both, or re-run
            holder.stdin.write("go\n")
            holder.stdin.flush()
            assert set(json.loads(holder.stdout.readline()).values()) == {"echo"}
            assert wait_until(lambda: len(worker_pids(stack)) == WORKERS)
            os.kill(worker_pids(stack)[1], signal.SIGKILL)
            assert wait_until(
                lambda: stack.worker_counters(1)["loop"]["worker_restarts"] == 1, timeout=10
            )
            holder.stdin.write("go\n")
            holder.stdin.flush()
            after = {int(port): what for port, what in json.loads(holder.stdout.readline()).items()}
        finally:
            holder.kill()
        # Worker 0's connections never noticed; worker 1's successor has no
        # TCB for them and answers their next segment with a reset.
        assert after == {port: "echo" if owner[port] == 0 else "reset" for port in ports}
        done = in_netns(
            emulated_port.netns, "ab", "-q", "-n", "500", "-c", "8", f"http://{STACK}/10",
            timeout=120,
        )  # fmt: skip
        assert "Failed requests:        0" in done.stdout, done.stdout
        assert stack.worker_counters(1)["tcp"]["passive_opens"] > 0
        assert stack.worker_counters(0)["loop"]["worker_restarts"] == 0
        _, _, err = stack.stop()
    assert "worker 1" in err and "SIGKILL" in err and "starting it again" in err


def worker_pids(stack) -> dict[int, int]:
    """Worker index -> pid. Workers are forks of the supervisor (the same
    command line as it), the control server is not; each worker maps its
    own counters file only."""
    pid = stack.proc.pid
    found = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        maps = Path(f"/proc/{child}/maps").read_text()
        mapped = [w for w in range(WORKERS) if f"vf0.worker{w}.counters" in maps]
        if len(mapped) == 1:
            found[mapped[0]] = int(child)
    return found


def test_two_workers_without_a_control_api_serve_and_stop_cleanly(emulated_port):
    with two_workers(emulated_port, "--control", "none") as stack:
        got = kernel_peer(emulated_port.netns, "fetch", "--port", "80", "--bytes", "5000")
        assert got["bytes"] == 5000 and got["body_ok"], got
        status, out, _ = stack.stop()
    assert status == 0
    summary = json.loads(out.split("counters ", 1)[1])
    assert summary["tcp"]["passive_opens"] == 1
    assert not list(stack.run_dir.glob("*.counters"))  # the workers' files are gone


def test_killing_a_worker_under_load_costs_only_its_connections(emulated_port):
    """ab keeps 32 connections busy while worker 1 is killed, and admin
    calls list and count meanwhile: the requests that fail are at most
    those worker 1 held when it died (the peers see resets), the instance
    serves on, and the listings never break."""
    with two_workers(emulated_port) as stack:
        load = spawn_in_netns(
            emulated_port.netns, "ab", "-q", "-r", "-n", "20000", "-c", "32",
            f"http://{STACK}/100", stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert wait_until(lambda: stack.counters()["tcp"]["passive_opens"] > 2000, 60)
            assert wait_until(lambda: len(worker_pids(stack)) == WORKERS)
            os.kill(worker_pids(stack)[1], signal.SIGKILL)
            for _ in range(5):  # an operator looking while it restarts
                cli(stack, "conns", "--state", "ESTABLISHED")
                cli(stack, "stats")
            out, _ = load.communicate(timeout=300)
        finally:
            load.kill()
        complete = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))
        failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
        assert complete == 20000, out
        # ab -c 32: at most the 32 in flight, and any new ones worker 1
        # dropped in the restart's second, failed.
        assert failed <= 200, out
        assert stack.worker_counters(1)["loop"]["worker_restarts"] == 1
        done = in_netns(
            emulated_port.netns, "ab", "-q", "-n", "1000", "-c", "16", f"http://{STACK}/10",
            timeout=120,
        )  # fmt: skip
        assert "Failed requests:        0" in done.stdout, done.stdout
