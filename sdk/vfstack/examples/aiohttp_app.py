"""An unmodified aiohttp application, served on a vfstack instance by one
line: `web.run_app(app, loop=vfstack.aio.new_event_loop(stack))`.

    GET  /        `--size` bytes (the pattern of http_server)
    POST /echo    the request's body
    GET  /socket  what the connection's socket says: peer, SO_KEEPALIVE and
                  TCP_NODELAY (aiohttp sets both on every connection)

    pip install 'vfstack[frameworks]'
    python -m vfstack.examples.aiohttp_app --control unix:///run/vfstack/vf0.sock --port 8080
    python -m vfstack.examples.aiohttp_app --kernel --port 8080   # the same on Linux sockets
"""

from __future__ import annotations

import socket

from aiohttp import web

import vfstack.aio
from vfstack.examples._server import run_framework
from vfstack.examples.http_server import body


def socket_report(sock) -> dict:
    """The connection's socket as the framework left it (the same calls on
    a vfstack socket and a kernel one)."""
    host, port = sock.getpeername()[:2]
    return {
        "peer": f"{host}:{port}",
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "nodelay": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        "vfstack": isinstance(sock, vfstack.Socket),
    }


def make_app(size: int) -> web.Application:
    payload = body(size)

    async def index(_: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="text/plain")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/octet-stream")

    async def socket_info(request: web.Request) -> web.Response:
        return web.json_response(socket_report(request.transport.get_extra_info("socket")))

    app = web.Application(client_max_size=64 << 20)
    app.add_routes([web.get("/", index), web.post("/echo", echo), web.get("/socket", socket_info)])
    return app


def serve(api, args, listening: str) -> None:
    loop = None if api.kernel else vfstack.aio.new_event_loop(api.stack)  # the one line
    web.run_app(
        make_app(args.size), host=args.host, port=args.port, backlog=args.backlog,
        loop=loop, print=lambda _: print(listening, flush=True),  # once it listens
    )  # fmt: skip


def main() -> None:
    run_framework("aiohttp_app", __doc__, serve)


if __name__ == "__main__":
    main()
