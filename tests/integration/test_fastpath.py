"""The fast path end to end: an application attaches over gRPC, drives
sockets through the shared-memory segment, and the Linux peer talks to it.

The application side here speaks the v1 records directly (the SDK's
sockets are built on exactly this); the stack side is a real instance."""

import os
import subprocess
import sys
import time

import grpc
import pytest
from vfstack.shm import (
    APP_BELL,
    SEGMENT,
    STACK_BELL,
    Doorbell,
    EventKind,
    Op,
    Segment,
    decode_event,
    encode_command_into,
    redeem,
)
from vfstack.v1 import stack_pb2, stack_pb2_grpc

from tests.support.netns import spawn_in_netns
from tests.support.stack import running_stack

pytestmark = pytest.mark.root

STACK = "198.18.0.10"
PEER_CLIENT = """
import socket, sys
with socket.create_connection(("198.18.0.10", 8080), timeout=20) as s:
    s.sendall(b"ping")
    print(s.recv(16).decode(), flush=True)
"""


class App:
    """The application's end of one session, speaking raw v1 records."""

    def __init__(self, reply: stack_pb2.AttachResponse) -> None:
        fds = redeem(reply.handoff_path, reply.session_id, reply.token, 10.0)
        self.segment = Segment.open(fds[SEGMENT])
        self.app_bell = Doorbell.adopt(fds[APP_BELL])
        self.stack_bell = Doorbell.adopt(fds[STACK_BELL])
        self.request = 0

    def command(self, op: int, slot: int = 0, **args) -> int:
        self.request += 1
        commands = self.segment.commands
        assert commands.reserve(1) == 1
        encode_command_into(commands.data, commands.write_offset(0), op, slot, self.request, **args)
        commands.publish(1)
        self.stack_bell.ring()
        return self.request

    def event(self, kind: int, timeout: float = 20.0):
        events = self.segment.events
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while events.available():
                event = decode_event(
                    events.data, self.segment.geometry.socket_slots, events.read_offset(0)
                )
                events.release(1)
                if event.kind == kind:
                    return event
            time.sleep(0.001)
        raise AssertionError(f"no {EventKind(kind).name} event in {timeout}s")

    def read(self, slot: int, n: int, timeout: float = 20.0) -> bytes:
        ring = self.segment.rx(slot)
        buffer = bytearray(n)
        deadline = time.monotonic() + timeout
        while ring.readable() < n and time.monotonic() < deadline:
            time.sleep(0.001)
        got = ring.read_into(memoryview(buffer))
        return bytes(buffer[:got])


def test_attach_listen_accept_echo_with_linux_peer_then_detach(emulated_port):
    with (
        running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0") as stack,
        grpc.insecure_channel(f"unix://{stack.run_dir / 'vf0.sock'}") as channel,
    ):
        control = stack_pb2_grpc.StackControlStub(channel)
        reply = control.Attach(stack_pb2.AttachRequest(app="itest", pid=os.getpid()), timeout=10)
        assert len(reply.token) == 32 and not reply.segment_path
        app = App(reply)
        sessions = control.ListSessions(stack_pb2.ListSessionsRequest(), timeout=10).sessions
        assert [(s.app, s.pid) for s in sessions] == [("itest", os.getpid())]

        request = app.command(Op.SOCKET)
        created = app.event(EventKind.RESULT)
        assert created.request == request and created.result == 0
        listener = created.slot
        app.command(Op.BIND, listener, a1=0, a2=8080)
        assert app.event(EventKind.RESULT).result == 0
        app.command(Op.LISTEN, listener, a1=16)
        assert app.event(EventKind.RESULT).result == 0

        peer = spawn_in_netns(
            emulated_port.netns,
            sys.executable,
            "-c",
            PEER_CLIENT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            accepted = app.event(EventKind.ACCEPTED)
            assert accepted.slot == listener
            assert accepted.a2 == int.from_bytes(bytes([198, 18, 0, 1]), "big")
            conn = accepted.a1
            assert app.read(conn, 4) == b"ping"
            assert app.segment.tx(conn).write(b"pong") == 4
            app.command(Op.TX, conn)
            assert peer.communicate(timeout=30)[0].strip() == "pong"
        finally:
            peer.kill()
        listing = control.ListConnections(stack_pb2.ListConnectionsRequest(), timeout=10)
        assert {c.owner for c in listing.connections} == {"itest"}

        stranger = stack_pb2.DetachRequest(session_id=reply.session_id, token=b"\0" * 32)
        with pytest.raises(grpc.RpcError) as denied:
            control.Detach(stranger, timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert len(control.ListSessions(stack_pb2.ListSessionsRequest(), timeout=10).sessions) == 1
        owner = stack_pb2.DetachRequest(session_id=reply.session_id, token=reply.token)
        control.Detach(owner, timeout=10)
        assert app.segment.ended and app.app_bell.hung_up()
        assert not control.ListSessions(stack_pb2.ListSessionsRequest(), timeout=10).sessions
