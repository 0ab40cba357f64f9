"""Compiled or pure: which build of the hot path this process runs.

The hot path is one compiled unit (docs/architecture.md principle 3) that
spans the distribution's two packages: the shared-memory format both an
app and the stack run (`vfstack.shm`), the app's sockets and epoll over
it (`vfstack.sockets`), the stack's packet, TCP, session and NIC path
(`stackservice.net`, `stackservice.tcp`, `stackservice.fastpath`,
`stackservice.nic`) and the counters that path writes
(`stackservice.metrics`). setup.py has Cython compile every module of
these packages (all but the package `__init__`s) from its own `.py`, typed
by the `.pxd` beside it where there is one, puts each extension beside its
source and records, in `_extensions.json` beside this file, a digest of
the source each was built from. It lives here, in the SDK, because an app
runs the unit's `vfstack.shm` and `vfstack.sockets` without the stack,
and the stack imports the SDK anyway; `vfstack/__init__.py` installs the
finder before anything imports a unit module, in an app as in the stack.

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
UNIT_PACKAGES = (
    "vfstack.shm", "vfstack.sockets", "stackservice.net", "stackservice.tcp",
    "stackservice.fastpath", "stackservice.nic", "stackservice.metrics",
)  # fmt: skip
MANIFEST = "_extensions.json"  # in the vfstack package's directory
_TOP_LEVEL = tuple(dict.fromkeys(package.partition(".")[0] for package in UNIT_PACKAGES))

log = logging.getLogger("vfstack")

Roots = Mapping[str, Path]  # {top-level package ("vfstack", "stackservice"): its directory}


def unit_sources(roots: Roots) -> dict[str, Path]:
    """Every module of the compiled unit: {module name: its `.py`}. A
    top-level package not in `roots` has none."""
    sources = {}
    for package in UNIT_PACKAGES:
        top, _, rest = package.partition(".")
        if top not in roots:
            continue
        directory = roots[top].joinpath(*rest.split("."))
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


def unit_problems(roots: Roots) -> list[str]:
    """What keeps the unit from running compiled, one entry per module
    ("stackservice.tcp.engine missing" or "... stale", or a top-level
    package "... not found"); empty when every module has an extension
    built from its current source."""
    try:
        built = json.loads((roots["vfstack"] / MANIFEST).read_text())
    except (OSError, ValueError):
        built = {}  # no build recorded: any extension found is of unknown origin
    problems = [f"{top} not found" for top in _TOP_LEVEL if top not in roots]
    for name, source in unit_sources(roots).items():
        if extension_path(source) is None:
            problems.append(f"{name} missing")
        elif built.get(name) != source_digest(source):
            problems.append(f"{name} stale")
    return problems


class InstalledRoots(Mapping):
    """Where this process finds the unit's top-level packages, looked up on
    first use without importing them (the finder runs inside an import).
    In an installed wheel they are siblings; in a checkout (`pip install
    -e .`) the SDK sits under sdk/."""

    def __init__(self) -> None:
        self._found: dict[str, Path] | None = None

    def _roots(self) -> dict[str, Path]:
        if self._found is None:
            found = {"vfstack": Path(__file__).parent}
            spec = importlib.util.find_spec("stackservice")
            if spec is not None and spec.submodule_search_locations:
                found["stackservice"] = Path(next(iter(spec.submodule_search_locations)))
            self._found = found
        return self._found

    def __getitem__(self, top: str) -> Path:
        return self._roots()[top]

    def __iter__(self):
        return iter(self._roots())

    def __len__(self) -> int:
        return len(self._roots())


class UnitFinder(importlib.abc.MetaPathFinder):
    """Decides compiled or pure for the unit at the first import of one of
    its modules and, when pure, loads them from source."""

    def __init__(self, roots: Roots, environ: Mapping[str, str]) -> None:
        self.roots = roots
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
        problems = unit_problems(self.roots)
        if not problems:
            return COMPILED
        log.warning(
            "vfstack: running pure Python: %d of %d compiled modules missing or stale "
            "(%s%s); rebuild with `pip install .` (`-e` in a checkout), or set %s=1 to run "
            "pure without this warning",
            len(problems), len(unit_sources(self.roots)), problems[0],
            ", ..." if len(problems) > 1 else "", ENV_NO_EXTENSIONS,
        )  # fmt: skip
        return PURE

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package not in UNIT_PACKAGES or self.build() == COMPILED:
            return None
        top, _, rest = package.partition(".")
        if top not in self.roots:
            return None
        source = self.roots[top].joinpath(*rest.split("."), f"{name}.py")
        if not source.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


_FINDER = UnitFinder(InstalledRoots(), os.environ)


def build() -> str:
    """COMPILED or PURE: what this process runs (see the module docstring)."""
    return _FINDER.build()


# Importing this module installs the finder, first on `sys.meta_path`
# (once): `vfstack/__init__.py` imports it before any unit module, and
# the stack imports the SDK before its own (`stackservice/__init__.py`).
if _FINDER not in sys.meta_path:
    sys.meta_path.insert(0, _FINDER)
