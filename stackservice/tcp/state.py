"""Connection states (RFC 9293 §3.3.2) and what each one allows."""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class TcpState(IntEnum):
    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10


TCP_STATE_COUNT = len(TcpState)

# Plain ints for the per-segment path (an IntEnum compare costs more).
CLOSED = int(TcpState.CLOSED)
LISTEN = int(TcpState.LISTEN)
SYN_SENT = int(TcpState.SYN_SENT)
SYN_RECEIVED = int(TcpState.SYN_RECEIVED)
ESTABLISHED = int(TcpState.ESTABLISHED)
FIN_WAIT_1 = int(TcpState.FIN_WAIT_1)
FIN_WAIT_2 = int(TcpState.FIN_WAIT_2)
CLOSE_WAIT = int(TcpState.CLOSE_WAIT)
CLOSING = int(TcpState.CLOSING)
LAST_ACK = int(TcpState.LAST_ACK)
TIME_WAIT = int(TcpState.TIME_WAIT)

# States in which received text is delivered to the application (RFC 9293
# §3.10.7.4, "seventh, process the segment text").
RECEIVES_DATA = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
# States in which data (and our FIN) is sent, first or again: synchronized,
# and our FIN not yet acknowledged.
SENDS_DATA = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})
