"""Compiled or pure: which build of the hot path this process runs.

`stackservice.net`, `stackservice.tcp` and `stackservice.fastpath` are one
compiled unit (docs/architecture.md principle 3): setup.py has Cython
compile every module of these packages
(all but the package `__init__`s) from its own `.py`, typed by the `.pxd`
beside it where there is one, puts each extension beside its source and
records, in `_extensions.json` beside this file, a digest of the source
each was built from.

The choice is made once per process, at the first import of a unit
module, and holds for the whole unit: a compiled module reaches the other
compiled modules' C types and functions directly, and a typed class used
from interpreted code is slower than no compiling at all, so the unit is
never mixed. It runs pure when
- `VFSTACK_NO_EXTENSIONS` is set (any non-empty value, like aiohttp's
  `AIOHTTP_NO_EXTENSIONS`): asked for, so no warning;
- any module's extension is missing, or stale: its `.py` or `.pxd` is not
  what the build recorded. One warning line says which and what to do.
Otherwise it runs compiled.

Why a finder: the import system tries the extension suffixes before `.py`
in every directory, so an extension on disk always wins over its source.
`UnitFinder` sits first on `sys.meta_path`: while the unit runs pure it
hands out the `.py` of unit modules; while it runs compiled it steps aside
and the ordinary path finder loads the extensions.

Why a digest and not timestamps: installing a wheel writes its files in
archive order with the time of the install, so a `.py` comes out newer
than the extension built from it (`x.cpython-….so` sorts before `x.py`);
an edited `.py` in a checkout changes its digest all the same.

setup.py loads this file by path, before anything is installed: it
imports the standard library only.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Mapping
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from pathlib import Path

ENV_NO_EXTENSIONS = "VFSTACK_NO_EXTENSIONS"
COMPILED = "compiled"
PURE = "pure"
UNIT_PACKAGES = ("stackservice.net", "stackservice.tcp", "stackservice.fastpath")
MANIFEST = "_extensions.json"

log = logging.getLogger("stackservice")


def unit_sources(root: Path) -> dict[str, Path]:
    """Every module of the compiled unit under `root`, the directory of
    the `stackservice` package: {module name: its `.py`}."""
    sources = {}
    for package in UNIT_PACKAGES:
        directory = root / package.rpartition(".")[2]
        for path in sorted(directory.glob("*.py")):
            if path.name != "__init__.py":
                sources[f"{package}.{path.stem}"] = path
    return sources


def source_digest(source: Path) -> str:
    """SHA-256 of what a module is compiled from: its `.py`, then its
    `.pxd` if it has one."""
    digest = hashlib.sha256(source.read_bytes())
    declarations = source.with_suffix(".pxd")
    if declarations.exists():
        digest.update(declarations.read_bytes())
    return digest.hexdigest()


def extension_path(source: Path) -> Path | None:
    """The extension module built from `source`, if there is one beside it."""
    for suffix in EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def unit_problems(root: Path) -> list[str]:
    """What keeps the unit under `root` from running compiled, one entry
    per module ("stackservice.tcp.engine missing" or "... stale"); empty
    when every module has an extension built from its current source."""
    try:
        built = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        built = {}  # no build recorded: any extension found is of unknown origin
    problems = []
    for name, source in unit_sources(root).items():
        if extension_path(source) is None:
            problems.append(f"{name} missing")
        elif built.get(name) != source_digest(source):
            problems.append(f"{name} stale")
    return problems


class UnitFinder(importlib.abc.MetaPathFinder):
    """Decides compiled or pure for the unit under `root` at the first
    import of one of its modules and, when pure, loads them from source."""

    def __init__(self, root: Path, environ: Mapping[str, str]) -> None:
        self.root = root
        self.environ = environ
        self._build: str | None = None

    def build(self) -> str:
        """COMPILED or PURE, decided on the first call (one warning line
        when extensions are missing or stale and pure was not asked for)."""
        if self._build is None:
            self._build = self._decide()
        return self._build

    def _decide(self) -> str:
        if self.environ.get(ENV_NO_EXTENSIONS):
            return PURE
        problems = unit_problems(self.root)
        if not problems:
            return COMPILED
        log.warning(
            "stackservice: running pure Python: %d of %d compiled modules missing or stale "
            "(%s%s); rebuild with `pip install .` (`-e` in a checkout), or set %s=1 to run "
            "pure without this warning",
            len(problems), len(unit_sources(self.root)), problems[0],
            ", ..." if len(problems) > 1 else "", ENV_NO_EXTENSIONS,
        )  # fmt: skip
        return PURE

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package not in UNIT_PACKAGES or self.build() == COMPILED:
            return None
        source = self.root / package.rpartition(".")[2] / f"{name}.py"
        if not source.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


_FINDER = UnitFinder(Path(__file__).parent, os.environ)


def install() -> None:
    """Put the unit's finder first on `sys.meta_path` (once): before any
    unit module is imported, i.e. from `stackservice/__init__.py`."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def build() -> str:
    """COMPILED or PURE: what this process runs (see the module docstring)."""
    return _FINDER.build()
