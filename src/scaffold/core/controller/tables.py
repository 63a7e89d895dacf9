"""Every switch's desired tables and the records that bring it there (docs/protocol.md §6.2).

Tables are derived, never edited: after any change the controller computes each connected
switch's desired tables from the registry (``desired``, a pure function of its state) and
sends the difference from what it sent last as a ``TableDelta`` with the next version; a
switch that connects or asks gets a full ``TableSync``. DC routes come from Dijkstra over the
backbone links that are up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...wire import control
from ...wire.control import ControlMessage, SwitchTables, TableKeys
from ..routing import next_hops
from .registry import Registry

__all__ = ["SwitchState", "Tables"]

_KEYED = ("dc_routes", "host_routes", "moved_hosts", "wide", "local", "prefixes", "peers")


@dataclass(slots=True)
class SwitchState:
    role: str
    dc: str
    connected: bool = False
    version: int = 0
    sent: SwitchTables = field(default_factory=SwitchTables)


class Tables:
    """The switches' control state: connected or not, table versions, what each was sent."""

    def __init__(self, registry: Registry, out: list[tuple[str, ControlMessage]]) -> None:
        self.registry = registry
        self._out = out
        self.switches: dict[str, SwitchState] = {}
        for dc in registry.topology.datacenters:
            for fs in dc.flow_switches:
                self.switches[fs] = SwitchState("flow-switch", dc.name)
            self.switches[dc.object_switch] = SwitchState("object-switch", dc.name)
        self._routes: dict[str, dict[str, str]] = {}
        self.recompute_routes()

    def role(self, node: str) -> str:
        """``node``'s switch role, or "" if it is not a switch."""
        state = self.switches.get(node)
        return state.role if state is not None else ""

    def desired(self, switch: str) -> SwitchTables:
        """What ``switch``'s tables should be now (a pure function of controller state)."""
        reg = self.registry
        state = self.switches[switch]
        dc = reg.topology.datacenter(state.dc)
        border = dc.border
        peers = {n: reg.addresses[n] for n in self.neighbours(switch) if n in reg.addresses}
        if state.role == "object-switch":
            wide: dict[str, list[tuple[int, int]]] = {}
            local: dict[str, list[tuple[int, int]]] = {}
            for obj, replicas in reg.objects.items():
                per_dc: dict[int, int] = {}
                for host_name, weight in replicas.items():
                    record = reg.hosts[host_name]
                    if not record.alive or obj in reg.draining.get(host_name, ()):
                        continue
                    dc_id = reg.dc_ids[record.dc]
                    per_dc[dc_id] = per_dc.get(dc_id, 0) + weight
                    if record.dc == dc.name:
                        local.setdefault(obj, []).append((record.host_id, weight))
                if per_dc:
                    wide[obj] = sorted(per_dc.items())
            for members in local.values():
                members.sort()
            return SwitchTables(wide=wide, local=local, gateway=border, peers=peers)
        dc_routes: dict[int, str] = {}
        for other, via in self._routes.get(dc.name, {}).items():
            dc_routes[reg.dc_ids[other]] = reg.topology.datacenter(via).border if switch == border else border
        host_routes: dict[int, str] = {}
        for record in reg.hosts.values():
            if record.alive and record.dc == dc.name:
                if record.gateway == switch:
                    host_routes[record.host_id] = record.name
                else:
                    host_routes[record.host_id] = record.gateway if switch == border else border
        # Hosts that left this DC (VM migration, mobility): packets still naming this DC are
        # corrected in flight and their senders told to refine (docs/protocol.md §5.3).
        moved_hosts = {
            r.host_id: reg.dc_ids[r.dc]
            for r in reg.hosts.values()
            if r.alive and r.dc != dc.name and dc.name in r.previous_dcs
        }
        object_switch = dc.object_switch if switch == border else border
        return SwitchTables(
            dc_routes=dc_routes,
            host_routes=host_routes,
            moved_hosts=moved_hosts,
            object_switch=object_switch,
            peers=peers,
        )

    def sync(self, node: str) -> None:
        """Send ``node`` its whole tables at a new version."""
        state = self.switches[node]
        tables = self.desired(node)
        state.version += 1
        state.sent = tables
        self._out.append((node, control.TableSync(state.version, self.registry.dc_ids[state.dc], tables)))

    def push(self) -> None:
        """Send every connected switch whose desired tables changed a delta to them."""
        for node, state in self.switches.items():
            if not state.connected:
                continue
            new = self.desired(node)
            delta = _diff(state.sent, new)
            if delta is None:
                continue
            upsert, remove = delta
            state.version += 1
            state.sent = new
            self._out.append((node, control.TableDelta(state.version, upsert, remove)))

    def recompute_routes(self) -> None:
        reg = self.registry
        edges = [
            (l.a, l.b, l.delay or 1e-6)
            for l in reg.topology.backbone
            if reg.links_up.get(frozenset((l.a, l.b)), True)
        ]
        self._routes = next_hops(reg.dc_ids, edges)

    def neighbours(self, node: str) -> set[str]:
        out = set()
        for link in self.registry.topology.node_links():
            if link.a == node:
                out.add(link.b)
            elif link.b == node:
                out.add(link.a)
        for record in self.registry.hosts.values():
            if record.gateway == node:
                out.add(record.name)
        return out


def _diff(old: SwitchTables, new: SwitchTables) -> tuple[SwitchTables, TableKeys] | None:
    upsert: dict[str, object] = {}
    remove: dict[str, object] = {}
    for name in _KEYED:
        a, b = getattr(old, name), getattr(new, name)
        changed = {k: v for k, v in b.items() if a.get(k) != v}
        gone = [k for k in a if k not in b]
        if changed:
            upsert[name] = changed
        if gone:
            remove[name] = gone
    for name in ("object_switch", "gateway"):
        if getattr(old, name) != getattr(new, name):
            upsert[name] = getattr(new, name)
    if not upsert and not remove:
        return None
    return SwitchTables(**upsert), TableKeys(**remove)  # type: ignore[arg-type]
