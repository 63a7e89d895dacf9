"""Cut a switch's tables, or what changed in them, into the records that carry them:
``TableSync`` and ``TableDelta`` parts of at most ``RECORD_BUDGET`` bytes, which the switch
applies at once when the last part is in (docs/protocol.md §6.2). Pure functions of the tables
they are handed; ``tables.py`` decides who gets what and when.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec

from ...wire import control
from ...wire.control import RECORD_BUDGET, SwitchTables, TableKeys
from .incremental import Pending

__all__ = ["Changes", "delta_parts", "encode_once", "merge", "sync_parts"]

#: what an entry costs on the wire, roughly: its key, its framing, per member (bytes)
_ENTRY_BYTES = 80
_MEMBER_BYTES = 12


@dataclass(slots=True)
class Changes:
    """What changed in one switch's own tables since the last flush: table -> key -> value,
    or None (removed)."""

    tables: dict[str, dict[Any, Any]] = field(default_factory=dict)

    def put(self, table: str, key: object, value: object) -> None:
        self.tables.setdefault(table, {})[key] = value


def _cost(value: object) -> int:
    # a replica set's members, or a cost row's destinations
    return _ENTRY_BYTES + (_MEMBER_BYTES * len(value) if isinstance(value, tuple | dict) else 0)


def sync_parts(
    head: SwitchTables, tables: dict[str, dict[Any, Any]], budget: int | None
) -> Iterator[SwitchTables]:
    """``head`` (the scalar fields and small tables, in the first part) plus ``tables`` cut
    into ``SwitchTables`` of at most ``budget`` bytes (None: one part)."""
    part: dict[str, dict[Any, Any]] = {}
    size = 0
    first = True
    for name, table in tables.items():
        for key, value in table.items():
            cost = _cost(value)
            if budget is not None and size + cost > budget and size:
                yield _part(head if first else None, part)
                first, part, size = False, {}, 0
            part.setdefault(name, {})[key] = value
            size += cost
    if part or first:
        yield _part(head if first else None, part)


def _part(head: SwitchTables | None, tables: dict[str, dict[Any, Any]]) -> SwitchTables:
    if head is None:
        return SwitchTables(**tables)  # type: ignore[arg-type]
    return SwitchTables(
        dc_routes=head.dc_routes,
        moved_hosts=head.moved_hosts,
        object_switch=head.object_switch,
        presence_timeout=head.presence_timeout,
        gateway=head.gateway,
        peers=head.peers,
        **tables,
    )


def delta_parts(
    wide: Pending | None,
    local: Pending | None,
    own: Changes | None,
    shared: dict[str, dict[Any, Any]] | None = None,
) -> list[tuple[SwitchTables, TableKeys]]:
    """One switch's delta -- the object switches' ``wide`` changes, its DC's ``local`` ones,
    its own, and ``shared`` tables every object switch gets alike (the cost table, policies,
    spill) -- cut into (upserts, removed keys) parts of at most ``RECORD_BUDGET`` bytes."""
    sources: list[tuple[str, dict[Any, Any]]] = [(n, t) for n, t in (shared or {}).items() if t]
    if wide is not None:
        sources += [("wide", wide.exact), ("prefixes", wide.rules)]
    if local is not None:
        sources += [("local", local.exact), ("local_prefixes", local.rules)]
    if own is not None:
        sources += own.tables.items()
    parts: list[tuple[SwitchTables, TableKeys]] = []
    upsert: dict[str, dict[Any, Any]] = {}
    remove: dict[str, list[Any]] = {}
    size = 0
    for name, table in sources:
        if not table:
            continue
        ups: dict[Any, Any] | None = None
        rms: list[Any] | None = None
        for key, value in table.items():
            cost = _cost(value)
            if size + cost > RECORD_BUDGET and size:
                parts.append((SwitchTables(**upsert), TableKeys(**remove)))  # type: ignore[arg-type]
                upsert, remove, size, ups, rms = {}, {}, 0, None, None
            if value is None:
                if rms is None:
                    rms = remove[name] = []
                rms.append(key)
            else:
                if ups is None:
                    ups = upsert[name] = {}
                ups[key] = value
            size += cost
    if upsert or remove:
        parts.append((SwitchTables(**upsert), TableKeys(**remove)))  # type: ignore[arg-type]
    return parts


def encode_once(upsert: SwitchTables, remove: TableKeys) -> tuple[SwitchTables, TableKeys]:
    """A part encoded once, to be embedded as it is in the records of many switches (the
    decoder on the other side sees ordinary tables)."""
    encoded = (msgspec.Raw(control.encode_value(upsert)), msgspec.Raw(control.encode_value(remove)))
    return cast(tuple[SwitchTables, TableKeys], encoded)


def merge(parts: list[SwitchTables]) -> SwitchTables:
    """The parts of one sync as one ``SwitchTables`` (for tests and ``Tables.desired``)."""
    merged: dict[str, Any] = {}
    for part in parts:
        for name in part.__struct_fields__:
            value = getattr(part, name)
            if isinstance(value, dict):
                merged.setdefault(name, {}).update(value)
            elif value:
                merged[name] = value
    return SwitchTables(**merged)
