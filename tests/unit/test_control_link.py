"""The control link between the loop and its control process: one message
per frame, so a reply is delivered whole (with its descriptors) or not at
all, and no reply, however large or late, breaks the link for the next."""

from __future__ import annotations

import json
import os
import select
import socket
import threading

import pytest

from stackservice.control import link as link_module
from stackservice.control.link import (
    FDS,
    MAX_MESSAGE,
    MAX_REQUEST,
    LinkClient,
    LinkServer,
    link_pair,
)
from stackservice.faults import Containment


def serve_once(server: LinkServer) -> None:
    assert server.on_readable()


def request(sock: socket.socket, request_id: int, op: str, **fields) -> None:
    sock.send(json.dumps({"id": request_id, "op": op, **fields}).encode())


def receive(sock: socket.socket) -> tuple[dict, list[int]]:
    body, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, 8)
    assert not flags & socket.MSG_TRUNC
    return json.loads(body), fds


@pytest.fixture
def pair():
    loop_end, control_end = link_pair()
    yield loop_end, control_end
    loop_end.close()
    control_end.close()


def test_a_reply_too_large_for_the_link_is_refused_whole_and_the_next_is_served(pair):
    loop_end, control_end = pair
    server = LinkServer(loop_end, lambda r: {"blob": "x" * (2 * MAX_MESSAGE)} if r["op"] == "big"
                        else {"ok": r["id"]})  # fmt: skip
    request(control_end, 1, "big")
    serve_once(server)
    reply, _ = receive(control_end)
    assert reply["id"] == 1 and reply["error"] == "resource_exhausted"
    request(control_end, 2, "small")
    serve_once(server)
    assert receive(control_end)[0] == {"ok": 2, "id": 2}


def test_replies_the_control_process_does_not_read_in_time_are_dropped_whole(pair, monkeypatch):
    """A stuck reader: each reply goes whole or not at all, so what it reads
    later are whole replies, never the tail of one cut off."""
    monkeypatch.setattr(link_module, "_REPLY_SEND_TIMEOUT", 0.01)
    loop_end, control_end = pair
    server = LinkServer(loop_end, lambda r: {"blob": str(r["id"]) * (server.max_message // 3)})
    for request_id in range(1, 8):
        request(control_end, request_id, "fill")
        serve_once(server)
    control_end.setblocking(False)
    seen = []
    while True:
        try:
            reply, _ = receive(control_end)
        except BlockingIOError:
            break
        assert set(reply["blob"]) == {str(reply["id"])}
        seen.append(reply["id"])
    assert seen and len(seen) < 7 and seen == sorted(seen)
    control_end.setblocking(True)
    request(control_end, 9, "fill")
    serve_once(server)
    assert receive(control_end)[0]["id"] == 9


def test_descriptors_travel_with_their_reply_and_the_loop_closes_its_copies(pair):
    loop_end, control_end = pair
    read_end, write_end = os.pipe()
    server = LinkServer(loop_end, lambda r: {FDS: [write_end]})  # the reply owns it
    request(control_end, 1, "attach")
    serve_once(server)
    reply, fds = receive(control_end)
    assert reply == {"id": 1} and len(fds) == 1
    os.write(fds[0], b"!")
    os.close(fds[0])
    assert os.read(read_end, 2) == b"!"
    assert os.read(read_end, 1) == b""  # no write end left: the loop closed its copy
    os.close(read_end)


def test_a_garbled_request_is_skipped_and_the_link_goes_on(pair):
    loop_end, control_end = pair
    server = LinkServer(loop_end, lambda r: {"ok": True})
    control_end.send(b"[not an object]")
    control_end.send(b"{")
    request(control_end, 3, "x")
    serve_once(server)
    assert receive(control_end)[0] == {"ok": True, "id": 3}


def test_the_client_closes_the_descriptors_of_a_reply_nobody_waits_for(pair):
    loop_end, control_end = pair
    client = LinkClient(control_end, lambda event: None)
    client.start()
    with pytest.raises(TimeoutError):
        client.request("attach", 0.05)  # the loop has not answered yet
    late = json.loads(loop_end.recv(MAX_REQUEST))
    read_end, write_end = os.pipe()
    server = LinkServer(loop_end, lambda r: {"ok": True})
    server._send({"id": late["id"], FDS: [write_end]})  # too late: nobody waits
    answer = threading.Thread(
        target=lambda: (select.select([loop_end], [], []), serve_once(server))
    )
    answer.start()
    assert client.request("next", 5) == {"ok": True, "id": late["id"] + 1, FDS: []}
    answer.join()
    assert os.read(read_end, 1) == b""  # the late reply's copy was closed
    os.close(read_end)


def test_a_job_answers_a_step_a_pass_and_requests_meanwhile_wait_their_turn(pair):
    loop_end, control_end = pair
    steps: list[int] = []

    def long(request: dict):
        for step in range(3):
            steps.append(step)
            yield
        return {"done": steps[:]}

    def handler(request: dict):
        if request["op"] == "long":
            return long(request)
        if request["op"] == "broken":
            return broken()
        return {"short": True}

    def broken():
        yield
        raise RuntimeError("a bug in the second step")

    server = LinkServer(loop_end, handler, Containment(strict=False, clock=lambda: 0))
    request(control_end, 1, "long")
    request(control_end, 2, "short")
    serve_once(server)
    assert steps == [0] and server.busy  # one step in the pass the request came
    control_end.setblocking(False)
    with pytest.raises(BlockingIOError):
        control_end.recv(MAX_MESSAGE)  # nothing answered yet: not even the short one
    control_end.setblocking(True)
    server.work()
    server.work()
    assert steps == [0, 1, 2] and server.busy
    server.work()
    assert not server.busy
    assert receive(control_end)[0] == {"done": [0, 1, 2], "id": 1}
    assert receive(control_end)[0] == {"short": True, "id": 2}
    request(control_end, 3, "broken")
    serve_once(server)
    server.work()
    assert receive(control_end)[0]["error"] == "internal" and not server.busy
