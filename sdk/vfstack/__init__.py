"""vfstack: what applications and operators import.

    import vfstack
    stack = vfstack.connect("unix:///run/vfstack/vf0.sock", app="web")
    s = stack.socket()
    s.bind(("0.0.0.0", 8080)); s.listen(128)
    conn, addr = s.accept()

`Stack`, `Socket` and `Epoll` mirror Python's `socket` and `select.epoll` over the stack's
shared-memory fast path; the constants below are Python's own values.
"""

import select as _pyselect
import socket as _pysocket
from importlib.metadata import version

# First: importing it puts the compiled unit's finder on sys.meta_path
# before anything below imports a unit module (vfstack.shm).
from vfstack import _extensions  # noqa: F401
from vfstack._control import ControlError
from vfstack._errors import SDKError, StackGone
from vfstack._selector import StackSelector
from vfstack.sockets.epoll import Epoll
from vfstack.sockets.socket import Socket
from vfstack.sockets.stack import Stack, connect

__version__ = version("vfstack")

AF_INET = _pysocket.AF_INET
SOCK_STREAM = _pysocket.SOCK_STREAM
SOCK_NONBLOCK = _pysocket.SOCK_NONBLOCK
SOCK_CLOEXEC = _pysocket.SOCK_CLOEXEC
IPPROTO_TCP = _pysocket.IPPROTO_TCP
SOL_SOCKET = _pysocket.SOL_SOCKET
SO_REUSEADDR = _pysocket.SO_REUSEADDR
SO_KEEPALIVE = _pysocket.SO_KEEPALIVE
SO_SNDBUF = _pysocket.SO_SNDBUF
SO_RCVBUF = _pysocket.SO_RCVBUF
SO_ERROR = _pysocket.SO_ERROR
SO_LINGER = _pysocket.SO_LINGER
TCP_NODELAY = _pysocket.TCP_NODELAY
TCP_KEEPIDLE = _pysocket.TCP_KEEPIDLE
TCP_KEEPINTVL = _pysocket.TCP_KEEPINTVL
TCP_KEEPCNT = _pysocket.TCP_KEEPCNT
SHUT_RD = _pysocket.SHUT_RD
SHUT_WR = _pysocket.SHUT_WR
SHUT_RDWR = _pysocket.SHUT_RDWR
SOMAXCONN = _pysocket.SOMAXCONN
EPOLLIN = _pyselect.EPOLLIN
EPOLLOUT = _pyselect.EPOLLOUT
EPOLLERR = _pyselect.EPOLLERR
EPOLLHUP = _pyselect.EPOLLHUP
EPOLLRDHUP = _pyselect.EPOLLRDHUP
EPOLLET = _pyselect.EPOLLET
EPOLLONESHOT = _pyselect.EPOLLONESHOT

__all__ = [
    "AF_INET",
    "EPOLLERR",
    "EPOLLET",
    "EPOLLHUP",
    "EPOLLIN",
    "EPOLLONESHOT",
    "EPOLLOUT",
    "EPOLLRDHUP",
    "IPPROTO_TCP",
    "SHUT_RD",
    "SHUT_RDWR",
    "SHUT_WR",
    "SOCK_CLOEXEC",
    "SOCK_NONBLOCK",
    "SOCK_STREAM",
    "SOL_SOCKET",
    "SOMAXCONN",
    "SO_ERROR",
    "SO_KEEPALIVE",
    "SO_LINGER",
    "SO_RCVBUF",
    "SO_REUSEADDR",
    "SO_SNDBUF",
    "TCP_KEEPCNT",
    "TCP_KEEPIDLE",
    "TCP_KEEPINTVL",
    "TCP_NODELAY",
    "ControlError",
    "Epoll",
    "SDKError",
    "Socket",
    "Stack",
    "StackGone",
    "StackSelector",
    "__version__",
    "connect",
]
