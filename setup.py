"""The compiled hot path (DESIGN.md principle 3); everything else about the
package is in pyproject.toml.

Cython compiles the unit `vfstack.shm` + `vfstack.sockets` +
`stackservice.net` + `stackservice.tcp` + `stackservice.fastpath` +
`stackservice.nic` + `stackservice.metrics`, every module but the package `__init__`s
(sdk/vfstack/_extensions.py lists them), from the `.py` files
themselves in pure-Python mode, typed by the `.pxd` files beside them;
the extensions land beside their sources and `vfstack/_extensions.json`
records what each was built from, for the run-time check. The unit is
built whole or not at all: with VFSTACK_NO_EXTENSIONS set (any non-empty
value) nothing is compiled, and a pure `-e` install removes what an
earlier build left in the checkout, so it runs pure; without a working C
compiler the install goes on pure as well.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CCompilerError, PlatformError

ROOT = Path(__file__).parent
# Where the checkout keeps the unit's top-level packages (pyproject.toml's
# packages.find: the SDK under sdk/), and where the build puts them.
SOURCE_ROOTS = {"vfstack": ROOT / "sdk" / "vfstack", "stackservice": ROOT / "stackservice"}


def _load_units():
    """sdk/vfstack/_extensions.py, by path: the package itself cannot be
    imported before it is installed. (Loading it puts its finder on
    sys.meta_path, where it answers for unit modules only, which the build
    never imports.)"""
    spec = importlib.util.spec_from_file_location(
        "_vfstack_extensions", SOURCE_ROOTS["vfstack"] / "_extensions.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


units = _load_units()
COMPILE = not os.environ.get(units.ENV_NO_EXTENSIONS)

# Annotations stay hints: only a `.pxd` gives C types, so a hint written
# for readers (`bytes | memoryview`, a bool that is passed an int flag)
# cannot make the compiled leg reject what the pure one accepts.
DIRECTIVES = {"language_level": 3, "annotation_typing": False}


class BuildUnit(build_ext):
    """Cythonize the unit (in parallel, C files under build/), compile it
    (in parallel), then record each module's source digest beside the
    extensions: in the build tree for a wheel, in the checkout too when
    building in place (`pip install -e .`)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        from Cython.Build import cythonize

        generated = cythonize(
            self.extensions,
            build_dir=str(Path(self.build_temp) / "cython"),
            compiler_directives=DIRECTIVES,
            # The stack's .pxd cimport the SDK's (vfstack.shm), kept under sdk/.
            include_path=[str(SOURCE_ROOTS["vfstack"].parent)],
            nthreads=self.parallel,
            quiet=True,
        )
        # The C files replace the .py in the extensions setuptools prepared.
        c_files = {extension.name: extension.sources for extension in generated}
        for extension in self.extensions:
            extension.sources = c_files[extension.name]
        try:
            super().run()
        except (CCompilerError, PlatformError) as exc:
            # No working C compiler or no Python headers here, which the SDK
            # alone (`pip install .` for an app) needs neither of: install
            # the unit pure, as msgpack does; at run time it says so (one
            # warning line, `build pure`). A Cython error, above, is ours
            # and still fails the build.
            self.warn(f"compiling the hot path failed, installing it pure Python: {exc}")
            for extension in self.extensions:
                Path(self.get_ext_fullpath(extension.name)).unlink(missing_ok=True)
            return
        sources = units.unit_sources(SOURCE_ROOTS)
        manifest = json.dumps({n: units.source_digest(p) for n, p in sources.items()}, indent=1)
        directories = [Path(self.build_lib) / "vfstack"]
        if self.inplace:
            directories.append(SOURCE_ROOTS["vfstack"])
        for directory in directories:
            (directory / units.MANIFEST).write_text(manifest + "\n")


class BuildPurePy(build_py):
    """A pure `pip install -e .` leaves no extension of an earlier build in
    the checkout, where it would win the import. (A pure wheel cannot ship
    one: without extensions setuptools builds into build/lib, not the
    build/lib.<platform> that holds them.)"""

    def run(self) -> None:
        super().run()
        if COMPILE or not self.editable_mode:
            return
        (SOURCE_ROOTS["vfstack"] / units.MANIFEST).unlink(missing_ok=True)
        for source in units.unit_sources(SOURCE_ROOTS).values():
            while (extension := units.extension_path(source)) is not None:
                extension.unlink()


def _extensions() -> list[Extension]:
    if not COMPILE:
        return []
    # -O2 -g0 after Python's own -O3 -g: each module's C is ~1 MB, mostly
    # Cython's helpers; debug info makes an extension 8x the size and the
    # build a third slower, -O3 costs the build another fifth (-O2 is
    # what Debian builds extensions with). The symbol table stays, for
    # py-spy --native and perf.
    return [
        Extension(name, [str(path.relative_to(ROOT))], extra_compile_args=["-O2", "-g0"])
        for name, path in units.unit_sources(SOURCE_ROOTS).items()
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildUnit, "build_py": BuildPurePy})
