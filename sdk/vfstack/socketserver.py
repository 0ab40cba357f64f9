"""The standard library's `socketserver` and `http.server` servers over a
vfstack instance.

    import http.server, vfstack
    from vfstack.socketserver import ThreadingStackHTTPServer

    stack = vfstack.connect("unix:///run/vfstack/vf0.sock", app="web")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="site")
    with ThreadingStackHTTPServer(("0.0.0.0", 8080), handler, stack=stack) as server:
        server.serve_forever()

`StackServerMixIn` goes first in the bases of any `socketserver.TCPServer`
class: the server's socket is then a socket of `stack`, and request
handlers get vfstack sockets, with `makefile` for `rfile`/`wfile`.

Threads: a `vfstack.Stack` may be used from any number of threads at once
(one lock guards its rings, and one thread at a time sleeps on its
doorbell for all the others), so the `ThreadingMixIn` servers share the
server's one session among their handler threads. `serve_forever` waits
on an `Epoll` of that session (Python's selectors cannot watch a vfstack
socket), and `shutdown()` from another thread ends it within
`poll_interval`, as Python's.
"""

from __future__ import annotations

import http.server
import select
import socketserver
import threading
import time

__all__ = [
    "StackHTTPServer",
    "StackServerMixIn",
    "StackTCPServer",
    "ThreadingStackHTTPServer",
    "ThreadingStackTCPServer",
]


class StackServerMixIn:
    """Serve a `socketserver.TCPServer` subclass on a vfstack instance:
    `Server(server_address, RequestHandlerClass, bind_and_activate=True, *, stack)`."""

    def __init__(self, server_address, RequestHandlerClass, bind_and_activate=True, *, stack):
        socketserver.BaseServer.__init__(self, server_address, RequestHandlerClass)
        self.stack = stack
        self.socket = stack.socket()
        self._arrivals = stack.epoll()  # the listener's readiness
        self._arrivals.register(self.socket, select.EPOLLIN)
        self._stop_asked = False
        self._stopped = threading.Event()
        self._stopped.set()
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Handle requests until `shutdown()`, looking for it every `poll_interval` seconds."""
        self._stopped.clear()
        try:
            while not self._stop_asked:
                ready = self._arrivals.poll(poll_interval)
                if self._stop_asked:
                    break
                if ready:
                    self._handle_request_noblock()
                self.service_actions()
        finally:
            self._stop_asked = False
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop `serve_forever` and wait for it; from another thread (as Python's)."""
        self._stop_asked = True
        self._stopped.wait()

    def handle_request(self) -> None:
        """Handle one request, waiting up to `timeout` (the server's, or the socket's) for it."""
        timeout = self.socket.gettimeout()
        if timeout is None:
            timeout = self.timeout
        elif self.timeout is not None:
            timeout = min(timeout, self.timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._arrivals.poll(timeout):
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout < 0:
                    return self.handle_timeout()
        return self._handle_request_noblock()

    def server_close(self) -> None:
        self._arrivals.close()
        super().server_close()


class StackTCPServer(StackServerMixIn, socketserver.TCPServer):
    pass


class ThreadingStackTCPServer(socketserver.ThreadingMixIn, StackTCPServer):
    daemon_threads = True


class StackHTTPServer(StackServerMixIn, http.server.HTTPServer):
    pass


class ThreadingStackHTTPServer(socketserver.ThreadingMixIn, StackHTTPServer):
    daemon_threads = True
