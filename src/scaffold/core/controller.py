"""The controller's logic, sans-IO (docs/protocol.md §6).

It registers hosts (assigning Host IDs) and their objects, tracks liveness by heartbeats,
computes DC routes over the backbone, and keeps every connected switch's tables: a full
``TableSync`` when a switch connects or asks, then ``TableDelta`` increments with version
numbers. Tables are derived, never edited: after any change the controller computes each
switch's desired tables from its state and sends the difference from what it sent last.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import UsageError
from ..ids import ObjectId
from ..wire import control
from ..wire.control import ControlMessage, SwitchTables, TableKeys
from .metrics import DROPS, MetricKind, Sample, define
from .routing import next_hops
from .store import ControllerState, HostState, MemoryStore, Store
from .topology import Topology

__all__ = ["CONTROLLER_COMMANDS", "Controller", "ControllerEvent", "HostRecord"]

#: the operator commands runtimes may call as methods (``name(now=..., **args)``)
CONTROLLER_COMMANDS = frozenset(
    {"drain", "set_weight", "migrate_object", "migrate_host", "move_host", "set_link"}
)

Address = tuple[str, int]
#: the event log is trimmed to its latest EVENT_LOG_KEEP entries past EVENT_LOG_LIMIT taken
EVENT_LOG_LIMIT = 10_000
EVENT_LOG_KEEP = 1_000
HOSTS = define(
    "hosts", MetricKind.GAUGE, "Hosts the controller knows, by state (alive, dead).", labels=("state",)
)
SWITCHES = define(
    "switches", MetricKind.GAUGE, "Switches of the topology, by control connection state.", labels=("state",)
)
OBJECTS = define("objects", MetricKind.GAUGE, "Objects with at least one registered replica.")
_TABLES = ("dc_routes", "host_routes", "moved_hosts", "wide", "local", "prefixes", "peers")


@dataclass(slots=True)
class HostRecord:
    name: str
    host_id: int
    dc: str
    gateway: str
    alive: bool = False
    last_seen: float = 0.0
    address: Address | None = None
    #: datacenters this host lived in before (their flow switches correct stale DC IDs)
    previous_dcs: set[str] = field(default_factory=set)
    #: objects re-bound since its latest Hello (None: not re-registering)
    rebinding: set[str] | None = None


@dataclass(frozen=True, slots=True)
class ControllerEvent:
    """Something the controller decided, for logs and reports."""

    at: float
    #: "host-up", "host-down", "bind", "route-change", "port", "drain", "drain-complete",
    #: "rebalance", "object-migration", "object-migrated", "vm-migration", "client-mobility"
    kind: str
    target: str
    detail: str = ""


@dataclass(slots=True)
class _SwitchState:
    role: str
    dc: str
    connected: bool = False
    version: int = 0
    sent: SwitchTables = field(default_factory=SwitchTables)


class Controller:
    """Sans-IO controller. Feed ``receive_message`` / ``node_disconnected`` / ``handle_timer``;
    drain ``messages_to_send`` as (node name, record) pairs."""

    def __init__(
        self,
        topology: Topology,
        *,
        heartbeat_interval: float = 0.2,
        dead_after: int = 3,
        store: Store | None = None,
    ) -> None:
        self.topology = topology
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.dc_ids = {dc.name: i + 1 for i, dc in enumerate(topology.datacenters)}
        self.switches: dict[str, _SwitchState] = {}
        for dc in topology.datacenters:
            for fs in dc.flow_switches:
                self.switches[fs] = _SwitchState("flow-switch", dc.name)
            self.switches[dc.object_switch] = _SwitchState("object-switch", dc.name)
        self.hosts: dict[str, HostRecord] = {}
        self._next_host_id = 1
        for spec in topology.hosts():
            self._host_record(spec.name, spec.gateway)
        #: object hex -> {host name: weight}
        self.objects: dict[str, dict[str, int]] = {}
        self.object_names: dict[str, str] = {}
        #: host -> objects (hex) it is draining: no new flows go there
        self.draining: dict[str, set[str]] = {}
        #: (object hex, from host) -> to host, for migrations under way
        self.migrations: dict[tuple[str, str], str] = {}
        self.links_up: dict[frozenset[str], bool] = {frozenset((l.a, l.b)): True for l in topology.backbone}
        self.addresses: dict[str, Address] = {}
        self.events: list[ControllerEvent] = []
        self.drops: Counter[str] = Counter()
        self._out: list[tuple[str, ControlMessage]] = []
        self._next_check: float | None = None
        self._routes: dict[str, dict[str, str]] = {}
        self.store: Store = store if store is not None else MemoryStore()
        self._restored = False
        saved = self.store.load()
        if saved is not None:
            self._restore(saved)
        self._recompute_routes()

    # -- inputs --------------------------------------------------------------------------

    def receive_message(self, node: str, message: ControlMessage, now: float) -> None:
        """Handle one record from ``node``. Unknown nodes and bad records are counted."""
        self._start_clock(now)
        if isinstance(message, control.Hello):
            self._hello(message, now)
        elif isinstance(message, control.Heartbeat):
            record = self.hosts.get(message.node)
            if record is None:
                self.drops["heartbeat-from-unknown"] += 1
                return
            record.last_seen = now
            if record.rebinding is not None:
                self._finish_rebinding(record)
            if not record.alive:
                self._set_alive(record, True, now, "heartbeat")
        elif isinstance(message, control.Bind):
            record = self.hosts.get(node)
            if record is None or not _is_object_hex(message.obj) or message.weight <= 0:
                self.drops["bad-bind"] += 1
                return
            self.objects.setdefault(message.obj, {})[node] = message.weight
            if record.rebinding is not None:
                record.rebinding.add(message.obj)
            if message.name:
                self.object_names[message.obj] = message.name
            self.events.append(ControllerEvent(now, "bind", node, message.name or message.obj[:12]))
            self._persist()
            self._push()
        elif isinstance(message, control.Unbind):
            replicas = self.objects.get(message.obj)
            if replicas is not None and replicas.pop(node, None) is not None:
                if not replicas:
                    del self.objects[message.obj]
                self._persist()
                self._push()
        elif isinstance(message, control.FlowsOut):
            self._flows_out(node, message, now)
        elif isinstance(message, control.DrainDone):
            replicas = self.objects.get(message.obj, {})
            if node in replicas:
                replicas.pop(node, None)
                if not replicas:
                    self.objects.pop(message.obj, None)
                self.draining.get(node, set()).discard(message.obj)
                label = self.object_names.get(message.obj, message.obj[:12])
                self.events.append(ControllerEvent(now, "drain-complete", node, label))
                self._persist()
                self._push()
        elif isinstance(message, control.SyncRequest):
            state = self.switches.get(node)
            if state is None or not state.connected:
                self.drops["sync-from-unknown"] += 1
                return
            self._sync(node, state)
        else:
            self.drops["unexpected-message"] += 1

    def node_disconnected(self, node: str, now: float) -> None:
        """The control connection of ``node`` closed (a dead process, a broken path)."""
        if node in self.switches:
            self.switches[node].connected = False
        record = self.hosts.get(node)
        if record is not None and record.alive:
            self._set_alive(record, False, now, "disconnected")

    def get_timer(self) -> float | None:
        return self._next_check

    def handle_timer(self, now: float) -> None:
        """Declare hosts dead after ``dead_after`` missed heartbeats."""
        self._start_clock(now)
        if self._next_check is None or now < self._next_check:
            return
        self._next_check = now + self.heartbeat_interval
        limit = self.heartbeat_interval * self.dead_after
        for record in self.hosts.values():
            if record.alive and now - record.last_seen > limit:
                self._set_alive(record, False, now, "missed heartbeats")

    def messages_to_send(self) -> list[tuple[str, ControlMessage]]:
        out, self._out = self._out, []
        return out

    # -- engine interface (core/engine.py: ControllerEngine) -------------------------------

    name: ClassVar[str] = "controller"
    role: ClassVar[str] = "controller"
    #: how many entries of ``events`` ``next_event`` handed out
    _events_taken: int = 0

    def next_event(self) -> ControllerEvent | None:
        """The oldest decision not taken yet; ``events`` keeps them all as a log, trimmed to
        its latest ``EVENT_LOG_KEEP`` entries once it grows past ``EVENT_LOG_LIMIT``."""
        if self._events_taken >= len(self.events):
            return None
        event = self.events[self._events_taken]
        self._events_taken += 1
        if self._events_taken > EVENT_LOG_LIMIT:
            cut = self._events_taken - EVENT_LOG_KEEP
            del self.events[:cut]
            self._events_taken -= cut
        return event

    def metrics(self) -> list[Sample]:
        alive = sum(1 for r in self.hosts.values() if r.alive)
        connected = sum(1 for s in self.switches.values() if s.connected)
        return [
            *DROPS.by(self.drops),
            HOSTS.sample(alive, state="alive"),
            HOSTS.sample(len(self.hosts) - alive, state="dead"),
            SWITCHES.sample(connected, state="connected"),
            SWITCHES.sample(len(self.switches) - connected, state="disconnected"),
            OBJECTS.sample(len(self.objects)),
        ]

    # -- commands ------------------------------------------------------------------------

    def admin(self, request: control.AdminRequest, now: float) -> control.AdminReply:
        """Run an operator command and answer it; a bad command is an error reply, never an
        exception (docs/protocol.md §6.5)."""
        self._start_clock(now)
        handler = self.admin_commands().get(request.command)
        if handler is None:
            known = ", ".join(sorted(self.admin_commands()))
            return control.AdminReply(
                request.id, False, error=f"unknown command {request.command!r} (known: {known})"
            )
        try:
            result = handler(now, **request.args)
        except (UsageError, TypeError, ValueError, KeyError) as exc:
            return control.AdminReply(request.id, False, error=f"{request.command}: {exc}")
        return control.AdminReply(request.id, True, result=result)

    def admin_commands(self) -> dict[str, Callable[..., Any]]:
        """Operator commands by name: each takes ``now`` and keyword arguments."""
        return {
            "status": self._admin_status,
            "link": self._admin_link,
            "drain": self._admin_drain,
            "set-weight": self._admin_set_weight,
            "migrate-object": self._admin_migrate_object,
            "migrate-host": self._admin_migrate_host,
            "move-host": self._admin_move_host,
            "link-settings": self._admin_link_settings,
            "port": self._admin_port,
        }

    def _admin_status(self, now: float) -> dict[str, Any]:
        return self.status()

    def _admin_link(self, now: float, a: str, b: str, up: bool) -> dict[str, Any]:
        self.set_link(a, b, bool(up), now)
        return {"link": f"{a}-{b}", "up": bool(up)}

    def status(self) -> dict[str, Any]:
        """The controller's view: hosts, switches, objects and replicas, backbone links."""
        return {
            "datacenters": {name: dc_id for name, dc_id in self.dc_ids.items()},
            "hosts": [
                {
                    "name": r.name,
                    "host_id": r.host_id,
                    "dc": r.dc,
                    "gateway": r.gateway,
                    "alive": r.alive,
                    "address": list(r.address) if r.address else None,
                }
                for r in self.hosts.values()
            ],
            "switches": [
                {"name": n, "role": st.role, "dc": st.dc, "connected": st.connected, "version": st.version}
                for n, st in self.switches.items()
            ],
            "objects": [
                {
                    "object": "obj:" + obj,
                    "name": self.object_names.get(obj, ""),
                    "replicas": [
                        {"host": h, "dc": self.hosts[h].dc, "weight": w, "alive": self.hosts[h].alive}
                        for h, w in sorted(replicas.items())
                    ],
                }
                for obj, replicas in sorted(self.objects.items())
            ],
            "links": [
                {"a": l.a, "b": l.b, "delay_ms": l.delay * 1000, "up": self.links_up[frozenset((l.a, l.b))]}
                for l in self.topology.backbone
            ],
            "drops": dict(self.drops),
        }

    def set_link(self, a: str, b: str, up: bool, now: float) -> None:
        """Mark the backbone link between datacenters ``a`` and ``b`` up or down."""
        key = frozenset((a, b))
        if key not in self.links_up:
            raise UsageError(f"no backbone link between {a!r} and {b!r}")
        self.links_up[key] = up
        self.events.append(ControllerEvent(now, "route-change", f"{a}-{b}", "up" if up else "down"))
        self._recompute_routes()
        self._persist()
        self._push()

    def object_key(self, ref: str) -> str:
        """The Object ID (hex) of a registered object named by its name, text or hex.

        Raises:
            UsageError: no such object is registered.
        """
        for key, name in self.object_names.items():
            if name == ref and key in self.objects:
                return key
        try:
            key = ObjectId.of(ref).raw.hex() if not _is_object_hex(ref) else ref
        except UsageError:
            key = ""
        if key not in self.objects:
            raise UsageError(f"no object {ref!r} is registered")
        return key

    def _host(self, name: str) -> HostRecord:
        record = self.hosts.get(name)
        if record is None:
            raise UsageError(f"no host named {name!r}")
        return record

    def drain(self, host: str, obj: str | None = None, now: float = 0.0) -> list[str]:
        """Planned downtime: send no new flows of ``obj`` (default: every object the host
        serves) to ``host``; its established flows go on, and once they have ended the host
        says ``DrainDone`` and the replica is removed.

        Raises:
            UsageError: unknown host or object, or the host serves no such object.
        """
        record = self._host(host)
        keys = (
            [self.object_key(obj)] if obj is not None else [k for k, v in self.objects.items() if host in v]
        )
        keys = [k for k in keys if host in self.objects.get(k, {})]
        if not keys:
            raise UsageError(f"{host} serves no {'object' if obj is None else repr(obj)}")
        for key in keys:
            self.draining.setdefault(host, set()).add(key)
            self._out.append((record.name, control.Drain(key)))
            label = self.object_names.get(key, key[:12])
            self.events.append(ControllerEvent(now, "drain", host, label))
        self._push()
        return [self.object_names.get(k, k) for k in keys]

    def set_weight(self, obj: str, host: str, weight: int, now: float = 0.0) -> None:
        """Load balancing: change a replica's weight; only new flows follow it.

        Raises:
            UsageError: unknown object or replica, or ``weight`` <= 0 (drain instead).
        """
        key = self.object_key(obj)
        if host not in self.objects[key]:
            raise UsageError(f"{host} is not a replica of {obj!r}")
        if int(weight) <= 0:
            raise UsageError("weight must be > 0 (to stop new flows, drain the replica)")
        self.objects[key][host] = int(weight)
        self.events.append(ControllerEvent(now, "rebalance", host, f"{obj} weight {weight}"))
        self._persist()
        self._push()

    def migrate_object(self, obj: str, from_host: str, to_host: str, now: float = 0.0) -> None:
        """Move the replica of ``obj`` and its live flows from one host to another: the old
        host exports every flow's state, the new one restores it (docs/protocol.md §5.4).

        Raises:
            UsageError: unknown object or hosts, ``from_host`` serves no replica, ``to_host``
                already does or is down, or a migration of it is under way.
        """
        key = self.object_key(obj)
        source, target = self._host(from_host), self._host(to_host)
        if from_host not in self.objects[key]:
            raise UsageError(f"{from_host} is not a replica of {obj!r}")
        if to_host in self.objects[key]:
            raise UsageError(f"{to_host} is already a replica of {obj!r}")
        if not target.alive or not source.alive:
            raise UsageError("both hosts must be up to migrate")
        if (key, from_host) in self.migrations:
            raise UsageError(f"{obj!r} is already migrating away from {from_host}")
        self.migrations[(key, from_host)] = to_host
        self._out.append(
            (from_host, control.MigrateOut(key, to_host, target.host_id, self.dc_ids[target.dc]))
        )
        self.events.append(ControllerEvent(now, "object-migration", from_host, f"{obj} -> {to_host}"))

    def _flows_out(self, node: str, message: control.FlowsOut, now: float) -> None:
        to_host = self.migrations.pop((message.obj, node), None)
        if to_host is None or to_host != message.to_host:
            self.drops["unexpected-flows-out"] += 1
            return
        replicas = self.objects.setdefault(message.obj, {})
        weight = replicas.pop(node, message.weight)
        replicas[to_host] = weight
        if message.name:
            self.object_names[message.obj] = message.name
        self.draining.get(node, set()).discard(message.obj)
        self._out.append(
            (to_host, control.MigrateIn(message.obj, message.name, weight, message.resumable, message.states))
        )
        self.events.append(
            ControllerEvent(now, "object-migrated", to_host, f"{len(message.states)} flows from {node}")
        )
        self._persist()
        self._push()

    def migrate_host(self, host: str, dc: str, now: float = 0.0, *, gateway: str | None = None) -> str:
        """VM migration: ``host`` moves to datacenter ``dc`` and keeps its Host ID; routes
        follow, and packets still naming the old DC are corrected in flight.

        Returns the new gateway. Raises:
            UsageError: unknown host or DC, or a gateway that is not a flow switch of ``dc``.
        """
        new_gateway = self._pick_gateway(dc, gateway)
        self._relocate(self._host(host), new_gateway, now, announce=False, kind="vm-migration")
        return new_gateway

    def move_host(self, host: str, gateway: str, now: float = 0.0) -> None:
        """Client mobility: ``host`` re-attaches at ``gateway`` (maybe in another DC), keeps
        its Host ID, and tells each peer in-band, with the flow's nonce.

        Raises:
            UsageError: unknown host, or ``gateway`` is not a flow switch.
        """
        if self.switches.get(gateway, _SwitchState("", "")).role != "flow-switch":
            raise UsageError(f"{gateway!r} is not a flow switch")
        self._relocate(self._host(host), gateway, now, announce=True, kind="client-mobility")

    def _pick_gateway(self, dc: str, gateway: str | None) -> str:
        if dc not in self.dc_ids:
            raise UsageError(f"no datacenter named {dc!r}")
        spec = self.topology.datacenter(dc)
        if gateway is None:
            return spec.flow_switches[-1]
        if gateway not in spec.flow_switches:
            raise UsageError(f"{gateway!r} is not a flow switch of {dc!r}")
        return gateway

    def _relocate(self, record: HostRecord, gateway: str, now: float, *, announce: bool, kind: str) -> None:
        new_dc = self.topology.dc_of(gateway)
        if record.dc != new_dc:
            record.previous_dcs.add(record.dc)
        record.previous_dcs.discard(new_dc)
        old = record.gateway
        record.dc, record.gateway = new_dc, gateway
        self._out.append(
            (
                record.name,
                control.Relocate(gateway, self.dc_ids[new_dc], self.addresses.get(gateway), announce),
            )
        )
        self.events.append(ControllerEvent(now, kind, record.name, f"{old} -> {gateway}"))
        self._persist()
        self._push()

    def _admin_drain(self, now: float, host: str, object: str | None = None) -> dict[str, Any]:
        return {"host": host, "draining": self.drain(host, object, now)}

    def _admin_set_weight(self, now: float, object: str, host: str, weight: int) -> dict[str, Any]:
        self.set_weight(object, host, int(weight), now)
        return {"object": object, "host": host, "weight": int(weight)}

    def _admin_migrate_object(self, now: float, object: str, from_host: str, to_host: str) -> dict[str, Any]:
        self.migrate_object(object, from_host, to_host, now)
        return {"object": object, "from": from_host, "to": to_host}

    def _admin_migrate_host(
        self, now: float, host: str, dc: str, gateway: str | None = None
    ) -> dict[str, Any]:
        return {"host": host, "dc": dc, "gateway": self.migrate_host(host, dc, now, gateway=gateway)}

    def _admin_move_host(self, now: float, host: str, gateway: str) -> dict[str, Any]:
        self.move_host(host, gateway, now)
        return {"host": host, "gateway": gateway}

    # -- state ---------------------------------------------------------------------------

    def host_name(self, host_id: int) -> str | None:
        for record in self.hosts.values():
            if record.host_id == host_id:
                return record.name
        return None

    def dc_name(self, dc_id: int) -> str | None:
        for name, value in self.dc_ids.items():
            if value == dc_id:
                return name
        return None

    def desired_tables(self, switch: str) -> SwitchTables:
        """What ``switch``'s tables should be now (a pure function of controller state)."""
        state = self.switches[switch]
        dc = self.topology.datacenter(state.dc)
        border = dc.border
        peers = {n: self.addresses[n] for n in self._neighbours(switch) if n in self.addresses}
        if state.role == "object-switch":
            wide: dict[str, list[tuple[int, int]]] = {}
            local: dict[str, list[tuple[int, int]]] = {}
            for obj, replicas in self.objects.items():
                per_dc: dict[int, int] = {}
                for host_name, weight in replicas.items():
                    record = self.hosts[host_name]
                    if not record.alive or obj in self.draining.get(host_name, ()):
                        continue
                    dc_id = self.dc_ids[record.dc]
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
            dc_routes[self.dc_ids[other]] = (
                self.topology.datacenter(via).border if switch == border else border
            )
        host_routes: dict[int, str] = {}
        for record in self.hosts.values():
            if record.alive and record.dc == dc.name:
                if record.gateway == switch:
                    host_routes[record.host_id] = record.name
                else:
                    host_routes[record.host_id] = record.gateway if switch == border else border
        # Hosts that left this DC (VM migration, mobility): packets still naming this DC are
        # corrected in flight and their senders told to refine (docs/protocol.md §5.3).
        moved_hosts = {
            r.host_id: self.dc_ids[r.dc]
            for r in self.hosts.values()
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

    # -- internals -----------------------------------------------------------------------

    def _start_clock(self, now: float) -> None:
        if self._next_check is None:
            self._next_check = now + self.heartbeat_interval
            if self._restored:
                # Hosts known before a restart get a full heartbeat deadline from now.
                for record in self.hosts.values():
                    record.last_seen = now

    def _finish_rebinding(self, record: HostRecord) -> None:
        kept = record.rebinding or set()
        record.rebinding = None
        gone = [k for k, v in self.objects.items() if record.name in v and k not in kept]
        for key in gone:
            del self.objects[key][record.name]
            if not self.objects[key]:
                del self.objects[key]
        if gone:
            self._persist()
            self._push()

    def _restore(self, saved: ControllerState) -> None:
        self._next_host_id = max(self._next_host_id, saved.next_host_id)
        for h in saved.hosts:
            if h.gateway not in self.switches:
                self.drops["restore-unknown-gateway"] += 1
                continue
            self.hosts[h.name] = HostRecord(
                h.name, h.host_id, h.dc, h.gateway, True, 0.0, h.address, set(h.previous_dcs)
            )
            if h.address is not None:
                self.addresses[h.name] = h.address
        self.objects = {k: {n: w for n, w in v.items() if n in self.hosts} for k, v in saved.objects.items()}
        self.objects = {k: v for k, v in self.objects.items() if v}
        self.object_names = dict(saved.object_names)
        self.draining = {h: set(objs) for h, objs in saved.draining.items() if h in self.hosts}
        for key, up in saved.links.items():
            link = frozenset(key.split("|"))
            if link in self.links_up:
                self.links_up[link] = up
        self._restored = True

    def _persist(self) -> None:
        self.store.save(
            ControllerState(
                next_host_id=self._next_host_id,
                hosts=[
                    HostState(r.name, r.host_id, r.dc, r.gateway, r.address, sorted(r.previous_dcs))
                    for r in self.hosts.values()
                ],
                draining={h: sorted(objs) for h, objs in self.draining.items() if objs},
                objects={k: dict(v) for k, v in self.objects.items()},
                object_names=dict(self.object_names),
                links={"|".join(sorted(k)): up for k, up in self.links_up.items()},
            )
        )

    def _host_record(self, name: str, gateway: str) -> HostRecord:
        record = self.hosts.get(name)
        if record is None:
            record = HostRecord(name, self._next_host_id, self.topology.dc_of(gateway), gateway)
            self._next_host_id += 1
            self.hosts[name] = record
        return record

    def _hello(self, hello: control.Hello, now: float) -> None:
        if hello.address is not None:
            self.addresses[hello.node] = (str(hello.address[0]), int(hello.address[1]))
        if hello.role == "host":
            if self.switches.get(hello.gateway, _SwitchState("", "")).role != "flow-switch":
                self.drops["hello-bad-gateway"] += 1
                return
            record = self._host_record(hello.node, hello.gateway)
            new_dc = self.topology.dc_of(hello.gateway)
            if new_dc != record.dc:
                record.previous_dcs.add(record.dc)
            record.previous_dcs.discard(new_dc)
            record.gateway = hello.gateway
            record.dc = new_dc
            record.last_seen = now
            if hello.address is not None:
                record.address = (str(hello.address[0]), int(hello.address[1]))
            # A (re)registering host re-sends its bindings right after Hello. Its old ones stay
            # in the tables until its first heartbeat, then those it did not re-send go: so a
            # reconnection never makes its replicas blink out of the object switches.
            record.rebinding = set()
            self._persist()
            self._out.append(
                (
                    hello.node,
                    control.Welcome(
                        node=hello.node,
                        dc_id=self.dc_ids[record.dc],
                        host_id=record.host_id,
                        gateway_address=self.addresses.get(hello.gateway),
                        heartbeat_interval=self.heartbeat_interval,
                    ),
                )
            )
            self._set_alive(record, True, now, "registered")
            return
        state = self.switches.get(hello.node)
        if state is None or state.role != hello.role:
            self.drops["hello-unknown-node"] += 1
            return
        state.connected = True
        self._sync(hello.node, state)
        # Its neighbours learn its (possibly new) address.
        self._push()

    def _set_alive(self, record: HostRecord, alive: bool, now: float, why: str) -> None:
        record.alive = alive
        self.events.append(ControllerEvent(now, "host-up" if alive else "host-down", record.name, why))
        self._push()

    def _sync(self, node: str, state: _SwitchState) -> None:
        tables = self.desired_tables(node)
        state.version += 1
        state.sent = tables
        self._out.append((node, control.TableSync(state.version, self.dc_ids[state.dc], tables)))

    def _push(self) -> None:
        for node, state in self.switches.items():
            if not state.connected:
                continue
            new = self.desired_tables(node)
            delta = _diff(state.sent, new)
            if delta is None:
                continue
            upsert, remove = delta
            state.version += 1
            state.sent = new
            self._out.append((node, control.TableDelta(state.version, upsert, remove)))

    def _recompute_routes(self) -> None:
        edges = [
            (l.a, l.b, l.delay or 1e-6)
            for l in self.topology.backbone
            if self.links_up.get(frozenset((l.a, l.b)), True)
        ]
        self._routes = next_hops(self.dc_ids, edges)

    def _neighbours(self, node: str) -> set[str]:
        out = set()
        for link in self.topology.node_links():
            if link.a == node:
                out.add(link.b)
            elif link.b == node:
                out.add(link.a)
        for record in self.hosts.values():
            if record.gateway == node:
                out.add(record.name)
        return out

    # -- fault injection and port reports (docs/deployment.md) ---------------------------

    def _link_ends(self, a: str, b: str) -> tuple[str, str]:
        """The node names at the ends of link ``a``-``b``: two DC names mean their backbone
        link (between their border switches), else ``a`` and ``b`` are neighbour nodes."""
        if a in self.dc_ids and b in self.dc_ids:
            if frozenset((a, b)) not in self.links_up:
                raise UsageError(f"no backbone link between {a!r} and {b!r}")
            return self.topology.datacenter(a).border, self.topology.datacenter(b).border
        if b not in self._neighbours(a):
            raise UsageError(f"{a!r} and {b!r} are not neighbours")
        return a, b

    def _admin_link_settings(
        self,
        now: float,
        a: str,
        b: str,
        delay_ms: float | None = None,
        loss: float | None = None,
        up: bool | None = None,
    ) -> dict[str, Any]:
        """Tell both ends of a link to change their egress emulation (``LinkSettings``)."""
        end_a, end_b = self._link_ends(a, b)
        delay = None if delay_ms is None else float(delay_ms) / 1000
        if delay is not None and not delay >= 0:
            raise UsageError(f"delay must be >= 0 ms, got {delay_ms}")
        if loss is not None and not 0 <= float(loss) <= 1:
            raise UsageError(f"loss must be a fraction in [0, 1], got {loss}")
        for node, peer in ((end_a, end_b), (end_b, end_a)):
            self._out.append((node, control.LinkSettings(peer, delay, loss, up)))
        return {"link": f"{end_a}-{end_b}", "delay_ms": delay_ms, "loss": loss, "up": up}

    def _admin_port(self, now: float, node: str, peer: str, up: bool) -> dict[str, Any]:
        """A switch reports that its port towards ``peer`` went down or up. A backbone port
        (border switch to border switch) marks that backbone link; others are only logged."""
        dc_a, dc_b = self.topology.dc_of(node), self.topology.dc_of(peer)
        key = frozenset((dc_a, dc_b))
        is_backbone = (
            dc_a != dc_b
            and key in self.links_up
            and self.topology.datacenter(dc_a).border == node
            and self.topology.datacenter(dc_b).border == peer
        )
        self.events.append(ControllerEvent(now, "port", f"{node}->{peer}", "up" if up else "down"))
        if is_backbone and self.links_up[key] != bool(up):
            self.set_link(dc_a, dc_b, bool(up), now)
        return {"node": node, "peer": peer, "up": bool(up), "backbone": is_backbone}


def _diff(old: SwitchTables, new: SwitchTables) -> tuple[SwitchTables, TableKeys] | None:
    upsert: dict[str, object] = {}
    remove: dict[str, object] = {}
    for name in _TABLES:
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


def _is_object_hex(text: str) -> bool:
    if len(text) != 64:
        return False
    try:
        return bytes.fromhex(text) != bytes(32)
    except ValueError:
        return False
