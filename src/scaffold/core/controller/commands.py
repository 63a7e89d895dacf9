"""The operator commands of the controller, each defined once (docs/protocol.md §6.5).

A command is a typed record: its class docstring is the command's help; its fields are its
arguments, with their help in ``Meta(description=...)`` and range checks in ``__post_init__``
(which raise ``UsageError`` however the record is made); ``name`` is its admin name and
``run`` its handler. Everything else derives from these records: ``Controller.admin`` finds
the record in ``COMMANDS`` by name and ``from_args`` converts the request's arguments to it (so
a bad one is a clear error reply); ``Controller.command`` and the runtimes' in-process
``command`` take a record; ``runtime.admin.call`` sends one; the CLI subcommands are generated
from them (``cli/admin.py``).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self

import msgspec
from msgspec import Meta

from ...errors import UsageError
from ...ids import ObjectId
from ...wire.control import MAX_WEIGHT
from ..locality import Policy

if TYPE_CHECKING:
    from .controller import Controller

__all__ = [
    "COMMANDS",
    "Allow",
    "Argument",
    "Command",
    "Counters",
    "Disallow",
    "Drain",
    "Events",
    "Link",
    "LinkSettings",
    "MAX_WEIGHT",
    "MigrateHost",
    "MigrateObject",
    "MoveHost",
    "Port",
    "SetPolicy",
    "SetWeight",
    "Status",
]

Result = dict[str, Any]

#: every command by its admin name, in definition order (filled as the classes are defined)
COMMANDS: dict[str, type[Command]] = {}


@dataclass(frozen=True, slots=True)
class Argument:
    """One argument of a command, as the CLI and the docs show it."""

    name: str
    type: type  # str, int, float or bool
    required: bool
    help: str
    #: an optional argument given by position (``drain HOST [OBJECT]``) rather than ``--name``
    positional: bool


class Command(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An operator command (subclasses are the commands)."""

    #: the admin command name (``AdminRequest.command``) and the CLI subcommand
    name: ClassVar[str]
    #: a ``scaffold NAME`` subcommand of its own (else ``scaffold admin NAME``)
    top_level: ClassVar[bool] = False
    #: optional arguments that the CLI takes by position
    optional_positional: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        COMMANDS[cls.name] = cls

    def run(self, controller: Controller, now: float) -> Result:
        """Carry the command out on ``controller`` at ``now``; its result, for the operator.

        Raises:
            UsageError: an unknown host, object, datacenter or link; a command the core does
                not answer.
        """
        raise NotImplementedError

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Self:
        """The command with arguments ``args`` (an ``AdminRequest``'s, or JSON).

        Raises:
            UsageError: arguments missing, unknown, of the wrong type or out of range; the
                message says which.
        """
        try:
            return msgspec.convert(args, cls)
        except msgspec.ValidationError as exc:
            raise UsageError(str(exc)) from None

    def args(self) -> dict[str, Any]:
        """The arguments as ``AdminRequest.args``."""
        return msgspec.structs.asdict(self)

    @classmethod
    def help(cls) -> str:
        """The one-line help of the command (its docstring's first line)."""
        return (cls.__doc__ or cls.name).strip().splitlines()[0].rstrip(".")

    @classmethod
    def arguments(cls) -> list[Argument]:
        """The command's arguments, in order."""
        out = []
        for f in msgspec.structs.fields(cls):
            kind, help_text = f.type, ""
            if typing.get_origin(kind) is Annotated:
                help_text = next((m.description or "" for m in kind.__metadata__ if isinstance(m, Meta)), "")
                kind = typing.get_args(kind)[0]
            if isinstance(kind, types.UnionType):  # ``X | None``
                kind = next(t for t in typing.get_args(kind) if t is not type(None))
            out.append(Argument(f.name, kind, f.required, help_text, f.name in cls.optional_positional))
        return out


Host = Annotated[str, Meta(description="a host's name")]
Object = Annotated[str, Meta(description="an object: its name, obj: text or 64 hex digits")]
Up = Annotated[bool, Meta(description="up or down")]


# -- the commands ------------------------------------------------------------------------------


class Status(Command, frozen=True):
    """The controller's view: hosts, switches, objects and replicas, backbone links, drops."""

    name = "status"

    def run(self, controller: Controller, now: float) -> Result:
        return controller.status()


class Counters(Command, frozen=True):
    """Every node's last counters (its NodeStats); answered by the controller's runtime."""

    name = "counters"

    def run(self, controller: Controller, now: float) -> Result:
        raise UsageError("counters are answered by the controller's runtime, which holds the nodes' reports")


class Events(Command, frozen=True):
    """The controller's latest decisions (hosts up and down, binds, churn), oldest first."""

    name = "events"
    since: Annotated[int, Meta(description="only events numbered above this (a reply's 'last')")] = 0
    limit: Annotated[int, Meta(description="at most this many, the latest (1 to 1000)")] = 50

    def __post_init__(self) -> None:
        if self.since < 0:
            raise UsageError(f"since must be >= 0, got {self.since}")
        if not 1 <= self.limit <= 1000:
            raise UsageError(f"limit must be between 1 and 1000, got {self.limit}")

    def run(self, controller: Controller, now: float) -> Result:
        return controller.recent_events(self.since, self.limit, now)


class Link(Command, frozen=True):
    """Mark a backbone link down or up; DC routes are recomputed around it."""

    name = "link"
    a: Annotated[str, Meta(description="a datacenter at one end")]
    b: Annotated[str, Meta(description="the datacenter at the other end")]
    up: Up

    def run(self, controller: Controller, now: float) -> Result:
        controller.churn.set_link(self.a, self.b, self.up, now)
        return {"link": f"{self.a}-{self.b}", "up": self.up}


class LinkSettings(Command, frozen=True):
    """Change a link's emulation at both ends: delay, loss, or cut it (aio runtime)."""

    name = "link-settings"
    a: Annotated[str, Meta(description="a node, or a datacenter for its backbone link")]
    b: Annotated[str, Meta(description="the neighbour node, or the other datacenter")]
    delay_ms: Annotated[float | None, Meta(description="one-way delay, ms (>= 0)")] = None
    loss: Annotated[float | None, Meta(description="fraction of packets to drop, 0 to 1")] = None
    up: Annotated[bool | None, Meta(description="restore (true) or cut (false) the link")] = None

    def __post_init__(self) -> None:
        if self.delay_ms is not None and not self.delay_ms >= 0:
            raise UsageError(f"delay must be >= 0 ms, got {self.delay_ms}")
        if self.loss is not None and not 0 <= self.loss <= 1:
            raise UsageError(f"loss must be a fraction in [0, 1], got {self.loss}")

    def run(self, controller: Controller, now: float) -> Result:
        delay = None if self.delay_ms is None else self.delay_ms / 1000
        end_a, end_b = controller.churn.link_settings(self.a, self.b, delay, self.loss, self.up)
        return {"link": f"{end_a}-{end_b}", "delay_ms": self.delay_ms, "loss": self.loss, "up": self.up}


class Port(Command, frozen=True):
    """A switch reports a port down or up; a backbone port marks its link."""

    name = "port"
    node: Annotated[str, Meta(description="the switch reporting")]
    peer: Annotated[str, Meta(description="the neighbour its port leads to")]
    up: Up

    def run(self, controller: Controller, now: float) -> Result:
        backbone = controller.churn.port(self.node, self.peer, self.up, now)
        return {"node": self.node, "peer": self.peer, "up": self.up, "backbone": backbone}


class Drain(Command, frozen=True):
    """Planned downtime: no new flows to a replica; established ones finish, then it leaves."""

    name = "drain"
    top_level = True
    optional_positional = ("object",)
    host: Host
    object: Annotated[str | None, Meta(description="one object (default: every one the host serves)")] = None

    def run(self, controller: Controller, now: float) -> Result:
        return {"host": self.host, "draining": controller.churn.drain(self.host, self.object, now)}


class SetWeight(Command, frozen=True):
    """Load balancing: change a replica's weight; only new flows follow it."""

    name = "set-weight"
    top_level = True
    object: Object
    host: Annotated[str, Meta(description="the replica's host")]
    weight: Annotated[int, Meta(description=f"the new weight, 1 to {MAX_WEIGHT}")]

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise UsageError("weight must be > 0 (to stop new flows, drain the replica)")
        if self.weight > MAX_WEIGHT:
            raise UsageError(f"weight must be at most {MAX_WEIGHT}, got {self.weight}")

    def run(self, controller: Controller, now: float) -> Result:
        controller.churn.set_weight(self.object, self.host, self.weight, now)
        return {"object": self.object, "host": self.host, "weight": self.weight}


class SetPolicy(Command, frozen=True):
    """Resolution policy of an object: nearest replica first, or one share by weight
    (docs/protocol.md §3.5); only new flows follow it."""

    name = "set-policy"
    top_level = True
    object: Object
    policy: Annotated[str, Meta(description="nearest or weighted")]

    def __post_init__(self) -> None:
        if self.policy not in {p.value for p in Policy}:
            raise UsageError(
                f"policy must be one of {', '.join(p.value for p in Policy)}, got {self.policy!r}"
            )

    def run(self, controller: Controller, now: float) -> Result:
        reg = controller.registry
        key = reg.object_key(self.object)
        reg.set_policy(key, self.policy)
        return {"object": self.object, "policy": self.policy}


class MigrateObject(Command, frozen=True):
    """Object migration: move a replica and its live flows to another host."""

    name = "migrate-object"
    top_level = True
    object: Object
    from_host: Annotated[str, Meta(description="the host serving the replica now")]
    to_host: Annotated[str, Meta(description="the host to serve it from now on")]

    def run(self, controller: Controller, now: float) -> Result:
        controller.churn.migrate_object(self.object, self.from_host, self.to_host, now)
        return {"object": self.object, "from": self.from_host, "to": self.to_host}


_DEFAULT_GATEWAY = "the flow switch to attach to (default: the datacenter's last)"


class MigrateHost(Command, frozen=True):
    """VM migration: move a host to another datacenter; it keeps its Host ID."""

    name = "migrate-host"
    top_level = True
    host: Host
    dc: Annotated[str, Meta(description="the datacenter to move to")]
    gateway: Annotated[str | None, Meta(description="the flow switch to attach to (default: its last)")] = (
        None
    )

    def run(self, controller: Controller, now: float) -> Result:
        gateway = controller.churn.migrate_host(self.host, self.dc, self.gateway, now)
        return {"host": self.host, "dc": self.dc, "gateway": gateway}


class MoveHost(Command, frozen=True):
    """Client mobility: re-attach a host at another flow switch; it tells its peers in-band."""

    name = "move-host"
    top_level = True
    host: Host
    gateway: Annotated[str, Meta(description="the flow switch to attach to")]

    def run(self, controller: Controller, now: float) -> Result:
        controller.churn.move_host(self.host, self.gateway, now)
        return {"host": self.host, "gateway": self.gateway}


_WHERE = "a host, a datacenter, or * for anywhere"


class Allow(Command, frozen=True):
    """Policy: let a host or datacenter serve a plain-named object (owned ones need a grant);
    stored, so it outlives a restart or a failover."""

    name = "allow"
    object: Annotated[str, Meta(description="the object: its name or obj: text")]
    where: Annotated[str, Meta(description=_WHERE)]

    def run(self, controller: Controller, now: float) -> Result:
        controller.set_policy(ObjectId.of(self.object).raw.hex(), self.where, True)
        return {"object": self.object, "allowed": self.where}


class Disallow(Command, frozen=True):
    """Policy: take back an allow, stored like one (replicas already bound stay until they
    leave)."""

    name = "disallow"
    object: Annotated[str, Meta(description="the object: its name or obj: text")]
    where: Annotated[str, Meta(description=_WHERE)]

    def run(self, controller: Controller, now: float) -> Result:
        removed = controller.set_policy(ObjectId.of(self.object).raw.hex(), self.where, False)
        return {"object": self.object, "disallowed": self.where, "was_allowed": removed}
