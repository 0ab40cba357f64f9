"""ARP wire format and the neighbour cache (RFC 826, RFC 5227)."""

from __future__ import annotations

import pytest

from stackservice.net.arp import ArpRepr, ArpSettings, ArpView

from ._frames import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST_MAC,
    ETH_ARP,
    OTHER_IP,
    OTHER_MAC,
    OUR_IP,
    OUR_MAC,
    PEER_IP,
    PEER_MAC,
    PROTO_UDP,
    SECOND,
    SUBNET_BROADCAST,
    ZERO_MAC,
    arp_frame,
    arp_packet,
    eth,
    ip,
    learn,
    make_rig,
    reply_frame,
)

REQUEST_FOR_PEER = arp_frame(ARP_REQUEST, OUR_MAC, OUR_IP, ZERO_MAC, PEER_IP)
UNICAST_REQUEST_FOR_PEER = arp_frame(
    ARP_REQUEST, OUR_MAC, OUR_IP, ZERO_MAC, PEER_IP, eth_dst=PEER_MAC
)
PEER_REPLY = arp_frame(ARP_REPLY, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP)
OUR_REPLY_TO_PEER = arp_frame(ARP_REPLY, OUR_MAC, OUR_IP, PEER_MAC, PEER_IP)


def udp_to_peer(n: int) -> bytes:
    return reply_frame(PEER_MAC, PEER_IP, PROTO_UDP, bytes([n]) * 8, ident=n)


# Wire format.


def test_arp_repr_emit_then_parse_roundtrips() -> None:
    rep = ArpRepr(ARP_REPLY, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP)
    buf = bytearray(rep.buffer_len())
    rep.emit(buf)
    assert bytes(buf) == arp_packet(ARP_REPLY, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP)
    assert ArpRepr.parse(ArpView.checked(memoryview(buf))) == rep


def test_receive_arp_truncated_counted_arp_too_short() -> None:
    rig = make_rig()
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP)[:41])
    assert rig.dropped() == {"arp_too_short": 1}
    assert rig.sent() == []


@pytest.mark.parametrize(
    "field", [{"htype": 6}, {"ptype": 0x86DD}, {"hlen": 8}, {"plen": 16}], ids=str
)
def test_receive_arp_not_ethernet_ipv4_counted_unsupported_format(field: dict[str, int]) -> None:
    """RFC 826: "?Do I have the hardware type in ar$hrd?" ... "?Do I speak ar$pro?"."""
    rig = make_rig()
    packet = arp_packet(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP, **field)
    rig.feed(eth(BROADCAST_MAC, PEER_MAC, ETH_ARP, packet))
    assert rig.dropped() == {"arp_unsupported_format": 1}
    assert rig.sent() == []


@pytest.mark.parametrize("op", [0, 3, 8])  # 3 = RARP request, 8 = InARP
def test_receive_arp_unknown_opcode_counted_unsupported_operation(op: int) -> None:
    rig = make_rig()
    rig.feed(
        eth(BROADCAST_MAC, PEER_MAC, ETH_ARP, arp_packet(op, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP))
    )
    assert rig.dropped() == {"arp_unsupported_operation": 1}
    assert rig.sent() == []


# Requests and replies.


def test_arp_request_for_us_sends_one_reply_with_our_mac() -> None:
    """RFC 826: swap fields, put in our addresses, set ar$op to reply, send."""
    rig = make_rig()
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP))
    assert rig.sent() == [OUR_REPLY_TO_PEER]
    assert rig.counted() == {"arp_request_in": 1, "arp_reply_out": 1}
    assert rig.dropped() == {}


def test_a_worker_that_does_not_answer_learns_from_requests_and_replies_alone() -> None:
    """Every worker of an instance but the first hears every ARP frame to
    learn its neighbours; only the first answers and announces, so the
    peer gets one reply per request."""
    rig = make_rig(answers_arp=False)
    rig.host.announce(0)
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP))
    assert rig.sent() == []
    assert rig.host.arp.lookup(PEER_IP, 1) == PEER_MAC
    rig.feed(arp_frame(ARP_REPLY, OTHER_MAC, OTHER_IP, OUR_MAC, OUR_IP))
    assert rig.host.arp.lookup(OTHER_IP, 1) == OTHER_MAC
    assert rig.counted() == {"arp_request_in": 1, "arp_reply_in": 1}
    # Its own resolutions still go out: the reply is what teaches it.
    rig.host.send_ipv4(PEER_IP + 5, PROTO_UDP, b"x" * 8, 2)
    assert [int.from_bytes(frame[12:14], "big") for frame in rig.sent()] == [ETH_ARP]


def test_arp_request_padded_to_60_bytes_answered() -> None:
    """IEEE 802.3 minimum frame: trailing padding after the ARP packet is ignored."""
    rig = make_rig()
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP) + b"\xa5" * 18)
    assert rig.sent() == [OUR_REPLY_TO_PEER]


def test_arp_request_for_us_learns_sender() -> None:
    """RFC 826: when we are the target and the pair is new, add it to the table."""
    rig = make_rig()
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP))
    assert rig.host.arp.lookup(PEER_IP, 1) == PEER_MAC


def test_arp_request_for_other_ip_counted_not_for_us_and_not_learned() -> None:
    """RFC 826: "?Am I the target protocol address? No: drop" (after the merge)."""
    rig = make_rig()
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OTHER_IP))
    assert rig.dropped() == {"arp_not_for_us": 1}
    assert rig.sent() == []
    assert rig.host.arp.lookup(PEER_IP, 1) is None


def test_arp_request_for_other_ip_updates_known_sender() -> None:
    """RFC 826 merge: an entry we hold is updated even from packets not for us."""
    rig = make_rig()
    learn(rig, PEER_MAC, PEER_IP)
    rig.feed(arp_frame(ARP_REQUEST, OTHER_MAC, PEER_IP, ZERO_MAC, OTHER_IP))
    assert rig.host.arp.lookup(PEER_IP, 1) == OTHER_MAC
    assert rig.dropped() == {"arp_not_for_us": 1}
    assert rig.sent() == []


def test_arp_reply_for_us_learns_sender_without_answer() -> None:
    """RFC 826: a reply is merged or added, never answered."""
    rig = make_rig()
    rig.feed(PEER_REPLY)
    assert rig.host.arp.lookup(PEER_IP, 1) == PEER_MAC
    assert rig.counted() == {"arp_reply_in": 1}
    assert rig.sent() == []


def test_arp_probe_for_us_answered_and_not_learned() -> None:
    """RFC 5227 §2.1.1: a probe (sender IP 0) for our address gets a reply."""
    rig = make_rig()
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, 0, ZERO_MAC, OUR_IP))
    assert rig.sent() == [arp_frame(ARP_REPLY, OUR_MAC, OUR_IP, PEER_MAC, 0)]
    assert rig.host.arp.lookup(0, 1) is None
    assert len(rig.host.arp) == 0


def test_arp_sender_claiming_our_ip_counted_address_conflict() -> None:
    """RFC 5227 §2.4: another host using our address is a conflict, not a neighbour."""
    rig = make_rig()
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, OUR_IP, ZERO_MAC, OUR_IP))
    assert rig.dropped() == {"arp_address_conflict": 1}
    assert rig.sent() == []


@pytest.mark.parametrize("mac", [BROADCAST_MAC, bytes.fromhex("01005e000001"), OUR_MAC])
def test_arp_group_or_own_sender_mac_counted_bad_sender(mac: bytes) -> None:
    rig = make_rig()
    rig.feed(arp_frame(ARP_REQUEST, mac, PEER_IP, ZERO_MAC, OUR_IP, eth_src=PEER_MAC))
    assert rig.dropped() == {"arp_bad_sender": 1}
    assert rig.sent() == []


@pytest.mark.parametrize(
    ("op", "sender_ip"),
    [
        (ARP_REQUEST, 0xFFFFFFFF),
        (ARP_REQUEST, SUBNET_BROADCAST),
        (ARP_REQUEST, ip("224.0.0.1")),
        (ARP_REQUEST, ip("127.0.0.1")),
        (ARP_REPLY, 0),
    ],
)
def test_arp_sender_ip_no_host_can_own_counted_bad_sender(op: int, sender_ip: int) -> None:
    """RFC 1122 §3.2.1.3: such addresses never identify a neighbour."""
    rig = make_rig()
    rig.feed(arp_frame(op, PEER_MAC, sender_ip, OUR_MAC, OUR_IP, eth_dst=OUR_MAC))
    assert rig.dropped() == {"arp_bad_sender": 1}
    assert rig.sent() == []


# Cache lifetime.


def test_arp_entry_unused_reachable_time_elapsed_expires() -> None:
    rig = make_rig(arp=ArpSettings(reachable_time=60 * SECOND))
    rig.feed(PEER_REPLY, now=5)
    assert rig.host.poll_at() == 5 + 60 * SECOND
    rig.host.on_timer(5 + 60 * SECOND)
    assert rig.host.arp.lookup(PEER_IP, 5 + 60 * SECOND) is None
    assert rig.counted() == {"arp_reply_in": 1, "arp_entry_expired": 1}
    assert rig.host.poll_at() is None


def test_arp_entry_refreshed_by_later_packet_expires_later() -> None:
    """RFC 826 merge refreshes the entry."""
    rig = make_rig()
    rig.feed(PEER_REPLY, now=0)
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OTHER_IP), now=30 * SECOND)
    assert rig.host.poll_at() == 90 * SECOND
    assert rig.host.arp.lookup(PEER_IP, 89 * SECOND) == PEER_MAC


def test_arp_expired_entry_used_keeps_mac_and_probes_by_unicast() -> None:
    """RFC 1122 §2.3.2.1 (unicast poll), as Linux's STALE/PROBE: traffic
    keeps the known MAC while the neighbour is confirmed, never waiting
    behind a broadcast re-resolution."""
    rig = make_rig()
    rig.feed(PEER_REPLY, now=0)
    rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes([0]) * 8, 60 * SECOND)
    assert rig.sent() == [UNICAST_REQUEST_FOR_PEER, udp_to_peer(0)]
    assert "arp_entry_expired" not in rig.counted()
    rig.feed(PEER_REPLY, now=60 * SECOND + 10)
    assert rig.host.poll_at() == 120 * SECOND + 10  # confirmed: reachable again


def test_arp_entry_used_then_reachable_time_elapsed_is_probed() -> None:
    rig = make_rig(arp=ArpSettings(reachable_time=60 * SECOND, retry_interval=SECOND))
    rig.feed(PEER_REPLY, now=0)
    assert rig.host.arp.lookup(PEER_IP, 30 * SECOND) == PEER_MAC
    rig.host.on_timer(60 * SECOND)
    assert rig.sent() == [UNICAST_REQUEST_FOR_PEER]
    assert rig.host.arp.lookup(PEER_IP, 60 * SECOND) == PEER_MAC
    assert rig.host.poll_at() == 61 * SECOND


def test_arp_probed_neighbour_silent_forgotten_after_tries() -> None:
    rig = make_rig(arp=ArpSettings(retry_interval=SECOND, max_tries=3))
    rig.feed(PEER_REPLY, now=0)
    rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes([0]) * 8, 60 * SECOND)
    rig.sent()
    rig.host.on_timer(61 * SECOND)
    rig.host.on_timer(62 * SECOND)
    assert rig.sent() == [UNICAST_REQUEST_FOR_PEER, UNICAST_REQUEST_FOR_PEER]
    rig.host.on_timer(63 * SECOND)
    assert rig.sent() == []
    assert rig.host.arp.lookup(PEER_IP, 63 * SECOND) is None
    assert rig.counted()["arp_entry_expired"] == 1
    rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes([0]) * 8, 63 * SECOND)
    assert rig.sent() == [REQUEST_FOR_PEER]


def test_arp_idle_cache_poll_at_none() -> None:
    assert make_rig().host.poll_at() is None


# Resolution.


def test_send_to_unresolved_neighbor_broadcasts_one_request() -> None:
    """RFC 826: the sender broadcasts a request with the target hardware address unknown."""
    rig = make_rig()
    rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes([0]) * 8, 0)
    rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes([1]) * 8, 10)
    assert rig.sent() == [REQUEST_FOR_PEER]
    assert rig.counted() == {"arp_request_out": 1, "arp_packets_queued": 2}


def test_send_while_resolving_reply_flushes_queue_in_order() -> None:
    """RFC 1122 §2.3.2.2: queued datagrams go out once the address resolves."""
    rig = make_rig()
    for n in range(3):
        rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes([n]) * 8, n)
    rig.sent()
    rig.feed(PEER_REPLY, now=100)
    assert rig.sent() == [udp_to_peer(0), udp_to_peer(1), udp_to_peer(2)]
    assert rig.host.poll_at() == 100 + 60 * SECOND  # no retry pending


def test_send_while_resolving_request_from_neighbor_resolves_and_flushes() -> None:
    """RFC 826 merge: a request from the neighbour answers our question too."""
    rig = make_rig()
    rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes([0]) * 8, 0)
    rig.sent()
    rig.feed(arp_frame(ARP_REQUEST, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP), now=5)
    assert rig.sent() == [udp_to_peer(0), OUR_REPLY_TO_PEER]


def test_send_beyond_queue_bound_counted_arp_queue_full() -> None:
    """RFC 1122 §2.3.2.2: the queue of datagrams awaiting resolution is bounded."""
    rig = make_rig(arp=ArpSettings(max_queue=2))
    results = [rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes([n]) * 8, 0) for n in range(4)]
    assert results == [True, True, False, False]
    assert rig.dropped() == {"arp_queue_full": 2}
    rig.sent()
    rig.feed(PEER_REPLY)
    assert rig.sent() == [udp_to_peer(0), udp_to_peer(1)]


def test_resolution_unanswered_retries_each_interval_then_gives_up() -> None:
    """RFC 1122 §2.3.2.1: at most one request per second; give up after 3."""
    rig = make_rig()
    rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes(8), 0)
    rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes(8), 0)
    assert rig.sent() == [REQUEST_FOR_PEER]
    for t in (SECOND, 2 * SECOND):
        assert rig.host.poll_at() == t
        rig.host.on_timer(t - 1)
        assert rig.sent() == []
        rig.host.on_timer(t)
        assert rig.sent() == [REQUEST_FOR_PEER]
    rig.host.on_timer(3 * SECOND)
    assert rig.sent() == []
    assert rig.dropped() == {"arp_unresolved": 2}
    assert rig.counted()["arp_request_out"] == 3
    assert rig.counted()["arp_resolution_failed"] == 1
    assert rig.host.poll_at() is None


def test_resolution_given_up_next_send_starts_over() -> None:
    rig = make_rig()
    rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes(8), 0)
    for t in (SECOND, 2 * SECOND, 3 * SECOND):
        rig.host.on_timer(t)
    rig.sent()
    rig.host.send_ipv4(PEER_IP, PROTO_UDP, bytes(8), 4 * SECOND)
    assert rig.sent() == [REQUEST_FOR_PEER]
    assert rig.host.poll_at() == 5 * SECOND


# Bounds.


def test_cache_full_learning_evicts_oldest_entry() -> None:
    rig = make_rig(arp=ArpSettings(max_entries=2))
    for n in range(3):
        rig.feed(arp_frame(ARP_REPLY, PEER_MAC, PEER_IP + 100 + n, OUR_MAC, OUR_IP), now=n)
    assert [rig.host.arp.lookup(PEER_IP + 100 + n, 10) for n in range(3)] == [
        None,
        PEER_MAC,
        PEER_MAC,
    ]
    assert rig.counted()["arp_entry_evicted"] == 1


def test_cache_full_of_resolutions_evicts_oldest_counting_its_queue() -> None:
    rig = make_rig(arp=ArpSettings(max_entries=2))
    for n in range(3):
        rig.host.send_ipv4(PEER_IP + 100 + n, PROTO_UDP, bytes(8), n)
        rig.host.send_ipv4(PEER_IP + 100 + n, PROTO_UDP, bytes(8), n)
    assert rig.dropped() == {"arp_unresolved": 2}
    assert rig.counted()["arp_entry_evicted"] == 1
    assert len(rig.host.arp) == 2


def test_on_timer_many_due_handles_bounded_batch() -> None:
    """Bounded timer scans (STYLE.md rule 2): the rest waits for the next call."""
    rig = make_rig(arp=ArpSettings(max_timer_work=2, reachable_time=SECOND))
    for n in range(5):
        rig.feed(arp_frame(ARP_REPLY, PEER_MAC, PEER_IP + 100 + n, OUR_MAC, OUR_IP), now=0)
    rig.host.on_timer(SECOND)
    assert len(rig.host.arp) == 3
    assert rig.host.poll_at() == SECOND
    rig.host.on_timer(SECOND)
    rig.host.on_timer(SECOND)
    assert len(rig.host.arp) == 0
    assert rig.counted()["arp_entry_expired"] == 5


def test_arp_settings_non_positive_value_rejected() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        ArpSettings(max_queue=0)


# Announcements.


def test_announce_sends_gratuitous_requests_two_seconds_apart() -> None:
    """RFC 5227 §2.3: ANNOUNCE_NUM=2 requests, sender IP = target IP = ours."""
    rig = make_rig()
    announcement = arp_frame(ARP_REQUEST, OUR_MAC, OUR_IP, ZERO_MAC, OUR_IP)
    rig.host.announce(7)
    assert rig.sent() == [announcement]
    assert rig.host.poll_at() == 7 + 2 * SECOND
    rig.host.on_timer(7 + 2 * SECOND)
    assert rig.sent() == [announcement]
    assert rig.host.poll_at() is None
    rig.host.on_timer(7 + 10 * SECOND)
    assert rig.sent() == []
    assert rig.counted() == {"arp_gratuitous_out": 2}
