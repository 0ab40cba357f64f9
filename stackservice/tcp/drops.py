"""Counter indices for segments the TCP layer discards.

Like `stackservice.net.drops`, values are dense 0..N-1 so an array of
`TCP_DROP_REASON_COUNT` slots holds every counter, and a metric label is
`member.name.lower()` (exported in `vfstack_rx_drops_total{reason}` next to
the L2/L3 reasons, hence the `TCP_` prefix that keeps labels unique). A
discarded segment is counted under exactly one reason. This is the one list
the metrics export: a new reason is appended here, never invented elsewhere.
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class TcpDropReason(IntEnum):
    """Why a received TCP segment was discarded; exactly one reason per discard."""

    # Segment validation (stackservice.tcp.segment): the segment never reaches
    # a TCB and nothing is sent in reply.
    TCP_TOO_SHORT = 0  # fewer than 20 bytes
    TCP_BAD_DATA_OFFSET = 1  # data offset < 5, or the header runs past the segment
    TCP_BAD_CHECKSUM = 2  # RFC 9293 §3.1: pseudo-header checksum fails
    TCP_BAD_OPTIONS = 3  # option length 0 or 1, missing, or running past the header
    TCP_BAD_PORT = 4  # source or destination port 0 (RFC 6335 §6: reserved)
    TCP_BAD_FLAGS = 5  # SYN+FIN, SYN+RST or FIN+RST (see segment.ILLEGAL_FLAG_MIXES)
    # Demultiplexing (RFC 9293 §3.10.7.1, CLOSED): no socket owns the segment.
    TCP_NO_LISTENER = 6  # no connection or listener; a RST was sent in reply
    TCP_NO_SOCKET_RST = 7  # a RST for no connection: discarded, never answered
    # LISTEN (RFC 9293 §3.10.7.2).
    TCP_LISTEN_NOT_SYN = 8  # RST ignored, ACK answered with RST, anything else dropped
    TCP_SYN_QUEUE_OVERFLOW = 9  # half-open (SYN-RECEIVED) queue full and no SYN cookies
    TCP_LISTEN_QUEUE_OVERFLOW = 10  # accept queue full: the handshake's final ACK dropped
    TCP_BAD_SYN_COOKIE = 11  # an ACK to a listener whose cookie does not validate
    # SYN-SENT (RFC 9293 §3.10.7.3).
    TCP_SYN_SENT_UNEXPECTED = 12  # neither SYN nor RST, or a RST without an acceptable ACK
    # Synchronized states (RFC 9293 §3.10.7.4).
    TCP_OUT_OF_WINDOW = 13  # fails the acceptability test; an ACK was sent
    TCP_PAWS_REJECT = 14  # RFC 7323 §5.3: TSval older than TS.Recent; an ACK was sent
    TCP_RST_CHALLENGED = 15  # RFC 5961 §3.2: in-window RST not at RCV.NXT; challenge ACK
    TCP_SYN_CHALLENGED = 16  # RFC 5961 §4.2: SYN in a synchronized state; challenge ACK
    TCP_NO_ACK = 17  # ACK bit off in a synchronized state
    TCP_BAD_ACK = 18  # acks unsent data (> SND.NXT) or too old (RFC 5961 §5.2)
    TCP_DATA_AFTER_CLOSE = 19  # data after the application closed its side; RST sent
    TCP_RCV_BUFFER_FULL = 20  # no room in the receive or out-of-order buffer


TCP_DROP_REASON_COUNT = len(TcpDropReason)

# The reasons `segment.TcpView.checked` and `segment.TcpRepr.parse` raise; the
# rest are counted by the connection engine.
SEGMENT_DROP_REASONS = frozenset(
    {
        TcpDropReason.TCP_TOO_SHORT,
        TcpDropReason.TCP_BAD_DATA_OFFSET,
        TcpDropReason.TCP_BAD_CHECKSUM,
        TcpDropReason.TCP_BAD_OPTIONS,
        TcpDropReason.TCP_BAD_PORT,
        TcpDropReason.TCP_BAD_FLAGS,
    }
)
