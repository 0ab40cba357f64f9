"""Fault containment in the engine (docs/architecture.md principle 5): a bug met while
running one connection's timers or output costs that connection, not the
instance, unless the engine is strict (the default, and every other test)."""

from __future__ import annotations

import errno

import pytest

from stackservice.tcp import engine as engine_module
from stackservice.tcp.state import TcpState
from tests.unit.tcp._rig import MS, PEER_PORT, Rig
from tests.unit.tcp._states import MIN_RTO, established, flow, seq, state, syn_received

SECOND = 1_000_000


class Boom(Exception):
    """The stand-in for a bug."""


def two_connections_with_data_in_flight(rig: Rig):
    """Two ESTABLISHED connections, one unacknowledged byte each: both RTOs
    fall due at the same time, in one timer batch."""
    first = established(rig)
    second, _ = syn_received(rig, first.now, src_port=PEER_PORT + 1)
    now = first.now + MS
    rig.deliver(now, seq=seq(second.irs, 1), ack=seq(second.iss, 1), src_port=PEER_PORT + 1)
    for tcb in (first.tcb, second):
        rig.engine.send(tcb, b"x", now)
    rig.flush(now)
    return first.tcb, second, now


def failing_rig(method: str) -> tuple[Rig, dict]:
    """A rig whose engine raises Boom from `method` for the TCB put in the
    returned dict's "victim": a subclass, since the compiled engine is an
    extension type, whose methods cannot be patched."""
    chosen: dict = {}
    original = getattr(engine_module.TcpEngine, method)

    def handler(self, tcb, now):
        if tcb is chosen.get("victim"):
            raise Boom("bug")
        return original(self, tcb, now)

    return Rig(
        engine_class=type("FailingEngine", (engine_module.TcpEngine,), {method: handler})
    ), chosen


def test_strict_engine_timer_fault_propagates() -> None:
    rig, chosen = failing_rig("_retransmission_timer")
    chosen["victim"], _, t = two_connections_with_data_in_flight(rig)
    with pytest.raises(Boom):
        rig.flush(t + MIN_RTO)


def test_contained_timer_fault_aborts_one_connection_others_run() -> None:
    """Non-strict: the faulty connection is reset (RST, ECONNABORTED for its
    application) and recorded; the other connection of the same timer batch
    still gets its retransmission."""
    rig, chosen = failing_rig("_retransmission_timer")
    rig.engine.strict = False
    victim, other, t = two_connections_with_data_in_flight(rig)
    chosen["victim"] = victim
    sent = rig.flush(t + MIN_RTO)
    by_port = {s.seg.dst_port: s for s in sent}
    victim_port, other_port = victim.remote_port, other.remote_port
    assert by_port[victim_port].flags & 0x04  # RST
    assert by_port[other_port].payload == b"x"  # the retransmission
    assert state(victim) == TcpState.CLOSED and victim.error == errno.ECONNABORTED
    assert state(other) == TcpState.ESTABLISHED
    assert [(site, type(exc)) for site, exc in rig.engine.faults] == [("timer", Boom)]


def test_contained_output_fault_aborts_that_connection() -> None:
    rig, chosen = failing_rig("_send_queued")
    rig.engine.strict = False
    conn = established(rig)
    victim = chosen["victim"] = conn.tcb
    rig.engine.send(victim, b"data", conn.now)
    sent = rig.flush(conn.now)
    assert [s.flags & 0x04 for s in sent] == [0x04]
    assert flow(rig) is None
    assert [site for site, _ in rig.engine.faults] == ["output"]
