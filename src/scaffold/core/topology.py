"""Network descriptions: datacenters, switches, hosts, backbone links and objects.

A ``Topology`` is plain data, validated once; the controller derives routes from it and the
runtimes derive node-level links from it (docs/architecture.md §2). Inside a datacenter the
flow switches form a star around the first one, the *border* switch, which also carries the
DC's object switch and its backbone links.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..ids import NODE_NAME

__all__ = [
    "DatacenterSpec",
    "HostSpec",
    "LinkSpec",
    "ObjectSpec",
    "Topology",
    "default_topology",
    "make_topology",
]


@dataclass(frozen=True, slots=True)
class HostSpec:
    name: str
    gateway: str  # the flow switch it attaches to


@dataclass(frozen=True, slots=True)
class DatacenterSpec:
    name: str
    flow_switches: tuple[str, ...]
    object_switch: str
    hosts: tuple[HostSpec, ...] = ()

    @property
    def border(self) -> str:
        """The flow switch that carries the backbone links and the object switch."""
        return self.flow_switches[0]


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A bidirectional link. ``delay`` in seconds (one way), ``loss`` as a fraction."""

    a: str
    b: str
    delay: float = 0.0
    loss: float = 0.0
    bandwidth: float | None = None  # bits/s, None = unlimited


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """An object and the hosts serving it: (host name, weight) pairs."""

    name: str
    replicas: tuple[tuple[str, int], ...]
    #: any replica can continue a stream given its offsets (a content service)
    resumable: bool = False
    #: where else it may be served (operator policy, docs/protocol.md §6.7): host names,
    #: datacenter names or "*" (anywhere); the replicas above may serve it anyway
    allow: tuple[str, ...] = ()
    #: resolution policy (docs/protocol.md §3.5): "nearest" or "weighted"; "": the default
    policy: str = ""
    #: (replica host, new flows per second it takes) for the replicas that declare a
    #: capacity (docs/protocol.md §3.5); the others take every flow
    capacities: tuple[tuple[str, float], ...] = ()

    def capacity_of(self, host: str) -> float:
        """The capacity ``host`` declares for this object (0: no limit)."""
        return dict(self.capacities).get(host, 0.0)


@dataclass(frozen=True, slots=True)
class Topology:
    datacenters: tuple[DatacenterSpec, ...]
    #: links between datacenters, by DC name
    backbone: tuple[LinkSpec, ...] = ()
    objects: tuple[ObjectSpec, ...] = ()
    #: one-way delay of every link inside a datacenter, seconds
    local_delay: float = 0.0
    controller: str = "controller"
    _index: dict[str, tuple[str, str]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._validate()

    # -- queries -------------------------------------------------------------------------

    def datacenter(self, name: str) -> DatacenterSpec:
        for dc in self.datacenters:
            if dc.name == name:
                return dc
        raise ConfigError(f"no datacenter named {name!r}")

    def role_of(self, node: str) -> str:
        """``"host"``, ``"flow-switch"``, ``"object-switch"`` or ``"controller"``."""
        if node == self.controller:
            return "controller"
        try:
            return self._index[node][0]
        except KeyError:
            raise ConfigError(f"no node named {node!r}") from None

    def dc_of(self, node: str) -> str:
        try:
            return self._index[node][1]
        except KeyError:
            raise ConfigError(f"no node named {node!r}") from None

    def nodes(self) -> dict[str, str]:
        """Every data-plane node name and its role."""
        return {name: role for name, (role, _) in self._index.items()}

    def hosts(self) -> list[HostSpec]:
        return [h for dc in self.datacenters for h in dc.hosts]

    def node_links(self) -> list[LinkSpec]:
        """Links between node names: host-gateway, edge-border, object switch-border, and
        border-border for each backbone link."""
        links: list[LinkSpec] = []
        for dc in self.datacenters:
            for fs in dc.flow_switches[1:]:
                links.append(LinkSpec(fs, dc.border, self.local_delay))
            links.append(LinkSpec(dc.object_switch, dc.border, self.local_delay))
            for host in dc.hosts:
                links.append(LinkSpec(host.name, host.gateway, self.local_delay))
        for link in self.backbone:
            a, b = self.datacenter(link.a).border, self.datacenter(link.b).border
            links.append(LinkSpec(a, b, link.delay, link.loss, link.bandwidth))
        return links

    def with_host(self, host: HostSpec) -> Topology:
        """A copy with one more host attached to an existing flow switch."""
        dc_name = self.dc_of(host.gateway)
        dcs = tuple(
            DatacenterSpec(d.name, d.flow_switches, d.object_switch, (*d.hosts, host))
            if d.name == dc_name
            else d
            for d in self.datacenters
        )
        return Topology(dcs, self.backbone, self.objects, self.local_delay, self.controller)

    # -- validation ----------------------------------------------------------------------

    def _validate(self) -> None:
        index = self._index
        if not (0 <= self.local_delay < math.inf):
            raise ConfigError(f"local_delay must be a finite delay >= 0, got {self.local_delay}")
        if not self.datacenters:
            raise ConfigError("a topology needs at least one datacenter")

        def add(name: str, role: str, dc: str) -> None:
            if not name or not isinstance(name, str):
                raise ConfigError(f"a {role} in datacenter {dc!r} has no name")
            if NODE_NAME.fullmatch(name) is None:
                raise ConfigError(
                    f"{role} name {name!r:.80} in datacenter {dc!r}: names are a letter or digit, then "
                    "letters, digits, '.', '_' or '-' (at most 63)"
                )
            if name in index or name == self.controller:
                raise ConfigError(f"node name {name!r} is used twice")
            index[name] = (role, dc)

        dc_names = set()
        for dc in self.datacenters:
            if NODE_NAME.fullmatch(dc.name) is None:
                raise ConfigError(f"datacenter name {dc.name!r:.80}: not a safe name")
            if dc.name in dc_names:
                raise ConfigError(f"datacenter {dc.name!r} is defined twice")
            dc_names.add(dc.name)
            if not dc.flow_switches:
                raise ConfigError(f"datacenter {dc.name!r} has no flow switch")
            for fs in dc.flow_switches:
                add(fs, "flow-switch", dc.name)
            add(dc.object_switch, "object-switch", dc.name)
            for host in dc.hosts:
                add(host.name, "host", dc.name)
                if host.gateway not in dc.flow_switches:
                    raise ConfigError(
                        f"host {host.name!r}: gateway {host.gateway!r} is not a flow switch "
                        f"of datacenter {dc.name!r}"
                    )
        seen = set()
        for link in self.backbone:
            for end in (link.a, link.b):
                if end not in dc_names:
                    raise ConfigError(f"backbone link {link.a}-{link.b}: no datacenter {end!r}")
            if link.a == link.b:
                raise ConfigError(f"backbone link {link.a}-{link.b} joins a datacenter to itself")
            key = frozenset((link.a, link.b))
            if key in seen:
                raise ConfigError(f"backbone link {link.a}-{link.b} is defined twice")
            seen.add(key)
            if not (0 <= link.delay < math.inf) or not 0 <= link.loss < 1:
                raise ConfigError(f"backbone link {link.a}-{link.b}: want 0 <= delay, 0 <= loss < 1")
            if link.bandwidth is not None and not link.bandwidth > 0:
                raise ConfigError(f"backbone link {link.a}-{link.b}: bandwidth must be > 0")
        for obj in self.objects:
            if not obj.replicas and not obj.allow:
                raise ConfigError(f"object {obj.name!r} has no replica")
            if obj.policy not in ("", "nearest", "weighted"):
                raise ConfigError(
                    f"object {obj.name!r}: policy must be nearest or weighted, got {obj.policy!r}"
                )
            for where in obj.allow:
                if where != "*" and where not in index and where not in dc_names:
                    raise ConfigError(
                        f"object {obj.name!r}: allow {where!r} is not a host, datacenter or '*'"
                    )
            replicas = {host for host, _ in obj.replicas}
            for replica, capacity in obj.capacities:
                if replica not in replicas:
                    raise ConfigError(f"object {obj.name!r}: capacity of {replica!r}, not a replica")
                if not 0 < capacity <= 1e9:
                    raise ConfigError(f"object {obj.name!r}: capacity of {replica!r} must be in (0, 1e9]")
            for replica, weight in obj.replicas:
                if index.get(replica, ("", ""))[0] != "host":
                    raise ConfigError(f"object {obj.name!r}: replica {replica!r} is not a host")
                if weight <= 0:
                    raise ConfigError(f"object {obj.name!r}: weight of {replica!r} must be > 0")


def default_topology() -> Topology:
    """The embedded default network: three datacenters in a triangle.

    ``east`` and ``west`` each have a border and an edge flow switch, an object switch and
    four hosts; ``north`` has one flow switch and two hosts. Object ``web`` (a resumable
    content service) has replicas on ``east-h1`` (weight 1), ``east-h2`` (weight 2) and
    ``west-h1`` (weight 3); object ``session`` (not resumable) on ``east-h2`` and ``west-h1``.
    """

    def dc(name: str, switches: int, hosts: int) -> DatacenterSpec:
        fss = tuple(f"{name}-fs{i}" for i in range(1, switches + 1))
        hs = tuple(HostSpec(f"{name}-h{i}", fss[(i - 1) % len(fss)]) for i in range(1, hosts + 1))
        return DatacenterSpec(name, fss, f"{name}-os", hs)

    return Topology(
        datacenters=(dc("east", 2, 4), dc("west", 2, 4), dc("north", 1, 2)),
        backbone=(
            LinkSpec("east", "west", delay=0.004),
            LinkSpec("west", "north", delay=0.003),
            LinkSpec("north", "east", delay=0.003),
        ),
        objects=(
            ObjectSpec("web", (("east-h1", 1), ("east-h2", 2), ("west-h1", 3)), resumable=True),
            ObjectSpec("session", (("east-h2", 1), ("west-h1", 1))),
        ),
        local_delay=0.0,
    )


def make_topology(
    datacenters: int = 2,
    hosts_per_datacenter: int = 3,
    *,
    flow_switches_per_datacenter: int = 1,
    backbone_delay: float = 0.002,
    objects: tuple[ObjectSpec, ...] = (),
) -> Topology:
    """A regular network: datacenters ``dc1``..``dcN`` on a backbone ring (a line for two),
    each with its flow switches ``dcK-fsI``, object switch ``dcK-os`` and hosts ``dcK-hJ``
    spread over the flow switches.

    Raises:
        ConfigError: a count is not positive.
    """
    if datacenters < 1 or hosts_per_datacenter < 0 or flow_switches_per_datacenter < 1:
        raise ConfigError("want at least one datacenter and one flow switch per datacenter")
    dcs = []
    for k in range(1, datacenters + 1):
        name = f"dc{k}"
        fss = tuple(f"{name}-fs{i}" for i in range(1, flow_switches_per_datacenter + 1))
        hosts = tuple(
            HostSpec(f"{name}-h{j}", fss[(j - 1) % len(fss)]) for j in range(1, hosts_per_datacenter + 1)
        )
        dcs.append(DatacenterSpec(name, fss, f"{name}-os", hosts))
    links = [LinkSpec(f"dc{k}", f"dc{k + 1}", backbone_delay) for k in range(1, datacenters)]
    if datacenters > 2:
        links.append(LinkSpec(f"dc{datacenters}", "dc1", backbone_delay))
    return Topology(tuple(dcs), tuple(links), objects)
