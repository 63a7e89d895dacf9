"""The reliable stream transport, sans-IO, split by concern (docs/protocol.md §4.2).

``connection`` (:class:`StreamConnection`) composes ``sender`` (send stream, ``recovery``
scoreboard, ``congestion`` control, ``rtt``), ``receive`` (reassembly over a ``rangeset``)
and ``acks`` (the ACK policy), moving through the ``state`` tables; ``options``, ``events``
and ``snapshot`` are its public records. docs/architecture.md §1 lists the files.
"""

from .connection import Role, StreamConnection
from .events import (
    Connected,
    ConnectionTerminated,
    DataReceived,
    EndOfStream,
    Reset,
    Resumed,
    SendSpaceAvailable,
    StreamEvent,
    StreamStats,
)
from .options import StreamOptions
from .snapshot import SNAPSHOT_VERSION, StreamSnapshot
from .state import StreamState, TerminationReason

__all__ = [
    "SNAPSHOT_VERSION",
    "Connected",
    "ConnectionTerminated",
    "DataReceived",
    "EndOfStream",
    "Reset",
    "Resumed",
    "Role",
    "SendSpaceAvailable",
    "StreamConnection",
    "StreamEvent",
    "StreamOptions",
    "StreamSnapshot",
    "StreamState",
    "StreamStats",
    "TerminationReason",
]
