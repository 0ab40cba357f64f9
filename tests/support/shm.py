"""Two real processes over one mmap'ed file, for shared-memory tests."""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import traceback

_fork = multiprocessing.get_context("fork")


@contextlib.contextmanager
def mapped(path: str):
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, 0)
    finally:
        os.close(fd)
    view = memoryview(mm)
    try:
        yield view
    finally:
        view.release()
        with contextlib.suppress(BufferError):  # a ring left open keeps an export
            mm.close()


def session_file(tmp_path, size: int) -> str:
    path = str(tmp_path / "session")
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _child(conn, cpu, target, *args) -> None:
    """Run `target` in the child; send its result, or the traceback."""
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        conn.send(("ok", target(*args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


@contextlib.contextmanager
def other_process(target, *args):
    """Start `target(*args)` in a forked process; yield a function that
    waits for and returns its result (re-raising its failure here).

    With two CPUs or more, this process and the other one are pinned to one
    each for the duration: left alone, the scheduler sometimes stacks both
    on one CPU, and they then take turns instead of racing each other.
    """
    saved = os.sched_getaffinity(0)
    cpus = sorted(saved)[:2] if len(saved) >= 2 else [None, None]
    parent, child = _fork.Pipe(duplex=False)
    proc = _fork.Process(target=_child, args=(child, cpus[1], target, *args), daemon=True)
    if cpus[0] is not None:
        os.sched_setaffinity(0, {cpus[0]})
    proc.start()
    child.close()

    def result(timeout: float = 60.0):
        if not parent.poll(timeout):
            raise AssertionError("the other process did not finish")
        status, value = parent.recv()
        if status != "ok":
            raise AssertionError(f"the other process failed:\n{value}")
        return value

    try:
        yield result
    finally:
        os.sched_setaffinity(0, saved)
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
