"""Every switch's tables, kept incrementally, and the records that bring switches there
(docs/protocol.md §6.2).

The controller holds each switch's tables once, as the canonical tables every synchronized
switch also holds: the object switches' ``wide`` (shared by all) and each DC's ``local``
(``incremental.py``), the shared cost table, policies and spill plans here, each flow
switch's routes and every switch's ``peers`` in the ``SwitchBook`` (``switches.py``). A change
marks what it touches -- an object, a host, the routes, a node's address -- and only those
entries are recomputed (``object_changed``, ``host_changed``, ``routes_changed``,
``address_changed``; the entries themselves come from ``entries.py``); the difference
accumulates as pending. Pending changes are *coalesced*: ``flush`` (called by the controller
``COALESCE`` seconds after the first change, or at once when asked) sends each connected
switch one ``TableDelta`` with everything that changed for it, and a switch that connected, or
asked, one ``TableSync`` -- each cut into parts of at most ``RECORD_BUDGET`` bytes
(``records.py``), which the switch applies at once when the last part is in. A change
therefore costs what it touches, never the number of objects, hosts or switches.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...wire import control
from ...wire.control import RECORD_BUDGET, ControlMessage, Demand, Replicas, SwitchTables, TableKeys
from ..locality import Spill
from ..routing import shortest_paths
from ..topology import DatacenterSpec
from .demand import DemandBook
from .entries import cost_rows, host_route, moved_to, object_entries, spill_plan
from .incremental import GroupedTable
from .records import delta_parts, encode_once, merge, sync_parts
from .registry import Registry
from .switches import FlowTables, SwitchBook, SwitchState

__all__ = ["COALESCE", "FlowTables", "SwitchState", "Tables"]

#: how long changes are gathered into one delta per switch (seconds)
COALESCE = 0.01


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
        #: each switch's state, its own tables and changes; the same dicts here, for short
        self.book = SwitchBook(topo)
        self.switches: dict[str, SwitchState] = self.book.switches
        self.flow: dict[str, FlowTables] = self.book.flow
        self.peers: dict[str, dict[str, tuple[str, int]]] = self.book.peers
        self.wide = GroupedTable()
        self.local: dict[str, GroupedTable] = {dc.name: GroupedTable() for dc in topo.datacenters}
        #: DCs whose ``local`` has pending changes
        self._touched_local: set[str] = set()
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
        out = set(self.book.links.get(node, ()))
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
            or bool(self.book.changes)
            or self.book.syncs
        )

    def version_for(self, node: str) -> int:
        """The version of ``node``'s tables that holds everything the controller knows now:
        its current one, or the next if something for it waits to be sent."""
        state = self.switches[node]
        waiting = state.needs_sync or node in self.book.changes
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
        return merge(list(self._sync_parts(switch, budget=None)))

    # -- changes -----------------------------------------------------------------------------

    def object_changed(self, key: str) -> None:
        """Recompute object ``key``'s entries (its replicas, their liveness or drain state)."""
        reg = self.registry
        replicas = reg.objects.get(key)
        wide, local = object_entries(reg, key, replicas)
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
                entry, here = object_entries(reg, key, replicas)
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
                self._plan_spill(key, object_entries(reg, key, reg.objects[key])[0])

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
        self.book.changes.clear()

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
                self.book.set_flow(gone[1], "attached", name, None)
                self.book.set_peer(gone[1], name, None)
            return
        for dc_name in dcs:
            dc = self._dcs.get(dc_name)
            if dc is None:
                continue
            for fs in dc.flow_switches:
                self.book.set_flow(fs, "host_routes", host_id, host_route(record, fs, dc))
                self.book.set_flow(fs, "moved_hosts", host_id, moved_to(reg, record, dc))
        if before is not None and before[1] != record.gateway and before[1] in self.flow:
            self.book.set_flow(before[1], "attached", name, None)
        if record.gateway in self.flow:
            self.book.set_flow(record.gateway, "attached", name, host_id)
        address = reg.addresses.get(name)
        if address is not None and record.gateway in self.peers:
            self.book.set_peer(record.gateway, name, address)  # its gateway reaches it there

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
                    self.book.set_flow(fs, "dc_routes", dc_id, None)
                for dc_id, hop in want.items():
                    self.book.set_flow(fs, "dc_routes", dc_id, hop)

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

    def _plan_spill(self, key: str, members: Replicas) -> None:
        """Recompute ``key``'s spill entry (``entries.spill_plan``) and mark it if it moved."""
        plan = spill_plan(self.registry, key, members, self.demand.get(key), self.dc_costs)
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
        want = cost_rows(self.registry.dc_ids, dist)
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
                self.book.set_peer(switch, node, address)

    def attachment_changed(self, host: str, old_gateway: str | None) -> None:
        """Host ``host`` hangs off another gateway now: the old one forgets its address."""
        if old_gateway in self.peers and host not in self.book.links.get(old_gateway, ()):
            self.book.set_peer(old_gateway, host, None)
        self.address_changed(host, self.registry.addresses.get(host))

    # -- records -----------------------------------------------------------------------------

    def sync(self, node: str) -> None:
        """Send ``node`` its whole tables at the next flush."""
        self.book.sync(node)

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
        changes = self.book.take_changes()
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
                        encode_once(upsert, remove)
                        for upsert, remove in delta_parts(
                            wide, None, None, {"dc_costs": dc_costs, "policies": policies, "spill": spill}
                        )
                    ]
                mine = local.get(state.dc)
                # Most object switches get the shared parts alone (a burst touches a few
                # DCs' ``local``): no parts of their own to build.
                parts = shared if not mine and own is None else shared + delta_parts(None, mine, own)
            elif own is not None:
                parts = delta_parts(None, None, own)
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
            yield from sync_parts(
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
        yield from sync_parts(head, {"host_routes": flow.host_routes, "attached": flow.attached}, budget)
