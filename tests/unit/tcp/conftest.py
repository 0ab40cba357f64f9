"""Every engine test runs twice: segments built one by one, and runs of
them sent as super-frames (stackservice.net.offload) that the rig cuts up
as the kernel would. Whatever the engine does must look the same on the
wire either way."""

from __future__ import annotations

import pytest

from tests.unit.tcp import _rig


@pytest.fixture(autouse=True, params=[False, True], ids=["per-segment", "offload"])
def segmentation_offload(request, monkeypatch):
    monkeypatch.setattr(_rig, "offload_by_default", request.param)
    return request.param
