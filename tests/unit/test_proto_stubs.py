"""The committed control-API stubs are what stack.proto generates."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUBS = ("stack_pb2.py", "stack_pb2.pyi", "stack_pb2_grpc.py")


def _generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_stack_proto(tmp_path):
    _generator().generate(tmp_path)
    for name in STUBS:
        fresh = (tmp_path / "vfstack" / "v1" / name).read_bytes()
        committed = (ROOT / "sdk" / "vfstack" / "v1" / name).read_bytes()
        assert fresh == committed, f"{name} is stale: run python proto/generate.py"


def test_stubs_import_and_define_the_service():
    from vfstack.v1 import stack_pb2, stack_pb2_grpc

    service = stack_pb2.DESCRIPTOR.services_by_name["StackControl"]
    assert [m.name for m in service.methods] == [
        "GetInfo",
        "Attach",
        "Detach",
        "ListSessions",
        "ListConnections",
        "GetStats",
        "WatchStats",
    ]
    assert hasattr(stack_pb2_grpc, "StackControlServicer")
