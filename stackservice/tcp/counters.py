"""Counters of the TCP engine (what `netstat -s` shows for Linux), indexed
into a caller-owned integer array like the net layer's."""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class TcpCounter(IntEnum):
    ACTIVE_OPENS = 0  # connect() sent a SYN (RFC 4022 tcpActiveOpens)
    PASSIVE_OPENS = 1  # a SYN to a listener created a connection (tcpPassiveOpens)
    ATTEMPT_FAILS = 2  # SYN-SENT/SYN-RECEIVED to CLOSED, or SYN-RECEIVED to LISTEN
    ESTABLISHED_RESETS = 3  # ESTABLISHED/CLOSE-WAIT to CLOSED by a RST
    SEGMENTS_IN = 4  # segments that passed parsing
    SEGMENTS_OUT = 5  # segments sent, retransmissions included
    RETRANSMITTED_SEGMENTS = 6
    RESETS_IN = 7  # RSTs that reset a connection
    RESETS_OUT = 8
    TIMEOUTS = 9  # retransmission timer expiries
    FAST_RETRANSMITS = 10  # loss recoveries entered on duplicate ACKs / SACK
    SACK_RECOVERIES = 11  # of which driven by the SACK scoreboard (RFC 6675)
    PARTIAL_ACKS = 12  # RFC 6582 partial acknowledgments in recovery
    CONNECTION_TIMEOUTS = 13  # connections aborted by retransmission/SYN/keepalive limits
    SYN_COOKIES_SENT = 14
    SYN_COOKIES_ACCEPTED = 15
    LISTEN_OVERFLOWS = 16  # accept queue full
    CHALLENGE_ACKS = 17  # RFC 5961
    CHALLENGE_ACKS_LIMITED = 18  # suppressed by the rate limit (RFC 5961 §7)
    KEEPALIVE_PROBES = 19
    ZERO_WINDOW_PROBES = 20
    DELAYED_ACKS = 21  # ACKs sent by the delayed-ACK timer
    TIME_WAIT_RECYCLED = 22  # a SYN reopened a TIME-WAIT connection (RFC 6191)
    TIME_WAIT_OVERFLOWS = 23  # TIME-WAIT table full: the connection closed at once
    APP_ABORTS = 24  # close() with unread data or SO_LINGER 0: RST sent
    TLP_PROBES = 25  # tail loss probes sent (RFC 8985 §7)
    TLP_RECOVERIES = 26  # a probe repaired a lost tail: no RTO was needed (RFC 8985 §7.4)
    RACK_LOSSES = 27  # segments RACK marked lost by time (RFC 8985 §6.2), first or resent
    LOST_RETRANSMITS = 28  # of which retransmissions lost again (RACK, RFC 8985 §6)
    ORPHAN_ABORTS = 29  # closed connections reset: too many orphans, or orphan_retries spent
    OUT_OF_WINDOW_ACKS_LIMITED = 30  # no ACK to an out-of-window ACK: the per-connection limit


TCP_COUNTER_COUNT = len(TcpCounter)
