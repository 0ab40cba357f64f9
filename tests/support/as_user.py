"""Run a module's `main(argv)` as another user: import it (and so the whole
SDK) as root, then drop to UID:GID with no supplementary groups, then run.

    python -m tests.support.as_user UID GID MODULE [ARGS...]

The interpreter lives under /root here, which other users cannot reach:
importing first is what makes an unprivileged app testable on this machine.
"""

from __future__ import annotations

import importlib
import os
import sys

from vfstack._control import ControlClient


def main() -> None:
    uid, gid, module, *argv = sys.argv[1:]
    entry = importlib.import_module(module).main
    # grpc imports its channel code lazily, from under /root: load it now.
    ControlClient("unix:///nonexistent").close()
    os.setgroups([])
    os.setgid(int(gid))
    os.setuid(int(uid))
    entry(argv)


if __name__ == "__main__":
    main()
