"""An unmodified ASGI application (Starlette) on uvicorn, served on a
vfstack instance by one line: `uvicorn.run(app, loop=vfstack.aio.loop_factory(stack))`
(here `uvicorn.Server` itself, to say when it listens).

    GET  /        `--size` bytes (the pattern of http_server)
    POST /echo    the request's body
    GET  /addresses  the peer's and the local address, as uvicorn read them

    pip install 'vfstack[frameworks]'
    python -m vfstack.examples.asgi_app --control unix:///run/vfstack/vf0.sock --port 8080
    python -m vfstack.examples.asgi_app --kernel --port 8080   # the same on Linux sockets
"""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import vfstack.aio
from vfstack.examples._server import run_framework
from vfstack.examples.http_server import body


def make_app(size: int) -> Starlette:
    payload = body(size)

    async def index(_: Request) -> Response:
        return Response(payload, media_type="text/plain")

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    async def addresses(request: Request) -> Response:
        # uvicorn reads both from the transport's socket (getpeername, getsockname).
        (host, port), (local, local_port) = request.scope["client"], request.scope["server"]
        return JSONResponse({"peer": f"{host}:{port}", "local": f"{local}:{local_port}"})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/echo", echo, methods=["POST"]),
            Route("/addresses", addresses),
        ]
    )


class _Announcing(uvicorn.Server):
    """`uvicorn.run` (what `config.loop` does is the same), saying once it listens."""

    def __init__(self, config: uvicorn.Config, listening: str) -> None:
        super().__init__(config)
        self._listening = listening

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        print(self._listening, flush=True)


def serve(api, args, listening: str) -> None:
    loop = "asyncio" if api.kernel else vfstack.aio.loop_factory(api.stack)  # the one line
    config = uvicorn.Config(
        make_app(args.size), host=args.host, port=args.port, backlog=args.backlog,
        loop=loop, log_level="warning", lifespan="off",
    )  # fmt: skip
    _Announcing(config, listening).run()


def main() -> None:
    run_framework("asgi_app", __doc__, serve)


if __name__ == "__main__":
    main()
