"""stackservice: one vfstack stack instance per virtual function."""

from importlib.metadata import version

# Imported first: it puts the compiled unit's finder on sys.meta_path
# before any of this package's unit modules (net/, tcp/, fastpath/) is
# imported; from here on it decides compiled or pure.
from vfstack import _extensions  # noqa: F401

__version__ = version("vfstack")
