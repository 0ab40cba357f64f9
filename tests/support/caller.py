"""One control call, as whoever runs it (with tests.support.as_user, as
another uid): prints the reply as one JSON line, or {"error": CODE}.

    python -m tests.support.caller --control URL attach|sessions|connections
    python -m tests.support.caller --control URL hold N

`hold N` opens N raw connections to the control socket and says how many
the server answered (gRPC's first frame) and how many were closed at once.
"""

from __future__ import annotations

import argparse
import json
import socket

from google.protobuf.json_format import MessageToDict
from vfstack._control import ControlClient, ControlError
from vfstack.v1 import stack_pb2


def _call(client: ControlClient, what: str):
    stub = client._stub
    if what == "attach":
        request = stack_pb2.AttachRequest(app="caller", pid=1)
        return client._unary(stub.Attach, request)
    if what == "sessions":
        return client._unary(stub.ListSessions, stack_pb2.ListSessionsRequest())
    return client._unary(stub.ListConnections, stack_pb2.ListConnectionsRequest())


def _hold(path: str, count: int) -> dict:
    socks, answered, closed = [], 0, 0
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        socks.append(sock)
    for sock in socks:
        try:
            first = sock.recv(1)
        except ConnectionResetError:  # closed with our preface unread
            first = b""
        if first:
            answered += 1
        else:
            closed += 1
    return {"answered": answered, "closed": closed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--control", required=True)
    parser.add_argument("what", choices=["attach", "sessions", "connections", "hold"])
    parser.add_argument("count", nargs="?", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "hold":
        print(json.dumps(_hold(args.control.removeprefix("unix://"), args.count)), flush=True)
        return
    with ControlClient(args.control) as client:
        try:
            reply = MessageToDict(_call(client, args.what), preserving_proto_field_name=True)
        except ControlError as exc:
            reply = {"error": exc.code}
    print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
