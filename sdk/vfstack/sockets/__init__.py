"""The app's side of a session: `Stack` (vfstack.sockets.stack), its
`Socket`s (vfstack.sockets.socket) and `Epoll`s (vfstack.sockets.epoll).

Every call an app makes on a socket runs here, so the package is part of
the compiled unit (vfstack._extensions), typed by the `.pxd` files beside
its modules; `vfstack` re-exports the three classes.
"""
