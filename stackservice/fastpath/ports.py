"""Who may listen on which port (stackservice.limits): what a kernel
checks at bind(), for the apps of one instance.

- A port below 1024 is root's, or a uid's given `--privileged-port-uids`
  (Linux: CAP_NET_BIND_SERVICE): EACCES for anyone else.
- A port an app listened on stays its uid's for `--port-reserve-ms` after
  its session ends (the app exited, died or detached), so that no other
  app takes it while the owner restarts: EADDRINUSE for another uid
  meanwhile. A listener the app closes itself, alive, reserves nothing.

Root is not held to either. Refusals are counted (Refusal.PRIVILEGED_PORT,
RESERVED_PORT). Ports chosen by the stack (bind to port 0) skip the
reserved ones.
"""

from __future__ import annotations

import errno

from stackservice.limits import Limits, Refusal

__all__ = ["PortPolicy"]

PRIVILEGED_BELOW = 1024


class PortPolicy:
    """The bind-time policy of one instance, and the ports reserved now."""

    __slots__ = ("_privileged", "_refusals", "_reserve_us", "_reserved")

    def __init__(self, limits: Limits, refusals) -> None:
        self._privileged = limits.privileged_port_uids
        self._reserve_us = limits.port_reserve_ms * 1000
        self._refusals = refusals
        self._reserved: dict[int, tuple[int, int]] = {}  # port -> (uid, until µs)

    def check(self, port: int, uid: int, now: int) -> int:
        """May an app of `uid` bind `port` now? 0, or the errno (counted)."""
        if uid == 0:
            return 0
        if port < PRIVILEGED_BELOW and uid not in self._privileged:
            self._refusals[Refusal.PRIVILEGED_PORT] += 1
            return errno.EACCES
        if not self.free_for(port, uid, now):
            self._refusals[Refusal.RESERVED_PORT] += 1
            return errno.EADDRINUSE
        return 0

    def free_for(self, port: int, uid: int, now: int) -> bool:
        """Is `port` unreserved, or reserved to `uid`? (A lapsed reservation
        goes: the table holds no more ports than were reserved lately.)"""
        reserved = self._reserved.get(port)
        if reserved is None:
            return True
        owner, until = reserved
        if until <= now:
            del self._reserved[port]
            return True
        return owner == uid

    def session_ended(self, port: int, uid: int, now: int) -> None:
        """The session of `uid` that listened on `port` ended: keep the port
        for it a while."""
        if self._reserve_us:
            self._reserved[port] = (uid, now + self._reserve_us)
