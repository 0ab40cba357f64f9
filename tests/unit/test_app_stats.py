"""stackservice.metrics.apps: the per-app table in shared memory, on its
own, then as the fast path's sessions fill it (bytes counted where the
pumps move them, ring occupancy sampled in bounded sweeps)."""

from __future__ import annotations

import base64
import os
import time

import pytest
from vfstack.shm import Op

from stackservice.fastpath import occupancy
from stackservice.metrics.apps import (
    NAME_BYTES,
    SLOT_WORDS,
    AppField,
    AppSample,
    AppStatsTable,
    read_apps,
)
from stackservice.tcp.segment import ACK, SYN
from tests.support.shm import mapped, other_process
from tests.unit.tcp._rig import PEER_IP, PEER_PORT
from tests.unit.test_fastpath_session import (
    PEER_ISS,
    SMALL,
    Stack,
    accepted,
    open_socket,
    result,
)

HEADER_WORDS = 8
RING = SMALL["socket_ring_bytes"]


@pytest.fixture
def table(tmp_path):
    table = AppStatsTable(4, tmp_path / "vf0.apps")
    yield table
    table.close()


def by_app(path) -> dict[str, AppSample]:
    samples = read_apps(path)
    assert len({s.app for s in samples}) == len(samples)
    return {s.app: s for s in samples}


# -- the table ---------------------------------------------------------------


def test_sessions_of_one_name_share_a_slot_and_add_up(table):
    first, second = table.attach("web"), table.attach("web")
    other = table.attach("db")
    assert first == second != other
    table.counters(first)[AppField.RX_BYTES] += 100
    table.counters(second)[AppField.RX_BYTES] += 23
    table.counters(first)[AppField.TX_BYTES] += 7
    apps = by_app(table._path)
    assert (apps["web"].sessions, apps["web"].rx_bytes, apps["web"].tx_bytes) == (2, 123, 7)
    assert (apps["db"].sessions, apps["db"].rx_bytes, apps["db"].tx_bytes) == (1, 0, 0)
    assert list(apps) == ["web", "db"]  # slot order


def test_publish_gives_used_and_capacity_per_ring(table):
    index = table.attach("web")
    table.publish(index, 1, 64, 48, 64, 1000, 8192, 0, 8192)
    (sample,) = read_apps(table._path)
    assert sample.rings == {
        "command": (1, 64), "event": (48, 64), "rx": (1000, 8192), "tx": (0, 8192),
    }  # fmt: skip
    assert sample.occupancy("event") == 0.75
    assert sample.occupancy("tx") == 0.0


def test_occupancy_without_capacity_is_zero_and_never_above_one():
    sample = AppSample("x", 1, 0, 0, {"rx": (0, 0), "tx": (9, 4)})
    assert sample.occupancy("rx") == 0.0
    assert sample.occupancy("tx") == 1.0


def test_last_session_ending_keeps_the_totals_and_clears_the_rings(table):
    index = table.attach("web")
    table.attach("web")
    table.counters(index)[AppField.TX_BYTES] += 5
    table.publish(index, 1, 64, 1, 64, 1, 4096, 1, 4096)
    table.detach(index, now=10)
    assert read_apps(table._path)[0].rings["rx"] == (1, 4096)  # one session left
    table.detach(index, now=11)
    (sample,) = read_apps(table._path)
    assert (sample.app, sample.sessions, sample.tx_bytes) == ("web", 0, 5)
    assert set(sample.rings.values()) == {(0, 0)}
    table.detach(index, now=12)  # one too many: ignored
    assert read_apps(table._path)[0].sessions == 0
    assert table.attach("web") == index  # the name comes back: its counter goes on
    assert read_apps(table._path)[0].tx_bytes == 5


def test_a_new_name_takes_the_slot_idle_longest_when_all_are_named(tmp_path):
    table = AppStatsTable(3, tmp_path / "vf0.apps")
    a, b, c = (table.attach(name) for name in ("a", "b", "c"))
    table.counters(b)[AppField.RX_BYTES] += 9
    table.detach(b, now=100)
    table.detach(a, now=200)
    assert table.attach("d") == b  # idle since 100: dropped with its totals
    assert [(s.app, s.sessions, s.rx_bytes) for s in read_apps(table._path)] == [
        ("a", 0, 0), ("d", 1, 0), ("c", 1, 0),
    ]  # fmt: skip
    assert table.attach("e") == a
    assert table.attach("f") == -1  # every name has a session
    assert table.attach("c") == c  # a known name still attaches
    table.close()
    assert not (tmp_path / "vf0.apps").exists()


def test_names_round_trip_up_to_512_bytes(table):
    long = "\U0001f600" * 128  # MAX_APP_NAME characters of 4 bytes each
    for name in ("web", "añ-ü", long):
        table.attach(name)
    assert [s.app for s in read_apps(table._path)] == ["web", "añ-ü", long]
    assert len(long.encode()) == NAME_BYTES


def test_counters_bad_index_raises(table):
    with pytest.raises(IndexError):
        table.counters(-1)
    with pytest.raises(IndexError):
        table.counters(4)


def test_reader_refuses_another_layout_and_a_truncated_file(table, tmp_path):
    with mapped(str(table._path)) as view:
        view[8] ^= 1  # fingerprint
    with pytest.raises(ValueError, match="not an app table of this vfstack version"):
        read_apps(table._path)
    with mapped(str(table._path)) as view:
        view[8] ^= 1
    assert read_apps(table._path) == []
    os.truncate(table._path, 200)
    with pytest.raises(ValueError, match="truncated"):
        read_apps(table._path)
    with pytest.raises(FileNotFoundError):
        read_apps(tmp_path / "missing.apps")


def test_reader_skips_a_slot_the_writer_is_inside(table):
    web, db = table.attach("web"), table.attach("db")
    base = HEADER_WORDS + db * SLOT_WORDS
    with mapped(str(table._path)) as view:
        words = view.cast("Q")
        words[base + AppField.SEQ] += 1  # odd: as if the loop stopped mid-update
        assert [s.app for s in read_apps(table._path)] == ["web"]
        words[base + AppField.SEQ] += 1
        words.release()
    assert [s.app for s in read_apps(table._path)] == ["web", "db"]
    assert web == 0


WRITER_ROUNDS = 20_000


def _rename_and_publish(table: AppStatsTable, rounds: int) -> int:
    """The writer: in a one-slot table, replace the app `rounds` times (a
    new name and zeroed totals), publishing samples whose used is capacity / 2."""
    for done in range(1, rounds + 1):
        table.detach(0, now=done)
        assert table.attach(_name(done)) == 0
        for k in range(1, 4):
            n = done * 3 + k
            table.publish(0, n, 2 * n, n, 2 * n, n, 2 * n, n, 2 * n)
    return rounds


def _name(k: int) -> str:
    return f"{k:08d}-{k * 7919 % 1_000_003:07d}"


def test_reader_in_another_process_never_sees_a_torn_slot(tmp_path):
    """Seqlock: a name always matches itself, used always matches capacity."""
    table = AppStatsTable(1, tmp_path / "vf0.apps")
    table.attach(_name(0))
    names: set[str] = set()
    with other_process(_rename_and_publish, table, WRITER_ROUNDS) as writer:
        deadline = time.monotonic() + 60  # a bound on a writer that never ends, not a speed
        while _name(WRITER_ROUNDS) not in names:  # read until the writer's last name shows
            assert time.monotonic() < deadline, f"the writer's last name never showed: {names}"
            for sample in read_apps(table._path):
                k = int(sample.app[:8])
                assert sample.app == _name(k)
                for used, capacity in sample.rings.values():
                    assert 2 * used == capacity, sample
                names.add(sample.app)
        assert writer() == WRITER_ROUNDS
    assert len(names) > 2, names  # some reads met the writer at work, not just its ends
    table.close()


# -- filled by the fast path ---------------------------------------------------


@pytest.fixture
def apps_stack(tmp_path):
    """A session manager whose app table is a file."""
    table = AppStatsTable(8, tmp_path / "vf0.apps")
    stack = Stack(app_stats=table)
    yield stack, tmp_path / "vf0.apps"
    stack.manager.close(stack.now)
    table.close()


def sample(stack: Stack, path) -> dict[str, AppSample]:
    """Let a sampling sweep run (one is due), then read the table."""
    stack.step(advance=occupancy.SAMPLE_INTERVAL_US)
    return by_app(path)


def test_bytes_counted_where_the_pumps_move_them(apps_stack):
    stack, path = apps_stack
    app = stack.attach("web")
    _, conn, iss = accepted(app, stack)
    stack.deliver(seq=PEER_ISS + 1, ack=iss + 1, payload=b"x" * 1000)
    stack.step()
    app.write(conn, b"y" * 300)
    app.command(Op.TX, conn)
    stack.step()
    apps = by_app(path)
    assert (apps["web"].rx_bytes, apps["web"].tx_bytes) == (1000, 300)
    # A second session of the same app adds to the same series.
    other = stack.attach("web")
    slot = open_socket(other, stack)
    other.command(Op.CONNECT, slot, PEER_IP, PEER_PORT)
    (syn,) = stack.step()
    stack.deliver(
        seq=PEER_ISS, ack=syn.seg.seq + 1, flags=SYN | ACK, src_port=PEER_PORT,
        dst_port=syn.seg.src_port,
    )  # fmt: skip
    stack.step()
    other.write(slot, b"z" * 50)
    other.command(Op.TX, slot)
    stack.step()
    apps = by_app(path)
    assert (apps["web"].sessions, apps["web"].rx_bytes, apps["web"].tx_bytes) == (2, 1000, 350)


def test_close_and_shutdown_count_the_bytes_they_flush(apps_stack):
    stack, path = apps_stack
    app = stack.attach("web")
    _, conn, _ = accepted(app, stack)
    app.write(conn, b"last words")
    app.command(Op.CLOSE, conn)
    stack.step()
    assert by_app(path)["web"].tx_bytes == len(b"last words")


def test_occupancy_sampled_from_the_rings(apps_stack):
    stack, path = apps_stack
    app = stack.attach("web")
    _, conn, iss = accepted(app, stack)
    stack.deliver(seq=PEER_ISS + 1, ack=iss + 1, payload=b"x" * 1024)
    apps = sample(stack, path)
    rings = apps["web"].rings
    assert rings["rx"] == (1024, RING)  # the app has not read: waiting in its ring
    assert rings["tx"] == (0, RING)  # only the connected slot counts, not the listener
    assert rings["command"] == (0, SMALL["command_slots"])  # the stack drained them
    waiting = app.seg.events.available()  # READY events the app has not read
    assert waiting >= 1
    assert rings["event"] == (waiting, SMALL["event_slots"])
    assert apps["web"].occupancy("rx") == 0.25
    app.read(conn)
    app.events()
    assert sample(stack, path)["web"].rings["rx"] == (0, RING)


def test_rx_and_tx_occupancy_add_up_over_connected_sockets(apps_stack):
    stack, path = apps_stack
    app = stack.attach("web")
    _, _, iss = accepted(app, stack)
    stack.deliver(seq=PEER_ISS + 1, ack=iss + 1, payload=b"x" * 1000)
    slot = open_socket(app, stack)  # OPEN: its rings do not count
    app.command(Op.CONNECT, slot, PEER_IP, PEER_PORT + 1)
    (syn,) = [s for s in stack.step() if s.flags & SYN]
    stack.deliver(
        seq=PEER_ISS, ack=syn.seg.seq + 1, flags=SYN | ACK, src_port=PEER_PORT + 1,
        dst_port=syn.seg.src_port,
    )  # fmt: skip
    rings = sample(stack, path)["web"].rings
    assert rings["rx"] == (1000, 2 * RING)
    assert rings["tx"] == (0, 2 * RING)


def test_command_and_event_rings_report_the_fullest_session(apps_stack):
    stack, path = apps_stack
    quiet = stack.attach("web")
    busy = stack.attach("web")
    for _ in range(3):
        busy.command(Op.SOCKET)
    stack.step()  # three RESULT events the app does not read
    quiet.command(Op.SOCKET)
    stack.step()
    quiet.events()
    rings = sample(stack, path)["web"].rings
    assert rings["event"] == (3, SMALL["event_slots"])


def test_occupancy_series_end_with_the_last_session_the_bytes_stay(apps_stack):
    stack, path = apps_stack
    app = stack.attach("web")
    _, _, iss = accepted(app, stack)
    stack.deliver(seq=PEER_ISS + 1, ack=iss + 1, payload=b"x" * 10)
    sample(stack, path)
    token = base64.b64decode(app.reply["token"])
    assert stack.manager.detach(app.reply["session_id"], token, stack.now) == {}
    (web,) = sample(stack, path).values()
    assert (web.sessions, web.rx_bytes) == (0, 10)
    assert set(web.rings.values()) == {(0, 0)}


def test_a_sweep_is_bounded_per_pass_and_keeps_the_loop_awake(tmp_path, monkeypatch):
    monkeypatch.setattr(occupancy, "SAMPLE_BUDGET", 2)
    table = AppStatsTable(8, tmp_path / "vf0.apps")
    stack = Stack(app_stats=table)
    app = stack.attach("web")  # four socket slots
    _, _, iss = accepted(app, stack)
    stack.deliver(seq=PEER_ISS + 1, ack=iss + 1, payload=b"x" * 100)
    stack.now += occupancy.SAMPLE_INTERVAL_US
    stack.dispatch()
    manager = stack.manager
    manager.poll(stack.now)  # slots 0-1 (the listener and the connection)
    assert manager.busy() and not manager.prepare_sleep()
    assert read_apps(table._path)[0].rings["rx"] == (0, 0)  # not published yet
    manager.poll(stack.now)  # slots 2-3: done
    assert read_apps(table._path)[0].rings["rx"] == (100, RING)
    assert manager.prepare_sleep()
    manager.sleep_done()
    manager.poll(stack.now + 1)  # the next sweep is not due yet
    assert not manager._occupancy.running
    manager.close(stack.now)
    table.close()


def test_a_corrupt_ring_met_while_sampling_ends_that_session(apps_stack):
    stack, path = apps_stack
    bad = stack.attach("bad")
    good = stack.attach("good")
    _, conn, _ = accepted(bad, stack)
    tx_head = bad.seg.geometry.tx_offset(conn) // 8
    words = bad.seg._view.cast("Q")
    words[tx_head] = 1 << 40  # no TX command: only the sampler reads it
    words.release()
    apps = sample(stack, path)
    assert [s["app"] for s in stack.manager.sessions()] == ["good"]
    assert stack.manager.violations == 1
    assert apps["bad"].sessions == 0 and apps["good"].sessions == 1
    open_socket(good, stack)


def test_more_names_than_slots_attach_without_exported_bytes(tmp_path):
    table = AppStatsTable(1, tmp_path / "vf0.apps")
    stack = Stack(app_stats=table)
    stack.attach("first")
    app = stack.attach("second")  # no slot left: still served
    request = app.command(Op.SOCKET)
    stack.step(advance=occupancy.SAMPLE_INTERVAL_US)
    assert result(app.events(), request).result == 0
    assert [s.app for s in read_apps(table._path)] == ["first"]
    stack.manager.close(stack.now)
    table.close()


def test_default_table_lives_in_private_memory():
    stack = Stack()
    stack.attach("web")
    assert stack.manager.app_stats.sessions(0) == 1
    assert stack.manager.app_stats._path is None  # no file anywhere
    stack.manager.close(stack.now)


def test_sweeps_start_further_apart_with_more_connections(apps_stack, monkeypatch):
    monkeypatch.setattr(occupancy, "SAMPLE_US_PER_CONNECTED", 400_000)
    stack, path = apps_stack
    app = stack.attach("web")
    _, conn, iss = accepted(app, stack)
    stack.deliver(seq=PEER_ISS + 1, ack=iss + 1, payload=b"x" * 100)
    assert sample(stack, path)["web"].rings["rx"] == (100, RING)  # one connection: 0.4 s
    app.read(conn)
    assert sample(stack, path)["web"].rings["rx"] == (100, RING)  # 0.25 s later: not yet
    assert sample(stack, path)["web"].rings["rx"] == (0, RING)
