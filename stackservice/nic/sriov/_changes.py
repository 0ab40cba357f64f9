"""Changing the system, and undoing it: the VF count in sysfs, and netlink
changes run as steps, each with the step that undoes it, so a setup that
fails midway puts back what it had changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._discovery import SYSFS_ROOT, net_dir, read_pf
from ._errors import VfError, VfSetupError, describe


def _write_sysfs(path: Path, value: int) -> None:
    path.write_text(f"{value}\n")


def set_num_vfs(
    name: str,
    num: int,
    sysfs_root: str | Path = SYSFS_ROOT,
    write: Callable[[Path, int], None] = _write_sysfs,
) -> int:
    """Enable `num` VFs on PF `name`. Returns the previous number.

    The kernel refuses to change a non-zero count to another non-zero one
    (EBUSY), so 0 is written first; if the new count then fails, the
    previous one is written back. Nothing is written when the count is
    already right (re-creating VFs would drop their settings).

    Raises VfError (no such PF, no SR-IOV, num out of range) before any
    write, OSError when the kernel refuses a write.
    """
    pf = read_pf(name, sysfs_root)
    if not 0 <= num <= pf.total_vfs:
        raise VfError(f"{name} supports at most {pf.total_vfs} VFs, not {num}")
    previous = pf.num_vfs
    if num == previous:
        return previous
    path = net_dir(sysfs_root, name) / "device" / "sriov_numvfs"
    if previous and num:
        _write_or_explain(write, path, 0)
    try:
        _write_or_explain(write, path, num)
    except OSError as exc:
        if not previous:
            raise
        try:
            write(path, previous)
        except OSError as again:
            raise OSError(
                exc.errno, f"{exc.strerror}; writing {previous} back failed too: {again.strerror}"
            ) from exc
        raise
    return previous


def _write_or_explain(write: Callable[[Path, int], None], path: Path, value: int) -> None:
    try:
        write(path, value)
    except OSError as exc:
        raise OSError(exc.errno, f"writing {value} to {path}: {exc.strerror}") from exc


# --- netlink steps ----------------------------------------------------------


Issue = Callable[[str, dict], None]  # (pyroute2 link command, its keyword arguments)


@dataclass(frozen=True, slots=True)
class LinkStep:
    """One netlink change, a line saying what it does, and the change that
    undoes it (None when there is nothing to undo)."""

    command: str  # "add", "set" or "del"
    args: dict
    what: str
    undo: LinkStep | None = None


class UndoLog:
    """Issues steps, remembering the undo of each one that succeeded, so a
    setup that fails midway can put back what it had changed. (In memory,
    for one run; the journal `vfstack vf restore` reads is _journal's.)"""

    def __init__(self, issue: Issue) -> None:
        self._issue = issue
        self._undo: list[LinkStep] = []

    def run(self, step: LinkStep) -> None:
        self._issue(step.command, step.args)
        if step.undo is not None:
            self._undo.append(step.undo)

    def rollback(self) -> list[str]:
        """Undo in reverse order. Returns what could not be undone; keeps
        going past a failure, since every other undo still helps."""
        undo, self._undo = self._undo[::-1], []
        return run_all(undo, self._issue)


def run_all(
    steps: list[LinkStep], issue: Issue, say: Callable[[str], None] | None = None
) -> list[str]:
    """Issue every step, saying each one done; go on past a failure, since
    every other step still helps. Returns what failed, one line a step."""
    failed = []
    for step in steps:
        try:
            issue(step.command, step.args)
        except Exception as exc:  # report it and go on with the others
            failed.append(f"{step.what}: {describe(exc)}")
        else:
            if say is not None:
                say(step.what)
    return failed


def run_steps(
    steps: list[LinkStep], issue: Issue, cleanup: Callable[[], list[str]] | None = None
) -> None:
    """Run every step; on a failure undo the ones done, then `cleanup`
    (for changes outside netlink), and raise VfSetupError."""
    undo = UndoLog(issue)
    for step in steps:
        try:
            undo.run(step)
        except Exception as exc:
            failed = undo.rollback()
            if cleanup is not None:
                failed += cleanup()
            outcome = (
                "could not restore: " + "; ".join(failed)
                if failed
                else "earlier changes were restored"
            )
            raise VfSetupError(f"{step.what} failed: {describe(exc)}; {outcome}") from exc
