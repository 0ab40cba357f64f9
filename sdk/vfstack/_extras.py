"""What the operator commands need beyond the SDK, and the one line that
says how to get it.

`pip install vfstack` is the SDK (grpcio, protobuf): what applications
import and the app-side `vfstack status|conns|stats|sessions`. The stack
service and the commands that drive the host (`stackservice`, `vfstack
emulate`, `vfstack vf`) need the `stack` extra, `vfstack deploy` the
`deploy` extra (pyproject.toml). Without them such a command meets a
ModuleNotFoundError for one of the modules below and prints
`install_hint` instead of a traceback.
"""

from __future__ import annotations

# The top-level modules each extra brings (pyproject.toml's lists, by
# import name; tests/unit/test_packaging.py keeps the two in step).
MODULES: dict[str, frozenset[str]] = {
    "stack": frozenset({"pyroute2", "grpc_health", "grpc_reflection", "prometheus_client"}),
    "deploy": frozenset({"docker"}),
}
_WHAT = {
    "stack": "the stack service's dependencies",
    "deploy": "the Docker client and the stack service's dependencies",
}


def missing_extra(exc: ModuleNotFoundError, wanted: str = "stack") -> str | None:
    """The extra to install for the module `exc` names: `wanted` (the one
    the command documents), or `deploy` for docker, which `stack` lacks.

    Returns None when no extra brings that module: then it is a bug, and
    the caller lets `exc` through with its traceback."""
    top = (exc.name or "").partition(".")[0]
    if top in MODULES["stack"]:
        return wanted
    if top in MODULES["deploy"]:
        return "deploy"
    return None


def install_hint(prog: str, exc: ModuleNotFoundError, extra: str) -> str:
    """One line for stderr: what is missing and the pip command that adds it."""
    return (
        f"{prog}: needs {_WHAT[extra]}, which the SDK alone does not install "
        f"({exc.name} is missing): pip install 'vfstack[{extra}]'"
    )
