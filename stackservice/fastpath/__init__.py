"""Stack side of the shared-memory fast path (the format: vfstack.shm).

    manager     SessionManager: attach, detach, liveness, quotas, faults contained
    occupancy   the ring occupancy sweep into the app table
    session     Session: one app's segment, doorbells, sockets and pass
    commands    what each command record does
    sockopts    socket options, a table
    sockets     SocketTable: a session's slots, engine sockets, pumps, events
    ports       PortPolicy: who may bind which port
    memory      SharedMemory: what sessions commit, against the limits

Each imports only those below it.
"""

from stackservice.fastpath.manager import SessionManager
from stackservice.fastpath.session import Session

__all__ = ["Session", "SessionManager"]
