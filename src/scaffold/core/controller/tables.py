"""Every switch's tables, kept incrementally, and the records that bring switches there
(docs/protocol.md §6.2).

The controller holds each switch's tables once, as the canonical tables every synchronized
switch also holds: the object switches' ``wide`` (shared by all) and each DC's ``local`` in
``incremental.py``; each flow switch's routes and every switch's ``peers`` here. A change
marks what it touches -- an object, a host, the routes, a node's address -- and only those
entries are recomputed (``object_changed``, ``host_changed``, ``routes_changed``,
``address_changed``); the difference accumulates as pending. Pending changes are *coalesced*:
``flush`` (called by the controller ``COALESCE`` seconds after the first change, or at once
when asked) sends each connected switch one ``TableDelta`` with everything that changed for
it, and a switch that connected, or asked, one ``TableSync`` -- each cut into parts of at most
``RECORD_BUDGET`` bytes, which the switch applies at once when the last part is in. A change
therefore costs what it touches, never the number of objects, hosts or switches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec

from ...wire import control
from ...wire.control import RECORD_BUDGET, ControlMessage, Demand, Replicas, SwitchTables, TableKeys
from ..locality import Spill, plan_accept
from ..routing import shortest_paths
from ..topology import DatacenterSpec
from .demand import DemandBook
from .incremental import GroupedTable, Pending
from .registry import Registry
from .state import HostRecord

__all__ = ["COALESCE", "FlowTables", "SwitchState", "Tables"]

#: how long changes are gathered into one delta per switch (seconds)
COALESCE = 0.01
#: what an entry costs on the wire, roughly: its key, its framing, per member (bytes)
_ENTRY_BYTES = 80
_MEMBER_BYTES = 12


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


@dataclass(slots=True)
class _Changes:
    """What changed for one switch since the last flush: key -> value or None (removed)."""

    tables: dict[str, dict[Any, Any]] = field(default_factory=dict)

    def put(self, table: str, key: object, value: object) -> None:
        self.tables.setdefault(table, {})[key] = value


class Tables:
    """The switches' control state and their canonical tables, changed incrementally."""

    def __init__(
        self, registry: Registry, out: list[tuple[str, ControlMessage]], presence_timeout: float = 0.0
    ) -> None:
        self.registry = registry
        self._out = out
        self.presence_timeout = presence_timeout
        topo = registry.topology
        self._dcs: dict[str, DatacenterSpec] = {dc.name: dc for dc in topo.datacenters}
        self.switches: dict[str, SwitchState] = {}
        self.flow: dict[str, FlowTables] = {}
        for dc in topo.datacenters:
            for fs in dc.flow_switches:
                self.switches[fs] = SwitchState("flow-switch", dc.name)
                self.flow[fs] = FlowTables(object_switch=dc.object_switch if fs == dc.border else dc.border)
            self.switches[dc.object_switch] = SwitchState("object-switch", dc.name)
        #: every switch's neighbours in the topology (hosts attached later are added)
        self._links: dict[str, set[str]] = {name: set() for name in self.switches}
        for link in topo.node_links():
            for a, b in ((link.a, link.b), (link.b, link.a)):
                if a in self._links:
                    self._links[a].add(b)
        self.peers: dict[str, dict[str, tuple[str, int]]] = {name: {} for name in self.switches}
        self.wide = GroupedTable()
        self.local: dict[str, GroupedTable] = {dc.name: GroupedTable() for dc in topo.datacenters}
        #: per switch: changes of its own tables not sent yet
        self._changes: dict[str, _Changes] = {}
        #: DCs whose ``local`` has pending changes; whether a switch waits for a sync
        self._touched_local: set[str] = set()
        self._syncs = False
        #: where each host's routes are installed now: (DC, gateway, previous DCs)
        self._host_at: dict[str, tuple[str, str, frozenset[str]]] = {}
        #: DCs whose ``local`` lists each object now (the sets interned: few distinct ones)
        self._object_dcs: dict[str, frozenset[str]] = {}
        self._dc_sets: dict[frozenset[str], frozenset[str]] = {}
        self._routes: dict[str, dict[str, str]] = {}
        #: the object switches' shared cost table (source DC ID -> DC ID -> µs, §3.5) and
        #: its rows changed since the last flush (None: removed)
        self.dc_costs: dict[int, dict[int, int]] = {}
        self._costs_pending: dict[int, dict[int, int] | None] = {}
        #: the object switches' shared policies (objects not under ``nearest``) and changes
        self.policies: dict[str, str] = {}
        self._policies_pending: dict[str, str | None] = {}
        #: spill-over (§3.5): the demand per object and source DC ID (new flows per second,
        #: ``demand_changed``), the accept fractions planned from it and their changes
        self.demand: dict[str, dict[int, float]] = {}
        self.spill: dict[str, Spill] = {}
        #: the object switches' reports of it, summed (``Demand``)
        self.measured = DemandBook(self.spill.__contains__, self.dc_costs)
        self._spill_pending: dict[str, Spill | None] = {}
        # A starting controller (restored from its store: a million objects, perhaps) computes
        # every object once, straight into tables no switch holds yet -- each gets them whole
        # when it connects -- so nothing is pending after this.
        self._load_objects()
        self.routes_changed()
        for name in registry.hosts:
            self._host_routes(name)
        for node, address in registry.addresses.items():
            self.address_changed(node, address)
        self._forget_pending()

    # -- queries -----------------------------------------------------------------------------

    def role(self, node: str) -> str:
        """``node``'s switch role, or "" if it is not a switch."""
        state = self.switches.get(node)
        return state.role if state is not None else ""

    def neighbours(self, node: str) -> set[str]:
        """The nodes linked to ``node``: topology links, and hosts attached to it now."""
        out = set(self._links.get(node, ()))
        for record in self.registry.attached.get(node, ()):
            out.add(record)
        if node in self.registry.hosts:
            out.add(self.registry.hosts[node].gateway)
        return out

    def pending(self) -> bool:
        """Changes wait to be sent (the next ``flush`` sends them)."""
        return (
            bool(self.wide.pending)
            or bool(self._costs_pending)
            or bool(self._policies_pending)
            or bool(self._spill_pending)
            or bool(self._touched_local)
            or bool(self._changes)
            or self._syncs
        )

    def version_for(self, node: str) -> int:
        """The version of ``node``'s tables that holds everything the controller knows now:
        its current one, or the next if something for it waits to be sent."""
        state = self.switches[node]
        waiting = state.needs_sync or node in self._changes
        if state.role == "object-switch":
            waiting = (
                waiting
                or bool(self.wide.pending)
                or bool(self._costs_pending)
                or bool(self._policies_pending)
                or bool(self._spill_pending)
                or state.dc in self._touched_local
            )
        return state.version + 1 if waiting and state.connected else state.version

    def desired(self, switch: str) -> SwitchTables:
        """``switch``'s whole tables as the controller holds them now (what a sync sends)."""
        return _merge(list(self._sync_parts(switch, budget=None)))

    # -- changes -----------------------------------------------------------------------------

    def object_changed(self, key: str) -> None:
        """Recompute object ``key``'s entries (its replicas, their liveness or drain state)."""
        reg = self.registry
        replicas = reg.objects.get(key)
        wide, local = self._entries(key, replicas)
        registered = replicas is not None
        if key in self.policies or key in reg.policies:
            policy = reg.policies.get(key) if registered else None
            if self.policies.get(key) != policy:
                if policy is None:
                    del self.policies[key]
                else:
                    self.policies[key] = policy
                self._policies_pending[key] = policy
        self.wide.set(key, wide or None, registered=registered)
        if key in self.spill or key in reg.capacities:  # else it has no spill entry, before or now
            self._plan_spill(key, wide)
        before = self._object_dcs.get(key)
        dcs = frozenset(local)
        now = self._dc_sets.setdefault(dcs, dcs)  # interned
        for dc in now if before is None else before | now:
            self._touched_local.add(dc)
            self.local[dc].set(key, local.get(dc), registered=registered and dc in now)
        if now:
            self._object_dcs[key] = now
        elif before is not None:
            del self._object_dcs[key]

    def _entries(self, key: str, replicas: dict[str, int] | None) -> tuple[Replicas, dict[str, Replicas]]:
        """Object ``key``'s ``wide`` entry (DC ID -> the weights of its live replicas there)
        and its ``local`` entry in each DC that has one (Host ID -> weight), interned."""
        if not replicas:
            return (), {}
        reg = self.registry
        if len(replicas) == 1:  # most objects: no sums, no sorting
            for host_name, weight in replicas.items():
                record = reg.hosts[host_name]
                if not record.alive or (reg.draining and key in reg.draining.get(host_name, ())):
                    return (), {}
                dc_id = reg.dc_ids[record.dc]
                return _intern(((dc_id, weight),)), {record.dc: _intern(((record.host_id, weight),))}
        per_dc: dict[int, int] = {}
        members: dict[str, list[tuple[int, int]]] = {}
        for host_name, weight in replicas.items():
            record = reg.hosts[host_name]
            if not record.alive or key in reg.draining.get(host_name, ()):
                continue
            dc_id = reg.dc_ids[record.dc]
            per_dc[dc_id] = per_dc.get(dc_id, 0) + weight
            members.setdefault(record.dc, []).append((record.host_id, weight))
        local = {dc: _intern(tuple(sorted(m))) for dc, m in members.items()}
        return _intern(tuple(sorted(per_dc.items()))), local

    def _load_objects(self) -> None:
        """Every registered object's entries, each computed once, into the empty tables of a
        starting controller (``GroupedTable.load``: no pending changes). Objects on the same
        replicas share their entries: they are computed once per replica set."""
        reg = self.registry
        wide: list[tuple[str, Replicas | None]] = []
        local: dict[str, list[tuple[str, Replicas | None]]] = {dc: [] for dc in self.local}
        drained = set().union(*reg.draining.values())  # their entries depend on the object
        computed: dict[tuple[tuple[str, int], ...], tuple[Replicas, dict[str, Replicas], frozenset[str]]] = {}
        dc_sets, object_dcs = self._dc_sets, self._object_dcs
        for key, replicas in reg.objects.items():
            members = tuple(replicas.items())
            found = None if key in drained else computed.get(members)
            if found is None:
                entry, here = self._entries(key, replicas)
                dcs = frozenset(here)
                found = (entry, here, dc_sets.setdefault(dcs, dcs))
                if key not in drained:
                    computed[members] = found
            entry, here, dcs = found
            wide.append((key, entry or None))
            for dc, value in here.items():
                local[dc].append((key, value))
            if dcs:
                object_dcs[key] = dcs
        self.wide.load(wide)
        for dc, entries in local.items():
            self.local[dc].load(entries)
        self.policies = {key: policy for key, policy in reg.policies.items() if key in reg.objects}
        for key in reg.capacities:
            if key in reg.objects:
                self._plan_spill(key, self._entries(key, reg.objects[key])[0])

    def _forget_pending(self) -> None:
        """Drop every pending change: no switch is connected (each gets a full sync when it
        connects)."""
        self.wide.take_pending()
        for table in self.local.values():
            table.take_pending()
        self._touched_local.clear()
        self._costs_pending.clear()
        self._policies_pending.clear()
        self._spill_pending.clear()
        self._changes.clear()

    def host_changed(self, name: str) -> None:
        """Recompute host ``name``'s routes (alive, DC, gateway, previous DCs) and the entries
        of every object it serves."""
        self._host_routes(name)
        for key in self.registry.host_objects.get(name, ()):
            self.object_changed(key)

    def _host_routes(self, name: str) -> None:
        reg = self.registry
        record = reg.hosts.get(name)
        before = self._host_at.get(name)
        dcs: set[str] = set()
        if before is not None:
            dcs.add(before[0])
            dcs |= before[2]
        if record is not None:
            dcs.add(record.dc)
            dcs |= record.previous_dcs
            self._host_at[name] = (record.dc, record.gateway, frozenset(record.previous_dcs))
            host_id = record.host_id
        else:
            # Forgotten: its gateway stops watching it, its address goes.
            gone = self._host_at.pop(name, None)
            if gone is not None and gone[1] in self.flow:
                self._set_flow(gone[1], "attached", name, None)
                self._set_peer(gone[1], name, None)
            return
        for dc_name in dcs:
            dc = self._dcs.get(dc_name)
            if dc is None:
                continue
            for fs in dc.flow_switches:
                self._set_flow(fs, "host_routes", host_id, self._host_route(record, fs, dc))
                self._set_flow(fs, "moved_hosts", host_id, self._moved(record, dc))
        if before is not None and before[1] != record.gateway and before[1] in self.flow:
            self._set_flow(before[1], "attached", name, None)
        if record.gateway in self.flow:
            self._set_flow(record.gateway, "attached", name, host_id)
        address = reg.addresses.get(name)
        if address is not None and record.gateway in self.peers:
            self._set_peer(record.gateway, name, address)  # its gateway reaches it there

    def routes_changed(self) -> None:
        """Recompute DC routes (a backbone link went down or up)."""
        reg = self.registry
        edges = [
            (l.a, l.b, l.delay or 1e-6)
            for l in reg.topology.backbone
            if reg.links_up.get(frozenset((l.a, l.b)), True)
        ]
        self._routes, dist = shortest_paths(reg.dc_ids, edges)
        self._costs_changed(dist)
        for dc in self._dcs.values():
            routes = self._routes.get(dc.name, {})
            for fs in dc.flow_switches:
                want = {
                    reg.dc_ids[other]: self._dcs[via].border if fs == dc.border else dc.border
                    for other, via in routes.items()
                }
                if not self.switches[fs].connected:
                    self.flow[fs].dc_routes = want  # it gets them all when it connects
                    continue
                have = self.flow[fs].dc_routes
                for dc_id in have.keys() - want.keys():
                    self._set_flow(fs, "dc_routes", dc_id, None)
                for dc_id, hop in want.items():
                    self._set_flow(fs, "dc_routes", dc_id, hop)

    def demand_reported(self, switch: str, report: Demand) -> None:
        """Object switch ``switch`` counted first packets (``Demand``): replan the objects
        whose summed demand moved (``demand.py``)."""
        for key, rates in self.measured.report(switch, report).items():
            self.demand_changed(key, rates)

    def switch_lost(self, switch: str) -> None:
        """``switch``'s control connection closed: its share of the demand goes."""
        for key, rates in self.measured.forget(switch).items():
            self.demand_changed(key, rates)

    def demand_changed(self, key: str, rates: dict[int, float]) -> None:
        """New flows per second to object ``key`` from each source DC ID: the spill-over
        plan of an object whose replicas declare capacities follows it (§3.5)."""
        if rates:
            self.demand[key] = dict(rates)
        else:
            self.demand.pop(key, None)
        self.object_changed(key)

    def _plan_spill(self, key: str, members: tuple[tuple[int, int], ...]) -> None:
        """Recompute ``key``'s spill entry: present (so object switches count its demand)
        when a live replica declares a capacity under ``nearest``; its accept fractions
        planned from the demand once there is some. A DC whose live replicas all declare a
        capacity takes at most their sum; the others take everything offered."""
        reg = self.registry
        declared = reg.capacities.get(key, {})
        plan: Spill | None = None
        if declared and members and reg.policies.get(key) != "weighted":
            caps: dict[int, float] = {}
            unlimited: set[int] = set()
            for host, _ in (reg.objects.get(key) or {}).items():
                record = reg.hosts[host]
                if not record.alive or key in reg.draining.get(host, ()):
                    continue
                dc_id = reg.dc_ids[record.dc]
                if declared.get(host, 0.0) > 0:
                    caps[dc_id] = caps.get(dc_id, 0.0) + declared[host]
                else:
                    unlimited.add(dc_id)
            limited = {dc: cap for dc, cap in caps.items() if dc not in unlimited}
            if limited:
                demand = self.demand.get(key)
                plan = plan_accept(members, limited, demand, self.dc_costs) if demand else ()
        if self.spill.get(key) != plan:
            if plan is None:
                del self.spill[key]
                self.demand.pop(key, None)  # no longer counted: what was measured is stale
                self.measured.published.pop(key, None)
            else:
                self.spill[key] = plan
            self._spill_pending[key] = plan

    def _costs_changed(self, dist: dict[str, dict[str, float]]) -> None:
        """Keep the shared cost table in step with the routes; only changed rows go out."""
        ids = self.registry.dc_ids
        want = {
            ids[src]: {ids[dst]: max(0, round(cost * 1e6)) for dst, cost in row.items()}
            for src, row in dist.items()
            if src in ids
        }
        for src in self.dc_costs.keys() - want.keys():
            del self.dc_costs[src]
            self._costs_pending[src] = None
        changed = False
        for src, row in want.items():
            if self.dc_costs.get(src) != row:
                self.dc_costs[src] = row
                self._costs_pending[src] = row
                changed = True
        if changed:
            for key in list(self.registry.capacities):  # the plans read the costs
                self.object_changed(key)

    def address_changed(self, node: str, address: tuple[str, int] | None) -> None:
        """Node ``node`` is reachable at ``address`` now: its neighbour switches learn it."""
        for switch in self.neighbours(node):
            if switch in self.peers:
                self._set_peer(switch, node, address)

    def attachment_changed(self, host: str, old_gateway: str | None) -> None:
        """Host ``host`` hangs off another gateway now: the old one forgets its address."""
        if old_gateway in self.peers and host not in self._links.get(old_gateway, ()):
            self._set_peer(old_gateway, host, None)
        self.address_changed(host, self.registry.addresses.get(host))

    # -- records -----------------------------------------------------------------------------

    def sync(self, node: str) -> None:
        """Send ``node`` its whole tables at the next flush."""
        self.switches[node].needs_sync = True
        self._syncs = True

    def flush(self) -> None:
        """Send what changed: a sync to each switch that needs one, one delta (in parts) to
        every other connected switch whose tables changed.

        The ``wide`` changes are the same for every object switch: their parts are built and
        encoded once (``msgspec.Raw``), and each object switch's delta is those parts plus
        its own (its DC's ``local``, its ``peers``) -- so a burst costs the size of its
        changes once, plus a little per switch, not its size times the switches.
        """
        wide = self.wide.take_pending()
        dc_costs, self._costs_pending = self._costs_pending, {}
        policies, self._policies_pending = self._policies_pending, {}
        spill, self._spill_pending = self._spill_pending, {}
        local = {dc: self.local[dc].take_pending() for dc in self._touched_local}
        self._touched_local = set()
        self._syncs = False
        changes, self._changes = self._changes, {}
        shared: list[tuple[SwitchTables, TableKeys]] | None = None
        for node, state in self.switches.items():
            if not state.connected:
                state.needs_sync = False
                continue
            if state.needs_sync:
                state.needs_sync = False
                self._send_sync(node, state)
                continue
            own = changes.get(node)
            if state.role == "object-switch":
                if shared is None:
                    shared = [
                        _raw(upsert, remove)
                        for upsert, remove in _delta_parts(
                            wide, None, None, {"dc_costs": dc_costs, "policies": policies, "spill": spill}
                        )
                    ]
                mine = local.get(state.dc)
                # Most object switches get the shared parts alone (a burst touches a few
                # DCs' ``local``): no parts of their own to build.
                parts = shared if not mine and own is None else shared + _delta_parts(None, mine, own)
            elif own is not None:
                parts = _delta_parts(None, None, own)
            else:
                continue
            if not parts:
                continue
            state.version += 1
            last = len(parts) - 1
            self._out.extend(
                (node, control.TableDelta(state.version, upsert, remove, k < last))
                for k, (upsert, remove) in enumerate(parts)
            )

    def _send_sync(self, node: str, state: SwitchState) -> None:
        state.version += 1
        dc_id = self.registry.dc_ids[state.dc]
        parts = list(self._sync_parts(node, budget=RECORD_BUDGET)) or [SwitchTables()]
        for k, tables in enumerate(parts):
            more = k < len(parts) - 1
            self._out.append((node, control.TableSync(state.version, dc_id, tables, more)))

    def _sync_parts(self, node: str, budget: int | None) -> Iterator[SwitchTables]:
        state = self.switches[node]
        dc = self._dcs[state.dc]
        peers = dict(self.peers[node])
        if state.role == "object-switch":
            head = SwitchTables(gateway=dc.border, peers=peers)
            yield from _chunks(
                head,
                {
                    "wide": self.wide.exact,
                    "prefixes": self.wide.rules,
                    "local": self.local[dc.name].exact,
                    "local_prefixes": self.local[dc.name].rules,
                    "dc_costs": self.dc_costs,
                    "policies": self.policies,
                    "spill": self.spill,
                },
                budget,
            )
            return
        flow = self.flow[node]
        head = SwitchTables(
            dc_routes=dict(flow.dc_routes),
            moved_hosts=dict(flow.moved_hosts),
            object_switch=flow.object_switch,
            presence_timeout=self.presence_timeout,
            peers=peers,
        )
        yield from _chunks(head, {"host_routes": flow.host_routes, "attached": flow.attached}, budget)

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _host_route(record: HostRecord, switch: str, dc: DatacenterSpec) -> str | None:
        if not record.alive or record.dc != dc.name:
            return None
        if record.gateway == switch:
            return record.name
        return record.gateway if switch == dc.border else dc.border

    def _moved(self, record: HostRecord, dc: DatacenterSpec) -> int | None:
        # A host that left this DC (VM migration, mobility): packets still naming this DC
        # are corrected in flight and their senders told to refine (docs/protocol.md §5.3).
        if record.alive and record.dc != dc.name and dc.name in record.previous_dcs:
            return self.registry.dc_ids[record.dc]
        return None

    def _set_flow(self, switch: str, table: str, key: int | str, value: Any) -> None:
        tables: dict[int | str, Any] = getattr(self.flow[switch], table)
        if tables.get(key) == value:
            return
        if value is None:
            del tables[key]
        else:
            tables[key] = value
        if self.switches[switch].connected:  # else it gets its whole tables when it connects
            self._changes.setdefault(switch, _Changes()).put(table, key, value)

    def _set_peer(self, switch: str, node: str, address: tuple[str, int] | None) -> None:
        peers = self.peers[switch]
        if peers.get(node) == address:
            return
        if address is None:
            peers.pop(node, None)
        else:
            peers[node] = address
        if self.switches[switch].connected:
            self._changes.setdefault(switch, _Changes()).put("peers", node, address)


_interned: dict[Replicas, Replicas] = {}


def _intern(value: Replicas) -> Replicas:
    """One shared tuple per distinct replica set (a million objects on the same replicas
    cost one set), so the controller's memory follows objects, not objects x members."""
    found = _interned.get(value)
    if found is None:
        if len(_interned) > 1_000_000:
            _interned.clear()  # a bound; only sharing is lost
        found = _interned[value] = value
    return found


def _cost(value: object) -> int:
    # a replica set's members, or a cost row's destinations
    return _ENTRY_BYTES + (_MEMBER_BYTES * len(value) if isinstance(value, tuple | dict) else 0)


def _chunks(
    head: SwitchTables, tables: dict[str, dict[Any, Any]], budget: int | None
) -> Iterator[SwitchTables]:
    """``head`` plus ``tables`` cut into ``SwitchTables`` of at most ``budget`` bytes."""
    part: dict[str, dict[Any, Any]] = {}
    size = 0
    first = True
    for name, table in tables.items():
        for key, value in table.items():
            cost = _cost(value)
            if budget is not None and size + cost > budget and size:
                yield _part(head if first else None, part)
                first, part, size = False, {}, 0
            part.setdefault(name, {})[key] = value
            size += cost
    if part or first:
        yield _part(head if first else None, part)


def _part(head: SwitchTables | None, tables: dict[str, dict[Any, Any]]) -> SwitchTables:
    if head is None:
        return SwitchTables(**tables)  # type: ignore[arg-type]
    return SwitchTables(
        dc_routes=head.dc_routes,
        moved_hosts=head.moved_hosts,
        object_switch=head.object_switch,
        presence_timeout=head.presence_timeout,
        gateway=head.gateway,
        peers=head.peers,
        **tables,
    )


def _delta_parts(
    wide: Pending | None,
    local: Pending | None,
    own: _Changes | None,
    shared: dict[str, dict[Any, Any]] | None = None,
) -> list[tuple[SwitchTables, TableKeys]]:
    """One switch's delta, cut into parts of at most ``RECORD_BUDGET`` bytes; ``shared``:
    more tables every object switch gets alike (the cost table, policies)."""
    sources: list[tuple[str, dict[Any, Any]]] = [(n, t) for n, t in (shared or {}).items() if t]
    if wide is not None:
        sources += [("wide", wide.exact), ("prefixes", wide.rules)]
    if local is not None:
        sources += [("local", local.exact), ("local_prefixes", local.rules)]
    if own is not None:
        sources += own.tables.items()
    parts: list[tuple[SwitchTables, TableKeys]] = []
    upsert: dict[str, dict[Any, Any]] = {}
    remove: dict[str, list[Any]] = {}
    size = 0
    for name, table in sources:
        if not table:
            continue
        ups: dict[Any, Any] | None = None
        rms: list[Any] | None = None
        for key, value in table.items():
            cost = _cost(value)
            if size + cost > RECORD_BUDGET and size:
                parts.append((SwitchTables(**upsert), TableKeys(**remove)))  # type: ignore[arg-type]
                upsert, remove, size, ups, rms = {}, {}, 0, None, None
            if value is None:
                if rms is None:
                    rms = remove[name] = []
                rms.append(key)
            else:
                if ups is None:
                    ups = upsert[name] = {}
                ups[key] = value
            size += cost
    if upsert or remove:
        parts.append((SwitchTables(**upsert), TableKeys(**remove)))  # type: ignore[arg-type]
    return parts


def _raw(upsert: SwitchTables, remove: TableKeys) -> tuple[SwitchTables, TableKeys]:
    """A part encoded once, to be embedded as it is in the records of many switches (the
    decoder on the other side sees ordinary tables)."""
    encoded = (msgspec.Raw(control.encode_value(upsert)), msgspec.Raw(control.encode_value(remove)))
    return cast(tuple[SwitchTables, TableKeys], encoded)


def _merge(parts: list[SwitchTables]) -> SwitchTables:
    """The parts of one sync as one ``SwitchTables`` (for tests and ``desired``)."""
    merged: dict[str, Any] = {}
    for part in parts:
        for name in part.__struct_fields__:
            value = getattr(part, name)
            if isinstance(value, dict):
                merged.setdefault(name, {}).update(value)
            elif value:
                merged[name] = value
    return SwitchTables(**merged)
