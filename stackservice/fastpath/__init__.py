"""Stack side of the shared-memory fast path: sessions, commands, events
(DESIGN.md "Data flow"; the layout is vfstack._layout)."""

from stackservice.fastpath.session import Session, SessionManager

__all__ = ["Session", "SessionManager"]
