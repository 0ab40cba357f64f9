"""The compiled hot path (stackservice/_extensions.py, setup.py).

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
import tomllib
from fnmatch import fnmatch
from importlib.machinery import EXTENSION_SUFFIXES, SourceFileLoader
from pathlib import Path

import pytest

import stackservice
from stackservice._extensions import (
    COMPILED,
    ENV_NO_EXTENSIONS,
    MANIFEST,
    PURE,
    UnitFinder,
    build,
    source_digest,
    unit_problems,
    unit_sources,
)

ROOT = Path(stackservice.__file__).parent
PURE_LEG = bool(os.environ.get(ENV_NO_EXTENSIONS))


def _loaded_unit() -> dict[str, str]:
    """{module: the file it was loaded from} for the whole unit."""
    return {name: importlib.import_module(name).__file__ for name in unit_sources(ROOT)}


@pytest.mark.skipif(PURE_LEG, reason=f"the pure leg ({ENV_NO_EXTENSIONS} is set)")
def test_compiled_leg_runs_every_unit_module_compiled():
    """A module left out of the build, a failed build or an edit since it
    fails here: the unit would otherwise run pure (and slow) unnoticed."""
    assert unit_problems(ROOT) == []
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


def test_unit_is_every_module_of_net_tcp_and_fastpath_but_the_packages():
    names = set(unit_sources(ROOT))
    assert {
        "stackservice.net.checksum", "stackservice.tcp.engine", "stackservice.tcp.tcb",
        "stackservice.fastpath.sockets",
    } <= names  # fmt: skip
    assert "stackservice.tcp" not in names
    assert {name.rpartition(".")[0] for name in names} == {
        "stackservice.net",
        "stackservice.tcp",
        "stackservice.fastpath",
    }


def test_every_pxd_ships_with_its_module():
    """The run-time check digests a module's .pxd with its .py: one the
    wheel left out (pyproject's package-data) would make the installed
    unit stale, and run it pure."""
    pyproject = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    declarations = sorted(ROOT.glob("*/*.pxd"))
    assert declarations
    for pxd in declarations:
        patterns = package_data.get(f"stackservice.{pxd.parent.name}", ())
        assert any(fnmatch(pxd.name, pattern) for pattern in patterns), pxd


# ------------------------------------------------------------ a fake tree


def _tree(tmp_path: Path, compiled: bool = True) -> Path:
    """net/checksum.py and tcp/tcb.py (+ tcb.pxd), each with an extension
    and its digest in the manifest when `compiled`."""
    for package in ("net", "tcp"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "net" / "checksum.py").write_text("VALUE = 'pure'\n")
    (tmp_path / "tcp" / "tcb.py").write_text("class Tcb:\n    pass\n")
    (tmp_path / "tcp" / "tcb.pxd").write_text("cdef class Tcb:\n    pass\n")
    if compiled:
        digests = {}
        for name, source in unit_sources(tmp_path).items():
            source.with_name(source.stem + EXTENSION_SUFFIXES[0]).write_bytes(b"")
            digests[name] = source_digest(source)
        (tmp_path / MANIFEST).write_text(json.dumps(digests))
    return tmp_path


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
    assert spec.origin == str(tmp_path / "net" / "checksum.py")
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
        (lambda root: next((root / "tcp").glob("tcb.*.so")).unlink(), "tcp.tcb missing"),
        (lambda root: (root / "net" / "checksum.py").write_text("VALUE = 2\n"), "checksum stale"),
        (lambda root: (root / "tcp" / "tcb.pxd").write_text("\n"), "tcp.tcb stale"),
        (lambda root: (root / MANIFEST).unlink(), "net.checksum stale"),
    ],
    ids=["extension-missing", "py-edited", "pxd-edited", "no-manifest"],
)
def test_missing_or_stale_extension_runs_the_whole_unit_pure_with_one_warning(
    tmp_path, caplog, damage, problem
):
    root = _tree(tmp_path)
    damage(root)
    finder = UnitFinder(root, {})
    with caplog.at_level(logging.WARNING, logger="stackservice"):
        assert finder.build() == PURE
        assert finder.build() == PURE  # decided once: one warning
    assert len(caplog.records) == 1
    assert problem in caplog.messages[0]
    assert ENV_NO_EXTENSIONS in caplog.messages[0]
    # Whole unit: the untouched module is pure as well.
    for name in ("stackservice.net.checksum", "stackservice.tcp.tcb"):
        assert isinstance(finder.find_spec(name, None).loader, SourceFileLoader)


def test_nothing_built_runs_pure_naming_each_missing_module(tmp_path):
    assert unit_problems(_tree(tmp_path, compiled=False)) == [
        "stackservice.net.checksum missing",
        "stackservice.tcp.tcb missing",
    ]


def test_finder_leaves_modules_outside_the_unit_alone(tmp_path):
    finder = UnitFinder(_tree(tmp_path), {ENV_NO_EXTENSIONS: "1"})
    assert finder.find_spec("stackservice.tcp", None) is None
    assert finder.find_spec("stackservice.nic.packet_io", None) is None
    assert finder.find_spec("json", None) is None
