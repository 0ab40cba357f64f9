"""Generate the Python stubs of the control API into sdk/vfstack/v1/.

    python proto/generate.py [OUTPUT_ROOT]

Run it after editing stack.proto; tests/unit/test_proto_stubs.py fails when
the committed stubs differ from what this produces. grpcio-tools is pinned
in pyproject.toml so every machine generates the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PROTO = "vfstack/v1/stack.proto"


def generate(output_root: Path) -> None:
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        str(PROTO_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT.parent / "sdk")
