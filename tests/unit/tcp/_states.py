"""State fixtures for the engine tests: each one drives a `Rig` through the
engine's own API and a scripted peer into one RFC 9293 §3.3.2 state, and
hands back what a test needs to go on from there (smoltcp's
`socket_established()` and friends).

The peer is `PEER_IP:PEER_PORT`, we are `LOCAL_IP:LOCAL_PORT` (the rig's
addresses), the peer's ISN is `PEER_ISS`. Unless a test asks for more, the
peer offers only an MSS of 1460: no timestamps, SACK or window scaling, so
segment sizes and window fields are plain numbers. The handshake's round
trip is 1 ms, so the first RTT sample sets the RTO to the 200 ms floor.
"""

from __future__ import annotations

from dataclasses import dataclass

from stackservice.tcp.engine import Listener, SocketOptions
from stackservice.tcp.segment import ACK, FIN, PSH, RST, SYN, TcpOptions
from stackservice.tcp.state import TcpState
from stackservice.tcp.tcb import Tcb, flow_key
from tests.unit.tcp._rig import LOCAL_PORT, MS, PEER_IP, PEER_PORT, Rig, Sent

PEER_ISS = 1_000  # the peer's initial sequence number
PEER_TS = 5_000_000  # the peer's TSval at t = 0 (a 1 ms clock)
RTT = 1 * MS  # handshake round trip of the fixtures
MIN_RTO = 200 * MS  # TcpSettings.min_rto_us: what a 1 ms RTT sample gives
MASK = 0xFFFFFFFF

# What the peer offers on its SYN.
PLAIN = TcpOptions(mss=1460)
ALL_OPTIONS = TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamps=(PEER_TS, 0))
SACK_ONLY = TcpOptions(mss=1460, sack_permitted=True)

_FLAG_LETTERS = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "A"))


def flag_str(flags: int) -> str:
    """tcpdump-like: SYN|ACK is "SA", FIN|PSH|ACK "FPA", RST "R"."""
    return "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)


def brief(sent: list[Sent]) -> list[tuple[str, int, int, int]]:
    """(flags, SEG.SEQ, SEG.ACK, payload length) of each segment, in order."""
    return [(flag_str(s.flags), s.seg.seq, s.seg.ack, len(s.payload)) for s in sent]


def seq(base: int, n: int) -> int:
    """Sequence arithmetic modulo 2**32."""
    return (base + n) & MASK


def flow(rig: Rig, src_port: int = PEER_PORT) -> Tcb | None:
    """The engine's TCB for the peer's `src_port`, if it has one."""
    return rig.engine.flows.get(flow_key(PEER_IP, src_port, LOCAL_PORT))


def state(tcb: Tcb) -> TcpState:
    return TcpState(tcb.state)


@dataclass
class Conn:
    """One synchronized connection and the peer's side of its sequence space.

    `seq` is the peer's next sequence number (our RCV.NXT once everything it
    sent arrived); `ack` what the peer acknowledges by default (our SND.NXT
    right after the handshake: `iss + 1`). `now` is the time the fixture
    stopped at. With timestamps on, `deliver` adds the peer's TS option:
    TSval = PEER_TS + now in ms, TSecr = the last TSval `flush` saw from us.
    """

    rig: Rig
    tcb: Tcb
    seq: int
    ack: int
    now: int
    ts: bool = False
    tsecr: int = 0

    @property
    def iss(self) -> int:
        return self.tcb.iss

    def tsval(self, now: int) -> int:
        return (PEER_TS + now // MS) & MASK

    def options(self, now: int, sack: tuple[tuple[int, int], ...] = ()) -> TcpOptions:
        timestamps = (self.tsval(now), self.tsecr) if self.ts else None
        return TcpOptions(timestamps=timestamps, sack_blocks=sack)

    def deliver(
        self,
        now: int,
        payload: bytes = b"",
        flags: int = ACK,
        *,
        seq: int | None = None,
        ack: int | None = None,
        window: int = 65535,
        sack: tuple[tuple[int, int], ...] = (),
        options: TcpOptions | None = None,
    ) -> None:
        """A peer segment. Without `seq` it is the next in order, and
        `self.seq` moves past its payload and FIN."""
        in_order = seq is None
        if in_order:
            seq = self.seq
        self.rig.deliver(
            now,
            seq=seq,
            ack=self.ack if ack is None else ack,
            flags=flags,
            window=window,
            payload=payload,
            options=self.options(now, sack) if options is None else options,
        )
        if in_order:
            self.seq = (self.seq + len(payload) + (1 if flags & FIN else 0)) & MASK
        self.now = now

    def flush(self, now: int) -> list[Sent]:
        sent = self.rig.flush(now)
        for s in sent:
            if s.seg.options.timestamps is not None:
                self.tsecr = s.seg.options.timestamps[0]
        self.now = now
        return sent

    def read(self, size: int = 1 << 20) -> bytes:
        out = bytearray(size)
        n = self.rig.engine.receive_into(self.tcb, out, self.now)
        return bytes(out[:n])


# ------------------------------------------------------------- fixtures


def listening(rig: Rig, backlog: int = 16, socket_options: SocketOptions | None = None) -> Listener:
    """LISTEN on LOCAL_PORT; accepted connections get `socket_options`."""
    listener = rig.engine.listen(LOCAL_PORT, backlog)
    if socket_options is not None:
        listener.options = socket_options
    return listener


def syn_received(
    rig: Rig,
    now: int = 0,
    options: TcpOptions = PLAIN,
    src_port: int = PEER_PORT,
    peer_iss: int = PEER_ISS,
) -> tuple[Tcb, Sent]:
    """SYN-RECEIVED (passive): the peer's SYN arrived, our SYN-ACK went out.
    Needs a listener. Returns the TCB and the SYN-ACK."""
    rig.deliver(now, seq=peer_iss, flags=SYN, options=options, src_port=src_port)
    sent = rig.flush(now)
    assert len(sent) == 1 and sent[0].flags == SYN | ACK, sent
    tcb = flow(rig, src_port)
    assert tcb is not None and state(tcb) == TcpState.SYN_RECEIVED
    return tcb, sent[0]


def established(
    rig: Rig,
    now: int = 0,
    options: TcpOptions = PLAIN,
    backlog: int = 16,
    socket_options: SocketOptions | None = None,
    peer_iss: int = PEER_ISS,
) -> Conn:
    """ESTABLISHED by a passive open, accepted. The final ACK arrives RTT
    after the SYN; nothing is outstanding either way."""
    listener = listening(rig, backlog, socket_options)
    tcb, synack = syn_received(rig, now, options, peer_iss=peer_iss)
    ts = synack.seg.options.timestamps is not None
    conn = Conn(rig, tcb, seq(peer_iss, 1), seq(tcb.iss, 1), now, ts)
    if ts:
        conn.tsecr = synack.seg.options.timestamps[0]
    conn.deliver(now + RTT)
    assert conn.flush(now + RTT) == []
    assert rig.engine.accept(listener) is tcb
    assert state(tcb) == TcpState.ESTABLISHED
    rig.engine.take_events()
    return conn


def accepted_from(rig: Rig, src_port: int) -> Tcb:
    """One more connection, from the peer's `src_port`, to the listener
    `established` made: ESTABLISHED and accepted."""
    tcb, _ = syn_received(rig, src_port=src_port)
    rig.deliver(RTT, seq=seq(PEER_ISS, 1), ack=seq(tcb.iss, 1), src_port=src_port)
    rig.flush(RTT)
    assert rig.engine.accept(rig.engine.listeners[LOCAL_PORT]) is tcb
    return tcb


def syn_sent(rig: Rig, now: int = 0) -> tuple[Tcb, Sent]:
    """SYN-SENT: connect() from LOCAL_PORT to the peer; the SYN went out."""
    tcb = rig.engine.connect(PEER_IP, PEER_PORT, now, local_port=LOCAL_PORT)
    sent = rig.flush(now)
    assert len(sent) == 1 and sent[0].flags == SYN, sent
    return tcb, sent[0]


def established_active(rig: Rig, now: int = 0, options: TcpOptions = PLAIN) -> Conn:
    """ESTABLISHED by an active open: SYN, the peer's SYN-ACK RTT later, our ACK."""
    tcb, _ = syn_sent(rig, now)
    conn = Conn(rig, tcb, seq(PEER_ISS, 1), seq(tcb.iss, 1), now, options.timestamps is not None)
    rig.deliver(now + RTT, seq=PEER_ISS, ack=conn.ack, flags=SYN | ACK, options=options)
    sent = conn.flush(now + RTT)
    assert [s.flags for s in sent] == [ACK], sent
    assert state(tcb) == TcpState.ESTABLISHED
    rig.engine.take_events()
    return conn


def fin_wait_1(rig: Rig, now: int = 0, options: TcpOptions = PLAIN) -> Conn:
    """FIN-WAIT-1 by close(): our FIN (at iss + 1) is unacknowledged."""
    conn = established(rig, now, options)
    rig.engine.close(conn.tcb, conn.now)
    sent = conn.flush(conn.now)
    assert brief(sent) == [("FA", conn.ack, conn.seq, 0)], brief(sent)
    return conn


def fin_wait_2(
    rig: Rig, now: int = 0, half_close: bool = False, options: TcpOptions = PLAIN
) -> Conn:
    """FIN-WAIT-2: our FIN acknowledged, the peer's side still open. With
    `half_close` by shutdown(SHUT_WR) (the application may still read),
    else by close()."""
    conn = established(rig, now, options)
    if half_close:
        rig.engine.shutdown(conn.tcb, 1, conn.now)
    else:
        rig.engine.close(conn.tcb, conn.now)
    assert [s.flags for s in conn.flush(conn.now)] == [FIN | ACK]
    conn.ack = seq(conn.ack, 1)
    conn.deliver(conn.now + RTT)
    assert conn.flush(conn.now) == []
    assert state(conn.tcb) == TcpState.FIN_WAIT_2
    return conn


def time_wait(rig: Rig, now: int = 0, options: TcpOptions = PLAIN) -> Conn:
    """TIME-WAIT by an active close: FIN-WAIT-2, then the peer's FIN."""
    conn = fin_wait_2(rig, now, options=options)
    conn.deliver(conn.now + MS, flags=FIN | ACK)
    sent = conn.flush(conn.now)
    assert brief(sent) == [("A", conn.ack, conn.seq, 0)], brief(sent)
    assert state(conn.tcb) == TcpState.TIME_WAIT
    return conn


def close_wait(rig: Rig, now: int = 0, options: TcpOptions = PLAIN) -> Conn:
    """CLOSE-WAIT: the peer's FIN arrived (and was ACKed); we are open."""
    conn = established(rig, now, options)
    conn.deliver(conn.now + MS, flags=FIN | ACK)
    sent = conn.flush(conn.now)
    assert brief(sent) == [("A", conn.ack, conn.seq, 0)], brief(sent)
    assert state(conn.tcb) == TcpState.CLOSE_WAIT
    return conn


def last_ack(rig: Rig, now: int = 0, options: TcpOptions = PLAIN) -> Conn:
    """LAST-ACK: CLOSE-WAIT, then close(); our FIN is unacknowledged."""
    conn = close_wait(rig, now, options)
    rig.engine.close(conn.tcb, conn.now)
    sent = conn.flush(conn.now)
    assert brief(sent) == [("FA", conn.ack, conn.seq, 0)], brief(sent)
    assert state(conn.tcb) == TcpState.LAST_ACK
    return conn
