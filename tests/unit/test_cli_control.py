"""The operator commands (`vfstack status|conns|stats|sessions`) and the
control-URL parsing under them.

The commands run against a real gRPC server on a unix socket, serving a
small test double of StackControl with fixed replies: these tests cover
the client's requests and output, not the stack's servicer.
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from vfstack import cli
from vfstack._control import ControlClient, ControlError, parse_control_url, resolve_control_url
from vfstack.v1 import stack_pb2, stack_pb2_grpc

INFO = stack_pb2.StackInfo(
    name="vf0",
    iface="vfpf0v0",
    mac="02:00:00:00:00:10",
    ip="198.18.0.10/24",
    mode="emulated",
    pf="vfpf0",
    vf_index=0,
    workers=1,
    version="0.1.0",
    uptime_ms=3_723_000,
    congestion_control="newreno",
    diag_services=True,
    build="compiled",
)
CONNECTIONS = [
    stack_pb2.Connection(
        connection_id=1, state="LISTEN", local_ip="0.0.0.0", local_port=80, owner="diag"
    ),
    stack_pb2.Connection(
        connection_id=7,
        state="ESTABLISHED",
        local_ip="198.18.0.10",
        local_port=80,
        remote_ip="198.18.0.1",
        remote_port=54321,
        send_queue=1448,
        receive_queue=0,
        cwnd=14480,
        srtt_us=1234,
        rto_us=201_000,
        retransmits=3,
        owner="diag",
    ),
    stack_pb2.Connection(
        connection_id=12345,
        state="TIME_WAIT",
        local_ip="198.18.0.10",
        local_port=8080,
        remote_ip="198.18.0.123",
        remote_port=1,
        cwnd=2896,
        rto_us=200_000,
        owner="web-frontend",
    ),
]


def _stats(delta: bool, timestamp_ms: int, **groups: dict[str, int]) -> stack_pb2.Stats:
    return stack_pb2.Stats(
        timestamp_ms=timestamp_ms,
        delta=delta,
        groups=[
            stack_pb2.CounterGroup(
                name=name,
                counters=[stack_pb2.Counter(name=n, value=v) for n, v in counters.items()],
            )
            for name, counters in groups.items()
        ],
    )


STATS = _stats(
    False,
    1_700_000_000_000,
    nic={"rx_packets": 5000, "tx_packets": 4000, "rx_errors": 0},
    drops={"bad_checksum": 0},
    tcp={"passive_opens": 1000, "active_opens": 0},
)
WATCH = [
    STATS,
    _stats(
        True, 1_700_000_001_000, nic={"rx_packets": 12, "tx_packets": 0}, tcp={"passive_opens": 2}
    ),
    _stats(True, 1_700_000_002_000, nic={"rx_packets": 0}, tcp={"passive_opens": 0}),
]


class FixedStackControl(stack_pb2_grpc.StackControlServicer):
    """Fixed replies; remembers the requests it was sent."""

    def __init__(self) -> None:
        self.requests: list[object] = []
        self.sessions: list[stack_pb2.Session] = []
        self.info_delay = 0.0
        self.watch_stall = False
        self.total = len(CONNECTIONS)  # what ListConnections says matched
        self.connections = CONNECTIONS

    def GetInfo(self, request, context):
        deadline = time.monotonic() + self.info_delay
        while time.monotonic() < deadline and context.is_active():
            time.sleep(0.01)
        return INFO

    def ListConnections(self, request, context):
        self.requests.append(request)
        if request.connection_id == 99:
            context.abort(grpc.StatusCode.NOT_FOUND, "no connection 99")
        if "BOGUS" in request.states:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown state 'BOGUS'")
        return stack_pb2.ListConnectionsResponse(connections=self.connections, total=self.total)

    def GetStats(self, request, context):
        return STATS

    def ListSessions(self, request, context):
        return stack_pb2.ListSessionsResponse(sessions=self.sessions)

    def WatchStats(self, request, context):
        self.requests.append(request)
        if self.watch_stall:
            yield WATCH[0]
            while context.is_active():
                time.sleep(0.01)
            return
        yield from WATCH


@pytest.fixture
def socket_dir(tmp_path):
    # sun_path holds 107 bytes: fall back to a short directory if need be.
    if len(str(tmp_path / "stack.sock")) < 100:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="vfctl-") as short:
        yield Path(short)


@pytest.fixture
def stack(socket_dir, monkeypatch):
    """A servicer on a real unix-socket gRPC server; its URL in
    servicer.url and in $VFSTACK_CONTROL."""
    servicer = FixedStackControl()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    stack_pb2_grpc.add_StackControlServicer_to_server(servicer, server)
    path = socket_dir / "stack.sock"
    server.add_insecure_port(f"unix://{path}")
    server.start()
    servicer.url = f"unix://{path}"
    monkeypatch.setenv("VFSTACK_CONTROL", servicer.url)
    yield servicer
    server.stop(grace=None)


def run(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def assert_one_error_line(err: list[str], prefix: str) -> None:
    assert len(err) == 1, err
    assert err[0].startswith(prefix), err
    assert "Traceback" not in err[0]


# --- control URLs ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("unix:///run/vfstack/vf0.sock", "unix:///run/vfstack/vf0.sock"),
        ("unix:/run/vfstack/vf0.sock", "unix:///run/vfstack/vf0.sock"),
        ("tcp://127.0.0.1:50051", "127.0.0.1:50051"),
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("tcp://localhost:1", "localhost:1"),
        ("stack-0.example.com:65535", "stack-0.example.com:65535"),
        ("[::1]:50051", "[::1]:50051"),
        ("tcp://[fe80::1]:443", "[fe80::1]:443"),
        (" unix:///tmp/x.sock\n", "unix:///tmp/x.sock"),
    ],
)
def test_parse_control_url_valid_forms_give_grpc_targets(url, target):
    assert parse_control_url(url) == target


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "unix:relative.sock",
        "unix://run/vfstack/vf0.sock",  # "run" would be a host
        "unix:///",
        "tcp://host",
        "host:0",
        "host:65536",
        "host:http",
        "host:",
        ":50051",
        "::1:50051",
        "[not-v6]:50051",
        "999.1.1.1:50051",
        "under_score:1",
        "tcp://host:1/path",
        "http://host:80",
        "dns:///host:1",
        "unix-abstract:vf0",
        "host\n:1",
    ],
)
def test_parse_control_url_malformed_forms_raise_one_line(url):
    with pytest.raises(ValueError) as info:
        parse_control_url(url)
    message = str(info.value)
    assert message and "\n" not in message


def test_resolve_control_url_prefers_flag_then_env_else_says_how():
    assert resolve_control_url("h:1", {"VFSTACK_CONTROL": "e:2"}) == "h:1"
    assert resolve_control_url(None, {"VFSTACK_CONTROL": "e:2"}) == "e:2"
    with pytest.raises(ValueError, match=r"--control .* VFSTACK_CONTROL"):
        resolve_control_url(None, {})


def test_client_not_found_carries_code_and_server_details(stack):
    with ControlClient(stack.url) as client, pytest.raises(ControlError) as info:
        client.connections(connection_id=99)
    assert (info.value.code, info.value.message) == ("NOT_FOUND", "no connection 99")


# --- status ---------------------------------------------------------------


def test_status_prints_aligned_key_value_lines(stack, capsys):
    status, out, err = run(capsys, "status")
    assert (status, err) == (0, [])
    fields = {line[: line.index(":")]: line[line.index(":") + 1 :].strip() for line in out}
    assert fields == {
        "name": "vf0",
        "iface": "vfpf0v0",
        "mac": "02:00:00:00:00:10",
        "ip": "198.18.0.10/24",
        "gateway": "none",
        "mode": "emulated",
        "pf": "vfpf0",
        "vf": "0",
        "workers": "1",
        "version": "0.1.0",
        "build": "compiled",
        "uptime": "1h 02m 03s",
        "congestion control": "newreno",
        "diag services": "on",
    }
    starts = {len(line) - len(value) for line, value in zip(out, fields.values(), strict=True)}
    assert len(starts) == 1  # the values form one column


def test_status_json_is_the_reply_with_field_names(stack, capsys):
    status, out, _ = run(capsys, "status", "--json")
    data = json.loads("\n".join(out))
    assert status == 0
    assert data["name"] == "vf0" and data["vf_index"] == 0 and data["uptime_ms"] == 3_723_000
    assert data["gateway"] == ""


# --- conns ----------------------------------------------------------------


def test_conns_table_columns_align_to_the_widest_cell(stack, capsys):
    status, out, err = run(capsys, "conns", "--control", stack.url)
    assert (status, err) == (0, [])
    header, *rows = out
    assert len(rows) == 3
    local = header.index("Local Address:Port")
    peer = header.index("Peer Address:Port")
    owner = header.index("owner")
    expected = [
        ("0.0.0.0:80", "*:*", "diag"),
        ("198.18.0.10:80", "198.18.0.1:54321", "diag"),
        ("198.18.0.10:8080", "198.18.0.123:1", "web-frontend"),
    ]
    for row, (local_addr, peer_addr, who) in zip(rows, expected, strict=True):
        assert row[local:].startswith(local_addr + " ")
        assert row[peer:].startswith(peer_addr + " ")
        assert row[owner:].startswith(who + " ")
    # Right-aligned numbers end under their header; the last column too.
    for name, cells in [("Send-Q", ["0", "1448", "0"]), ("id", ["1", "7", "12345"])]:
        end = header.index(name) + len(name)
        for row, cell in zip(rows, cells, strict=True):
            assert row[:end].endswith(" " + cell) and row[end : end + 1] in ("", " ")
    assert rows[1].split()[5:10] == ["14480", "1.234", "201", "3", "diag"]
    assert rows[0].split()[5:9] == ["-", "-", "-", "-"]  # a listener has no TCP metrics


def test_conns_shows_each_sockets_worker_when_the_instance_has_several(stack, capsys):
    _, one_worker, _ = run(capsys, "conns")
    assert "worker" not in one_worker[0]
    stack.connections = [
        stack_pb2.Connection(connection_id=c.connection_id + 1, worker=w, state=c.state)
        for w, c in enumerate(CONNECTIONS)
    ]
    status, out, _ = run(capsys, "conns")
    assert status == 0
    header, *rows = out
    assert header.split()[-2:] == ["id", "worker"]
    assert [row.split()[-2:] for row in rows] == [["2", "0"], ["8", "1"], ["12346", "2"]]


def test_conns_filters_are_sent_to_the_server(stack, capsys):
    status, _, _ = run(
        capsys, "conns", "--state", "established", "--state", "time-wait", "--id", "7",
        "--after", "5",
    )  # fmt: skip
    request = stack.requests[-1]
    assert status == 0
    assert (list(request.states), request.connection_id, request.limit, request.after_id) == (
        ["ESTABLISHED", "TIME_WAIT"],
        7,
        0,
        5,
    )


def test_conns_says_how_to_get_the_next_page(stack, capsys):
    stack.total = 10  # three of ten sockets in this page
    status, out, _ = run(capsys, "conns")
    assert status == 0
    assert out[-1] == "(3 of 10 sockets shown; the next: --after 12345)"


def test_conns_unknown_id_not_found_is_one_line_exit_1(stack, capsys):
    status, out, err = run(capsys, "conns", "--id", "99")
    assert (status, out) == (1, [])
    assert err == ["vfstack conns: no connection 99"]


def test_conns_unknown_state_invalid_argument_is_one_line_exit_1(stack, capsys):
    status, _, err = run(capsys, "conns", "--state", "bogus")
    assert status == 1
    assert err == ["vfstack conns: unknown state 'BOGUS'"]


def test_conns_json_lists_connections(stack, capsys):
    status, out, _ = run(capsys, "conns", "--json")
    data = json.loads("\n".join(out))
    assert status == 0
    assert data["total"] == 3
    assert [c["connection_id"] for c in data["connections"]] == [1, 7, 12345]


# --- stats ----------------------------------------------------------------


def test_stats_groups_counters_and_hides_zeros(stack, capsys):
    status, out, _ = run(capsys, "stats")
    assert status == 0
    assert out == [
        "nic:",
        "    5000 rx_packets",
        "    4000 tx_packets",
        "tcp:",
        "    1000 passive_opens",
    ]


def test_stats_all_shows_zero_counters(stack, capsys):
    _, out, _ = run(capsys, "stats", "--all")
    assert "       0 rx_errors" in out
    assert "drops:" in out and "    0 bad_checksum" in out
    assert "       0 active_opens" in out


def test_stats_json_has_every_counter_as_numbers(stack, capsys):
    _, out, _ = run(capsys, "stats", "--json")
    data = json.loads("\n".join(out))
    nic = data["groups"][0]
    assert nic["name"] == "nic"
    assert {c["name"]: c["value"] for c in nic["counters"]}["rx_errors"] == 0


def test_stats_watch_prints_totals_then_nonzero_deltas(stack, capsys):
    status, out, err = run(capsys, "stats", "--watch", "0.5")
    assert (status, err) == (0, [])
    assert stack.requests[-1].interval_ms == 500
    stamps = [line for line in out if line[:4].isdigit()]
    assert len(stamps) == 3
    assert stamps[0].endswith("totals")
    assert stamps[1].endswith("changes over 1.0 s")
    second = out.index(stamps[1])
    assert out[second + 1 : second + 5] == [
        "nic:",
        "    +12 rx_packets",
        "tcp:",
        "    +2 passive_opens",
    ]
    assert out[-1] == "    no change"


def test_stats_watch_default_interval_is_one_second(stack, capsys):
    cli.main(["stats", "--watch"])
    capsys.readouterr()
    assert stack.requests[-1].interval_ms == 1000


def test_stats_watch_json_prints_one_object_per_line(stack, capsys):
    _, out, _ = run(capsys, "stats", "--watch", "--json")
    messages = [json.loads(line) for line in out]
    assert [m["delta"] for m in messages] == [False, True, True]


def test_stats_watch_ctrl_c_exits_0_quietly(stack, capsys, monkeypatch):
    def interrupted(self, interval_ms):
        yield STATS
        raise KeyboardInterrupt

    monkeypatch.setattr(ControlClient, "watch_stats", interrupted)
    status, out, err = run(capsys, "stats", "--watch")
    assert (status, err) == (0, [])
    assert out[-1] == "    1000 passive_opens"


def test_stats_watch_stalled_stream_is_one_line_exit_1(stack, capsys):
    stack.watch_stall = True
    status, _, err = run(capsys, "stats", "--watch", "0.01", "--timeout", "0.2")
    assert status == 1
    assert_one_error_line(err, f"vfstack stats: no update from {stack.url} within")


# --- sessions -------------------------------------------------------------


def test_sessions_empty_says_so(stack, capsys):
    assert run(capsys, "sessions") == (0, ["no sessions"], [])


def test_sessions_table_lists_each_session(stack, capsys):
    stack.sessions = [
        stack_pb2.Session(
            session_id=3, app="web", uid=10001, pid=4242, attached_ms=90_000, sockets=17
        )
    ]
    _, out, _ = run(capsys, "sessions")
    assert out[0].split() == ["Session", "App", "UID", "PID", "Attached", "for", "Sockets"]
    assert out[1].split() == ["3", "web", "10001", "4242", "1m", "30s", "17"]


def test_sessions_show_each_one_s_worker_when_the_instance_has_several(stack, capsys):
    stack.sessions = [
        stack_pb2.Session(session_id=1 + w, app="web", uid=10001, worker=w) for w in range(2)
    ]
    _, out, _ = run(capsys, "sessions")
    assert out[0].split()[-1] == "worker"
    assert [line.split()[0] + ":" + line.split()[-1] for line in out[1:]] == ["1:0", "2:1"]


def test_sessions_watch_repeats_until_ctrl_c(stack, capsys, monkeypatch):
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", sleep)
    status, out, _ = run(capsys, "sessions", "--watch", "2")
    assert (status, naps) == (0, [2.0, 2.0])
    assert out.count("no sessions") == 2


# --- failures -------------------------------------------------------------


def test_unreachable_socket_is_one_line_exit_1(socket_dir, capsys):
    url = f"unix://{socket_dir}/nobody.sock"
    status, out, err = run(capsys, "conns", "--control", url)
    assert (status, out) == (1, [])
    assert_one_error_line(err, f"vfstack conns: cannot reach the instance at {url}: ")
    assert err[0].endswith("No such file or directory")


def test_slow_answer_is_deadline_exceeded_exit_1(stack, capsys):
    stack.info_delay = 2.0
    status, _, err = run(capsys, "status", "--timeout", "0.1")
    assert status == 1
    assert_one_error_line(err, "vfstack status: deadline exceeded")


@pytest.mark.parametrize("url", ["unix:relative.sock", "host:99999", "http://h:1", ""])
def test_malformed_control_is_one_line_usage_error(url, capsys):
    status, out, err = run(capsys, "status", "--control", url)
    assert (status, out) == (2, [])
    assert_one_error_line(err, "vfstack status: ")


def test_no_control_url_says_how_to_give_one(capsys, monkeypatch):
    monkeypatch.delenv("VFSTACK_CONTROL", raising=False)
    status, _, err = run(capsys, "sessions")
    assert status == 2
    assert_one_error_line(err, "vfstack sessions: no control URL")
    assert "--control" in err[0] and "VFSTACK_CONTROL" in err[0]


def test_bad_option_value_is_an_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["stats", "--watch", "0"])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_emulate_subcommand_still_parses():
    args = cli.build_parser().parse_args(["emulate", "up", "--vfs", "3"])
    assert (args.action, args.vfs, args.run) == ("up", 3, cli._emulate)


def test_client_closes_the_channel_on_exit(stack):
    with ControlClient(stack.url) as client:
        assert client.info().name == "vf0"
    with pytest.raises(ValueError):
        client.info()  # grpc refuses calls on a closed channel


def test_watch_interval_out_of_range_is_refused_at_once(stack):
    with ControlClient(stack.url) as client, pytest.raises(ValueError):
        client.watch_stats(5)
