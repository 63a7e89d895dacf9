"""A host's per-flow and per-listener state (docs/protocol.md §3.4).

Plain records: the stack (``stack.py``) and its churn and stream parts keep them in dicts
keyed by Socket ID and Object ID.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ...transport import StreamConnection, StreamState
from ...wire.header import Proto
from .stats import StreamTotals

__all__ = ["MIGRATABLE", "Flow", "Listener", "Role"]

#: stream states in which a flow can move to another host (docs/protocol.md §5.4)
MIGRATABLE = frozenset(
    {StreamState.ESTABLISHED, StreamState.FIN_WAIT, StreamState.CLOSE_WAIT, StreamState.CLOSING}
)


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


@dataclass(slots=True)
class Listener:
    obj: bytes
    name: str
    weight: int
    #: any replica can continue a stream given its offsets (docs/protocol.md §5.1)
    resumable: bool = False
    #: no new flows come; the replica leaves when its flows have ended (§5.2)
    draining: bool = False
    #: the owner's signed grant, for an owned object (sent again on each re-registration)
    grant: bytes = b""
    #: the object's resolution policy ("": the controller's default, docs/protocol.md §3.5)
    policy: str = ""
    #: new flows per second this replica takes before its DC spills over (0: no limit, §3.5)
    capacity: float = 0.0


@dataclass(slots=True)
class Flow:
    """One flow's locators and counters (the transport state lives beside it)."""

    socket_id: int
    flow: int
    nonce: int
    obj: bytes
    proto: Proto
    role: Role
    peer_dc: int = 0
    peer_host: int = 0
    peer_socket: int = 0
    trace: bool = False
    packets_sent: int = 0
    packets_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    last_active: float = 0.0
    #: when the last authentic packet of the peer arrived (a change of peer measures the pause)
    last_received: float = 0.0
    #: every Host ID that answered this flow (more than one only after a failover)
    served_by: list[int] = field(default_factory=list)
    #: the reliable stream state machine of a stream flow
    transport: StreamConnection | None = None
    #: where the peer was before its latest move, and when it moved
    previous_peer: tuple[int, int, int] = (0, 0, 0)
    peer_changed_at: float = 0.0
    #: an imported stream's transport counters on arrival: what other hosts already counted
    stats_base: StreamTotals | None = None
    #: the header of this flow's packets, as last encoded, and the locators it was encoded
    #: for (``HostStackBase._emit`` reuses it while they stay the same)
    header: tuple[tuple[int, int, int, int, int, int], bytes] | None = None
