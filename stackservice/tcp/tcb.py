"""The transmission control block: one connection's variables (RFC 9293 §3.3.1).

Data only, plus the arithmetic every direction needs. What happens on a
segment lives in `input.py`, what goes out in `output.py`, lifetime and
timers in `engine.py` (mTCP's tcp_in.c / tcp_out.c / tcp_stream.c split).
"""

from __future__ import annotations

from stackservice.tcp.buffers import ReceiveBuffer, SendBuffer
from stackservice.tcp.congestion import CongestionControl
from stackservice.tcp.rack import Rack
from stackservice.tcp.rtt import RttEstimator
from stackservice.tcp.sack import Scoreboard
from stackservice.tcp.segment import seq_sub
from stackservice.tcp.state import CLOSED
from stackservice.tcp.timers import TimerEntry

# Readiness bits the socket layer turns into epoll events.
READABLE = 0x1  # data, EOF, or an error to report
WRITABLE = 0x4  # send buffer has room (or an error to report)
ERROR = 0x8
HANGUP = 0x10  # both directions closed (or reset)
READ_HANGUP = 0x2000  # the peer sent FIN (EPOLLRDHUP)

# SHUT_* values as in socket.h.
SHUT_RD = 0
SHUT_WR = 1
SHUT_RDWR = 2


class Tcb(TimerEntry):
    """One connection. Sequence variables use RFC 9293 names."""

    __slots__ = (
        # identity
        "local_ip",
        "local_port",
        "remote_ip",
        "remote_port",
        "key",
        "state",
        "listener",  # the Listener that accepted us, until accept()
        "owner",  # who holds this socket: its on_ready() gets readiness events
        "sock_id",  # unique in the instance, for ListConnections
        # send sequence space
        "iss",
        "snd_una",  # oldest unacknowledged
        "snd_nxt",  # next to send
        "snd_max",  # highest ever sent (snd_nxt goes back after a timeout)
        "snd_wnd",  # peer's window, scaled, bytes
        "max_snd_wnd",  # largest window the peer offered (RFC 5961 §5.2, SWS)
        "snd_wl1",  # seq of the segment used for the last window update
        "snd_wl2",  # ack of that segment
        "snd_wscale",  # shift the peer applies to its window field
        "buf_seq",  # sequence number of send_buffer's first byte
        "fin_seq",  # sequence number of our FIN once queued, else -1
        # receive sequence space
        "irs",
        "rcv_nxt",
        "rcv_adv",  # right edge we last advertised: never shrunk (RFC 9293 §3.8.6.2.2)
        "last_ack_sent",  # ACK field of our latest segment (RFC 7323 Last.ACK.sent)
        "rcv_wscale",  # shift we apply to our window field
        "peer_fin_seq",  # seq of a FIN received out of order, else -1
        "fin_received",  # the peer's FIN has been consumed in order
        # options negotiated on the handshake
        "mss",  # data per segment: the MSS less the options every segment carries
        "peer_mss",  # min(peer's MSS option, ours): data + options per segment
        "ts_enabled",
        "ts_recent",  # RFC 7323 TS.Recent
        "ts_recent_age",  # when TS.Recent was set (µs), for the 24-day PAWS rule
        "ts_offset",  # per-connection TSval offset (RFC 7323 §5.4)
        "sack_enabled",
        "ws_enabled",
        # buffers, reliability, congestion
        "send_buffer",
        "receive_buffer",
        "rtt",
        "cc",
        "scoreboard",
        "rack",  # RACK state (RFC 8985 §5.2), with SACK
        "rtt_seq",  # Karn: the segment being timed (no timestamps), or -1
        "rtt_start",
        "small_end",  # Minshall's Nagle: end of the last short new segment sent, or -1
        "dup_acks",
        "in_recovery",
        "recover",  # RFC 6582 / RFC 6675 recovery point
        "tlp_end",  # RFC 8985 TLP.end_seq: SND.MAX after a loss probe, -1 if none out
        "tlp_retransmitted",  # TLP.is_retrans: that probe resent data
        "retransmits",  # consecutive timeouts of the current segment
        "retransmitted",  # segments this connection ever resent
        "last_receive",  # when a segment last arrived (keepalive)
        "data_received_at",  # when in-order data last arrived (quick-ACK after a gap)
        "invalid_ack_allowed_at",  # µs: no challenge or out-of-window ACK before (RFC 5961 §7)
        # timers: absolute µs deadlines, 0 = off; the wheel holds the earliest
        "rto_deadline",
        "delack_deadline",
        "persist_deadline",
        "reorder_deadline",  # RACK: when the next outstanding segment may be deemed lost
        "loss_probe_deadline",  # RFC 8985 PTO
        "persist_backoff",
        "keepalive_deadline",
        "keepalive_sent",
        # ACK policy
        "ack_pending",  # an ACK is owed; delayed unless ack_now
        "ack_now",
        "unacked_segments",  # full segments received since our last ACK
        "quickack",  # segments still to ACK at once (slow-start friendliness)
        "dsack",  # (left, right) of a duplicate received, for our next SACK (RFC 2883)
        # socket options
        "nodelay",
        "keepalive",
        "keepalive_idle",
        "keepalive_interval",
        "keepalive_count",
        "linger_zero",
        # membership flags: queues are never scanned (STYLE rule 9)
        "on_control_list",
        "on_ack_list",
        "on_data_list",
        "on_event_queue",
        # application view
        "error",  # errno to report once, 0 if none
        "read_closed",  # app did shutdown(SHUT_RD)
        "write_closed",  # app did shutdown(SHUT_WR) or close()
        "app_closed",  # app called close(): the TCB is the engine's alone
        "opened_at",  # µs, for connect-time statistics
        "established_at",
    )

    def __init__(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> None:
        super().__init__()
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.key = flow_key(remote_ip, remote_port, local_port)
        self.state = CLOSED
        self.listener = None
        self.owner = None
        self.sock_id = 0
        self.iss = self.snd_una = self.snd_nxt = self.snd_max = 0
        self.snd_wnd = self.max_snd_wnd = self.snd_wl1 = self.snd_wl2 = 0
        self.snd_wscale = self.rcv_wscale = 0
        self.buf_seq = 0
        self.fin_seq = self.peer_fin_seq = -1
        self.irs = self.rcv_nxt = self.rcv_adv = self.last_ack_sent = 0
        self.fin_received = False
        self.mss = self.peer_mss = 536
        self.ts_enabled = self.sack_enabled = self.ws_enabled = False
        self.ts_recent = self.ts_recent_age = self.ts_offset = 0
        self.send_buffer: SendBuffer | None = None
        self.receive_buffer: ReceiveBuffer | None = None
        self.rtt: RttEstimator | None = None
        self.cc: CongestionControl | None = None
        self.scoreboard: Scoreboard | None = None
        self.rack: Rack | None = None
        self.rtt_seq = -1
        self.rtt_start = 0
        self.small_end = -1
        self.dup_acks = 0
        self.in_recovery = False
        self.recover = 0
        self.tlp_end = -1
        self.tlp_retransmitted = False
        self.retransmits = self.retransmitted = 0
        self.last_receive = self.data_received_at = self.invalid_ack_allowed_at = 0
        self.rto_deadline = self.delack_deadline = self.persist_deadline = 0
        self.keepalive_deadline = self.reorder_deadline = self.loss_probe_deadline = 0
        self.persist_backoff = self.keepalive_sent = 0
        self.ack_pending = self.ack_now = False
        self.unacked_segments = 0
        self.quickack = 0
        self.dsack: tuple[int, int] | None = None
        self.nodelay = self.keepalive = self.linger_zero = False
        self.keepalive_idle = self.keepalive_interval = self.keepalive_count = 0
        self.on_control_list = self.on_ack_list = self.on_data_list = False
        self.on_event_queue = False
        self.error = 0
        self.read_closed = self.write_closed = self.app_closed = False
        self.opened_at = self.established_at = 0

    # Compiled, seq_sub is a C call on the TCB's C fields (tcb.pxd).

    def in_flight(self) -> int:
        """Bytes sent and not yet acknowledged (SYN/FIN count one each)."""
        return seq_sub(self.snd_nxt, self.snd_una)

    def sendable(self) -> int:
        """Buffered bytes at or after snd_nxt: new data, or data to resend
        after a timeout pulled snd_nxt back."""
        ahead = len(self.send_buffer) - seq_sub(self.snd_nxt, self.buf_seq)
        return ahead if 0 < ahead <= len(self.send_buffer) else 0

    def receive_window(self) -> int:
        """The window we may advertise now, in bytes (before scaling)."""
        return self.receive_buffer.window() if self.receive_buffer is not None else 0


def flow_key(remote_ip: int, remote_port: int, local_port: int) -> int:
    """One int per flow for the hash table: the local address is the
    instance's own, so the remote address and both ports identify a flow."""
    return (remote_ip << 32) | (remote_port << 16) | local_port
