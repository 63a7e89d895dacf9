"""The events a host stack emits to its runtime and application (docs/protocol.md §3.4, §5).

Small immutable records, taken with ``HostStack.next_event()``; ``HostRelocated`` is shared
with the runtimes (``core/events.py``), which plug the host into its new gateway.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...transport import StreamEvent
from ..events import HostRelocated, NeighboursLearned

__all__ = [
    "DatagramReceived",
    "DrainCompleted",
    "FlowAccepted",
    "FlowClosed",
    "FlowUnreachable",
    "FlowsMigrated",
    "HostEvent",
    "HostRegistered",
    "HostRelocated",
    "ObjectNotFoundEvent",
    "StreamEventFor",
]


@dataclass(frozen=True, slots=True)
class HostRegistered:
    """The controller answered this host's ``Hello``: it has a Host ID in DC ``dc_id``."""

    host_id: int
    dc_id: int


@dataclass(frozen=True, slots=True)
class FlowAccepted:
    """A first packet for a listener started a new (server-side) flow."""

    socket_id: int
    obj: bytes
    flow: int
    #: the flow was taken over mid-stream (its server died or it migrated here)
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    socket_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ObjectNotFoundEvent:
    """An object switch answered that nobody serves the flow's object."""

    socket_id: int
    obj: bytes


@dataclass(frozen=True, slots=True)
class FlowUnreachable:
    """A switch had no route to the flow's destination DC."""

    socket_id: int


@dataclass(frozen=True, slots=True)
class FlowClosed:
    socket_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class FlowsMigrated:
    """These flows of ``obj`` left this host for ``to_host`` (object migration): drop
    whatever the application held for them."""

    obj: bytes
    socket_ids: tuple[int, ...]
    to_host: str


@dataclass(frozen=True, slots=True)
class DrainCompleted:
    """The last flow of drained ``obj`` ended; the replica is withdrawn."""

    obj: bytes


@dataclass(frozen=True, slots=True)
class StreamEventFor:
    """An event of the stream transport of flow ``socket_id`` (see ``scaffold.transport``)."""

    socket_id: int
    event: StreamEvent


HostEvent = (
    HostRegistered
    | FlowAccepted
    | DatagramReceived
    | ObjectNotFoundEvent
    | FlowUnreachable
    | FlowClosed
    | StreamEventFor
    | FlowsMigrated
    | DrainCompleted
    | HostRelocated
    | NeighboursLearned
)
