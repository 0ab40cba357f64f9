"""The soak's plans and endpoints (tests/support/soak_plan.py), sans-IO:
the invariants that keep a plan from waiting on itself, and pairs of
endpoints run to the end over an in-memory wire with a fake clock, so a
plan that cannot finish fails here in milliseconds, not as a 60 s hang in
the soak."""

from __future__ import annotations

import socket

import pytest

from tests.support.soak_plan import (
    ABORTED,
    ACCEPTOR,
    COMPLETE,
    INITIATOR,
    KINDS,
    LINGER_ZERO,
    RESET,
    Endpoint,
    make_plan,
)

SEEDS = range(400)
PAIR_SEEDS = [s for s in SEEDS if make_plan(s).kind != "refused"]  # each runs a plan
WINDOW = 256 * 1024  # bytes one direction of the fake wire holds


class _End:
    """One end of the fake wire: what it has to read, and how it stands."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.inbox = bytearray()
        self.fin = False  # the peer's FIN is after the inbox's bytes
        self.reset = False  # the peer reset: every call fails now
        self.closed = False
        self.linger_zero = False


def _make_call(end: _End, peer: _End, call: tuple) -> None:
    """Linux's behaviour, as far as the plans rely on it."""
    if call[0] == "setsockopt":
        end.linger_zero = end.linger_zero or call[1:] == (
            socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO,
        )  # fmt: skip
    elif call[0] == "shutdown":
        if end.reset:
            raise OSError(107, "Transport endpoint is not connected")
        if call[1] != socket.SHUT_RD:
            peer.fin = True
    else:  # close: a RST if it drops anything (RFC 2525), else a FIN
        end.closed = True
        if call[1] or end.linger_zero or end.inbox:
            peer.reset = True
        else:
            peer.fin = True


def _step(end: _End, peer: _End, now: float) -> tuple[bool, float]:
    """Let one end act as a driver would. Returns (whether anything
    happened, when it wants the clock next)."""
    endpoint = end.endpoint
    wake = endpoint.poll(now)
    moved = False
    for calls in iter(endpoint.take_calls, []):
        moved = True
        for call in calls:
            try:
                _make_call(end, peer, call)
            except OSError as exc:
                endpoint.on_error(exc, call[0], now)
    if end.closed:
        return moved, wake
    size = endpoint.want_recv()
    if size and end.reset:
        endpoint.on_error(ConnectionResetError(104, "Connection reset by peer"), "recv", now)
        return True, wake
    if size and (end.inbox or end.fin):
        data = bytes(end.inbox[:size])
        del end.inbox[:size]
        endpoint.on_received(data, now)
        moved = True
    view = endpoint.want_send()
    if view is not None and end.reset:
        endpoint.on_error(BrokenPipeError(32, "Broken pipe"), "send", now)
        return True, wake
    if view is not None and len(peer.inbox) < WINDOW:
        count = min(len(view), WINDOW - len(peer.inbox))
        if peer.closed:
            end.reset = True  # data to a closed socket is answered with a RST
        else:
            peer.inbox += view[:count]
        endpoint.on_sent(count, now)
        moved = True
    return moved, wake


def run_pair(seed: int) -> tuple[Endpoint, Endpoint]:
    """Both ends of plan `seed`, run until both are done."""
    now = 0.0
    ends = [_End(Endpoint(INITIATOR, make_plan(seed), now)), _End(Endpoint(ACCEPTOR, None, now))]
    ends[0].endpoint.on_connected(now)
    while not all(end.endpoint.done and end.closed for end in ends):
        moved, wake = _step(ends[0], ends[1], now)
        moved_too, wake_too = _step(ends[1], ends[0], now)
        if not (moved or moved_too):
            now = max(min(wake, wake_too), now + 1e-3)  # nothing until a timer: jump to it
    return ends[0].endpoint, ends[1].endpoint


def test_a_seed_names_one_plan():
    assert make_plan(12345) == make_plan(12345)
    assert {make_plan(seed).kind for seed in SEEDS} == set(KINDS)


@pytest.mark.parametrize("seed", SEEDS)
def test_plan_invariants_keep_it_from_waiting_on_itself(seed):
    plan = make_plan(seed)
    assert plan.initiator.closes_first or plan.acceptor.closes_first
    if plan.respond_after_eof:
        assert plan.initiator.shut_wr_after_send and not plan.acceptor.closes_first
    for role, side, other in ((INITIATOR, plan.initiator, plan.acceptor),
                              (ACCEPTOR, plan.acceptor, plan.initiator)):  # fmt: skip
        if side.abort_at < 0:
            continue
        total = side.send_bytes if side.abort_counts_sent else other.send_bytes
        assert 1 <= side.abort_at < total
        # The acceptor sends nothing before it has the header: an initiator
        # that resets on bytes received cannot overtake the plan.
        assert role == ACCEPTOR or not side.abort_counts_sent


@pytest.mark.parametrize("seed", PAIR_SEEDS)
def test_both_ends_of_every_plan_finish_as_it_says(seed):
    initiator, acceptor = run_pair(seed)
    for endpoint in (initiator, acceptor):
        assert not endpoint.failure, endpoint.describe()
    plan = initiator.plan
    for endpoint, side, other in ((initiator, plan.initiator, plan.acceptor),
                                  (acceptor, plan.acceptor, plan.initiator)):  # fmt: skip
        if side.abort_at >= 0:
            assert endpoint.outcome in (ABORTED, RESET), endpoint.describe()
        elif other.abort_at >= 0:
            assert endpoint.outcome in (COMPLETE, RESET), endpoint.describe()
        else:
            assert endpoint.outcome == COMPLETE, endpoint.describe()
            assert endpoint.received == other.send_bytes


def test_a_byte_that_differs_fails_the_stream_at_its_offset():
    plan = make_plan(next(s for s in SEEDS if make_plan(s).acceptor.send_bytes > 10))
    endpoint = Endpoint(INITIATOR, plan, 0.0)
    endpoint.on_connected(0.0)
    endpoint.poll(0.0)
    expected = endpoint._expected
    endpoint.on_received(expected[:5] + bytes([expected[5] ^ 1]), 0.1)
    assert endpoint.failure == f"byte 5 is {expected[5] ^ 1:#04x}, not {expected[5]:#04x}"


def test_a_reset_nobody_planned_fails_with_the_operation():
    plan = make_plan(next(s for s in SEEDS if make_plan(s).kind == "short"))
    endpoint = Endpoint(INITIATOR, plan, 0.0)
    endpoint.on_connected(0.0)
    endpoint.on_error(ConnectionResetError(104, "Connection reset by peer"), "recv", 0.1)
    assert endpoint.failure.startswith("recv: ConnectionResetError")
    assert "no one reset this connection" in endpoint.failure
    assert endpoint.take_calls()[-1] == ("close", False)
