"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest
import vfstack

from tests.support.stack import running_stack

STACK = "198.18.0.10"


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def sdk(request, emulated_port):
    """(stack, port): an instance on VF 0 and an SDK session attached to
    it; the instance runs one worker, then two (the Stack is a session
    per worker, merged)."""
    workers = ("--workers", str(request.param))
    with running_stack(emulated_port.vf(0), f"{STACK}/24", "vf0", *workers) as instance:
        stack = vfstack.connect(f"unix://{instance.run_dir / 'vf0.sock'}", app="sdktest")
        try:
            yield stack, emulated_port
        finally:
            stack.close()
