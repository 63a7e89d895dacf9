"""The switches' tables computed from scratch over the whole controller state: the oracle
that the incremental tables (``core/controller/tables.py``) must always agree with."""

from __future__ import annotations

from scaffold.core.controller import Controller
from scaffold.core.routing import costs
from scaffold.wire.control import SwitchTables


def full_tables(ctl: Controller, switch: str) -> SwitchTables:
    """What ``switch``'s tables must be, from every host and object (no owner-prefix rules)."""
    reg = ctl.registry
    state = ctl.switches[switch]
    dc = reg.topology.datacenter(state.dc)
    border = dc.border
    peers = {n: reg.addresses[n] for n in ctl.tables.neighbours(switch) if n in reg.addresses}
    if state.role == "object-switch":
        wide: dict[str, tuple[tuple[int, int], ...]] = {}
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
                wide[obj] = tuple(sorted(per_dc.items()))
        local_sorted = {k: tuple(sorted(v)) for k, v in local.items()}
        return SwitchTables(
            wide=wide, local=local_sorted, gateway=border, peers=peers, dc_costs=dc_costs(ctl)
        )
    dc_routes: dict[int, str] = {}
    for other, via in ctl.tables._routes.get(dc.name, {}).items():
        dc_routes[reg.dc_ids[other]] = reg.topology.datacenter(via).border if switch == border else border
    host_routes: dict[int, str] = {}
    for record in reg.hosts.values():
        if record.alive and record.dc == dc.name:
            if record.gateway == switch:
                host_routes[record.host_id] = record.name
            else:
                host_routes[record.host_id] = record.gateway if switch == border else border
    moved_hosts = {
        r.host_id: reg.dc_ids[r.dc]
        for r in reg.hosts.values()
        if r.alive and r.dc != dc.name and dc.name in r.previous_dcs
    }
    return SwitchTables(
        dc_routes=dc_routes,
        host_routes=host_routes,
        moved_hosts=moved_hosts,
        attached={r.name: r.host_id for r in reg.hosts.values() if r.gateway == switch},
        presence_timeout=ctl.tables.presence_timeout,
        object_switch=dc.object_switch if switch == border else border,
        peers=peers,
    )


def dc_costs(ctl: Controller) -> dict[int, dict[int, int]]:
    """Route costs between DCs (µs) over the backbone links that are up (docs/protocol.md §3.5)."""
    reg = ctl.registry
    edges = [
        (link.a, link.b, link.delay or 1e-6)
        for link in reg.topology.backbone
        if reg.links_up.get(frozenset((link.a, link.b)), True)
    ]
    ids = reg.dc_ids
    return {
        ids[a]: {ids[b]: round(cost * 1e6) for b, cost in row.items()} for a, row in costs(ids, edges).items()
    }
