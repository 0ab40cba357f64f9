from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StackInfo(_message.Message):
    __slots__ = ("name", "iface", "mac", "ip", "gateway", "mode", "pf", "vf_index", "workers", "version", "uptime_ms", "congestion_control", "diag_services", "build")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IFACE_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PF_FIELD_NUMBER: _ClassVar[int]
    VF_INDEX_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    CONGESTION_CONTROL_FIELD_NUMBER: _ClassVar[int]
    DIAG_SERVICES_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    name: str
    iface: str
    mac: str
    ip: str
    gateway: str
    mode: str
    pf: str
    vf_index: int
    workers: int
    version: str
    uptime_ms: int
    congestion_control: str
    diag_services: bool
    build: str
    def __init__(self, name: _Optional[str] = ..., iface: _Optional[str] = ..., mac: _Optional[str] = ..., ip: _Optional[str] = ..., gateway: _Optional[str] = ..., mode: _Optional[str] = ..., pf: _Optional[str] = ..., vf_index: _Optional[int] = ..., workers: _Optional[int] = ..., version: _Optional[str] = ..., uptime_ms: _Optional[int] = ..., congestion_control: _Optional[str] = ..., diag_services: _Optional[bool] = ..., build: _Optional[str] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("app", "pid", "command_ring_slots", "event_ring_slots", "socket_ring_bytes", "worker")
    APP_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_RING_SLOTS_FIELD_NUMBER: _ClassVar[int]
    EVENT_RING_SLOTS_FIELD_NUMBER: _ClassVar[int]
    SOCKET_RING_BYTES_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    app: str
    pid: int
    command_ring_slots: int
    event_ring_slots: int
    socket_ring_bytes: int
    worker: int
    def __init__(self, app: _Optional[str] = ..., pid: _Optional[int] = ..., command_ring_slots: _Optional[int] = ..., event_ring_slots: _Optional[int] = ..., socket_ring_bytes: _Optional[int] = ..., worker: _Optional[int] = ...) -> None: ...

class AttachResponse(_message.Message):
    __slots__ = ("session_id", "segment_path", "segment_bytes", "layout_version", "app_doorbell", "stack_doorbell", "token", "handoff_path")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_PATH_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_VERSION_FIELD_NUMBER: _ClassVar[int]
    APP_DOORBELL_FIELD_NUMBER: _ClassVar[int]
    STACK_DOORBELL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_PATH_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    segment_path: str
    segment_bytes: int
    layout_version: int
    app_doorbell: str
    stack_doorbell: str
    token: bytes
    handoff_path: str
    def __init__(self, session_id: _Optional[int] = ..., segment_path: _Optional[str] = ..., segment_bytes: _Optional[int] = ..., layout_version: _Optional[int] = ..., app_doorbell: _Optional[str] = ..., stack_doorbell: _Optional[str] = ..., token: _Optional[bytes] = ..., handoff_path: _Optional[str] = ...) -> None: ...

class DetachRequest(_message.Message):
    __slots__ = ("session_id", "token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    token: bytes
    def __init__(self, session_id: _Optional[int] = ..., token: _Optional[bytes] = ...) -> None: ...

class DetachResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "app", "pid", "attached_ms", "sockets", "uid", "worker")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ATTACHED_MS_FIELD_NUMBER: _ClassVar[int]
    SOCKETS_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    session_id: int
    app: str
    pid: int
    attached_ms: int
    sockets: int
    uid: int
    worker: int
    def __init__(self, session_id: _Optional[int] = ..., app: _Optional[str] = ..., pid: _Optional[int] = ..., attached_ms: _Optional[int] = ..., sockets: _Optional[int] = ..., uid: _Optional[int] = ..., worker: _Optional[int] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class ListConnectionsRequest(_message.Message):
    __slots__ = ("connection_id", "states", "limit", "after_id")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: int
    states: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    after_id: int
    def __init__(self, connection_id: _Optional[int] = ..., states: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ..., after_id: _Optional[int] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("connection_id", "state", "local_ip", "local_port", "remote_ip", "remote_port", "send_queue", "receive_queue", "cwnd", "ssthresh", "srtt_us", "rttvar_us", "rto_us", "retransmits", "mss", "congestion_control", "owner", "worker")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_IP_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    REMOTE_IP_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_FIELD_NUMBER: _ClassVar[int]
    SEND_QUEUE_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_QUEUE_FIELD_NUMBER: _ClassVar[int]
    CWND_FIELD_NUMBER: _ClassVar[int]
    SSTHRESH_FIELD_NUMBER: _ClassVar[int]
    SRTT_US_FIELD_NUMBER: _ClassVar[int]
    RTTVAR_US_FIELD_NUMBER: _ClassVar[int]
    RTO_US_FIELD_NUMBER: _ClassVar[int]
    RETRANSMITS_FIELD_NUMBER: _ClassVar[int]
    MSS_FIELD_NUMBER: _ClassVar[int]
    CONGESTION_CONTROL_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    connection_id: int
    state: str
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    send_queue: int
    receive_queue: int
    cwnd: int
    ssthresh: int
    srtt_us: int
    rttvar_us: int
    rto_us: int
    retransmits: int
    mss: int
    congestion_control: str
    owner: str
    worker: int
    def __init__(self, connection_id: _Optional[int] = ..., state: _Optional[str] = ..., local_ip: _Optional[str] = ..., local_port: _Optional[int] = ..., remote_ip: _Optional[str] = ..., remote_port: _Optional[int] = ..., send_queue: _Optional[int] = ..., receive_queue: _Optional[int] = ..., cwnd: _Optional[int] = ..., ssthresh: _Optional[int] = ..., srtt_us: _Optional[int] = ..., rttvar_us: _Optional[int] = ..., rto_us: _Optional[int] = ..., retransmits: _Optional[int] = ..., mss: _Optional[int] = ..., congestion_control: _Optional[str] = ..., owner: _Optional[str] = ..., worker: _Optional[int] = ...) -> None: ...

class ListConnectionsResponse(_message.Message):
    __slots__ = ("connections", "total")
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    connections: _containers.RepeatedCompositeFieldContainer[Connection]
    total: int
    def __init__(self, connections: _Optional[_Iterable[_Union[Connection, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchStatsRequest(_message.Message):
    __slots__ = ("interval_ms",)
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    def __init__(self, interval_ms: _Optional[int] = ...) -> None: ...

class Counter(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: int
    def __init__(self, name: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

class CounterGroup(_message.Message):
    __slots__ = ("name", "counters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    counters: _containers.RepeatedCompositeFieldContainer[Counter]
    def __init__(self, name: _Optional[str] = ..., counters: _Optional[_Iterable[_Union[Counter, _Mapping]]] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("timestamp_ms", "delta", "groups")
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    delta: bool
    groups: _containers.RepeatedCompositeFieldContainer[CounterGroup]
    def __init__(self, timestamp_ms: _Optional[int] = ..., delta: _Optional[bool] = ..., groups: _Optional[_Iterable[_Union[CounterGroup, _Mapping]]] = ...) -> None: ...
