"""A host's per-flow and per-listener state (docs/protocol.md §3.4).

Plain records: the stack (``stack.py``) and its churn and stream parts keep them in dicts
keyed by Socket ID and Object ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ...transport import StreamConnection, StreamState
from ...wire.header import Proto
from .stats import StreamTotals

__all__ = ["MIGRATABLE", "Flow", "Listener", "PendingBundle", "PeerWatch", "Role"]

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
    #: every Host ID that answered this flow (more than one only after a failover); a tuple,
    #: so the many flows that never have one share the empty one
    served_by: tuple[int, ...] = ()
    #: the reliable stream state machine of a stream flow
    transport: StreamConnection | None = None
    #: where the peer was before its latest move, and when it moved
    previous_peer: tuple[int, int, int] = (0, 0, 0)
    peer_changed_at: float = 0.0
    #: an imported stream's transport counters on arrival: what other hosts already counted
    stats_base: StreamTotals | None = None
    #: the header of this flow's packets, as last encoded (``HostStackBase._emit`` reuses it
    #: while the locators in it stay the flow's)
    header: bytes | None = None
    #: a server stream still in its handshake: counted against its listener's half-open
    #: limit until it is established or gone (docs/protocol.md §4.2.8)
    half_open: bool = False


@dataclass(slots=True)
class PendingBundle:
    """A liveness PROBE waiting for its answer (docs/protocol.md §4.4)."""

    #: (DC ID, Host ID) it went to
    peer: tuple[int, int]
    #: the Socket IDs (ours) of the flows it lists
    sockets: list[int]
    sent: float
    #: unanswered by then, each flow sends its own KEEPALIVE (then: when a late answer is
    #: no longer taken)
    expiry: float
    #: its flows already probed alone
    fell_back: bool = False
    #: a probe of a ``PeerWatch``: its answer speaks for every held stream with this peer
    watch: bool = False


@dataclass(slots=True)
class PeerWatch:
    """A peer host probed for the held streams that handed their stall probes over
    (docs/protocol.md §4.4): one probe on the stall schedule of the latest to join."""

    #: the latest stream to join: its Flow ID, Object ID and entry head the watch's probes
    about: Flow
    #: the gap to the next probe, doubling as for one stream's stall probes
    interval: float
    due: float
    #: the latest joiner's own keepalive: no probe of the watch is due after it
    until: float
    #: the bundle id of its probe awaiting an answer (0: none)
    pending: int = 0
    #: its probes in a row that went unanswered
    misses: int = 0
