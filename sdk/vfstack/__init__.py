"""vfstack: what applications and operators import.

The socket/epoll SDK over the shared-memory fast path arrives with the
fast-path work; today this package carries the `vfstack` admin CLI.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
