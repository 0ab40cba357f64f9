"""Per-instance TCP settings: defaults follow Linux where RFCs leave room."""

from __future__ import annotations

from dataclasses import dataclass

from stackservice.tcp.congestion import CONGESTION_CONTROLS

_SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class TcpSettings:
    mtu: int = 1500
    send_buffer: int = 256 * 1024  # SO_SNDBUF default
    receive_buffer: int = 256 * 1024  # SO_RCVBUF default; sets our window scale
    # SO_SNDBUF/SO_RCVBUF above this are clamped to it, as Linux clamps to
    # wmem_max/rmem_max; all connections' rings together stay within
    # buffer_memory (like tcp_mem; out-of-order growth stops at 3/4 of it).
    max_socket_buffer: int = 4 << 20
    buffer_memory: int = 512 << 20
    congestion_control: str = "cubic"
    time_wait_us: int = 60 * _SECOND  # Linux's TCP_TIMEWAIT_LEN (2*MSL)
    fin_wait_2_us: int = 60 * _SECOND  # orphans only, like tcp_fin_timeout
    max_time_wait: int = 65536  # like tcp_max_tw_buckets
    syn_retries: int = 6  # like tcp_syn_retries (~127 s)
    synack_retries: int = 5  # like tcp_synack_retries
    max_retransmits: int = 15  # like tcp_retries2: then the connection is aborted
    # Connections the application closed but the engine still holds (FIN or
    # data unacknowledged): what a peer that never ACKs, or keeps its window
    # shut, can make us keep. Like tcp_orphan_retries (whose 0 means 8) and
    # tcp_max_orphans.
    orphan_retries: int = 8
    max_orphans: int = 65536
    delayed_ack_us: int = 40_000  # Linux's minimum ATO; RFC 9293 §3.8.6.3 allows < 500 ms
    quickack_segments: int = 16  # segments ACKed at once after the handshake, a gap or a duplicate
    keepalive_idle_us: int = 7200 * _SECOND
    keepalive_interval_us: int = 75 * _SECOND
    keepalive_probes: int = 9
    persist_max_us: int = 120 * _SECOND
    min_rto_us: int = 200_000
    max_rto_us: int = 120 * _SECOND
    initial_rto_us: int = 1 * _SECOND
    syn_queue: int = 1024  # half-open connections per listener before SYN cookies
    syn_cookies: bool = True
    timestamps: bool = True
    sack: bool = True
    window_scaling: bool = True
    # RFC 5961 §7, both as Linux (tcp/challenge.py): per connection, one
    # challenge or out-of-window ACK per interval, like tcp_invalid_ratelimit;
    # per instance, a random budget of challenge ACKs around this mean (0:
    # none), like tcp_challenge_ack_limit from 4.7 to 5.19.
    invalid_ack_interval_us: int = 500_000
    challenge_ack_per_s: int = 1000
    max_connections: int = 1 << 20

    def __post_init__(self) -> None:
        if self.congestion_control not in CONGESTION_CONTROLS:
            raise ValueError(f"congestion control must be one of {', '.join(CONGESTION_CONTROLS)}")
        if not 576 <= self.mtu <= 9216:
            raise ValueError("mtu must be 576..9216")
        if self.send_buffer < 2048 or self.receive_buffer < 2048:
            raise ValueError("buffers must be at least 2048 bytes")
        if max(self.send_buffer, self.receive_buffer) > self.max_socket_buffer:
            raise ValueError("default buffers above max_socket_buffer")
        if self.buffer_memory < self.max_socket_buffer:
            raise ValueError("buffer_memory below one socket's largest buffer")
        if not 1 <= self.orphan_retries <= 16:
            raise ValueError("orphan_retries must be 1..16")  # the persist backoff's range

    @property
    def mss(self) -> int:
        """The MSS we advertise: MTU less IPv4 and TCP headers (RFC 9293 §3.7.1)."""
        return self.mtu - 40
