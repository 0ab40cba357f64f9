"""Segmentation offload (stackservice.net.offload): a run of full-sized
segments leaves as one super-frame, and the wire cannot tell. (conftest.py
runs every engine test both ways; these look at the runs themselves.)"""

from __future__ import annotations

import pytest

from stackservice.net.checksum import ones_complement_sum, pseudo_header_sum
from stackservice.net.ethernet import HEADER_LEN as ETH_HEADER_LEN
from stackservice.net.host import FRAME_HEADROOM
from stackservice.net.ipv4 import PROTO_TCP, write_header
from stackservice.net.offload import SuperFrame
from stackservice.tcp.counters import TcpCounter
from stackservice.tcp.segment import ACK, PSH, TcpRepr, TcpView
from stackservice.tcp.tcb import SHUT_WR
from tests.unit.tcp._rig import LOCAL_IP, PEER_IP, Rig
from tests.unit.tcp._states import SACK_ONLY, brief, established, seq

MSS = 1460


def _wire(sent) -> list[tuple]:
    return [(s.seg.seq, s.seg.ack, s.flags, s.seg.window, s.seg.options, s.payload) for s in sent]


def _flight(
    offload: bool, size: int, shut: bool = False, nodelay: bool = False, short_first: bool = False
) -> tuple[Rig, list]:
    rig = Rig(segmentation_offload=offload)
    conn = established(rig)
    conn.tcb.nodelay = nodelay
    if short_first:  # a short segment in flight: Nagle holds the next
        rig.engine.send(conn.tcb, b"s" * 10, 0)
        conn.flush(conn.now)
    rig.frames = 0  # the flight's only
    assert rig.engine.send(conn.tcb, bytes(range(256)) * (size // 256) + bytes(size % 256), 0)
    if shut:
        rig.engine.shutdown(conn.tcb, SHUT_WR, conn.now)
    return rig, conn.flush(conn.now)


@pytest.mark.parametrize(
    ("size", "shut", "nodelay", "frames", "runs"),
    [
        (9 * MSS + 100, False, False, 1, 1),  # the tail (PSH) in the run
        (9 * MSS + 100, False, True, 1, 1),
        (10 * MSS, False, False, 1, 1),  # the initial window, the last (PSH) included
        (10 * MSS, True, False, 2, 1),  # the last carries FIN: a segment of its own
        (11 * MSS, False, False, 1, 1),  # the window ends the run before the data does
        (2 * MSS, False, False, 1, 1),  # one full segment and the last, full
        (MSS + 1, False, False, 1, 1),  # one full segment and a one-byte tail
        (MSS + 1, True, False, 2, 0),  # the tail carries FIN: the full one goes alone
        (MSS, False, False, 1, 0),  # one segment: never a run
        (2 * MSS + 1, True, True, 2, 1),
    ],
)
@pytest.mark.parametrize("short_first", [False, True], ids=["", "short-in-flight"])
def test_a_run_is_the_very_segments_sent_one_by_one(
    size: int, shut: bool, nodelay: bool, frames: int, runs: int, short_first: bool
) -> None:
    one_by_one, expected = _flight(False, size, shut, nodelay, short_first)
    offloaded, sent = _flight(True, size, shut, nodelay, short_first)
    assert _wire(sent) == _wire(expected)
    assert one_by_one.super_frames == 0
    if not short_first:  # (else the window, 10 bytes less, cuts the flight differently)
        assert (offloaded.frames, offloaded.super_frames) == (frames, runs)
    segments_out = TcpCounter.SEGMENTS_OUT
    assert offloaded.counted(segments_out) == one_by_one.counted(segments_out)


def _sacking_flight(offload: bool) -> tuple[Rig, list]:
    """Our segments carry a SACK block (the peer's data arrived out of
    order), so each holds 12 bytes less than the MSS, and a short segment
    is in flight: then the write's last segment, of exactly that size, is
    short for Nagle, and waits."""
    rig = Rig(segmentation_offload=offload)
    conn = established(rig, options=SACK_ONLY)
    rig.engine.send(conn.tcb, b"s" * 10, 0)
    conn.flush(conn.now)
    conn.deliver(conn.now, b"x" * 100, seq=seq(conn.seq, 500))
    conn.flush(conn.now)
    rig.engine.send(conn.tcb, bytes(9 * (MSS - 12)), 0)
    return rig, conn.flush(conn.now)


def test_a_segment_shortened_by_sack_blocks_is_short_for_nagle_in_a_run_too() -> None:
    _, expected = _sacking_flight(False)
    offloaded, sent = _sacking_flight(True)
    assert _wire(sent) == _wire(expected)
    assert [len(s.payload) for s in sent] == [MSS - 12] * 8
    assert offloaded.super_frames == 1


def test_psh_stays_on_the_last_segment_of_a_run_and_fin_never_rides_in_one() -> None:
    rig, sent = _flight(True, 10 * MSS)
    assert [f[0] for f in brief(sent)] == ["A"] * 9 + ["PA"]
    assert (rig.super_frames, rig.frames) == (1, 1)
    rig, sent = _flight(True, 10 * MSS, shut=True)
    assert [f[0] for f in brief(sent)] == ["A"] * 9 + ["FPA"]
    assert (rig.super_frames, rig.frames) == (1, 2)


def test_the_run_s_checksum_field_is_the_pseudo_header_sum_the_nic_completes() -> None:
    """NEEDS_CSUM (virtio_net_hdr): the field holds the pseudo-header sum
    over the whole run; the one's complement of the sum from the TCP
    header on, that field included, is the run's checksum."""
    rig = Rig(segmentation_offload=True)
    conn = established(rig)
    runs = []
    rig.engine._send_frame = lambda dst, protocol, frame, now: runs.append(frame) or True
    rig.engine.send(conn.tcb, bytes(range(256)) * 40, 0)
    rig.engine.flush(conn.now)
    run = runs[0]
    assert type(run) is SuperFrame and (run.segment_size, run.segments) == (MSS, 8)
    length = len(run) - FRAME_HEADROOM
    write_header(run, ETH_HEADER_LEN, LOCAL_IP, PEER_IP, PROTO_TCP, length, 1)
    tcp = memoryview(run)[FRAME_HEADROOM:]
    assert int.from_bytes(tcp[16:18], "big") == pseudo_header_sum(
        LOCAL_IP, PEER_IP, PROTO_TCP, length
    )
    tcp[16:18] = (~ones_complement_sum(tcp) & 0xFFFF).to_bytes(2, "big")
    whole = TcpRepr.parse(TcpView.checked(tcp), LOCAL_IP, PEER_IP, False)  # verifies
    assert (whole.seq, whole.flags, whole.payload_len) == (seq(conn.tcb.iss, 1), ACK | PSH, 10240)


def test_retransmissions_go_one_by_one_and_new_data_again_as_a_run() -> None:
    """After a timeout SND.NXT is back at SND.UNA: what is resent is
    counted and timed per segment (Karn), so it is never in a run."""
    rig = Rig(segmentation_offload=True)
    conn = established(rig)
    rig.engine.send(conn.tcb, bytes(30 * MSS), 0)
    assert len(conn.flush(conn.now)) == 10 and rig.super_frames == 1
    rto = conn.tcb.rto_deadline
    resent = conn.flush(rto)
    assert brief(resent) == [("A", conn.ack, conn.seq, MSS)]
    # Two segments acknowledged: slow start again, cwnd 2 MSS after the
    # ACK; the next two are retransmissions, each its own frame.
    conn.deliver(rto + 1000, ack=seq(conn.ack, MSS))
    again = conn.flush(rto + 1000)
    assert [s.seg.seq for s in again] == [seq(conn.ack, MSS), seq(conn.ack, 2 * MSS)]
    assert rig.super_frames == 1
    assert rig.counted(TcpCounter.RETRANSMITTED_SEGMENTS) == 3
