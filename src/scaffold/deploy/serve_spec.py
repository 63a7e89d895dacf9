"""The ``--serve`` spec of ``scaffold host``: ``NAME[:WEIGHT][:resume][:policy=P][:capacity=C]``,
read and written (docs/deployment.md §1; the policy and capacity, docs/protocol.md §3.5).

A name may hold ':' -- the Object ID text ``obj:HEX``, the owner/name form ``owner:HEX/NAME``
(docs/protocol.md §1), a human name such as ``api:v2`` -- so the options are read from the
right, in their order, and only parts that are options are taken: ``key=value`` parts, then
``resume``, then a whole number (the weight). What is left is the name. A name whose last ':'
part is a number is therefore written with its weight (``web:8080:1``), as ``format_serve``
always does; a name whose last part is an option word cannot be told from misplaced options
and is refused (serve it by its Object ID).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import ConfigError, UsageError
from ..ids import ObjectId
from ..wire.control import MAX_WEIGHT

__all__ = ["Service", "format_serve", "parse_serve"]

#: a ``key=value`` part; its known keys are ``_KEYS``
_OPTION = re.compile(r"[a-z]+=")
_KEYS = ("policy", "capacity")
#: the Object ID text and the owner/name form hold a ':' of their own (``ObjectId.of``)
_PREFIXED = ("obj", "owner")
_POLICIES = ("", "nearest", "weighted")
_USAGE = "--serve: want NAME[:WEIGHT][:resume][:policy=nearest|weighted][:capacity=FLOWS/S], got {!r}"


class Service(NamedTuple):
    """One ``--serve`` item: an object this host serves, and how."""

    name: str
    weight: int = 1
    resumable: bool = False
    #: "nearest", "weighted", or "" (leave the object's as it is; docs/protocol.md §3.5)
    policy: str = ""
    #: new flows per second this replica takes (0: no limit; §3.5)
    capacity: float = 0.0


def parse_serve(item: str) -> Service:
    """``NAME[:WEIGHT][:resume][:policy=P][:capacity=C]`` as a ``Service``: ``web:2:resume``,
    ``api:v2`` (weight 1), ``web:8080:1`` (``web:8080``, weight 1), ``web:8080`` (``web``,
    weight 8080).

    Raises:
        ConfigError: the weight is not a whole number in 1..65535, the policy not nearest or
            weighted, the capacity not a number >= 0, a ``key=value`` part unknown or given
            twice, the name empty, ending in ':' or a malformed ``obj:``/``owner:`` text; or the input is
            ambiguous: the name left ends in an option (``resume``, ``key=value``), as
            options out of order leave it (``web:resume:2``).
    """
    usage = _USAGE.format(item)
    parts = str(item).split(":")
    least = 2 if len(parts) > 1 and parts[0] in _PREFIXED else 1  # parts surely the name's
    options: dict[str, str] = {}
    while len(parts) > least and _OPTION.match(parts[-1]):
        key, _, text = parts.pop().partition("=")
        if key not in _KEYS or key in options:
            raise ConfigError(usage)
        options[key] = text
    resumable = len(parts) > least and parts[-1] == "resume"
    if resumable:
        parts.pop()
    weight = parts.pop() if len(parts) > least and parts[-1].isdecimal() else "1"
    name = ":".join(parts)
    if len(parts) > least and (parts[-1] == "resume" or _OPTION.match(parts[-1])):
        raise ConfigError(
            f"--serve: {item!r} is ambiguous: the name left, {name!r}, ends in an option; give "
            "the options in the order NAME[:WEIGHT][:resume][:policy=P][:capacity=C], or serve "
            f"a name like that by its Object ID ({ObjectId.from_name(name)})"
        )
    if not parts[-1]:  # "web:" or "web::2": an empty part is a slip, not a name
        raise ConfigError(usage)
    try:
        count = int(weight)
        capacity = float(options.get("capacity", "0"))
        ObjectId.of(name)
    except (ValueError, UsageError):
        raise ConfigError(usage) from None
    policy = options.get("policy", "")
    if not 0 < count <= MAX_WEIGHT or policy not in _POLICIES or not 0 <= capacity <= 1e9:
        raise ConfigError(usage)
    return Service(name, count, resumable, policy, capacity)


def format_serve(service: Service) -> str:
    """The ``--serve`` spec of ``service``, weight always written, so ``parse_serve`` gives
    it back whatever ':' its name holds.

    Raises:
        ConfigError: the name cannot be written so (it ends in an option word, or is empty).
    """
    text = f"{service.name}:{service.weight}" + (":resume" if service.resumable else "")
    text += f":policy={service.policy}" if service.policy else ""
    text += f":capacity={float(service.capacity)!r}" if service.capacity else ""
    if parse_serve(text) != service:
        raise ConfigError(f"--serve cannot name {service.name!r}: serve it by its Object ID")
    return text
