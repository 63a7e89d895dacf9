"""Churn the operator asks for: drains, weights, object migration, relocation (VM migration and
mobility), backbone link state, link emulation and port reports (docs/protocol.md §5, §6.5).

Each operation checks its arguments against the registry (raising ``UsageError``), changes
the registry, queues the records it needs (``Drain``, ``MigrateOut``, ``Relocate``, ...) and
pushes the tables that follow.
"""

from __future__ import annotations

from ...errors import UsageError
from ...wire import control
from ...wire.control import ControlMessage
from .registry import Registry
from .state import ControllerEvent, HostRecord
from .tables import Tables

__all__ = ["Churn"]


class Churn:
    """The churn operations, and the object migrations under way."""

    def __init__(
        self,
        registry: Registry,
        tables: Tables,
        out: list[tuple[str, ControlMessage]],
        events: list[ControllerEvent],
    ) -> None:
        self.registry = registry
        self.tables = tables
        self._out = out
        self._events = events
        #: (object hex, from host) -> to host, for migrations under way
        self.migrations: dict[tuple[str, str], str] = {}
        #: flows passed on so far, for migrations whose first part arrived
        self._moved: dict[tuple[str, str], int] = {}

    def _label(self, key: str) -> str:
        return self.registry.object_names.get(key, key[:12])

    # -- drain and weights (docs/protocol.md §5.2) -----------------------------------------

    def drain(self, host: str, ref: str | None, now: float) -> list[str]:
        """Planned downtime: send no new flows of object ``ref`` (None: every object the host
        serves) to ``host``; its established flows go on, and once they have ended the host
        says ``DrainDone`` and the replica is removed. Returns the objects now draining.

        Raises:
            UsageError: unknown host or object, or the host serves no such object.
        """
        reg = self.registry
        record = reg.host(host)
        keys = [reg.object_key(ref)] if ref is not None else [k for k, v in reg.objects.items() if host in v]
        keys = [k for k in keys if host in reg.objects.get(k, {})]
        if not keys:
            raise UsageError(f"{host} serves no {'object' if ref is None else repr(ref)}")
        for key in keys:
            reg.set_draining(host, key, True)
            self._out.append((record.name, control.Drain(key)))
            self._events.append(ControllerEvent(now, "drain", host, self._label(key)))
        return [reg.object_names.get(k, k) for k in keys]

    def drain_done(self, node: str, key: str, now: float) -> None:
        """The host's last flow of drained object ``key`` ended: the replica is gone."""
        reg = self.registry
        if reg.remove_replica(key, node):
            reg.set_draining(node, key, False)
            self._events.append(ControllerEvent(now, "drain-complete", node, self._label(key)))

    def set_weight(self, ref: str, host: str, weight: int, now: float) -> None:
        """Load balancing: change a replica's weight; only new flows follow it.

        Raises:
            UsageError: unknown object or replica.
        """
        reg = self.registry
        key = reg.object_key(ref)
        if host not in reg.objects[key]:
            raise UsageError(f"{host} is not a replica of {ref!r}")
        reg.set_replica(key, host, weight)
        self._events.append(ControllerEvent(now, "rebalance", host, f"{ref} weight {weight}"))

    # -- object migration (docs/protocol.md §5.4) --------------------------------------------

    def migrate_object(self, ref: str, from_host: str, to_host: str, now: float) -> None:
        """Move the replica of ``ref`` and its live flows from one host to another: the old
        host exports every flow's state, the new one restores it.

        Raises:
            UsageError: unknown object or hosts, ``from_host`` serves no replica, ``to_host``
                already does or is down, or a migration of it is under way.
        """
        reg = self.registry
        key = reg.object_key(ref)
        source, target = reg.host(from_host), reg.host(to_host)
        if from_host not in reg.objects[key]:
            raise UsageError(f"{from_host} is not a replica of {ref!r}")
        if to_host in reg.objects[key]:
            raise UsageError(f"{to_host} is already a replica of {ref!r}")
        if not target.alive or not source.alive:
            raise UsageError("both hosts must be up to migrate")
        if (key, from_host) in self.migrations:
            raise UsageError(f"{ref!r} is already migrating away from {from_host}")
        self.migrations[(key, from_host)] = to_host
        self._out.append((from_host, control.MigrateOut(key, to_host, target.host_id, reg.dc_ids[target.dc])))
        self._events.append(ControllerEvent(now, "object-migration", from_host, f"{ref} -> {to_host}"))

    def flows_out(self, node: str, message: control.FlowsOut, now: float) -> bool:
        """The old host handed the replica over: the new one gets it and its flows, part by
        part as they come (``more``: parts follow, §6.6). False if no such migration is
        under way."""
        reg = self.registry
        key = (message.obj, node)
        to_host = self.migrations.get(key)
        if to_host is None or to_host != message.to_host:
            return False
        moved = self._moved.get(key)
        if moved is None:  # the first part: the replica moves now
            weight = reg.objects.get(message.obj, {}).get(node, message.weight)
            reg.remove_replica(message.obj, node)
            reg.set_replica(message.obj, to_host, weight)
            if message.name:
                reg.set_name(message.obj, message.name)
            reg.set_draining(node, message.obj, False)
            moved = 0
        weight = reg.objects.get(message.obj, {}).get(to_host, message.weight)
        self._moved[key] = moved + len(message.states)
        self._out.append(
            (
                to_host,
                control.MigrateIn(
                    message.obj, message.name, weight, message.resumable, message.states, more=message.more
                ),
            )
        )
        if not message.more:
            del self.migrations[key]
            count = self._moved.pop(key)
            self._events.append(
                ControllerEvent(now, "object-migrated", to_host, f"{count} flows from {node}")
            )
        return True

    # -- relocation (docs/protocol.md §5.3, §5.4) ------------------------------------------------

    def migrate_host(self, host: str, dc: str, gateway: str | None, now: float) -> str:
        """VM migration: ``host`` moves to datacenter ``dc`` and keeps its Host ID; routes
        follow, and packets still naming the old DC are corrected in flight. Returns the new
        gateway (default: the DC's last flow switch).

        Raises:
            UsageError: unknown host or DC, or a gateway that is not a flow switch of ``dc``.
        """
        if dc not in self.registry.dc_ids:
            raise UsageError(f"no datacenter named {dc!r}")
        spec = self.registry.topology.datacenter(dc)
        if gateway is None:
            gateway = spec.flow_switches[-1]
        elif gateway not in spec.flow_switches:
            raise UsageError(f"{gateway!r} is not a flow switch of {dc!r}")
        self._relocate(self.registry.host(host), gateway, now, announce=False, kind="vm-migration")
        return gateway

    def move_host(self, host: str, gateway: str, now: float) -> None:
        """Client mobility: ``host`` re-attaches at ``gateway`` (maybe in another DC), keeps
        its Host ID, and tells each peer in-band, with the flow's nonce.

        Raises:
            UsageError: unknown host, or ``gateway`` is not a flow switch.
        """
        if self.tables.role(gateway) != "flow-switch":
            raise UsageError(f"{gateway!r} is not a flow switch")
        self._relocate(self.registry.host(host), gateway, now, announce=True, kind="client-mobility")

    def _relocate(self, record: HostRecord, gateway: str, now: float, *, announce: bool, kind: str) -> None:
        reg = self.registry
        old = record.gateway
        reg.attach(record, gateway)
        relocate = control.Relocate(gateway, reg.dc_ids[record.dc], reg.addresses.get(gateway), announce)
        self._out.append((record.name, relocate))
        self._events.append(ControllerEvent(now, kind, record.name, f"{old} -> {gateway}"))

    # -- links and ports (docs/protocol.md §6.2, §6.5) ----------------------------------------

    def set_link(self, a: str, b: str, up: bool, now: float) -> None:
        """Mark the backbone link between datacenters ``a`` and ``b`` up or down.

        Raises:
            UsageError: there is no such backbone link.
        """
        self.registry.set_link(a, b, up)
        self._events.append(ControllerEvent(now, "route-change", f"{a}-{b}", "up" if up else "down"))

    def link_settings(
        self, a: str, b: str, delay: float | None, loss: float | None, up: bool | None
    ) -> tuple[str, str]:
        """Tell both ends of link ``a``-``b`` to change their egress emulation
        (``LinkSettings``): two DC names mean their backbone link (between their border
        switches), else ``a`` and ``b`` are neighbour nodes. Returns the two ends.

        Raises:
            UsageError: no such backbone link, or the nodes are not neighbours.
        """
        reg = self.registry
        if a in reg.dc_ids and b in reg.dc_ids:
            if frozenset((a, b)) not in reg.links_up:
                raise UsageError(f"no backbone link between {a!r} and {b!r}")
            a, b = reg.topology.datacenter(a).border, reg.topology.datacenter(b).border
        elif b not in self.tables.neighbours(a):
            raise UsageError(f"{a!r} and {b!r} are not neighbours")
        for node, peer in ((a, b), (b, a)):
            self._out.append((node, control.LinkSettings(peer, delay, loss, up)))
        return a, b

    def port(self, node: str, peer: str, up: bool, now: float) -> bool:
        """A switch reports that its port towards ``peer`` went down or up. A backbone port
        (border switch to border switch) marks that backbone link; others are only logged.
        Returns whether it was a backbone port.

        Raises:
            ConfigError: ``node`` or ``peer`` is not a node of the network.
        """
        reg = self.registry
        dc_a, dc_b = reg.topology.dc_of(node), reg.topology.dc_of(peer)
        key = frozenset((dc_a, dc_b))
        is_backbone = (
            dc_a != dc_b
            and key in reg.links_up
            and reg.topology.datacenter(dc_a).border == node
            and reg.topology.datacenter(dc_b).border == peer
        )
        self._events.append(ControllerEvent(now, "port", f"{node}->{peer}", "up" if up else "down"))
        if is_backbone and reg.links_up[key] != up:
            self.set_link(dc_a, dc_b, up, now)
        return is_backbone
