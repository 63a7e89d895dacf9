"""What a switch's tables say about one object, one host or one DC, derived from the
registry: an object's ``wide`` and ``local`` entries (live replicas that are not draining,
§6.2) and its spill-over plan (§3.5), a host's route and ``moved_hosts`` entry at one flow
switch (§6.2, §5.3), the cost table's rows (§3.5). Pure functions; ``tables.py`` keeps what
they return and marks what changed (docs/protocol.md §6.2).
"""

from __future__ import annotations

from ...wire.control import Replicas
from ..locality import Spill, plan_accept
from ..topology import DatacenterSpec
from .registry import Registry
from .state import HostRecord

__all__ = ["cost_rows", "host_route", "intern", "moved_to", "object_entries", "spill_plan"]


_interned: dict[Replicas, Replicas] = {}


def intern(value: Replicas) -> Replicas:
    """One shared tuple per distinct replica set (a million objects on the same replicas
    cost one set), so the controller's memory follows objects, not objects x members."""
    found = _interned.get(value)
    if found is None:
        if len(_interned) > 1_000_000:
            _interned.clear()  # a bound; only sharing is lost
        found = _interned[value] = value
    return found


def object_entries(
    reg: Registry, key: str, replicas: dict[str, int] | None
) -> tuple[Replicas, dict[str, Replicas]]:
    """Object ``key``'s ``wide`` entry (DC ID -> the weights of its live replicas there) and
    its ``local`` entry in each DC that has one (Host ID -> weight), interned."""
    if not replicas:
        return (), {}
    if len(replicas) == 1:  # most objects: no sums, no sorting
        for host_name, weight in replicas.items():
            record = reg.hosts[host_name]
            if not record.alive or (reg.draining and key in reg.draining.get(host_name, ())):
                return (), {}
            dc_id = reg.dc_ids[record.dc]
            return intern(((dc_id, weight),)), {record.dc: intern(((record.host_id, weight),))}
    per_dc: dict[int, int] = {}
    members: dict[str, list[tuple[int, int]]] = {}
    for host_name, weight in replicas.items():
        record = reg.hosts[host_name]
        if not record.alive or key in reg.draining.get(host_name, ()):
            continue
        dc_id = reg.dc_ids[record.dc]
        per_dc[dc_id] = per_dc.get(dc_id, 0) + weight
        members.setdefault(record.dc, []).append((record.host_id, weight))
    local = {dc: intern(tuple(sorted(m))) for dc, m in members.items()}
    return intern(tuple(sorted(per_dc.items()))), local


def spill_plan(
    reg: Registry,
    key: str,
    members: Replicas,
    demand: dict[int, float] | None,
    dc_costs: dict[int, dict[int, int]],
) -> Spill | None:
    """Object ``key``'s spill entry (§3.5): present (so object switches count its demand)
    when a live replica declares a capacity under ``nearest``; its accept fractions planned
    from ``demand`` once there is some. A DC whose live replicas all declare a capacity takes
    at most their sum; the others take everything offered. ``members``: its ``wide`` entry."""
    declared = reg.capacities.get(key, {})
    if not declared or not members or reg.policies.get(key) == "weighted":
        return None
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
    if not limited:
        return None
    return plan_accept(members, limited, demand, dc_costs) if demand else ()


def host_route(record: HostRecord, switch: str, dc: DatacenterSpec) -> str | None:
    """Flow switch ``switch`` (of ``dc``)'s ``host_routes`` entry for the host: the host
    itself if attached there, else its gateway (border) or the border (edge); None when it
    is dead or elsewhere (§6.2)."""
    if not record.alive or record.dc != dc.name:
        return None
    if record.gateway == switch:
        return record.name
    return record.gateway if switch == dc.border else dc.border


def moved_to(reg: Registry, record: HostRecord, dc: DatacenterSpec) -> int | None:
    """``dc``'s ``moved_hosts`` entry for the host: the DC ID it lives in now, if it left
    ``dc`` (VM migration, mobility). Packets still naming ``dc`` are corrected in flight and
    their senders told to refine (§5.3)."""
    if record.alive and record.dc != dc.name and dc.name in record.previous_dcs:
        return reg.dc_ids[record.dc]
    return None


def cost_rows(dc_ids: dict[str, int], dist: dict[str, dict[str, float]]) -> dict[int, dict[int, int]]:
    """The shared cost table (source DC ID -> DC ID -> µs, §3.5) from the route distances
    (seconds)."""
    return {
        dc_ids[src]: {dc_ids[dst]: max(0, round(cost * 1e6)) for dst, cost in row.items()}
        for src, row in dist.items()
        if src in dc_ids
    }
