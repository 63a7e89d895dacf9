"""Records every engine shares: trace hops and the datagram type."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Datagram", "Packet", "TraceHop"]

#: A packet's bytes; switches hand on a ``bytearray`` they rewrote in place.
Packet = bytes | bytearray
#: (port, packet): a packet to send and the neighbour node it goes to.
Datagram = tuple[str, Packet]


@dataclass(frozen=True, slots=True)
class TraceHop:
    """One node's view of a packet flagged ``TRACE``: the destination as it sent it on.

    ``role`` is ``"host"``, ``"flow-switch"`` or ``"object-switch"``; the IDs are those of the
    packet's destination after this node's refinement (0 = not refined yet). ``ttl`` is the
    packet's TTL as this node sent it on (or received it, at the destination host), so
    sorting by descending TTL orders a trace by hop even when clocks tie.
    """

    node: str
    role: str
    flow: int
    obj: bytes
    dc: int
    host: int
    socket: int
    ttl: int
    at: float
