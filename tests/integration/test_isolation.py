"""Several applications on one port: two apps on one instance and one on
another VF's instance, all serving at once. No cross-talk; an app killed
with SIGKILL loses only its own connections (reset at once: its doorbell's
reader is gone); a hostile app that scribbles over its shared memory ends
only its own session."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import vfstack

from stackservice.control import gate
from stackservice.nic.emulate import vf_mac
from stackservice.nic.netconf import inside_netns
from stackservice.tcp.buffers import MIN_RING
from stackservice.tcp.portshare import EPHEMERAL_FIRST, EPHEMERAL_LAST
from stackservice.tcp.settings import TcpSettings
from tests.support.checks import ip
from tests.support.netns import in_netns, kernel_peer, spawn_in_netns
from tests.support.process import serving_app
from tests.support.raw_peer import sequence_numbers
from tests.support.stack import live_connections, running_stack, wait_until
from tests.support.synflood import tcp_frame

pytestmark = pytest.mark.root

VF0, VF1 = "198.18.0.10", "198.18.0.11"
ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20
# All an instance keeps in its run directory, whatever its apps do: no
# session has a file there (its memory and doorbells are descriptors).
RUN_FILES = ["vf0.apps", "vf0.attach", "vf0.counters", "vf0.grpc", "vf0.pid", "vf0.sock"]


def echo_server(control: str, port: int, name: str):
    return serving_app(
        "vfstack.examples.echo_server", "--control", control, "--port", str(port), "--app", name
    )


def session_ids(control: str) -> dict[str, int]:
    with contextlib.closing(vfstack._control.ControlClient(control)) as client:
        return {s.app: s.session_id for s in client.sessions().sessions}


def sessions(control: str) -> list[str]:
    return sorted(session_ids(control))


def peer_connection(netns: str, host: str, port: int) -> socket.socket:
    with inside_netns(netns):
        sock = socket.create_connection((host, port), timeout=10)
    return sock


def round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@pytest.fixture
def two_instances(emulated_port):
    with (
        running_stack(emulated_port.vf(0), f"{VF0}/24", "vf0") as vf0,
        running_stack(emulated_port.vf(1), f"{VF1}/24", "vf1") as vf1,
    ):
        yield emulated_port, vf0, vf1


def control_of(instance) -> str:
    return f"unix://{instance.run_dir / (instance.name + '.sock')}"


def test_three_apps_on_two_vfs_serve_at_once_and_a_killed_one_takes_only_its_own(two_instances):
    port, vf0, vf1 = two_instances
    c0, c1 = control_of(vf0), control_of(vf1)
    with (
        echo_server(c0, 7001, "alpha") as alpha,
        echo_server(c0, 7002, "beta"),
        echo_server(c1, 7001, "gamma"),
    ):
        assert sessions(c0) == ["alpha", "beta"] and sessions(c1) == ["gamma"]
        targets = [(VF0, 7001, 1), (VF0, 7002, 2), (VF1, 7001, 3)]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(
                lambda t: kernel_peer(
                    port.netns, "echo", "--host", t[0], "--port", str(t[1]),
                    "--bytes", str(5 * MB), "--seed", str(t[2]), timeout=120,
                ),
                targets,
            ))  # fmt: skip
        for result in results:
            assert result["received_sha256"] == result["sent_sha256"], result
        # Each app sent back exactly its own client's bytes: seeds differ, so
        # any cross-talk would break a digest above.

        to_alpha = peer_connection(port.netns, VF0, 7001)
        to_beta = peer_connection(port.netns, VF0, 7002)
        to_gamma = peer_connection(port.netns, VF1, 7001)
        for sock in (to_alpha, to_beta, to_gamma):
            assert round_trip(sock, b"hello") == b"hello"
        alpha.kill()
        alpha.wait()
        # The stack's poll sees the dead app's doorbell without a reader and
        # resets its connections; the timeout only bounds a broken stack.
        to_alpha.settimeout(30)
        with pytest.raises(ConnectionResetError):
            while to_alpha.recv(100):
                pass

        assert wait_until(lambda: sessions(c0) == ["beta"], timeout=5)
        assert round_trip(to_beta, b"still here" * 1000) == b"still here" * 1000
        assert round_trip(to_gamma, b"me too") == b"me too"
        assert sorted(p.name for p in vf0.run_dir.iterdir()) == RUN_FILES
        for sock in (to_alpha, to_beta, to_gamma):
            sock.close()


def test_a_hostile_app_scribbling_over_its_segment_ends_only_its_own_session(two_instances):
    port, vf0, _ = two_instances
    c0 = control_of(vf0)
    with echo_server(c0, 7002, "beta"):
        hostile = subprocess.run(
            [sys.executable, "-m", "tests.support.hostile_app", "--control", c0,
             "--seconds", "3", "--seed", "7"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert vf0.proc.poll() is None, "the stack died"
        assert wait_until(lambda: sessions(c0) == ["beta"], timeout=5), sessions(c0)
        result = kernel_peer(
            port.netns, "echo", "--host", VF0, "--port", "7002", "--bytes", str(2 * MB),
            "--seed", "11", timeout=60,
        )  # fmt: skip
        assert result["received_sha256"] == result["sent_sha256"]
    report = json.loads(hostile.stdout.strip().splitlines()[-1])
    assert report["scribbles"] > 100
    assert report["still_attached"] is False  # ended for its violations, not its exit


# -- attacks by an app on its own shared memory and doorbells (issue 13) ----------

HOSTILE_UID, APP_GID = 10002, 10001  # the attacker: not root, in the app group


def hostile(control: str, attack: str, seconds: float, *extra: str) -> subprocess.Popen:
    """tests/support/hostile_app.py as an unprivileged member of the app
    group, at nice 19 as bench.isolation runs it: deployed, each app has a
    CPU share of its own (its container's cgroup), and on these 2 cores the
    attacker's own busy loop would otherwise be much of what the honest app
    loses (p99 over 60 ms now and then, finding 7's attack), which is not
    what the tests judge. What it makes the instance do runs at the
    instance's priority."""
    return as_app(
        HOSTILE_UID, "tests.support.hostile_app", "--control", control, "--attack", attack,
        "--seconds", str(seconds), *extra, nice=19,
    )  # fmt: skip


def report_of(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


class Honest:
    """An honest app's client in the peer namespace, doing echo round trips
    of its own (each checked) in a thread, counting them and timing each.

    A round trip starts every PACE seconds, and its latency counts from
    when it was due: a loop held for 100 ms delays the 10 round trips due
    meanwhile, not just the one in flight (a client waiting for each
    answer before the next would under-count stalls: coordinated
    omission)."""

    PACE = 0.01

    def __init__(self, netns: str) -> None:
        self.sock = peer_connection(netns, VF0, 7002)
        self.sock.settimeout(30)  # bounds a broken stack only
        self.rounds = 0
        self.latencies: list[float] = []  # seconds, one per round trip
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            due = time.perf_counter()
            while not self._stop.is_set():
                payload = os.urandom(64)
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                assert round_trip(self.sock, payload) == payload
                self.latencies.append(time.perf_counter() - due)
                self.rounds += 1
                due += self.PACE
        except BaseException as exc:
            self.error = exc

    def served(self, rounds: int) -> bool:
        """Wait until `rounds` more round trips are done (False: not in 60 s)."""
        goal = self.rounds + rounds
        return wait_until(lambda: self.rounds >= goal or self.error is not None, timeout=60)

    def p99(self, since: int = 0, until: int | None = None) -> float:
        """The 99th percentile of the round trips after the first `since`
        (a count of `latencies` taken earlier), up to the first `until`, in
        seconds."""
        times = sorted(self.latencies[since:until])
        assert len(times) >= 100, f"too few round trips to judge: {len(times)}"
        return times[len(times) * 99 // 100]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.sock.close()
        assert self.error is None, self.error


@contextlib.contextmanager
def guarded_instance(port, *flags: str):
    """An instance whose app group may attach (with `flags`), an honest echo
    app (root) on port 7002 and its client in the peer namespace."""
    with running_stack(port.vf(0), f"{VF0}/24", "vf0", "--app-group", str(APP_GID), *flags) as vf0:
        control = control_of(vf0)
        with echo_server(control, 7002, "honest"):
            honest = Honest(port.netns)
            try:
                yield port, vf0, control, honest
            finally:
                honest.close()


@pytest.fixture
def guarded(emulated_port):
    with guarded_instance(emulated_port) as parts:
        yield parts


def assert_still_serving(port, instance) -> None:
    assert instance.proc.poll() is None, "the stack died"
    result = kernel_peer(
        port.netns, "echo", "--host", VF0, "--port", "7002", "--bytes", str(MB),
        "--seed", "5", timeout=60,
    )  # fmt: skip
    assert result["received_sha256"] == result["sent_sha256"]


def test_an_app_cannot_resize_its_segment_under_the_stack(guarded):
    """Finding 1: an app truncating its segment file made the stack die of
    SIGBUS. The segment is a sealed memfd: every resize is EPERM, through
    any descriptor, and punching holes only zeroes pages the stack checks."""
    port, instance, control, honest = guarded
    attacker = hostile(control, "resize", 3)
    while attacker.poll() is None:
        assert honest.served(10)  # served while the attack runs
    report = report_of(attacker)
    assert report["opens"] == 2  # the memfd, and a second open file of it
    for change in ("truncate_to_0", "truncate_smaller", "truncate_larger",
                   "fallocate_beyond", "drop_seals", "seal_writes"):  # fmt: skip
        assert report["refused"][change] == ["EPERM"], (change, report)
    assert report["refused"]["punch_hole"] == ["done"]
    assert report["size_after"] == report["size"]
    assert_still_serving(port, instance)


def test_an_app_ringing_its_doorbell_without_pause_starves_nobody(guarded):
    """Finding 3: an app kept the stack's FIFO doorbell full and held the
    loop in a read-until-empty drain for seconds a call. The stack's
    doorbell is an eventfd: one read per pass, however it is rung."""
    port, instance, control, honest = guarded
    attacker = hostile(control, "ring", 60)
    try:
        assert honest.served(300), f"starved: {honest.rounds} round trips"
        assert attacker.poll() is None, "the attack ended before the honest app was served"
    finally:
        attacker.kill()
        attacker.communicate(timeout=60)
    assert_still_serving(port, instance)


def test_an_app_cannot_take_the_shared_memory_the_others_need(emulated_port):
    """Finding 2: sessions asked for sparse segments on the shared tmpfs, and
    an app touching every page filled it; the stack died on its next write
    to a fresh page. Segments are memfds the stack preallocates as it uses
    them, within an instance and a per-app limit: the hog is refused, its
    own touches cost the stack nothing, and the others are served."""
    with guarded_instance(emulated_port, "--shm-limit-mib", "64", "--app-shm-limit-mib", "16") as (
        port,
        instance,
        control,
        honest,
    ):
        memory = lambda: instance.counters()["memory"]  # noqa: E731
        # The honest app's, once its connection's rings are committed (its
        # echo server may not have accepted yet: 52 KiB more, counted as
        # the hog's).
        assert honest.served(10)
        before = memory()["segments"]
        attacker = hostile(control, "hog", 30)
        try:
            assert json.loads(attacker.stdout.readline()) == {"holding": True}
            assert honest.served(100)  # served while the hog holds all it could
            held = memory()["segments"] - before
            assert 15 * MB < held <= 16 * MB, held
            assert memory()["segments"] <= instance.counters()["memory_limits"]["segments"]
            with echo_server(control, 7003, "late"):  # a new app still attaches
                late = peer_connection(port.netns, VF0, 7003)
                assert round_trip(late, b"room for me") == b"room for me"
                late.close()
        finally:
            attacker.kill()
            attacker.communicate(timeout=60)
        refusals = instance.counters()["refusals"]
        assert refusals["shm_app"] >= 2 and refusals["shm_instance"] == 0
        assert wait_until(lambda: memory()["segments"] - before < 4 * MB)  # gone with it
        assert_still_serving(port, instance)


def test_an_app_attaching_without_end_locks_nobody_out(emulated_port):
    """Finding 9: 64 sessions first come first served, an unopened Attach
    kept 10 s: one app re-attaching locked every other out. Sessions are
    counted per app (its uid, from the kernel) and one never taken is
    dropped after the attach timeout."""
    with guarded_instance(
        emulated_port, "--max-sessions", "8", "--max-app-sessions", "3",
        "--attach-timeout-ms", "500",
    ) as (port, instance, control, honest):  # fmt: skip
        attacker = hostile(control, "squat", 60)
        try:
            assert wait_until(lambda: instance.counters()["refusals"]["sessions_app"] > 10, 60)
            for n in range(3):  # new apps attach, serve, leave, while it squats
                with echo_server(control, 7003 + n, f"late{n}"):
                    late = peer_connection(port.netns, VF0, 7003 + n)
                    assert round_trip(late, b"let me in") == b"let me in"
                    late.close()
                assert instance.counters()["sessions"]["attached"] <= 1 + 3 + 1
            assert honest.served(100)
            assert attacker.poll() is None, "the attack ended before the others were served"
        finally:
            attacker.kill()
            attacker.communicate(timeout=60)
        assert wait_until(lambda: sessions(control) == ["honest"])  # its last ones expired
        refusals = instance.counters()["refusals"]
        assert refusals["attach_timeout"] >= 3 and refusals["sessions_instance"] == 0
        assert_still_serving(port, instance)


def test_a_peer_sending_far_out_of_order_bytes_gets_no_more_than_the_tcp_memory(emulated_port):
    """Finding 4 (remote): one byte just inside a connection's window grew
    its receive ring to the whole window; 400 connections cost 101 MiB
    (256 KiB windows), and nothing bounded the total. The attacker here
    holds 400 real connections (the peer's kernel) to the discard service
    and sends each a byte at the edge of the window it was offered (the
    SYN-ACK's, 64 KiB) as a raw frame: 25 MiB of rings unchecked. Every
    connection's rings are charged
    to --tcp-memory-mib (16): past 3/4 of it out-of-order bytes are
    refused, the instance stays within it, and the others are served."""
    with guarded_instance(emulated_port, "--diag-services", "--tcp-memory-mib", "16") as (
        port, instance, _control, honest,
    ):  # fmt: skip
        in_netns(port.netns, "sysctl", "-qw", "net.ipv4.tcp_timestamps=0")  # frames without TS
        limit = instance.counters()["memory_limits"]["tcp_buffers"]
        assert limit == 16 * MB
        with inside_netns(port.netns):
            raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            raw.bind((port.wire, 0))
            attackers = [socket.create_connection((VF0, 9), timeout=10) for _ in range(400)]
        peer_mac = raw.getsockname()[4]
        try:
            for sock in attackers:
                snd_nxt, rcv_nxt = sequence_numbers(sock)
                src_ip, src_port = sock.getsockname()
                raw.send(tcp_frame(
                    bytes.fromhex(vf_mac(0).replace(":", "")), peer_mac, ip(src_ip), ip(VF0),
                    src_port, 9, (snd_nxt + 60_000) & 0xFFFFFFFF, rcv_nxt, 0x10, 65535, b"x",
                ))  # fmt: skip
            refused = lambda: instance.counters()["tcp_drops"]["tcp_rcv_buffer_full"]  # noqa: E731
            assert wait_until(lambda: refused() >= 400 - 192)  # 12 MiB of 64 KiB rings
            held = instance.counters()["memory"]["tcp_buffers"]
            assert 8 * MB < held <= limit * 3 // 4, held
            assert honest.served(100)  # in order, its rings still grow
        finally:
            for sock in attackers:
                sock.close()
            raw.close()
        assert wait_until(lambda: instance.counters()["memory"]["tcp_buffers"] < 2 * MB)
        assert_still_serving(port, instance)


def test_an_app_hoarding_the_largest_buffers_and_never_reading_takes_no_more_than_the_limits(
    emulated_port,
):
    """Findings 6 and 10: SO_SNDBUF/SO_RCVBUF were anyone's up to 64 MiB a
    socket, with nothing counting them; and READY events were merged within
    a pass only, so an app that left its events unread grew the stack's
    heap by one event per segment it received. The hoarder asks a listener
    for 64 MiB buffers (its connections inherit them), then makes no call
    into its session while 8 peers connect and send 6 MiB each: 48 MiB
    against --tcp-memory-mib 16. The buffers are clamped
    (max_socket_buffer, as Linux clamps to rmem_max), the instance holds
    no more than its limits (events at most one READY per socket), the
    others are served while it holds the memory; and once the hoarder
    reads, every byte is there."""
    peers, size = 8, 6 * MB
    with guarded_instance(emulated_port, "--tcp-memory-mib", "16") as (
        port, instance, control, honest,
    ):  # fmt: skip
        assert honest.served(100)
        quiet, mark = honest.p99(), len(honest.latencies)
        attacker = hostile(control, "hoard", 12, "--ports", "7100")
        listening = json.loads(attacker.stdout.readline())
        top = TcpSettings().max_socket_buffer
        assert (listening["SO_SNDBUF"], listening["SO_RCVBUF"]) == (top, top), listening
        before = instance.counters()["tcp"]["segments_in"]
        payloads = [os.urandom(size) for _ in range(peers)]

        def send(payload: bytes) -> None:
            with peer_connection(port.netns, VF0, 7100) as sock:
                sock.settimeout(240)
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(1) == b""  # the hoarder read it all and closed

        with concurrent.futures.ThreadPoolExecutor(peers) as pool:
            sending = [pool.submit(send, payload) for payload in payloads]
            held = lambda: instance.counters()["memory"]["tcp_buffers"]  # noqa: E731
            assert wait_until(lambda: held() > 12 * MB, timeout=30), held()
            # Judged while the hoarder holds the memory, not while 48 MiB
            # arrives or is read: the honest echo then waits in the NIC's
            # ring behind bulk segments, as behind anyone's bulk transfer.
            time.sleep(1)
            mark = len(honest.latencies)
            for _ in range(4):  # the hoarder sleeps, its peers pushing
                assert_within_memory_limits(instance, connections=peers + 1)
                assert instance.counters()["memory"]["event_backlog"] <= 64 * 2 * peers
                time.sleep(0.5)
            holding = len(honest.latencies)
            assert instance.counters()["tcp"]["segments_in"] - before > 5000
            report = report_of(attacker, timeout=300)
            for done in sending:
                done.result(timeout=240)
        assert report["unfinished"] == 0, report
        assert report["digests"] == sorted(hashlib.sha256(p).hexdigest() for p in payloads)
        during = honest.p99(mark, holding)
        assert during <= max(P99_BOUND, QUIET_P99_FACTOR * quiet), (during, quiet)
        assert_still_serving(port, instance)


def test_an_app_listing_connections_without_pause_holds_nobody_up(emulated_port):
    """Finding 8: a listing was built whole in one pass (410 ms at 60 000
    flows), and one larger than the link's frame broke the control link for
    good. A listing is now a page of at most 500 rows, scanned 2048 sockets
    a pass, and a reply is one message, whole or not at all."""
    with guarded_instance(emulated_port, "--diag-services") as (port, instance, control, honest):
        peer = spawn_in_netns(
            port.netns, sys.executable, "-m", "tests.support.kernel_peer", "hold",
            "--host", VF0, "--port", "80", "--count", "1200", "--linger", "120",
            "--timeout", "120", stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        try:
            assert "served" in peer.stdout.readline()  # 1200 connections open
            attacker = hostile(control, "list", 10)
            assert honest.served(100)  # served while the lister lists
            with echo_server(control, 7003, "late"):  # the control link still attaches
                pass
            report = report_of(attacker)
            assert report["calls"] > 4 and report["errors"] == {}, report
            # What it sent went through the gate at its uid's budget: a call
            # is 30 bytes at the very least (HTTP/2 frame headers, gRPC's
            # prefix), so it made no more calls than the budget pays for.
            budget = gate.UPLOAD_BURST + gate.UPLOAD_BYTES_PER_S * report["seconds"]
            assert report["calls"] * 30 <= budget, report
            # Its calls looked at its own sockets only (it has none): it saw
            # none of the others' (finding 12).
            assert report["most_rows"] == 0
            with vfstack._control.ControlClient(control) as client:
                first = client.connections(states=["ESTABLISHED"])
                rest = client.connections(
                    states=["ESTABLISHED"], after_id=first.connections[-1].connection_id
                )
            ids = [c.connection_id for c in (*first.connections, *rest.connections)]
            assert len(first.connections) == 500  # a page, however many there are
            assert first.total >= 1200 and len(set(ids)) == len(ids) == min(first.total, 1000)
        finally:
            peer.kill()
            peer.communicate(timeout=60)
        assert_still_serving(port, instance)


def as_app(uid: int, *argv: str, nice: int = 0) -> subprocess.Popen:
    """A module's main as `uid`, in the app group."""
    return subprocess.Popen(
        ["nice", "-n", str(nice), sys.executable, "-m", "tests.support.as_user", str(uid),
         str(APP_GID), *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def listed(control: str, uid: int, what: str) -> dict:
    done = as_app(uid, "tests.support.caller", "--control", control, what)
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_each_app_lists_its_own_sessions_and_connections_root_all(emulated_port):
    """Finding 12: every member of the app group saw every app's sessions
    and peers. A listing is for the caller's uid (SO_PEERCRED); root's, all."""
    with running_stack(
        emulated_port.vf(0), f"{VF0}/24", "vf0", "--app-group", str(APP_GID)
    ) as instance:
        control = control_of(instance)
        apps = [
            as_app(uid, "vfstack.examples.echo_server", "--control", control, "--port", port,
                   "--app", name)
            for uid, port, name in ((10001, "7011", "alpha"), (HOSTILE_UID, "7012", "beta"))
        ]  # fmt: skip
        try:
            for app in apps:
                assert "listening on" in app.stdout.readline(), app.stderr.read()
            for uid, name, port in ((10001, "alpha", 7011), (HOSTILE_UID, "beta", 7012)):
                (session,) = listed(control, uid, "sessions")["sessions"]
                assert (session["app"], session["uid"]) == (name, uid)
                (conn,) = listed(control, uid, "connections")["connections"]
                assert (conn["local_port"], conn["owner"]) == (port, name)
            assert sessions(control) == ["alpha", "beta"]  # root
        finally:
            for app in apps:
                app.kill()
                app.wait()


def listening_addresses(port: int) -> set[str]:
    """The addresses TCP sockets listen on at `port` here (/proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.parametrize(("flags", "expected"), [((), "127.0.0.1"), (("0.0.0.0",), "0.0.0.0")])
def test_metrics_listen_on_loopback_unless_told(emulated_port, flags, expected):
    """Finding 12: /metrics, which names every app, listened on 0.0.0.0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = ("--metrics-address", *flags) if flags else ()
    with running_stack(
        emulated_port.vf(0), f"{VF0}/24", "vf0", "--metrics-port", str(port), *address
    ):
        assert listening_addresses(port) == {expected}


def test_an_app_cannot_take_privileged_ports_nor_another_apps_while_it_restarts(emulated_port):
    """Finding 12: any app could listen on any port, below 1024 too, and
    grab one while its owner restarted."""
    with running_stack(
        emulated_port.vf(0), f"{VF0}/24", "vf0", "--app-group", str(APP_GID),
        "--port-reserve-ms", "2000",
    ) as instance:  # fmt: skip
        control = control_of(instance)

        def owner() -> subprocess.Popen:
            app = as_app(10001, "vfstack.examples.echo_server", "--control", control,
                         "--port", "7021", "--app", "owner")  # fmt: skip
            assert "listening on" in app.stdout.readline(), app.stderr.read()
            return app

        app = owner()
        assert grab_ports(control, 80, 7021) == {"80": "EACCES", "7021": "EADDRINUSE"}
        app.kill()
        app.wait()
        assert wait_until(lambda: sessions(control) == [])
        assert grab_ports(control, 7021) == {"7021": "EADDRINUSE"}  # kept for its owner
        app = owner()  # which finds it on its return
        app.kill()
        app.wait()
        assert wait_until(lambda: grab_ports(control, 7021) == {"7021": "OK"}, timeout=30)
        refusals = instance.counters()["refusals"]
        assert refusals["privileged_port"] == 1 and refusals["reserved_port"] >= 1


def grab_ports(control: str, *ports: int) -> dict:
    """What the hostile app got trying to listen on each of `ports`."""
    attacker = hostile(control, "ports", 0, "--ports", ",".join(map(str, ports)))
    return report_of(attacker)["listen"]


# -- a hostile peer on the wire, segments crafted (tests/support/raw_peer.py) ----

# The issue asks that an honest app's echo round trips stay under 10 ms
# (p99) while an attack runs. The tests share 2 cores with the attacker's
# own process, the stack, the apps and whatever else the machine runs, so
# the bound is 10 ms or, when the honest app's p99 before the attack was
# above 1 ms already, ten times that: what an attack that holds the loop
# (100 ms to 2 s a pass, the issue measured) breaks either way, and what a
# busy machine alone does not.
QUIET_P99_FACTOR, P99_BOUND = 10, 0.010


def assert_served_as_before(
    honest: Honest, quiet: float, since: int, factor: float = QUIET_P99_FACTOR
) -> None:
    """The honest app's p99 since round trip `since` is within the bound,
    given `quiet`, its p99 before the attack."""
    during = honest.p99(since)
    bound = max(P99_BOUND, factor * quiet)
    assert during <= bound, f"p99 {during * 1e3:.1f} ms, {quiet * 1e3:.1f} ms before the attack"


def assert_within_memory_limits(instance, connections: int = 0) -> None:
    """Every pool within its limit; TCP buffers beyond it by at most a first
    ring per buffer of `connections` (tcp/buffers.py: Linux's tcp_rmem[0])."""
    counters = instance.counters()
    for pool, used in counters["memory"].items():
        slack = 2 * MIN_RING * connections if pool == "tcp_buffers" else 0
        assert used <= counters["memory_limits"][pool] + slack, (pool, counters["memory"])


def raw_peer(port, mode: str, *args: str) -> subprocess.Popen:
    """tests/support/raw_peer.py in the peer namespace, against VF 0's instance."""
    return spawn_in_netns(
        port.netns, sys.executable, "-m", "tests.support.raw_peer", mode, "--iface", port.wire,
        "--dst-mac", vf_mac(0), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT,
    )  # fmt: skip


def test_challenge_acks_tell_a_peer_nothing_of_the_connections_it_guesses(emulated_port):
    """Finding 11 (remote, CVE-2016-5696): challenge ACKs came from one
    instance-wide bucket of a fixed size, so an off-path attacker could
    spend it with spoofed segments aimed at a guessed connection and count
    what its own connections still drew that second: one less meant the
    guess existed. The attacker here pokes a victim's connection (another
    client's, its 4-tuple and sequence numbers known) with in-window SYNs
    and RSTs, and stale bare ACKs, at 1000 a second: the per-connection
    limit (one per 500 ms, `invalid_ack_interval_us`, shared by challenge
    ACKs and ACKs to out-of-window segments) lets through two a second. Then it pokes
    1000 connections of its own, more than the instance's budget answers,
    and counts the challenge ACKs of each second: the random budget
    (`ChallengeAckBudget`, drawn in [500, 1500)) varies by far more than
    the two a guessed connection can spend, and no second gets more than
    its 1500."""
    with guarded_instance(emulated_port, "--diag-services") as (port, instance, _control, honest):
        in_netns(port.netns, "sysctl", "-qw", "net.ipv4.tcp_timestamps=0")  # frames without TS
        victim = peer_connection(port.netns, VF0, 7002)
        assert round_trip(victim, b"before") == b"before"
        snd_nxt, rcv_nxt = sequence_numbers(victim)
        assert honest.served(300)
        quiet, mark = honest.p99(), len(honest.latencies)
        before = instance.counters()["tcp"]
        victim_seconds = 3
        attacker = raw_peer(
            port, "challenge", "--own", "1000", "--seconds", "6",
            "--victim-seconds", str(victim_seconds),
            "--victim", f"{victim.getsockname()[1]}:7002:{snd_nxt}:{rcv_nxt}",
        )  # fmt: skip
        out, err = attacker.communicate(timeout=120)
        assert attacker.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        after = instance.counters()["tcp"]
        assert report["victim_pokes"] > 1000 * victim_seconds // 2, report
        assert report["victim_challenge_acks"] <= 2 * victim_seconds + 1, report
        assert round_trip(victim, b"after") == b"after"  # and it lives on
        victim.close()
        counts = report["per_second"]
        # Counted by when the attacker read them: a late read moves a few
        # to the next second, so the budget is judged over all of them.
        assert sum(counts) <= 1500 * len(counts), counts
        assert max(counts) - min(counts) > 50, counts
        assert after["challenge_acks_limited"] > before["challenge_acks_limited"] + sum(counts)
        stale_acks = after["out_of_window_acks_limited"] - before["out_of_window_acks_limited"]
        assert stale_acks > report["victim_pokes"] // 3 - 2 * victim_seconds - 1, report
        # This attacker's own process takes one of the two cores (9000
        # crafted frames a second from Python), so the bound is looser.
        assert_served_as_before(honest, quiet, mark, factor=50)
        assert_within_memory_limits(instance)
        assert_still_serving(port, instance)


def test_peers_that_shut_their_windows_for_good_hold_the_instance_a_bounded_time(emulated_port):
    """Finding 5 (remote): zero-window probes never gave up, so a connection
    its app had closed kept its unsent data for ever in FIN-WAIT-1 when the
    peer never opened its window again; a flood of such peers filled the
    flow table for every app. The attacker here opens 200 connections from
    made-up addresses, asks the diag HTTP service for 64 KiB (which sends,
    then closes: its connections are orphans), takes the first 1072 bytes,
    then shuts its window: on half of them it never answers a probe, on the
    others it answers each with its window still shut. An orphan is
    reset after `orphan_retries` (8) probes (`_persist_timer`), so each
    goes after the probes' backoff (about 100 s), the rest of the instance
    is served meanwhile, and its memory stays within its limit."""
    orphans, retries = 200, TcpSettings().orphan_retries
    with guarded_instance(emulated_port, "--diag-services", "--tcp-memory-mib", "64") as (
        port, instance, control, honest,
    ):  # fmt: skip
        assert honest.served(300)
        quiet, mark = honest.p99(), len(honest.latencies)
        before = instance.counters()
        attacker = raw_peer(port, "zero-window", "--count", str(orphans), "--timeout", "200")
        try:
            assert json.loads(attacker.stdout.readline()) == {"shut": orphans}
            counters = instance.counters()
            assert counters["tcp_states"]["fin_wait_1"] == orphans  # held, for now
            held = counters["memory"]["tcp_buffers"] - before["memory"]["tcp_buffers"]
            assert held >= orphans * (64 << 10), held  # each its unsent body
            assert_within_memory_limits(instance)
            with echo_server(control, 7003, "late"):  # nobody is locked out
                late = peer_connection(port.netns, VF0, 7003)
                assert round_trip(late, b"room for me") == b"room for me"
                late.close()
            out, err = attacker.communicate(timeout=240)
        finally:
            attacker.kill()
        assert attacker.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        after = instance.counters()
        assert report["reset"] == orphans and report["beyond_window"] == 0, report
        for kind in ("silent", "answering"):
            assert max(report[kind]["probes"]) <= retries, report
        aborts = after["tcp"]["orphan_aborts"] - before["tcp"]["orphan_aborts"]
        assert aborts == orphans
        assert after["tcp_states"]["fin_wait_1"] == 0
        assert wait_until(lambda: live_connections(instance) == 1)  # the honest app's
        assert after["memory"]["tcp_buffers"] <= before["memory"]["tcp_buffers"] + MB
        assert_served_as_before(honest, quiet, mark)
        assert_still_serving(port, instance)


def test_an_app_holding_one_destinations_ports_and_closing_listeners_holds_nobody_up(
    emulated_port,
):
    """Finding 7: one app's commands drove scans of the whole flow table or
    port range on the loop every app shares: closing a listener scanned
    every flow for its half-open children, and a connect walked the whole
    ephemeral range once every port to its destination was in use (1.4 s
    a pass). The attacker holds every port to one destination (a peer on
    the wire that never acknowledges a close: 28 232 orphans in
    FIN-WAIT-1), then sends, again and again, a pass's worth (256) of
    connects to it and of listener closes. A listener keeps its half-open
    connections (`Listener.half_open`); a connect tries EPHEMERAL_PROBES
    ports at most (RFC 6056 double-hash), and a destination without a free
    port is not searched again for EXHAUSTED_RETRY_US (without that, 256
    bounded searches a pass held the loop 130 ms a pass: the honest app's
    p99 was a second). The honest app is served as before."""
    with guarded_instance(emulated_port) as (port, instance, control, honest):
        peer = raw_peer(port, "responder", "--ip", "198.18.0.250", "--port", "9999")
        try:
            assert json.loads(peer.stdout.readline()) == {"serving": "198.18.0.250"}
            assert honest.served(300)
            quiet = honest.p99()
            attacker = hostile(control, "scans", 10, "--target", "198.18.0.250:9999")
            try:
                json.loads(attacker.stdout.readline())  # holding its ports
                assert_within_memory_limits(instance)
                mark = len(honest.latencies)
                report = report_of(attacker)
            finally:
                attacker.kill()
        finally:
            peer.terminate()
            peer.communicate(timeout=30)
        # The destination's every port was in use (in 90 s, before the first
        # orphan gave up): its connects were refused, after a search or not.
        assert report["held"] >= EPHEMERAL_LAST - EPHEMERAL_FIRST + 1, report
        assert report["connects"].get("EADDRNOTAVAIL", 0) >= 256 * 10, report
        assert report["listeners_closed"] >= 256 * 10, report
        assert_served_as_before(honest, quiet, mark)
        assert_within_memory_limits(instance)
        assert_still_serving(port, instance)
