"""ICMP echo and protocol unreachable (RFC 792, RFC 1122 §3.2.2)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackservice.net.icmp import IcmpRepr, IcmpSettings, IcmpView, TokenBucket

from ._frames import (
    ARP_REPLY,
    ARP_REQUEST,
    CHECK,
    GATEWAY_MAC,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_UNREACHABLE,
    MF,
    OUR_IP,
    OUR_MAC,
    PEER_IP,
    PEER_MAC,
    PROTO_ICMP,
    PROTO_UDP,
    REMOTE_IP,
    SUBNET_BROADCAST,
    ZERO_MAC,
    arp_frame,
    echo_request_frame,
    icmp_message,
    ipv4_frame,
    make_rig,
    ref_checksum,
    ref_sum,
    reply_frame,
    rig_with_peer,
)

UDP_DATAGRAM_PAYLOAD = b"\x30\x39\x00\x35\x00\x0c\x00\x00data"


def echo_reply_frame(
    ident: int, seq: int, data: bytes, mac: bytes = PEER_MAC, dst: int = PEER_IP
) -> bytes:
    return reply_frame(
        mac, dst, PROTO_ICMP, icmp_message(ICMP_ECHO_REPLY, 0, ident << 16 | seq, data)
    )


def unreachable_frame(datagram: bytes, ident: int = 0) -> bytes:
    message = icmp_message(ICMP_UNREACHABLE, 2, 0, datagram)
    return reply_frame(PEER_MAC, PEER_IP, PROTO_ICMP, message, ident=ident)


def test_icmp_repr_emit_then_parse_roundtrips_with_valid_checksum() -> None:
    rep = IcmpRepr(ICMP_ECHO_REQUEST, 0, 0x00010002, b"abc")
    buf = bytearray(rep.buffer_len())
    rep.emit(buf)
    assert bytes(buf) == icmp_message(ICMP_ECHO_REQUEST, 0, 0x00010002, b"abc")
    view = IcmpView.checked(memoryview(buf), True)
    assert (view.ident(), view.seq()) == (1, 2)
    assert view.checksum() == ref_checksum(b"\x08\x00\x00\x00\x00\x01\x00\x02abc")
    assert IcmpRepr.parse(view) == rep


# Echo.


def test_echo_request_answered_with_exact_echo_reply() -> None:
    """RFC 792 p.14, RFC 1122 §3.2.2.6: same identifier, sequence and data; addresses swapped."""
    rig = rig_with_peer()
    rig.feed(echo_request_frame(ident=0xBEEF, seq=7, data=b"0123456789abcdef"))
    sent = rig.sent()
    assert sent == [echo_reply_frame(0xBEEF, 7, b"0123456789abcdef")]
    ip_header, message = sent[0][14:34], sent[0][34:]
    assert ip_header[8] == 64 and struct.unpack("!H", ip_header[6:8])[0] & 0x4000
    assert ref_sum(ip_header) == 0xFFFF and ref_sum(message) == 0xFFFF
    assert rig.counted() == {"icmp_echo_request_in": 1, "icmp_echo_reply_out": 1}
    assert rig.dropped() == {}


@CHECK
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=300))
def test_echo_request_any_content_reply_identical_with_valid_checksum(
    ident: int, seq: int, data: bytes
) -> None:
    """RFC 792 p.14: data received in the echo message must be returned; odd sizes included."""
    rig = rig_with_peer()
    rig.feed(echo_request_frame(ident=ident, seq=seq, data=data))
    assert rig.sent() == [echo_reply_frame(ident, seq, data)]


def test_echo_request_all_zero_reply_checksum_is_ffff() -> None:
    """RFC 1624 §3: the incremental update's -0 is wrong when the reply is all zero."""
    rig = rig_with_peer()
    rig.feed(echo_request_frame(ident=0, seq=0, data=b""))
    assert rig.sent() == [echo_reply_frame(0, 0, b"")]
    assert rig.sent() == []


def test_echo_request_with_negative_zero_checksum_answered_validly() -> None:
    """RFC 1071: 0x0000 and 0xFFFF both verify when the data sums to -0."""
    data = struct.pack("!H", 0xFFFF - 0x0800 - 0x0001)  # sum of all words = 0xFFFF
    message = struct.pack("!BBHI", ICMP_ECHO_REQUEST, 0, 0xFFFF, 1) + data
    assert ref_sum(message) == 0xFFFF
    rig = rig_with_peer()
    rig.feed(ipv4_frame(PROTO_ICMP, message))
    (reply,) = rig.sent()
    assert ref_sum(reply[34:]) == 0xFFFF and reply[42:] == data


def test_echo_request_from_unresolved_peer_reply_waits_for_arp() -> None:
    """RFC 1122 §2.3.2.2: the reply is queued while the requester is resolved."""
    rig = make_rig()
    rig.feed(echo_request_frame())
    assert rig.sent() == [arp_frame(ARP_REQUEST, OUR_MAC, OUR_IP, ZERO_MAC, PEER_IP)]
    rig.feed(arp_frame(ARP_REPLY, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP))
    assert rig.sent() == [echo_reply_frame(0x1234, 1, b"ping!")]


def test_echo_request_from_off_link_reply_goes_to_gateway() -> None:
    """RFC 1122 §3.3.1.1: the reply is routed, not sent back to the frame's source MAC."""
    rig = rig_with_peer()
    rig.feed(echo_request_frame(src=REMOTE_IP, eth_src=GATEWAY_MAC))
    assert rig.sent() == [echo_reply_frame(0x1234, 1, b"ping!", mac=GATEWAY_MAC, dst=REMOTE_IP)]


def test_echo_request_from_off_link_without_gateway_counted_no_route() -> None:
    rig = make_rig(gateway=None)
    rig.feed(echo_request_frame(src=REMOTE_IP))
    assert rig.counted() == {"icmp_echo_request_in": 1}
    assert rig.dropped() == {"ipv4_no_route": 1}
    assert rig.sent() == []


# Malformed messages.


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (icmp_message(ICMP_ECHO_REQUEST, 0, 1, b"")[:7], "icmp_too_short"),
        (icmp_message(ICMP_ECHO_REQUEST, 0, 1, b"x")[:-1] + b"y", "icmp_bad_checksum"),
        (icmp_message(ICMP_ECHO_REPLY, 0, 1, b"x"), "icmp_unsupported_type"),
        (icmp_message(13, 0, 1, bytes(12)), "icmp_unsupported_type"),  # timestamp
    ],
    ids=["short", "checksum", "echo_reply", "timestamp"],
)
def test_receive_bad_or_unsupported_icmp_counted_nothing_sent(message: bytes, reason: str) -> None:
    """RFC 1122 §3.2.2: bad or unknown ICMP messages are silently discarded."""
    rig = rig_with_peer()
    rig.feed(ipv4_frame(PROTO_ICMP, message))
    assert rig.dropped() == {reason: 1}
    assert (rig.counted(), rig.sent()) == ({}, [])


def test_receive_icmp_bad_checksum_trusted_answered() -> None:
    rig = rig_with_peer()
    message = icmp_message(ICMP_ECHO_REQUEST, 0, 1, b"x")
    rig.feed(ipv4_frame(PROTO_ICMP, message[:2] + b"\0\0" + message[4:]), trusted=True)
    assert rig.counted() == {"icmp_echo_request_in": 1, "icmp_echo_reply_out": 1}


def test_receive_icmp_error_never_answered_with_error() -> None:
    """RFC 1122 §3.2.2: no ICMP error in response to an ICMP error message."""
    rig = rig_with_peer()
    quoted = ipv4_frame(PROTO_UDP, b"x", src=OUR_IP, dst=PEER_IP)[14:]
    rig.feed(ipv4_frame(PROTO_ICMP, icmp_message(ICMP_UNREACHABLE, 3, 0, quoted)))
    assert rig.dropped() == {"icmp_unsupported_type": 1}
    assert rig.sent() == []


# Protocol unreachable.


def test_unsupported_protocol_counted_and_protocol_unreachable_sent() -> None:
    """RFC 1122 §3.2.2.1: code 2, quoting the IP header and data of the datagram."""
    rig = rig_with_peer()
    frame = ipv4_frame(PROTO_UDP, UDP_DATAGRAM_PAYLOAD)
    rig.feed(frame + bytes(8))  # padding is not quoted
    assert rig.sent() == [unreachable_frame(frame[14:])]
    assert rig.dropped() == {"ipv4_unsupported_protocol": 1}
    assert rig.counted() == {"icmp_unreachable_out": 1}


def test_unreachable_quote_truncated_to_576_byte_datagram() -> None:
    """RFC 1812 §4.3.2.3: the error datagram does not exceed 576 bytes."""
    rig = rig_with_peer()
    frame = ipv4_frame(PROTO_UDP, bytes(range(256)) * 4)
    rig.feed(frame)
    (sent,) = rig.sent()
    assert len(sent) == 14 + 576
    assert sent == unreachable_frame(frame[14 : 14 + 548])


def test_unreachable_burst_exhausted_rate_limited_until_refill() -> None:
    """RFC 1812 §4.3.2.8: a token bucket limits the rate of ICMP errors."""
    rig = rig_with_peer(icmp=IcmpSettings(error_interval=1000, error_burst=2))
    frame = ipv4_frame(PROTO_UDP, UDP_DATAGRAM_PAYLOAD)
    for now in (10, 20, 30):
        rig.feed(frame, now=now)
    assert rig.sent() == [unreachable_frame(frame[14:], 0), unreachable_frame(frame[14:], 1)]
    assert rig.counted() == {"icmp_unreachable_out": 2, "icmp_rate_limited": 1}
    rig.feed(frame, now=1009)  # 10 µs of credit left at t=20
    assert rig.sent() == []
    rig.feed(frame, now=1010)
    assert rig.sent() == [unreachable_frame(frame[14:], 2)]
    assert rig.dropped() == {"ipv4_unsupported_protocol": 5}


@pytest.mark.parametrize(
    "frame",
    [
        ipv4_frame(PROTO_UDP, UDP_DATAGRAM_PAYLOAD, flags_frag=MF),
        ipv4_frame(PROTO_UDP, UDP_DATAGRAM_PAYLOAD, dst=SUBNET_BROADCAST),
        ipv4_frame(PROTO_UDP, UDP_DATAGRAM_PAYLOAD, src=SUBNET_BROADCAST),
        ipv4_frame(PROTO_UDP, UDP_DATAGRAM_PAYLOAD, eth_dst=b"\xff" * 6),
    ],
    ids=["fragment", "to_broadcast", "from_broadcast", "link_broadcast"],
)
def test_unsupported_protocol_in_forbidden_case_no_unreachable(frame: bytes) -> None:
    """RFC 1122 §3.2.2: no error for fragments, broadcasts or non-host sources."""
    rig = rig_with_peer()
    rig.feed(frame)
    assert sum(rig.drops) == 1
    assert (rig.counted(), rig.sent()) == ({}, [])


def test_token_bucket_non_positive_settings_rejected() -> None:
    with pytest.raises(ValueError):
        TokenBucket(interval_us=0, burst=1)


def test_token_bucket_idle_refills_to_burst_only() -> None:
    bucket = TokenBucket(interval_us=100, burst=2)
    assert [bucket.take(10**9) for _ in range(3)] == [True, True, False]
    assert bucket.take(10**9 + 99) is False
    assert bucket.take(10**9 + 199) is True
