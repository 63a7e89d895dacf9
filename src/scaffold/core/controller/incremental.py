"""The object switches' tables, derived one object at a time (docs/protocol.md §6.2).

What every object switch must hold -- ``wide`` (Object ID -> DC IDs with weights, the same in
every switch) and each DC's ``local`` (Object ID -> Host IDs in that DC) -- is kept here as
the canonical tables, and changed only for the objects a change touches: ``update(key)``
recomputes that one object's entries, compares them with what the tables hold, and records
the difference as pending upserts and removals. ``take_pending`` hands the accumulated
difference to ``tables.py``, which turns it into one delta per switch. No operation walks the
objects, hosts or switches.

**Owner-prefix rules.** Objects whose IDs share their first ``OWNER_PREFIX_BITS`` bits belong
to one owner (``ObjectId.from_owner``, docs/protocol.md §1). When at least two of them have
the same entry, the table installs one prefix rule ``"hex/64"`` for that entry and drops
their exact entries: one entry per owner, not per object. Members whose entry differs keep an
exact entry (exact match wins over a prefix, §3.2), and a member with no live replica gets an
empty one, so the rule never answers for it. The rule follows the most common entry in the
group, and moves only when another entry is held by strictly more members.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ...wire.control import Replicas

__all__ = ["NO_REPLICA", "OWNER_PREFIX_BITS", "GroupedTable", "Pending", "prefix_key"]

#: the owner prefix of a self-certifying Object ID (``ObjectId.from_owner``'s default)
OWNER_PREFIX_BITS = 64
_PREFIX_HEX = OWNER_PREFIX_BITS // 4
#: an exact entry that says "no live replica" (a prefix rule must not answer)
NO_REPLICA: Replicas = ()


def prefix_key(prefix: int | str) -> str:
    """The wire key of the owner-prefix rule for ``prefix`` (the ID's first 64 bits, or their
    16 hex digits)."""
    value = int(prefix, 16) if isinstance(prefix, str) else prefix
    return f"{value:x}/{OWNER_PREFIX_BITS}"


@dataclass(slots=True)
class Pending:
    """Changes not sent yet: key -> new value, or None for a removal (the last one wins)."""

    exact: dict[str, Replicas | None] = field(default_factory=dict)
    rules: dict[str, Replicas | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.exact) or bool(self.rules)


@dataclass(slots=True)
class _Group:
    """The registered objects under one owner prefix and how many hold each entry."""

    members: set[str]
    counts: Counter[Replicas | None]
    rule: Replicas | None = None


class GroupedTable:
    """One Object ID table (``wide``, or one DC's ``local``) as exact entries and owner-prefix
    rules, changed one object at a time."""

    def __init__(self) -> None:
        #: what the switches hold: Object ID hex -> entry
        self.exact: dict[str, Replicas] = {}
        #: owner-prefix rules: "hex/64" -> entry
        self.rules: dict[str, Replicas] = {}
        self.pending = Pending()
        #: owner prefix -> the one registered object under it (until a second one comes);
        #: its entry is its exact one (an entry is never empty: None means no replica)
        self._single: dict[int, str] = {}
        #: owner prefix -> its group, once two or more registered objects share it
        self._groups: dict[int, _Group] = {}

    def __len__(self) -> int:
        return len(self.exact) + len(self.rules)

    def set(self, key: str, value: Replicas | None, *, registered: bool = True) -> None:
        """Object ``key``'s entry is now ``value`` (None: no live replica; never empty). An
        object that is not ``registered`` any more leaves its owner group."""
        prefix = int(key[:_PREFIX_HEX], 16)  # an int: smaller than the text
        group = self._groups.get(prefix) if self._groups else None
        if group is None:
            first = self._single.get(prefix)
            if first is None or first == key:
                self._set_alone(prefix, key, value, registered)
                return
            if not registered:
                return  # not known here: nothing to remove
            # A second object under this prefix: from now on they form a group.
            group = self._groups[prefix] = _Group({first}, Counter({self.exact.get(first): 1}))
            del self._single[prefix]
        self._set_in_group(prefix, group, key, value, registered)

    def load(self, entries: Iterable[tuple[str, Replicas | None]]) -> None:
        """Fill this empty table with registered objects' entries, as ``set`` would but
        leaving nothing pending: for a table no switch holds yet (each gets it whole). An
        object alone under its owner prefix -- nearly all of them -- costs two dict stores."""
        single, exact, groups = self._single, self.exact, self._groups
        for key, value in entries:
            prefix = int(key[:_PREFIX_HEX], 16)
            if prefix in single or prefix in groups:
                self.set(key, value)  # another object of this owner: a group, with its rule
                continue
            single[prefix] = key
            if value:
                exact[key] = value
        self.pending = Pending()

    def _set_alone(self, prefix: int, key: str, value: Replicas | None, registered: bool) -> None:
        if not registered:
            self._single.pop(prefix, None)
            self._put(key, None)
            return
        self._single[prefix] = key
        self._put(key, value or None)

    def _set_in_group(
        self, prefix: int, group: _Group, key: str, value: Replicas | None, registered: bool
    ) -> None:
        if key in group.members:
            old = self.exact.get(key, group.rule) if group.rule is not None else self.exact.get(key)
            if group.rule is not None and old == NO_REPLICA:
                old = None
            group.counts[old] -= 1
            if not group.counts[old]:
                del group.counts[old]
            if not registered:
                group.members.discard(key)
        elif not registered:
            return
        if registered:
            group.members.add(key)
            group.counts[value] += 1
        rule = self._best_rule(group)
        if rule != group.rule:
            self._move_rule(prefix, group, rule)
        if registered:
            self._put(key, self._exact_for(group, value))
        else:
            self._put(key, None)
        if not group.members:
            del self._groups[prefix]
            self._put_rule(prefix, None)

    @staticmethod
    def _best_rule(group: _Group) -> Replicas | None:
        """The entry most members hold (at least two); the current rule unless another one
        is held by strictly more members."""
        best, count = group.rule, group.counts.get(group.rule, 0) if group.rule is not None else 0
        for value, n in group.counts.items():
            if value and (n > count or (n == count and best is None)):
                best, count = value, n
        return best if count >= 2 else None

    @staticmethod
    def _exact_for(group: _Group, value: Replicas | None) -> Replicas | None:
        """The exact entry a member with ``value`` needs under the group's rule."""
        if group.rule is None:
            return value or None
        if value == group.rule:
            return None  # the rule answers for it
        return value or NO_REPLICA

    def _move_rule(self, prefix: int, group: _Group, rule: Replicas | None) -> None:
        # Every member's exact entry depends on the rule: recompute them (rare, see above).
        values = {k: self._member_value(group, k) for k in group.members}
        group.rule = rule
        self._put_rule(prefix, rule)
        for k, v in values.items():
            self._put(k, self._exact_for(group, v))

    def _member_value(self, group: _Group, key: str) -> Replicas | None:
        held = self.exact.get(key)
        if held is None:
            return group.rule
        return held or None

    def _put(self, key: str, entry: Replicas | None) -> None:
        if self.exact.get(key) == entry:
            return
        if entry is None:
            del self.exact[key]
        else:
            self.exact[key] = entry
        self.pending.exact[key] = entry

    def _put_rule(self, prefix: int, rule: Replicas | None) -> None:
        wire_key = prefix_key(prefix)
        if self.rules.get(wire_key) == rule:
            return
        if rule is None:
            del self.rules[wire_key]
        else:
            self.rules[wire_key] = rule
        self.pending.rules[wire_key] = rule

    def take_pending(self) -> Pending:
        """The changes since the last call (and forget them)."""
        pending, self.pending = self.pending, Pending()
        return pending
