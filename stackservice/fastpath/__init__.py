"""Stack side of the shared-memory fast path: sessions, commands, events
(the layout is vfstack.shm)."""

from stackservice.fastpath.session import Session, SessionManager

__all__ = ["Session", "SessionManager"]
