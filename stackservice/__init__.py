"""stackservice: one vfstack stack instance per virtual function."""

from importlib.metadata import version

from stackservice import _extensions

__version__ = version("vfstack")

# Before any module of the compiled unit (net/, tcp/, fastpath/) is
# imported: from here on, its finder decides whether it runs compiled or pure.
_extensions.install()
