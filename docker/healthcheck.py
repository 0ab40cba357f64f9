#!/opt/vfstack/bin/python3
"""Docker HEALTHCHECK of a stack container: ask the instance's gRPC health
service (grpc.health.v1) whether `vfstack.v1.StackControl` is SERVING.

The instance turns SERVING only once it owns its interface and its loop
runs, and NOT_SERVING as it stops, so this says more than "the process is
alive". Exit 0 healthy, 1 not (Docker's convention).

The control URL is the one the stack itself was given: $VFSTACK_CONTROL,
else unix://$VFSTACK_RUN_DIR/$VFSTACK_NAME.sock (the name defaults to the
interface, as in `stackservice run`). Installed in the image as
/usr/local/bin/vfstack-healthcheck.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

SERVICE = "vfstack.v1.StackControl"
TIMEOUT_S = 3.0


def control_url(environ: Mapping[str, str]) -> str:
    url = environ.get("VFSTACK_CONTROL", "")
    if url and url != "none":
        return url
    run_dir = environ.get("VFSTACK_RUN_DIR") or "/run/vfstack"
    name = environ.get("VFSTACK_NAME") or environ.get("VFSTACK_IFACE")
    if not name:
        raise ValueError("set VFSTACK_CONTROL, VFSTACK_NAME or VFSTACK_IFACE")
    return f"unix://{run_dir}/{name}.sock"


def main(argv: list[str]) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from vfstack._control import parse_control_url

    try:
        url = argv[1] if len(argv) > 1 else control_url(os.environ)
        target = parse_control_url(url)
    except ValueError as exc:
        print(f"vfstack-healthcheck: {exc}", file=sys.stderr)
        return 1
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT_S
            )
        except grpc.RpcError as exc:
            print(f"{url}: {exc.code().name}: {exc.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{url}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
