"""The controller, sans-IO: its inputs and outputs (docs/protocol.md §6).

It registers hosts (assigning Host IDs) and their objects, learns liveness from the hosts'
gateway flow switches (which report changes only) and from closed control connections, keeps
every connected switch's tables and carries out operator commands. Inputs:
``receive_message``, ``node_disconnected``, ``handle_timer``, ``command`` / ``admin``.
Outputs, drained by the runtime: ``state_changes()`` (durable rows to commit) and
``messages_to_send()`` (records for nodes) -- committed first, then sent (§6.4). The state it
restarts from is an input too: ``Controller(topology, saved=store.load())``. Like every core it
offers the engine interface (``core/engine.py``: ``ControllerEngine``): ``name``, ``role``,
``next_event()`` (its decisions, ``ControllerEvent``) and ``metrics()``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any, ClassVar

from ...errors import UsageError
from ...ids import NODE_NAME, ObjectId
from ...wire import control
from ...wire.control import ControlMessage, SwitchTables
from ..locality import Policy
from ..metrics import DROPS, MetricKind, Sample, define
from ..ownership import GrantRefused, verify_grant
from ..topology import Topology
from .authorize import BindPolicy
from .churn import Churn
from .commands import COMMANDS, Command
from .registry import Registry, is_object_hex
from .state import ControllerEvent, ControllerState, HostRecord, StateChange
from .tables import COALESCE, SwitchState, Tables

__all__ = ["EVENT_LOG_KEEP", "EVENT_LOG_LIMIT", "HOST_RETENTION", "Controller"]

#: a host that is dead this long (seconds) and not in the topology is forgotten (§6.6)
HOST_RETENTION = 3600.0

#: objects listed by ``status`` (``object_count`` says how many there are)
STATUS_OBJECTS = 1000
#: records whose table changes wait for the coalescing window (registrations, in bursts)
_COALESCED = (control.Hello, control.Bind, control.Unbind, control.Heartbeat, control.Demand)
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
REGISTRATIONS = define(
    "registrations_total",
    MetricKind.COUNTER,
    "Nodes the controller accepted on a Hello (a first registration or a reconnection), by the "
    "role of the node (node_role: host, flow-switch, object-switch).",
    labels=("node_role",),
)

#: the policy names a Bind may give (docs/protocol.md §3.5)
_POLICIES = frozenset(p.value for p in Policy)


class Controller:
    """Sans-IO controller. Feed ``receive_message`` / ``node_disconnected`` / ``handle_timer``;
    drain ``state_changes`` (commit them), then ``messages_to_send`` as (node, record) pairs."""

    def __init__(
        self,
        topology: Topology,
        *,
        heartbeat_interval: float = 0.2,
        dead_after: int = 3,
        saved: ControllerState | None = None,
        open_binding: bool = False,
        retention: float = HOST_RETENTION,
    ) -> None:
        """``open_binding``: any host may serve any plain-named object (an embedded test
        network); else only where ``policy`` allows (the topology's objects, ``allow``)."""
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.retention = retention
        self.events: list[ControllerEvent] = []
        self.drops: Counter[str] = Counter()
        #: Hellos accepted, by role
        self.registrations: Counter[str] = Counter()
        self._out: list[tuple[str, ControlMessage]] = []
        #: when the pending table changes go out (``COALESCE`` after the first one)
        self._flush_at: float | None = None
        #: the next housekeeping: expired grants, departed hosts (every heartbeat interval)
        self._next_check: float | None = None
        #: Unix time minus the ``now`` the runtime passes: grants expire in Unix time
        self.wall_offset = 0.0
        #: how long the runtime lets a host's control connection be silent, told to each
        #: host in ``Welcome`` (its keepalive follows it; 0: not said, docs/protocol.md §6.6)
        self.host_idle_timeout = 0.0
        self.registry = Registry(topology, saved, self.drops)
        self.tables = Tables(self.registry, self._out, heartbeat_interval * dead_after)
        self.registry.watcher = self.tables
        self.churn = Churn(self.registry, self.tables, self._out, self.events)
        #: (Unix time, object hex, host) of every grant expiry, soonest first: a check pops
        #: what expired, never walks them all (an entry no longer in the registry is skipped)
        self._expiries = self._expiry_heap()
        self.policy = BindPolicy(open=open_binding)
        for obj in topology.objects:
            key = ObjectId.from_name(obj.name).raw.hex()
            for where in (*(host for host, _ in obj.replicas), *obj.allow):
                self.policy.allow(key, where)
        # The operator's rules, restored from the store, go over the topology file's (§6.7).
        for (key, where), allowed in self.registry.allow_rules.items():
            try:
                if allowed:
                    self.policy.allow(key, where)
                else:
                    self.policy.disallow(key, where)
            except UsageError:
                self.drops["restore-bad-allow-rule"] += 1

    # -- the registry's state, read through ---------------------------------------------------

    @property
    def topology(self) -> Topology:
        return self.registry.topology

    @topology.setter
    def topology(self, topology: Topology) -> None:
        """A host was added to the network (the runtimes' ``add_host``)."""
        self.registry.topology = topology

    @property
    def dc_ids(self) -> dict[str, int]:
        return self.registry.dc_ids

    @property
    def hosts(self) -> dict[str, HostRecord]:
        return self.registry.hosts

    @property
    def objects(self) -> dict[str, dict[str, int]]:
        return self.registry.objects

    @property
    def object_names(self) -> dict[str, str]:
        return self.registry.object_names

    @property
    def switches(self) -> dict[str, SwitchState]:
        return self.tables.switches

    # -- inputs ----------------------------------------------------------------------------

    def receive_message(self, node: str, message: ControlMessage, now: float) -> None:
        """Handle one record from ``node``. Unknown nodes and bad records are counted."""
        self._housekeeping(now)
        self._receive(node, message, now)
        # Registrations come in bursts: they wait for the window. Churn does not wait.
        self._schedule(now, urgent=not isinstance(message, _COALESCED))

    def _receive(self, node: str, message: ControlMessage, now: float) -> None:
        reg = self.registry
        if isinstance(message, control.Bind):  # the most frequent record: tested first
            self._bind(node, message, now)
        elif isinstance(message, control.Hello):
            self._hello(message, now)
        elif isinstance(message, control.Heartbeat):
            # A host sends one after a (re)registration's Hello and Binds: the bindings are
            # complete. The connection's node, never the name the record claims (§6.6).
            record = reg.hosts.get(node)
            if record is None:
                if node not in self.tables.switches:  # a switch's keepalive is fine
                    self.drops["heartbeat-from-unknown"] += 1
                return
            if record.rebinding is not None:
                self._finish_rebinding(record)
        elif isinstance(message, control.HostLiveness):
            self._liveness(node, message, now)
        elif isinstance(message, control.Unbind):
            reg.remove_replica(message.obj, node)
        elif isinstance(message, control.FlowsOut):
            if not self.churn.flows_out(node, message, now):
                self.drops["unexpected-flows-out"] += 1
        elif isinstance(message, control.DrainDone):
            self.churn.drain_done(node, message.obj, now)
        elif isinstance(message, control.Demand):
            if self.tables.role(node) != "object-switch":
                self.drops["demand-not-object-switch"] += 1
                return
            self.tables.demand_reported(node, message)
        elif isinstance(message, control.SyncRequest):
            state = self.tables.switches.get(node)
            if state is None or not state.connected:
                self.drops["sync-from-unknown"] += 1
                return
            self.tables.sync(node)
        else:
            self.drops["unexpected-message"] += 1

    def _bind(self, node: str, message: control.Bind, now: float) -> None:
        """Host ``node`` serves a replica of ``message.obj``, if it may (docs/protocol.md §6.7)."""
        reg = self.registry
        record = reg.hosts.get(node)
        if (
            record is None
            or not is_object_hex(message.obj)
            or message.weight <= 0
            or (message.policy and message.policy not in _POLICIES)
        ):
            self.drops["bad-bind"] += 1
            return
        refusal = self._bind_refusal(record, message, now)
        if refusal is not None:
            self.drops[refusal] += 1
            self.events.append(ControllerEvent(now, "bind-refused", node, refusal))
            return
        reg.set_replica(message.obj, node, message.weight)
        if message.policy:
            reg.set_policy(message.obj, message.policy)
        if message.capacity or message.obj in reg.capacities:
            reg.set_capacity(message.obj, node, message.capacity)
        if record.rebinding is not None:
            record.rebinding.add(message.obj)
        if message.name:
            reg.set_name(message.obj, message.name)
        self.events.append(ControllerEvent(now, "bind", node, message.name or message.obj[:12]))

    def node_disconnected(self, node: str, now: float) -> None:
        """The control connection of ``node`` closed (a dead process, a broken path). The
        hosts of a flow switch that is gone are unreachable: they are down until it reports
        them again."""
        if node in self.tables.switches:
            self.tables.switches[node].connected = False
            self.tables.switch_lost(node)
            for name in list(self.registry.attached.get(node, ())):
                host = self.registry.hosts[name]
                if host.alive:
                    self._set_alive(host, False, now, f"gateway {node} lost")
        record = self.registry.hosts.get(node)
        if record is not None and record.alive:
            self._set_alive(record, False, now, "disconnected")
        self._schedule(now, urgent=True)

    def get_timer(self) -> float | None:
        timers = [t for t in (self._flush_at, self._next_check) if t is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        """Send the table changes gathered so far when their window closes; housekeeping."""
        if self._flush_at is not None and now >= self._flush_at:
            self.flush_tables()
        self._housekeeping(now)
        self._schedule(now, urgent=True)

    def flush_tables(self) -> None:
        """Send every pending table change now (``tables.py``), without waiting for the
        coalescing window to close."""
        self._flush_at = None
        self.tables.flush()

    def _schedule(self, now: float, *, urgent: bool) -> None:
        """Flush the pending table changes now (``urgent``: churn, failures, commands, whose
        records go out with them) or when the coalescing window closes."""
        if not urgent and self._flush_at is not None:
            return  # the window is open already (checked first: a burst of Binds comes here)
        if not self.tables.pending():
            return
        if urgent:
            self.flush_tables()
        elif self._flush_at is None:
            self._flush_at = now + COALESCE

    def _liveness(self, node: str, report: control.HostLiveness, now: float) -> None:
        """A gateway flow switch reports attached hosts silent or heard again (§6.2). Only
        the current gateway of a host speaks for it."""
        for names, alive in ((report.down, False), (report.up, True)):
            for name in names:
                record = self.registry.hosts.get(name)
                if record is None or record.gateway != node:
                    self.drops["liveness-not-gateway"] += 1
                    continue
                if record.alive != alive:
                    why = "heard at its gateway" if alive else "silent at its gateway"
                    self._set_alive(record, alive, now, why)

    def _housekeeping(self, now: float) -> None:
        """Every heartbeat interval: withdraw replicas whose grant expired, forget departed
        hosts (no liveness here: the gateways report it)."""
        if self._next_check is None:
            self._next_check = now + self.heartbeat_interval
            return
        if now < self._next_check:
            return
        self._next_check = now + self.heartbeat_interval
        self._expire_grants(now)
        self._forget_departed(now)

    # -- engine interface (core/engine.py: ControllerEngine) -------------------------------

    name: ClassVar[str] = "controller"
    role: ClassVar[str] = "controller"
    #: how many entries of ``events`` ``next_event`` handed out
    _events_taken: int = 0
    #: how many events were trimmed off the front of ``events``: event ``events[i]`` is number
    #: ``events_trimmed + i + 1`` of the log (``recent_events``)
    events_trimmed: int = 0

    def next_event(self) -> ControllerEvent | None:
        """The oldest decision not taken yet; ``events`` keeps them all as a log, trimmed to
        its latest ``EVENT_LOG_KEEP`` entries once it grows past ``EVENT_LOG_LIMIT``."""
        if self._events_taken >= len(self.events):
            return None
        event = self.events[self._events_taken]
        self._events_taken += 1
        if self._events_taken > EVENT_LOG_LIMIT:
            # In place: the churn part appends to this same list.
            cut = self._events_taken - EVENT_LOG_KEEP
            del self.events[:cut]
            self._events_taken -= cut
            self.events_trimmed += cut
        return event

    def recent_events(self, since: int, limit: int, now: float) -> dict[str, Any]:
        """The log's events numbered above ``since``, at most the latest ``limit`` of them,
        oldest first, each with its number ``seq``; ``last`` is the number of the latest event
        (pass it as ``since`` next time) and ``now`` the controller's clock, which ``at`` is on."""
        last = self.events_trimmed + len(self.events)
        first = max(since + 1, self.events_trimmed + 1, last - limit + 1)
        return {
            "now": now,
            "last": last,
            "events": [
                {"seq": seq, "at": e.at, "kind": e.kind, "target": e.target, "detail": e.detail}
                for seq, e in enumerate(self.events[first - self.events_trimmed - 1 :], start=first)
            ],
        }

    def metrics(self) -> list[Sample]:
        alive = sum(1 for r in self.registry.hosts.values() if r.alive)
        switches = self.tables.switches
        connected = sum(1 for s in switches.values() if s.connected)
        return [
            *DROPS.by(self.drops),
            HOSTS.sample(alive, state="alive"),
            HOSTS.sample(len(self.registry.hosts) - alive, state="dead"),
            SWITCHES.sample(connected, state="connected"),
            SWITCHES.sample(len(switches) - connected, state="disconnected"),
            OBJECTS.sample(len(self.registry.objects)),
            *REGISTRATIONS.by(self.registrations),
        ]

    # -- commands --------------------------------------------------------------------------

    def command(self, command: Command, now: float) -> dict[str, Any]:
        """Carry out an operator command now; its result (docs/protocol.md §6.5).

        Raises:
            UsageError: an unknown host, object, datacenter or link; a command only the
                runtime answers (``counters``).
        """
        try:
            return command.run(self, now)
        finally:
            self._schedule(now, urgent=True)

    def admin(self, request: control.AdminRequest, now: float) -> control.AdminReply:
        """Run an operator's request and answer it; an unknown command or a bad argument is
        an error reply, never an exception (docs/protocol.md §6.5)."""
        cls = COMMANDS.get(request.command)
        if cls is None:
            known = ", ".join(sorted(COMMANDS))
            error = f"unknown command {request.command!r} (known: {known})"
            return control.AdminReply(request.id, False, error=error)
        try:
            result = self.command(cls.from_args(request.args), now)
        except UsageError as exc:
            return control.AdminReply(request.id, False, error=f"{request.command}: {exc}")
        return control.AdminReply(request.id, True, result=result)

    # -- outputs ---------------------------------------------------------------------------

    def state_changes(self) -> list[StateChange]:
        """The durable rows changed since the last call. The runtime commits them before it
        sends what ``messages_to_send`` returns (docs/protocol.md §6.4)."""
        return self.registry.state_changes()

    def state_not_committed(self, changes: list[StateChange]) -> None:
        """The runtime could not commit ``changes``: their rows are emitted again (as they
        are then) by the next ``state_changes()``."""
        self.registry.touch_again(changes)

    def messages_to_send(self) -> list[tuple[str, ControlMessage]]:
        out = self._out[:]
        self._out.clear()  # the list is shared with the tables and churn parts
        return out

    # -- views -----------------------------------------------------------------------------

    def snapshot(self) -> ControllerState:
        """Every durable row now (what committing every change so far has stored)."""
        return self.registry.snapshot()

    def status(self) -> dict[str, Any]:
        """The controller's view: hosts, switches, objects and replicas, backbone links."""
        reg = self.registry
        return {
            "datacenters": dict(reg.dc_ids),
            "hosts": [
                {
                    "name": r.name,
                    "host_id": r.host_id,
                    "dc": r.dc,
                    "gateway": r.gateway,
                    "alive": r.alive,
                    "address": list(r.address) if r.address else None,
                }
                for r in reg.hosts.values()
            ],
            "switches": [
                {
                    "name": n,
                    "role": st.role,
                    "dc": st.dc,
                    "connected": st.connected,
                    "version": self.tables.version_for(n),
                }
                for n, st in self.tables.switches.items()
            ],
            # The first STATUS_OBJECTS objects by ID (a reply must fit a control frame).
            "object_count": len(reg.objects),
            "objects": [
                {
                    "object": "obj:" + obj,
                    "name": reg.object_names.get(obj, ""),
                    "policy": reg.policies.get(obj, Policy.NEAREST.value),
                    "replicas": [
                        {
                            "host": h,
                            "dc": reg.hosts[h].dc,
                            "weight": w,
                            "alive": reg.hosts[h].alive,
                            "capacity": reg.capacities.get(obj, {}).get(h, 0.0),
                        }
                        for h, w in sorted(reg.objects[obj].items())
                    ],
                    # measured new flows per second by source DC (§3.5): objects that spill
                    "demand": {
                        self.dc_name(src) or str(src): round(rate, 1)
                        for src, rate in sorted(self.tables.demand.get(obj, {}).items())
                    },
                }
                for obj in heapq.nsmallest(STATUS_OBJECTS, reg.objects)
            ],
            "links": [
                {"a": l.a, "b": l.b, "delay_ms": l.delay * 1000, "up": reg.links_up[frozenset((l.a, l.b))]}
                for l in reg.topology.backbone
            ],
            "drops": dict(self.drops),
        }

    def object_key(self, ref: str) -> str:
        """The Object ID (hex) of a registered object named by its name, text or hex.

        Raises:
            UsageError: no such object is registered.
        """
        return self.registry.object_key(ref)

    def host_name(self, host_id: int) -> str | None:
        return self.registry.host_name(host_id)

    def dc_name(self, dc_id: int) -> str | None:
        return self.registry.dc_name(dc_id)

    def desired_tables(self, switch: str) -> SwitchTables:
        """What ``switch``'s tables should be now (a pure function of controller state)."""
        return self.tables.desired(switch)

    # -- internals -------------------------------------------------------------------------

    def _bind_refusal(self, record: HostRecord, bind: control.Bind, now: float) -> str | None:
        """Why ``record``'s host may not serve ``bind.obj`` (a drop reason), or None: an
        owned object needs a valid grant, a plain-named one the operator's policy (§6.7) unless the
        host is one of its replicas already."""
        if bind.grant:
            try:
                grant = verify_grant(
                    bind.grant,
                    ObjectId(bytes.fromhex(bind.obj)),
                    record.name,
                    record.dc,
                    now + self.wall_offset,
                )
            except GrantRefused as exc:
                return exc.reason
            self.registry.set_grant_expiry(bind.obj, record.name, grant.expires)
            heapq.heappush(self._expiries, (grant.expires, bind.obj, record.name))
            if len(self._expiries) > 2 * len(self.registry.grant_expiry) + 1024:
                self._expiries = self._expiry_heap()  # renewals left stale entries: bounded
            return None
        if record.name in self.registry.objects.get(bind.obj, ()):
            # Already one of its replicas (a re-registration, say with a new leader or a
            # restarted controller that restored it): it was allowed when it bound or the
            # operator put it there (migrate-object), and a disallow leaves bound replicas in
            # place until they leave. The policy itself is stored (set_policy).
            return None
        if not self.policy.permits(bind.obj, record.name, record.dc):
            return "bind-not-allowed"
        return None

    def set_policy(self, key: str, where: str, allowed: bool) -> bool:
        """The operator lets ``where`` (a host, a datacenter or ``ANYWHERE``) serve plain-named
        object ``key`` -- or no longer (``allowed`` False): the rule is stored, so it outlives
        this controller (§6.7). Returns whether ``where`` was allowed before.

        Raises:
            UsageError: ``where`` is not a name.
        """
        was = self.policy.allows(key, where)
        if allowed:
            self.policy.allow(key, where)
        else:
            self.policy.disallow(key, where)
        self.registry.set_allow_rule(key, where, allowed)
        return was

    def _expiry_heap(self) -> list[tuple[float, str, str]]:
        heap = [
            (expires, key, host)
            for key, hosts in self.registry.grant_expiry.items()
            for host, expires in hosts.items()
        ]
        heapq.heapify(heap)
        return heap

    def _expire_grants(self, now: float) -> None:
        """Withdraw replicas whose grant expired (and forget grants of replicas gone)."""
        wall = now + self.wall_offset
        reg = self.registry
        while self._expiries and self._expiries[0][0] <= wall:
            expires, key, host = heapq.heappop(self._expiries)
            if reg.grant_expiry.get(key, {}).get(host) != expires:
                continue  # renewed by a later grant, or the replica left
            reg.set_grant_expiry(key, host, None)
            if reg.remove_replica(key, host):
                self.drops["grant-expired"] += 1
                self.events.append(ControllerEvent(now, "grant-expired", host, key[:12]))

    def _forget_departed(self, now: float) -> None:
        """Forget hosts outside the topology that are dead longer than ``retention``."""
        reg = self.registry
        known = reg.topology.nodes()
        gone = [
            r.name
            for r in reg.hosts.values()
            if not r.alive and now - r.last_seen > self.retention and r.name not in known
        ]
        for name in gone:
            reg.forget(name)
            self.events.append(ControllerEvent(now, "host-forgotten", name))

    def _hello(self, hello: control.Hello, now: float) -> None:
        reg = self.registry
        if NODE_NAME.fullmatch(hello.node) is None:
            self.drops["hello-bad-name"] += 1
            return
        address = None if hello.address is None else (str(hello.address[0]), int(hello.address[1]))
        if address is not None:
            reg.set_address(hello.node, address)
        if hello.role == "host":
            if self.tables.role(hello.gateway) != "flow-switch":
                self.drops["hello-bad-gateway"] += 1
                return
            record = reg.host_record(hello.node, hello.gateway)
            reg.attach(record, hello.gateway)
            if address is not None:
                reg.set_host_address(record, address)
            # A (re)registering host re-sends its bindings right after Hello. Its old ones stay
            # in the tables until its first heartbeat, then those it did not re-send go: so a
            # reconnection never makes its replicas blink out of the object switches.
            record.rebinding = set()
            welcome = control.Welcome(
                node=hello.node,
                dc_id=reg.dc_ids[record.dc],
                host_id=record.host_id,
                gateway_address=reg.addresses.get(hello.gateway),
                heartbeat_interval=self.heartbeat_interval,
                dc=record.dc,
                idle_timeout=self.host_idle_timeout,
            )
            self._out.append((hello.node, welcome))
            self.registrations[hello.role] += 1
            self._set_alive(record, True, now, "registered")
            return
        state = self.tables.switches.get(hello.node)
        if state is None or state.role != hello.role:
            self.drops["hello-unknown-node"] += 1
            return
        state.connected = True
        self.registrations[hello.role] += 1
        self.tables.sync(hello.node)

    def _finish_rebinding(self, record: HostRecord) -> None:
        kept = record.rebinding or set()
        record.rebinding = None
        gone = [k for k in self.registry.host_objects.get(record.name, ()) if k not in kept]
        for key in gone:
            self.registry.remove_replica(key, record.name)

    def _set_alive(self, record: HostRecord, alive: bool, now: float, why: str) -> None:
        record.last_seen = now  # since then up, or down (departed hosts are forgotten later)
        self.registry.set_alive(record, alive)
        self.events.append(ControllerEvent(now, "host-up" if alive else "host-down", record.name, why))
