"""stackservice: one vfstack stack instance per virtual function."""

from importlib.metadata import version

__version__ = version("vfstack")
