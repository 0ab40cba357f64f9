"""vfstack: what applications and operators import.

The socket/epoll SDK over the shared-memory fast path arrives with the
fast-path work; today this package carries the `vfstack` admin CLI.
"""

from importlib.metadata import version

__version__ = version("vfstack")
__all__ = ["__version__"]
