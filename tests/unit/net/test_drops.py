"""Counter enums: dense values and metric-ready labels."""

from __future__ import annotations

import re

from stackservice.net.drops import (
    ACCEPTED_EVENTS,
    DROP_REASON_COUNT,
    NET_EVENT_COUNT,
    TX_DROP_REASONS,
    DropReason,
    NetEvent,
)


def test_drop_reason_values_dense_from_zero() -> None:
    assert [int(reason) for reason in DropReason] == list(range(DROP_REASON_COUNT))


def test_net_event_values_dense_from_zero() -> None:
    assert [int(event) for event in NetEvent] == list(range(NET_EVENT_COUNT))


def test_drop_reason_lowercased_names_are_prometheus_labels() -> None:
    labels = [reason.name.lower() for reason in DropReason]
    assert DropReason.IPV4_BAD_CHECKSUM.name.lower() == "ipv4_bad_checksum"
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", label) for label in labels)
    assert len(set(labels)) == len(labels)


def test_tx_drop_reasons_are_the_transmit_side_ones() -> None:
    names = {reason.name.lower() for reason in TX_DROP_REASONS}
    assert names == {"ipv4_no_route", "arp_queue_full", "arp_unresolved"}


def test_accepted_events_are_the_receive_outcomes() -> None:
    names = [event.name.lower() for event in ACCEPTED_EVENTS]
    assert names == ["arp_request_in", "arp_reply_in", "icmp_echo_request_in", "ipv4_delivered"]
