"""The compiled hot path (sdk/vfstack/_extensions.py, setup.py).

The suite runs in two legs: compiled (the README's `python3 -m pytest`
after `pip install -e .`) and pure (`VFSTACK_NO_EXTENSIONS=1`, .ci/run).
The first two tests check that each leg runs what it claims, for every
module of the unit; the rest drive the finder over a fake tree, whose
"extensions" are empty files: only their names and the recorded digests
matter until the import system loads one.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import shutil
import tomllib
from fnmatch import fnmatch
from importlib.machinery import EXTENSION_SUFFIXES, SourceFileLoader
from pathlib import Path

import pytest
import vfstack
from vfstack._extensions import (
    COMPILED,
    ENV_NO_EXTENSIONS,
    MANIFEST,
    PURE,
    InstalledRoots,
    UnitFinder,
    build,
    source_digest,
    unit_problems,
    unit_sources,
)

import stackservice

ROOTS = {
    "vfstack": Path(vfstack.__file__).parent,
    "stackservice": Path(stackservice.__file__).parent,
}
PURE_LEG = bool(os.environ.get(ENV_NO_EXTENSIONS))


def _loaded_unit() -> dict[str, str]:
    """{module: the file it was loaded from} for the whole unit."""
    return {name: importlib.import_module(name).__file__ for name in unit_sources(ROOTS)}


def test_the_finder_finds_both_packages_where_this_process_imports_them():
    assert dict(InstalledRoots()) == ROOTS


@pytest.mark.skipif(PURE_LEG, reason=f"the pure leg ({ENV_NO_EXTENSIONS} is set)")
def test_compiled_leg_runs_every_unit_module_compiled():
    """A module left out of the build, a failed build or an edit since it
    fails here: the unit would otherwise run pure (and slow) unnoticed."""
    assert unit_problems(ROOTS) == []
    assert build() == COMPILED
    compiled = tuple(EXTENSION_SUFFIXES)
    assert [name for name, path in _loaded_unit().items() if not path.endswith(compiled)] == []


@pytest.mark.skipif(PURE_LEG, reason=f"the pure leg ({ENV_NO_EXTENSIONS} is set)")
def test_compiled_leg_builds_each_segment_as_an_extension_type():
    """Issue 14: no per-segment dataclass. Compiled, a segment's header and
    options are extension types with C fields (segment.pxd): no instance
    dictionary. A declaration lost from the .pxd would leave them Python
    dataclasses, about 20x dearer to build, and still compiled."""
    from stackservice.fastpath.sockets import Slot
    from stackservice.tcp.segment import TcpOptions, TcpRepr

    # The shared-memory pumps' view of a socket slot (sockets.pxd), read
    # for every slot a pass pumps, is one too.
    for made in (TcpOptions(mss=1460), TcpRepr(1, 2, 3, 4, 0x10, 5), Slot(0)):
        assert not hasattr(made, "__dict__"), type(made)


@pytest.mark.skipif(not PURE_LEG, reason=f"the compiled leg ({ENV_NO_EXTENSIONS} is unset)")
def test_pure_leg_runs_every_unit_module_from_source():
    """Even where extensions sit beside the sources (they win the import
    on their own)."""
    assert build() == PURE
    assert [name for name, path in _loaded_unit().items() if not path.endswith(".py")] == []


def test_unit_is_every_module_of_its_packages_but_the_packages_themselves():
    names = set(unit_sources(ROOTS))
    assert {
        "vfstack.shm._rings", "vfstack.sockets.socket", "stackservice.net.checksum",
        "stackservice.tcp.engine", "stackservice.tcp.tcb", "stackservice.fastpath.sockets",
        "stackservice.nic.packet_io",
    } <= names  # fmt: skip
    assert "stackservice.nic.sriov" not in names  # a subpackage: not walked
    assert "stackservice.tcp" not in names and "vfstack.shm" not in names
    assert {name.rpartition(".")[0] for name in names} == {
        "vfstack.shm",
        "vfstack.sockets",
        "stackservice.net",
        "stackservice.tcp",
        "stackservice.fastpath",
        "stackservice.nic",
        "stackservice.metrics",
    }


def test_every_pxd_ships_with_its_module():
    """The run-time check digests a module's .pxd with its .py: one the
    wheel left out (pyproject's package-data) would make the installed
    unit stale, and run it pure."""
    pyproject = tomllib.loads((ROOTS["stackservice"].parent / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    declarations = [(top, pxd) for top, root in ROOTS.items() for pxd in root.glob("*/*.pxd")]
    assert {top for top, _ in declarations} == set(ROOTS)
    for top, pxd in declarations:
        patterns = package_data.get(f"{top}.{pxd.parent.name}", ())
        assert any(fnmatch(pxd.name, pattern) for pattern in patterns), pxd


# ------------------------------------------------------------ a fake tree


def _tree(tmp_path: Path, compiled: bool = True) -> dict[str, Path]:
    """The two top-level packages, apart as in a checkout: vfstack/shm/_rings.py
    and stackservice's net/checksum.py and tcp/tcb.py (+ tcb.pxd), each
    with an extension and its digest in the manifest when `compiled`."""
    roots = {"vfstack": tmp_path / "sdk" / "vfstack", "stackservice": tmp_path / "stackservice"}
    for top, package in (("vfstack", "shm"), ("stackservice", "net"), ("stackservice", "tcp")):
        (roots[top] / package).mkdir(parents=True)
        (roots[top] / package / "__init__.py").write_text("")
    (roots["vfstack"] / "shm" / "_rings.py").write_text("class ByteRing:\n    pass\n")
    (roots["stackservice"] / "net" / "checksum.py").write_text("VALUE = 'pure'\n")
    (roots["stackservice"] / "tcp" / "tcb.py").write_text("class Tcb:\n    pass\n")
    (roots["stackservice"] / "tcp" / "tcb.pxd").write_text("cdef class Tcb:\n    pass\n")
    if compiled:
        digests = {}
        for name, source in unit_sources(roots).items():
            source.with_name(source.stem + EXTENSION_SUFFIXES[0]).write_bytes(b"")
            digests[name] = source_digest(source)
        (roots["vfstack"] / MANIFEST).write_text(json.dumps(digests))
    return roots


def test_unit_with_every_extension_built_from_its_source_runs_compiled(tmp_path, caplog):
    finder = UnitFinder(_tree(tmp_path), {})
    assert finder.build() == COMPILED
    assert finder.find_spec("stackservice.tcp.tcb", None) is None  # the path finder's turn
    assert caplog.records == []


def test_no_extensions_requested_runs_pure_from_source_without_a_warning(tmp_path, caplog):
    finder = UnitFinder(_tree(tmp_path), {ENV_NO_EXTENSIONS: "1"})
    assert finder.build() == PURE
    spec = finder.find_spec("stackservice.net.checksum", None)
    assert isinstance(spec.loader, SourceFileLoader)
    assert spec.origin == str(tmp_path / "stackservice" / "net" / "checksum.py")
    spec = finder.find_spec("vfstack.shm._rings", None)  # the SDK's, from its own root
    assert spec.origin == str(tmp_path / "sdk" / "vfstack" / "shm" / "_rings.py")
    assert caplog.records == []


def test_pure_unit_loads_its_source_although_an_extension_sits_beside_it(tmp_path):
    finder = UnitFinder(_tree(tmp_path), {ENV_NO_EXTENSIONS: "1"})
    spec = finder.find_spec("stackservice.net.checksum", None)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VALUE == "pure"


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (
            lambda roots: next((roots["stackservice"] / "tcp").glob("tcb.*.so")).unlink(),
            "tcp.tcb missing",
        ),
        (
            lambda roots: (roots["stackservice"] / "net" / "checksum.py").write_text("VALUE = 2\n"),
            "checksum stale",
        ),
        (
            lambda roots: (roots["stackservice"] / "tcp" / "tcb.pxd").write_text("\n"),
            "tcp.tcb stale",
        ),
        (
            lambda roots: (roots["vfstack"] / "shm" / "_rings.py").write_text("\n"),
            "shm._rings stale",
        ),
        (lambda roots: (roots["vfstack"] / MANIFEST).unlink(), "shm._rings stale"),
        (lambda roots: shutil.rmtree(roots.pop("stackservice")), "stackservice not found"),
    ],
    ids=[
        "extension-missing",
        "py-edited",
        "pxd-edited",
        "sdk-module-edited",
        "no-manifest",
        "stack-package-gone",
    ],
)
def test_missing_or_stale_extension_runs_the_whole_unit_pure_with_one_warning(
    tmp_path, caplog, damage, problem
):
    roots = _tree(tmp_path)
    damage(roots)
    finder = UnitFinder(roots, {})
    with caplog.at_level(logging.WARNING, logger="vfstack"):
        assert finder.build() == PURE
        assert finder.build() == PURE  # decided once: one warning
    assert len(caplog.records) == 1
    assert problem in caplog.messages[0]
    assert ENV_NO_EXTENSIONS in caplog.messages[0]
    # Whole unit: the untouched modules are pure as well.
    for name in ("vfstack.shm._rings", "stackservice.net.checksum", "stackservice.tcp.tcb"):
        if name.partition(".")[0] in roots:
            assert isinstance(finder.find_spec(name, None).loader, SourceFileLoader)


def test_nothing_built_runs_pure_naming_each_missing_module(tmp_path):
    assert unit_problems(_tree(tmp_path, compiled=False)) == [
        "vfstack.shm._rings missing",
        "stackservice.net.checksum missing",
        "stackservice.tcp.tcb missing",
    ]


def test_finder_leaves_modules_outside_the_unit_alone(tmp_path):
    finder = UnitFinder(_tree(tmp_path), {ENV_NO_EXTENSIONS: "1"})
    assert finder.find_spec("stackservice.tcp", None) is None
    assert finder.find_spec("stackservice.loop", None) is None
    assert finder.find_spec("json", None) is None
