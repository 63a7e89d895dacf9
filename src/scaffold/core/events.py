"""Records every engine shares: packets, trace hops, and the events a runtime acts on.

Most events are for the application (the host's, in ``core/host/events.py``); the ones here
also tell the runtime to do something outside the core: learn neighbours' addresses, plug a
moved host into its new gateway, report new tables (docs/architecture.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "Address",
    "Datagram",
    "HostRelocated",
    "NeighboursLearned",
    "Packet",
    "TablesApplied",
    "TraceHop",
    "Train",
]

#: A packet's bytes; switches hand on a ``bytearray`` they rewrote in place.
Packet = bytes | bytearray
#: Packets of one size back to back (the last may be shorter), read as one train (the
#: kernel's GRO) into a buffer a flow switch may rewrite in place before it is sent on whole.
Train = bytearray | memoryview
#: (port, packet): a packet to send and the neighbour node it goes to.
Datagram = tuple[str, Packet]
#: A UDP address (IP, port).
Address = tuple[str, int]


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


@dataclass(frozen=True, slots=True)
class NeighboursLearned:
    """The controller said where neighbours are (a switch's ``peers`` table, a host's
    gateway): the runtime puts these name -> UDP address pairs in its address book."""

    addresses: Mapping[str, Address]


@dataclass(frozen=True, slots=True)
class TablesApplied:
    """A switch applied a ``TableSync`` or ``TableDelta``; its tables are at ``version``."""

    version: int


@dataclass(frozen=True, slots=True)
class HostRelocated:
    """This host is attached to ``gateway`` in DC ``dc_id`` now (VM migration, mobility;
    ``address``: the gateway's UDP address, when the controller knows it). The runtime
    plugs the host into its new gateway."""

    gateway: str
    dc_id: int
    address: Address | None
