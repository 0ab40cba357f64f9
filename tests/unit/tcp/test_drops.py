"""TCP drop reasons: dense values and metric-ready labels."""

from __future__ import annotations

import re

from stackservice.net.drops import DropReason
from stackservice.tcp import SEGMENT_DROP_REASONS, TCP_DROP_REASON_COUNT, TcpDropReason


def test_tcp_drop_reason_values_dense_from_zero() -> None:
    assert [int(reason) for reason in TcpDropReason] == list(range(TCP_DROP_REASON_COUNT))


def test_tcp_drop_reason_labels_prometheus_safe_and_unique_across_layers() -> None:
    """One `vfstack_rx_drops_total{reason}` family holds net and TCP reasons."""
    labels = [reason.name.lower() for reason in TcpDropReason]
    assert all(re.fullmatch(r"tcp_[a-z0-9_]+", label) for label in labels)
    assert not set(labels) & {reason.name.lower() for reason in DropReason}


def test_segment_drop_reasons_are_the_parser_ones() -> None:
    names = {reason.name.lower() for reason in SEGMENT_DROP_REASONS}
    assert names == {
        "tcp_too_short",
        "tcp_bad_data_offset",
        "tcp_bad_checksum",
        "tcp_bad_options",
        "tcp_bad_port",
        "tcp_bad_flags",
    }


def test_engine_reasons_named_now() -> None:
    """The engine counts under these; the enum is the one exported list."""
    names = {reason.name for reason in TcpDropReason}
    assert {
        "TCP_NO_LISTENER",
        "TCP_OUT_OF_WINDOW",
        "TCP_PAWS_REJECT",
        "TCP_BAD_ACK",
        "TCP_LISTEN_QUEUE_OVERFLOW",
        "TCP_SYN_QUEUE_OVERFLOW",
    } <= names
