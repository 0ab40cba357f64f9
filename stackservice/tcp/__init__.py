"""Sans-IO TCP (RFC 9293 and its extensions): segments, the engine, TCBs,
timers, congestion control, SACK and RACK-TLP loss recovery, SYN cookies.

This package re-exports the wire format and the drop reasons; the engine
is `stackservice.tcp.engine.TcpEngine`. Nothing here does I/O or reads a
clock: time comes in as an int of microseconds.
"""

from stackservice.tcp.drops import SEGMENT_DROP_REASONS, TCP_DROP_REASON_COUNT, TcpDropReason
from stackservice.tcp.segment import (
    ACK,
    CWR,
    ECE,
    FIN,
    ILLEGAL_FLAG_MIXES,
    NO_OPTIONS,
    PSH,
    RST,
    SYN,
    URG,
    MalformedSegment,
    TcpOptions,
    TcpRepr,
    TcpView,
    seq_add,
    seq_ge,
    seq_gt,
    seq_le,
    seq_lt,
    seq_sub,
    verify_checksum,
    write_segment,
)

__all__ = [
    "ACK",
    "CWR",
    "ECE",
    "FIN",
    "ILLEGAL_FLAG_MIXES",
    "NO_OPTIONS",
    "PSH",
    "RST",
    "SEGMENT_DROP_REASONS",
    "SYN",
    "TCP_DROP_REASON_COUNT",
    "URG",
    "MalformedSegment",
    "TcpDropReason",
    "TcpOptions",
    "TcpRepr",
    "TcpView",
    "seq_add",
    "seq_ge",
    "seq_gt",
    "seq_le",
    "seq_lt",
    "seq_sub",
    "verify_checksum",
    "write_segment",
]
