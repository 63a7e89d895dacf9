"""Per-switch bookkeeping: each switch's control state (role, DC, connected, table version,
whether it waits for a sync), the tables that are its own -- a flow switch's routes and
``attached``, every switch's ``peers`` -- and what changed in them since the last flush
(docs/protocol.md §6.2). A change to a switch that is not connected is kept in its tables but
not as a change: it gets them whole when it connects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..topology import Topology
from .records import Changes

__all__ = ["FlowTables", "SwitchBook", "SwitchState"]


@dataclass(slots=True)
class SwitchState:
    role: str
    dc: str
    connected: bool = False
    version: int = 0
    #: it needs a full ``TableSync`` at the next flush (it connected or asked)
    needs_sync: bool = False


@dataclass(slots=True)
class FlowTables:
    """One flow switch's canonical tables (its DC's routes and hosts)."""

    dc_routes: dict[int, str] = field(default_factory=dict)
    host_routes: dict[int, str] = field(default_factory=dict)
    moved_hosts: dict[int, int] = field(default_factory=dict)
    #: the hosts whose gateway it is (host name -> Host ID): it watches their presence
    attached: dict[str, int] = field(default_factory=dict)
    object_switch: str = ""


class SwitchBook:
    """Every switch of the topology: its state, its own tables, its changes not sent yet."""

    def __init__(self, topology: Topology) -> None:
        self.switches: dict[str, SwitchState] = {}
        self.flow: dict[str, FlowTables] = {}
        for dc in topology.datacenters:
            for fs in dc.flow_switches:
                self.switches[fs] = SwitchState("flow-switch", dc.name)
                self.flow[fs] = FlowTables(object_switch=dc.object_switch if fs == dc.border else dc.border)
            self.switches[dc.object_switch] = SwitchState("object-switch", dc.name)
        #: every switch's neighbours in the topology (attached hosts are the registry's)
        self.links: dict[str, set[str]] = {name: set() for name in self.switches}
        for link in topology.node_links():
            for a, b in ((link.a, link.b), (link.b, link.a)):
                if a in self.links:
                    self.links[a].add(b)
        self.peers: dict[str, dict[str, tuple[str, int]]] = {name: {} for name in self.switches}
        #: per switch: changes of its own tables not sent yet
        self.changes: dict[str, Changes] = {}
        #: some switch waits for a full sync
        self.syncs = False

    def sync(self, node: str) -> None:
        """Send ``node`` its whole tables at the next flush."""
        self.switches[node].needs_sync = True
        self.syncs = True

    def take_changes(self) -> dict[str, Changes]:
        """The changes not sent yet, per switch; none are left."""
        changes, self.changes = self.changes, {}
        self.syncs = False
        return changes

    def set_flow(self, switch: str, table: str, key: int | str, value: Any) -> None:
        """Flow switch ``switch``'s ``table`` maps ``key`` to ``value`` now (None: removed)."""
        tables: dict[int | str, Any] = getattr(self.flow[switch], table)
        if tables.get(key) == value:
            return
        if value is None:
            del tables[key]
        else:
            tables[key] = value
        if self.switches[switch].connected:  # else it gets its whole tables when it connects
            self.changes.setdefault(switch, Changes()).put(table, key, value)

    def set_peer(self, switch: str, node: str, address: tuple[str, int] | None) -> None:
        """``switch`` reaches its neighbour ``node`` at ``address`` now (None: forgotten)."""
        peers = self.peers[switch]
        if peers.get(node) == address:
            return
        if address is None:
            peers.pop(node, None)
        else:
            peers[node] = address
        if self.switches[switch].connected:
            self.changes.setdefault(switch, Changes()).put("peers", node, address)
