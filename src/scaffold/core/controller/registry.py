"""What the controller knows: hosts and their Host IDs, objects and their replicas, drains,
backbone link states and the operator's allow/disallow rules -- and which durable rows of it
changed (docs/protocol.md §6.2, §6.4, §6.7).

Every change to durable state goes through a method here that marks the row it touched, so
``state_changes()`` can say exactly which rows to upsert or delete, without a diff of the
whole state. ``restore`` takes a saved ``ControllerState`` back in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from ...errors import UsageError
from ...ids import ObjectId
from ..topology import Topology
from .state import (
    Address,
    AllowRule,
    BackboneLink,
    ControllerState,
    DrainingObjects,
    HostIdCounter,
    HostRecord,
    HostState,
    ObjectName,
    ObjectReplicas,
    StateChange,
    StateRecord,
)

__all__ = ["Registry", "Watcher", "is_object_hex"]


class Watcher(Protocol):
    """What follows the registry's changes (the tables, ``tables.py``)."""

    def object_changed(self, key: str) -> None: ...

    def host_changed(self, name: str) -> None: ...

    def routes_changed(self) -> None: ...

    def address_changed(self, node: str, address: Address | None) -> None: ...

    def attachment_changed(self, host: str, old_gateway: str | None) -> None: ...


class Registry:
    """Hosts, objects, drains and backbone links, and the durable rows that changed."""

    def __init__(self, topology: Topology, saved: ControllerState | None, drops: Counter[str]) -> None:
        self.topology = topology
        self.dc_ids = {dc.name: i + 1 for i, dc in enumerate(topology.datacenters)}
        self.hosts: dict[str, HostRecord] = {}
        self.next_host_id = 1
        #: object hex -> {host name: weight}
        self.objects: dict[str, dict[str, int]] = {}
        #: Object ID hex -> resolution policy, for objects not under ``nearest`` (§3.5)
        self.policies: dict[str, str] = {}
        #: Object ID hex -> {host name: new flows per second it takes} (§3.5)
        self.capacities: dict[str, dict[str, float]] = {}
        #: Object ID hex -> {host name: Unix time its owner's grant expires} (§6.7)
        self.grant_expiry: dict[str, dict[str, float]] = {}
        self.object_names: dict[str, str] = {}
        #: host -> objects (hex) it is draining: no new flows go there
        self.draining: dict[str, set[str]] = {}
        self.links_up: dict[frozenset[str], bool] = {frozenset((l.a, l.b)): True for l in topology.backbone}
        #: the operator's allow/disallow rules: (object hex, where) -> allowed (§6.7)
        self.allow_rules: dict[tuple[str, str], bool] = {}
        #: every node's data-plane address, from its Hello
        self.addresses: dict[str, Address] = {}
        #: indexes, so that no change walks every host or object
        self.host_objects: dict[str, set[str]] = {}
        self.attached: dict[str, set[str]] = {}
        self._by_host_id: dict[int, str] = {}
        self._by_name: dict[str, str] = {}
        #: told of every change (set by the tables once they are built)
        self.watcher: Watcher | None = None
        self.restored = False
        #: durable rows touched since the last ``state_changes()``, in order
        self._dirty: dict[tuple[str, str], None] = {}
        # The first changes are what differs from the saved state: every row for a new
        # controller; for a restored one, what the topology added and what it could not take
        # back (unknown gateways, links, replicas of skipped hosts: deleted), marked as they
        # are found -- nothing else, and no walk comparing every row.
        if saved is not None:
            self._restore(saved, drops)
        for spec in topology.hosts():
            self.host_record(spec.name, spec.gateway)
        if saved is None:
            self._dirty = dict.fromkeys(self._row_keys())

    # -- hosts -------------------------------------------------------------------------------

    def host(self, name: str) -> HostRecord:
        """The host called ``name``.

        Raises:
            UsageError: no such host.
        """
        record = self.hosts.get(name)
        if record is None:
            raise UsageError(f"no host named {name!r}")
        return record

    def host_record(self, name: str, gateway: str) -> HostRecord:
        """The record of host ``name``; a new host gets the next Host ID."""
        record = self.hosts.get(name)
        if record is None:
            record = HostRecord(name, self.next_host_id, self.topology.dc_of(gateway), gateway)
            self.next_host_id += 1
            self._add_host(record)
            self._touch(HostIdCounter.kind, "")
            self._touch(HostState.kind, name)
            if self.watcher is not None:
                self.watcher.host_changed(name)
        return record

    def _add_host(self, record: HostRecord) -> None:
        self.hosts[record.name] = record
        self._by_host_id[record.host_id] = record.name
        self.attached.setdefault(record.gateway, set()).add(record.name)

    def attach(self, record: HostRecord, gateway: str) -> None:
        """The host is attached to ``gateway`` now; a DC it left is remembered, so that DC's
        flow switches correct packets still naming it (docs/protocol.md §5.3)."""
        new_dc = self.topology.dc_of(gateway)
        if new_dc != record.dc:
            record.previous_dcs.add(record.dc)
        record.previous_dcs.discard(new_dc)
        old_gateway = record.gateway
        self.attached.get(old_gateway, set()).discard(record.name)
        self.attached.setdefault(gateway, set()).add(record.name)
        record.gateway, record.dc = gateway, new_dc
        self._touch(HostState.kind, record.name)
        if self.watcher is not None:
            self.watcher.host_changed(record.name)
            if old_gateway != gateway:
                self.watcher.attachment_changed(record.name, old_gateway)

    def set_alive(self, record: HostRecord, alive: bool) -> None:
        """The host is up or down now (not durable: liveness is learned again)."""
        if record.alive != alive:
            record.alive = alive
            if self.watcher is not None:
                self.watcher.host_changed(record.name)

    def set_address(self, node: str, address: Address) -> None:
        """Node ``node`` (a switch or a host) is reachable at ``address`` now."""
        if self.addresses.get(node) != address:
            self.addresses[node] = address
            if self.watcher is not None:
                self.watcher.address_changed(node, address)

    def set_host_address(self, record: HostRecord, address: Address) -> None:
        if record.address != address:
            record.address = address
            self._touch(HostState.kind, record.name)

    def forget(self, name: str) -> None:
        """Remove host ``name`` and its replicas and drains (its Host ID is never reused)."""
        record = self.hosts.get(name)
        if record is None:
            return
        for key in list(self.host_objects.get(name, ())):
            self.remove_replica(key, name)
        self.set_alive(record, False)  # its routes go
        del self.hosts[name]
        self._by_host_id.pop(record.host_id, None)
        self.attached.get(record.gateway, set()).discard(name)
        self.addresses.pop(name, None)
        self._touch(HostState.kind, name)
        if self.draining.pop(name, None) is not None:
            self._touch(DrainingObjects.kind, name)
        if self.watcher is not None:
            self.watcher.host_changed(name)  # no longer attached to its gateway

    def host_name(self, host_id: int) -> str | None:
        return self._by_host_id.get(host_id)

    def dc_name(self, dc_id: int) -> str | None:
        for name, value in self.dc_ids.items():
            if value == dc_id:
                return name
        return None

    # -- objects -----------------------------------------------------------------------------

    def object_key(self, ref: str) -> str:
        """The Object ID (hex) of a registered object named by its name, text or hex.

        Raises:
            UsageError: no such object is registered.
        """
        key = self._by_name.get(ref, "")
        if key in self.objects:
            return key
        try:
            key = ObjectId.of(ref).raw.hex() if not is_object_hex(ref) else ref
        except UsageError:
            key = ""
        if key not in self.objects:
            raise UsageError(f"no object {ref!r} is registered")
        return key

    def set_replica(self, key: str, host: str, weight: int) -> None:
        replicas = self.objects.get(key)
        if replicas is None:
            replicas = self.objects[key] = {}
        elif replicas.get(host) == weight:
            return
        replicas[host] = weight
        served = self.host_objects.get(host)
        if served is None:
            served = self.host_objects[host] = set()
        served.add(key)
        self._touch(ObjectReplicas.kind, key)
        if self.watcher is not None:
            self.watcher.object_changed(key)

    def set_capacity(self, key: str, host: str, capacity: float) -> None:
        """Replica ``host`` of ``key`` takes ``capacity`` new flows per second (0: no limit)."""
        caps = self.capacities.get(key, {})
        if caps.get(host, 0.0) == capacity:
            return
        if capacity > 0:
            self.capacities.setdefault(key, {})[host] = capacity
        elif key in self.capacities:
            caps.pop(host, None)
            if not caps:
                del self.capacities[key]
        self._touch(ObjectReplicas.kind, key)
        if self.watcher is not None:
            self.watcher.object_changed(key)

    def set_grant_expiry(self, key: str, host: str, expires: float | None) -> None:
        """Replica ``host`` of ``key`` serves under an owner grant until ``expires`` (Unix
        time; None: no grant). Kept on the object's replicas row, so a restarted or new
        leader withdraws it on time."""
        expiry = self.grant_expiry.get(key, {})
        if expiry.get(host) == expires:
            return
        if expires is not None:
            self.grant_expiry.setdefault(key, {})[host] = expires
        elif key in self.grant_expiry:
            expiry.pop(host, None)
            if not expiry:
                del self.grant_expiry[key]
        self._touch(ObjectReplicas.kind, key)

    def set_policy(self, key: str, policy: str) -> None:
        """Object ``key``'s resolution policy (docs/protocol.md §3.5); "" or ``nearest``: the
        default. Kept on its replicas row, so it goes with the object's last replica."""
        policy = "" if policy == "nearest" else policy
        if self.policies.get(key, "") == policy:
            return
        if policy:
            self.policies[key] = policy
        else:
            self.policies.pop(key, None)
        self._touch(ObjectReplicas.kind, key)
        if self.watcher is not None:
            self.watcher.object_changed(key)

    def remove_replica(self, key: str, host: str) -> bool:
        """Take ``host`` out of ``key``'s replicas; False if it was not one."""
        replicas = self.objects.get(key)
        if replicas is None or replicas.pop(host, None) is None:
            return False
        for per_host in (self.capacities, self.grant_expiry):
            values = per_host.get(key)
            if values is not None:
                values.pop(host, None)
                if not values:
                    del per_host[key]
        if not replicas:
            del self.objects[key]
            self.policies.pop(key, None)
        served = self.host_objects.get(host)
        if served is not None:
            served.discard(key)
            if not served:
                del self.host_objects[host]
        self._touch(ObjectReplicas.kind, key)
        if self.watcher is not None:
            self.watcher.object_changed(key)
        return True

    def set_name(self, key: str, name: str) -> None:
        if self.object_names.get(key) != name:
            self.object_names[key] = name
            self._by_name[name] = key
            self._touch(ObjectName.kind, key)

    def set_draining(self, host: str, key: str, draining: bool) -> None:
        if draining:
            self.draining.setdefault(host, set()).add(key)
        elif key in self.draining.get(host, ()):
            self.draining[host].discard(key)
            if not self.draining[host]:
                del self.draining[host]
        else:
            return
        self._touch(DrainingObjects.kind, host)
        if self.watcher is not None:
            self.watcher.object_changed(key)

    def set_link(self, a: str, b: str, up: bool) -> None:
        """Mark the backbone link between datacenters ``a`` and ``b``.

        Raises:
            UsageError: there is no such backbone link.
        """
        key = frozenset((a, b))
        if key not in self.links_up:
            raise UsageError(f"no backbone link between {a!r} and {b!r}")
        self.links_up[key] = up
        self._touch(BackboneLink.kind, "|".join(sorted(key)))
        if self.watcher is not None:
            self.watcher.routes_changed()

    def set_allow_rule(self, key: str, where: str, allowed: bool) -> None:
        """The operator allowed (or disallowed) ``where`` to serve object ``key``."""
        if self.allow_rules.get((key, where)) != allowed:
            self.allow_rules[(key, where)] = allowed
            self._touch(AllowRule.kind, f"{key}|{where}")

    # -- durable state -------------------------------------------------------------------------

    def state_changes(self) -> list[StateChange]:
        """The rows changed since the last call: upserts, or deletes of rows that are gone."""
        dirty, self._dirty = self._dirty, {}
        return [StateChange(kind, key, self._row(kind, key)) for kind, key in dirty]

    def touch_again(self, changes: list[StateChange]) -> None:
        """Mark the rows of ``changes`` changed again (their commit failed), ahead of others."""
        self._dirty = {(c.kind, c.key): None for c in changes} | self._dirty

    def snapshot(self) -> ControllerState:
        """Every durable row now."""
        rows = [self._row(kind, key) for kind, key in self._row_keys()]
        return ControllerState.of(row for row in rows if row is not None)

    def _row_keys(self) -> Iterator[tuple[str, str]]:
        """The (kind, key) of every durable row the registry holds."""
        yield (HostIdCounter.kind, "")
        yield from ((HostState.kind, name) for name in self.hosts)
        yield from ((ObjectReplicas.kind, key) for key in self.objects)
        yield from ((ObjectName.kind, key) for key in self.object_names)
        yield from ((BackboneLink.kind, "|".join(sorted(link))) for link in self.links_up)
        yield from ((DrainingObjects.kind, host) for host in self.draining)
        yield from ((AllowRule.kind, f"{key}|{where}") for key, where in self.allow_rules)

    def _row(self, kind: str, key: str) -> StateRecord | None:
        """Row ``key`` of table ``kind`` as the registry holds it now (None: no such row)."""
        if kind == HostIdCounter.kind:
            return HostIdCounter(self.next_host_id)
        if kind == HostState.kind:
            r = self.hosts.get(key)
            if r is None:
                return None
            return HostState(r.name, r.host_id, r.dc, r.gateway, r.address, sorted(r.previous_dcs))
        if kind == ObjectReplicas.kind:
            replicas = self.objects.get(key)
            if not replicas:
                return None
            capacities, expires = self.capacities.get(key), self.grant_expiry.get(key)
            return ObjectReplicas(
                key,
                dict(replicas),
                self.policies.get(key, ""),
                {} if capacities is None else dict(capacities),
                {} if expires is None else dict(expires),
            )
        if kind == ObjectName.kind:
            name = self.object_names.get(key)
            return ObjectName(key, name) if name is not None else None
        if kind == BackboneLink.kind:
            a, _, b = key.partition("|")
            up = self.links_up.get(frozenset((a, b)))
            return BackboneLink(a, b, up) if up is not None else None
        if kind == DrainingObjects.kind:
            objects = self.draining.get(key)
            return DrainingObjects(key, sorted(objects)) if objects else None
        if kind == AllowRule.kind:
            obj, _, where = key.partition("|")
            allowed = self.allow_rules.get((obj, where))
            return AllowRule(obj, where, allowed) if allowed is not None else None
        raise ValueError(f"no durable table {kind!r}")

    def _touch(self, kind: str, key: str) -> None:
        self._dirty[(kind, key)] = None

    def _restore(self, saved: ControllerState, drops: Counter[str]) -> None:
        """Take ``saved`` back in, marking the rows that differ from it (what cannot be kept)."""
        switches = {
            name for dc in self.topology.datacenters for name in (*dc.flow_switches, dc.object_switch)
        }
        hosts = self.hosts
        for h in saved.hosts:
            if h.gateway not in switches:
                drops["restore-unknown-gateway"] += 1
                self._touch(HostState.kind, h.name)  # deleted
                continue
            # A host the rows know by address registered once: assumed alive until its
            # gateway says otherwise. One without (a topology host that never said Hello) is
            # not: no gateway reports a host it never heard, so it would stay "alive" --
            # and unjoinable, a live node of that name -- under every later leader.
            alive = h.address is not None
            self._add_host(
                HostRecord(h.name, h.host_id, h.dc, h.gateway, alive, 0.0, h.address, set(h.previous_dcs))
            )
            if h.address is not None:
                self.addresses[h.name] = h.address
        # Never hand out a Host ID that a restored host holds.
        self.next_host_id = max([saved.next_host_id, *(r.host_id + 1 for r in hosts.values())])
        if self.next_host_id != saved.next_host_id:
            self._touch(HostIdCounter.kind, "")
        host_objects = self.host_objects
        for key, replicas in saved.objects.items():
            kept = {n: w for n, w in replicas.items() if n in hosts}
            saved_caps = saved.capacities.get(key)
            if len(kept) != len(replicas):
                self._touch(ObjectReplicas.kind, key)  # replicas of hosts not kept: gone
            if not kept:
                continue
            self.objects[key] = kept
            for n in kept:
                served = host_objects.get(n)
                if served is None:
                    served = host_objects[n] = set()
                served.add(key)
            policy = saved.policies.get(key)
            if policy:
                self.policies[key] = policy
            for saved_per_host, per_host in (
                (saved_caps, self.capacities),
                (saved.grant_expiry.get(key), self.grant_expiry),
            ):
                if saved_per_host:
                    values = {n: v for n, v in saved_per_host.items() if n in kept}
                    if values:
                        per_host[key] = values
                    if values != saved_per_host:
                        self._touch(ObjectReplicas.kind, key)
        self.object_names.update(saved.object_names)
        self._by_name.update((name, key) for key, name in saved.object_names.items())
        for host, objects in saved.draining.items():
            if host in hosts and objects:
                self.draining[host] = set(objects)
            else:
                self._touch(DrainingObjects.kind, host)  # deleted
        for key, up in saved.links.items():
            link = frozenset(key.split("|"))
            if link in self.links_up:
                self.links_up[link] = up
            else:
                self._touch(BackboneLink.kind, key)  # not in the topology any more: deleted
        for link in self.links_up.keys() - {frozenset(key.split("|")) for key in saved.links}:
            self._touch(BackboneLink.kind, "|".join(sorted(link)))  # new in the topology
        for rule, allowed in saved.allow_rules.items():
            key, _, where = rule.partition("|")
            self.allow_rules[(key, where)] = allowed
        self.restored = True


def is_object_hex(text: str) -> bool:
    """Is ``text`` 64 hex digits naming a non-zero Object ID?"""
    if len(text) != 64:
        return False
    try:
        return bytes.fromhex(text) != bytes(32)
    except ValueError:
        return False
