"""Local ports: ephemeral ports for active opens chosen per RFC 6056 §3.3.4
(double-hash), and a listener's own connections found without a scan of
the flow table."""

from __future__ import annotations

import errno
import itertools

import pytest

from stackservice.tcp.engine import EPHEMERAL_PROBES, EXHAUSTED_RETRY_US, SocketError
from stackservice.tcp.portshare import EPHEMERAL_FIRST, EPHEMERAL_LAST, PortShare
from stackservice.tcp.state import TcpState
from tests.unit.tcp._rig import PEER_IP, PEER_PORT, Rig
from tests.unit.tcp._states import listening, state, syn_received

DESTINATIONS = [(PEER_IP + 20 + i, PEER_PORT) for i in range(20)]


def first_ports(rig: Rig) -> list[int]:
    return [rig.engine.connect(ip, port, 0).local_port for ip, port in DESTINATIONS]


def test_ports_to_different_destinations_do_not_follow_one_another() -> None:
    """A global counter hands out 32768, 32769, ...: each peer learns how
    many connections we opened to others in between (RFC 6056 §2.2)."""
    ports = first_ports(Rig())
    assert all(EPHEMERAL_FIRST <= port <= EPHEMERAL_LAST for port in ports)
    assert len(set(ports)) == len(ports)
    steps = {b - a for a, b in itertools.pairwise(ports)}
    assert steps != {1}
    assert min(ports) - EPHEMERAL_FIRST > 100  # not from the start of the range


def test_connects_to_one_destination_leave_anothers_ports_unchanged() -> None:
    quiet, busy = Rig(), Rig()
    for _ in range(100):
        busy.engine.connect(PEER_IP + 100, 443, 0)
    assert first_ports(busy) == first_ports(quiet)


def test_consecutive_connects_to_one_destination_get_distinct_ports() -> None:
    rig = Rig()
    ports = [rig.engine.connect(PEER_IP, 443, 0).local_port for _ in range(3000)]
    assert len(set(ports)) == 3000


class CountingPorts(dict):
    """A listener table that counts the ports looked up in it."""

    lookups = 0

    def __contains__(self, port: object) -> bool:
        self.lookups += 1
        return super().__contains__(port)


def test_a_destination_without_free_ports_fails_after_a_bounded_search() -> None:
    """Every ephemeral port taken (here by listeners): EADDRNOTAVAIL after
    EPHEMERAL_PROBES candidates, not a walk of the whole range per call."""
    rig, taken = every_port_taken()
    for n in range(3):
        with pytest.raises(SocketError) as exc:
            rig.engine.connect(PEER_IP, 443, n * EXHAUSTED_RETRY_US)
        assert exc.value.errno == errno.EADDRNOTAVAIL
    assert taken.lookups == 3 * EPHEMERAL_PROBES


def every_port_taken() -> tuple[Rig, CountingPorts]:
    rig = Rig()
    taken = CountingPorts({port: None for port in range(EPHEMERAL_FIRST, EPHEMERAL_LAST + 1)})
    rig.engine.listeners = taken
    return rig, taken


def test_a_destination_without_free_ports_is_not_searched_again_at_once() -> None:
    """A pass's worth of connects (256 commands) to a destination with no
    free port was 256 whole searches, 130 ms of loop time a pass: after
    one, the destination is refused without a search for
    EXHAUSTED_RETRY_US. Other destinations are searched as before."""
    rig, taken = every_port_taken()
    for _ in range(256):
        with pytest.raises(SocketError) as exc:
            rig.engine.connect(PEER_IP, 443, 1000)
        assert exc.value.errno == errno.EADDRNOTAVAIL
    assert taken.lookups == EPHEMERAL_PROBES
    with pytest.raises(SocketError):
        rig.engine.connect(PEER_IP, 444, 1000)
    assert taken.lookups == 2 * EPHEMERAL_PROBES
    with pytest.raises(SocketError):
        rig.engine.connect(PEER_IP, 443, 1000 + EXHAUSTED_RETRY_US - 1)
    assert taken.lookups == 2 * EPHEMERAL_PROBES
    taken.clear()  # ports came free: found once the wait is over
    tcb = rig.engine.connect(PEER_IP, 443, 1000 + EXHAUSTED_RETRY_US)
    assert EPHEMERAL_FIRST <= tcb.local_port <= EPHEMERAL_LAST


def test_destinations_refused_are_forgotten_once_their_wait_is_over() -> None:
    rig, _ = every_port_taken()
    for n in range(300):
        with pytest.raises(SocketError):
            rig.engine.connect(PEER_IP + 1000 + n, 443, n * 1000)
    assert len(rig.engine._exhausted) <= 256 + 100  # those of the last EXHAUSTED_RETRY_US


def test_closing_a_listener_ends_its_half_open_connections_only() -> None:
    rig = Rig()
    listener = listening(rig)
    half_open = [syn_received(rig, src_port=PEER_PORT + i)[0] for i in range(3)]
    other = rig.engine.connect(PEER_IP, 443, 0)
    assert listener.half_open == set(half_open)
    rig.engine.close_listener(listener, 0)
    assert all(state(tcb) == TcpState.CLOSED for tcb in half_open)
    assert not listener.half_open
    assert state(other) == TcpState.SYN_SENT and other.key in rig.engine.flows


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_each_worker_owns_its_share_and_the_shares_cover_the_range(workers) -> None:
    shares = [PortShare(w, workers) for w in range(workers)]
    owned = [{share.port(k) for k in range(share.count)} for share in shares]
    assert set().union(*owned) == set(range(EPHEMERAL_FIRST, EPHEMERAL_LAST + 1))
    assert sum(map(len, owned)) == EPHEMERAL_LAST - EPHEMERAL_FIRST + 1  # disjoint
    for worker, ports in enumerate(owned):
        assert all(port % workers == worker for port in ports)
        assert shares[worker].port(shares[worker].count) == shares[worker].first  # wraps


def test_a_worker_connects_from_its_own_ports_only() -> None:
    """The fanout steers a reply by our port: a port outside the worker's
    share would send the peer's SYN-ACK to another worker."""
    for worker in range(3):
        rig = Rig(ports=PortShare(worker, 3))
        ports = [rig.engine.connect(PEER_IP, 443, 0).local_port for _ in range(500)]
        assert len(set(ports)) == len(ports)  # one destination: all distinct
        ports += first_ports(rig)
        assert all(port % 3 == worker for port in ports)


def test_socket_ids_of_workers_never_collide() -> None:
    """Listings merged across workers page by id: ids must be unique."""
    ids = [
        {rig.engine.connect(PEER_IP, 443, 0).sock_id for _ in range(50)}
        for rig in (Rig(ports=PortShare(w, 3)) for w in range(3))
    ]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 150
    assert all(i > 0 for i in set().union(*ids))


def test_shares_out_of_range_are_refused() -> None:
    for worker, workers in ((0, 0), (2, 2), (-1, 2), (0, 65)):
        with pytest.raises(ValueError):
            PortShare(worker, workers)
