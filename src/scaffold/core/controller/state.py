"""The controller's records: live host records, the events it reports, and the durable state
it must not forget (docs/protocol.md §6.4).

A restarted controller that had forgotten its hosts would push empty tables and cut every
flow; one that had forgotten Host IDs would hand out new ones under live flows. So the
registrations are durable: one row per host, per object's replica set, per object name, per
backbone link, per draining host, per operator allow/disallow rule (§6.7), and one for the Host
ID counter. The core never writes them
anywhere: it emits ``StateChange`` records (an upsert or a delete of one row) that its runtime
commits to a store before sending the records that depend on them, and it is handed a
``ControllerState`` (every row, as one snapshot) when it starts. Liveness is not stored: a
restarted controller assumes the hosts that had registered are alive and lets their gateways
say otherwise. ``StateRows`` applies changes to a snapshot, for stores and for replaying outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import msgspec

__all__ = [
    "ROW_TYPES",
    "BackboneLink",
    "ControllerEvent",
    "ControllerState",
    "DrainingObjects",
    "HostIdCounter",
    "HostRecord",
    "HostState",
    "ObjectName",
    "ObjectReplicas",
    "AllowRule",
    "StateChange",
    "StateRecord",
    "StateRows",
    "decode_row",
    "encode_row",
]

Address = tuple[str, int]


@dataclass(slots=True)
class HostRecord:
    """What the controller knows of one host now (durable part: ``HostState``)."""

    name: str
    host_id: int
    dc: str
    gateway: str
    alive: bool = False
    #: when its liveness last changed (it was registered, heard, or went silent)
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


# -- durable rows ----------------------------------------------------------------------------
# Each row type has a ``kind`` (its table) and a ``key`` (its primary key in that table), so a
# store can keep one row per record (a file now; SQLite or etcd later).


class HostState(msgspec.Struct, frozen=True):
    """A registered host and its Host ID."""

    kind: ClassVar[str] = "host"
    name: str
    host_id: int
    dc: str
    gateway: str
    address: Address | None = None
    previous_dcs: list[str] = []

    @property
    def key(self) -> str:
        return self.name


class ObjectReplicas(msgspec.Struct, frozen=True):
    """The replica set of one object: host name -> weight, and its resolution policy
    (docs/protocol.md §3.5; "" is the default, ``nearest``)."""

    kind: ClassVar[str] = "replicas"
    object: str  # Object ID hex
    replicas: dict[str, int]
    policy: str = ""
    #: host name -> new flows per second it takes (§3.5), for the replicas that declare one
    capacities: dict[str, float] = {}
    #: host name -> Unix time its owner's grant expires (§6.7), for replicas bound with one:
    #: withdrawn then, by whichever controller leads
    expires: dict[str, float] = {}

    @property
    def key(self) -> str:
        return self.object


class ObjectName(msgspec.Struct, frozen=True):
    """The human name of an object (kept after its replicas leave, as in tables and reports)."""

    kind: ClassVar[str] = "name"
    object: str
    name: str

    @property
    def key(self) -> str:
        return self.object


class BackboneLink(msgspec.Struct, frozen=True):
    """Whether the backbone link between datacenters ``a`` and ``b`` (``a < b``) is up."""

    kind: ClassVar[str] = "link"
    a: str
    b: str
    up: bool

    @property
    def key(self) -> str:
        return f"{self.a}|{self.b}"


class DrainingObjects(msgspec.Struct, frozen=True):
    """The objects (hex) a host is draining: out of the tables, flows still running."""

    kind: ClassVar[str] = "draining"
    host: str
    objects: list[str]

    @property
    def key(self) -> str:
        return self.host


class HostIdCounter(msgspec.Struct, frozen=True):
    """The next Host ID to assign (never reused, even for hosts that are gone)."""

    kind: ClassVar[str] = "next-host-id"
    next_host_id: int

    @property
    def key(self) -> str:
        return ""


class AllowRule(msgspec.Struct, frozen=True):
    """The operator's ``allow`` (or ``disallow``) of place ``where`` (a host, a datacenter or
    ``*``) for plain-named object ``object`` (hex): applied over the topology file's policy
    whenever a controller starts (§6.7)."""

    kind: ClassVar[str] = "allow"
    object: str
    where: str
    allowed: bool

    @property
    def key(self) -> str:
        return f"{self.object}|{self.where}"


StateRecord = (
    HostState | ObjectReplicas | ObjectName | BackboneLink | DrainingObjects | HostIdCounter | AllowRule
)


#: every row type by its ``kind``
ROW_TYPES: dict[str, type[StateRecord]] = {
    t.kind: t
    for t in (HostIdCounter, HostState, ObjectReplicas, ObjectName, BackboneLink, DrainingObjects, AllowRule)
}
_row_encoder = msgspec.msgpack.Encoder()
_row_decoders = {kind: msgspec.msgpack.Decoder(t) for kind, t in ROW_TYPES.items()}


def encode_row(record: StateRecord) -> bytes:
    """One row as MessagePack (what SQLite and etcd stores keep)."""
    return _row_encoder.encode(record)


def decode_row(kind: str, data: bytes) -> StateRecord:
    """A stored row of table ``kind``.

    Raises:
        ValueError: an unknown kind, or bytes that are not such a row.
    """
    decoder = _row_decoders.get(kind)
    if decoder is None:
        raise ValueError(f"unknown row kind {kind!r}")
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"bad {kind} row: {exc}") from None


@dataclass(frozen=True, slots=True)
class StateChange:
    """One durable row changed: ``record`` is its new value; None means the row is deleted."""

    kind: str
    key: str
    record: StateRecord | None = None


class ControllerState(msgspec.Struct, frozen=True):
    """Every durable row at once: what a store hands to a starting controller (and the
    format a store hands back)."""

    next_host_id: int
    hosts: list[HostState]
    #: Object ID hex -> {host name: weight}
    objects: dict[str, dict[str, int]]
    object_names: dict[str, str]
    #: "a|b" (DC names, sorted) -> up
    links: dict[str, bool]
    #: hosts draining: name -> objects (hex) they drain
    draining: dict[str, list[str]] = {}
    #: Object ID hex -> resolution policy, for objects not under the default
    policies: dict[str, str] = {}
    #: Object ID hex -> {host name: capacity}, for replicas that declare one
    capacities: dict[str, dict[str, float]] = {}
    #: the operator's allow/disallow rules: "object hex|where" -> allowed
    allow_rules: dict[str, bool] = {}
    #: Object ID hex -> {host name: Unix time its grant expires}, for replicas bound with one
    grant_expiry: dict[str, dict[str, float]] = {}

    def records(self) -> Iterator[StateRecord]:
        """The state as rows."""
        yield HostIdCounter(self.next_host_id)
        yield from self.hosts
        for key, replicas in self.objects.items():
            yield ObjectReplicas(
                key,
                dict(replicas),
                self.policies.get(key, ""),
                dict(self.capacities.get(key, {})),
                dict(self.grant_expiry.get(key, {})),
            )
        for key, name in self.object_names.items():
            yield ObjectName(key, name)
        for link, up in self.links.items():
            a, _, b = link.partition("|")
            yield BackboneLink(a, b, up)
        for host, objects in self.draining.items():
            yield DrainingObjects(host, list(objects))
        for rule, allowed in self.allow_rules.items():
            key, _, where = rule.partition("|")
            yield AllowRule(key, where, allowed)

    @classmethod
    def of(cls, records: Iterable[StateRecord]) -> ControllerState:
        """The snapshot made of these rows."""
        next_host_id = 1
        hosts: list[HostState] = []
        objects: dict[str, dict[str, int]] = {}
        names: dict[str, str] = {}
        links: dict[str, bool] = {}
        draining: dict[str, list[str]] = {}
        policies: dict[str, str] = {}
        capacities: dict[str, dict[str, float]] = {}
        allow_rules: dict[str, bool] = {}
        grant_expiry: dict[str, dict[str, float]] = {}
        for record in records:
            match record:
                case HostIdCounter():
                    next_host_id = record.next_host_id
                case HostState():
                    hosts.append(record)
                case ObjectReplicas():
                    objects[record.object] = dict(record.replicas)
                    if record.policy:
                        policies[record.object] = record.policy
                    if record.capacities:
                        capacities[record.object] = dict(record.capacities)
                    if record.expires:
                        grant_expiry[record.object] = dict(record.expires)
                case ObjectName():
                    names[record.object] = record.name
                case BackboneLink():
                    links[record.key] = record.up
                case DrainingObjects():
                    draining[record.host] = list(record.objects)
                case AllowRule():
                    allow_rules[record.key] = record.allowed
        return cls(
            next_host_id,
            hosts,
            objects,
            names,
            links,
            draining,
            policies,
            capacities,
            allow_rules=allow_rules,
            grant_expiry=grant_expiry,
        )


class StateRows:
    """The durable rows, keyed by (kind, key): built from a snapshot, changed by
    ``StateChange``s, read back as a snapshot. A store keeps one; a test replays into one."""

    def __init__(self, state: ControllerState | None = None) -> None:
        self.rows: dict[tuple[str, str], StateRecord] = {}
        if state is not None:
            for record in state.records():
                self.rows[(record.kind, record.key)] = record

    def apply(self, changes: Iterable[StateChange]) -> None:
        for change in changes:
            if change.record is None:
                self.rows.pop((change.kind, change.key), None)
            else:
                self.rows[(change.kind, change.key)] = change.record

    def snapshot(self) -> ControllerState | None:
        """Every row as one ``ControllerState``; None when nothing was ever stored."""
        return ControllerState.of(self.rows.values()) if self.rows else None
