"""Replica selection without flow state: weighted Maglev tables and prefix lookup.

docs/protocol.md §3.2. A ``ReplicaSet`` maps a Flow ID to one member with one modulo and one
tuple index: ``table[(flow >> shift) % len(table)]``. The table is built with weighted
Maglev hashing (Eisenbud et al., NSDI 2016): each member walks its own permutation of the
slots, claiming the first free one, ``weight`` times per round. Shares follow the weights
to within one slot, and removing a member moves mostly that member's flows. Every object
switch that holds the same set builds the same table, so any of them resolves a Flow ID to
the same replica -- which is what makes re-resolution stateless.

``shift`` differs per level (wide area vs inside a DC) so the two choices a flow meets are
uncorrelated for random Flow IDs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..errors import UsageError
from ..ids import OBJECT_ID_BYTES

__all__ = ["TABLE_SIZE", "PrefixTable", "ReplicaSet", "mix64"]

#: Slots per Maglev table: a prime, large enough that shares are exact to about 0.1%.
TABLE_SIZE = 2053
_MASK64 = (1 << 64) - 1


def mix64(value: int) -> int:
    """A fixed 64-bit mixing function (splitmix64 finalizer), the same in every process."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


class ReplicaSet:
    """An immutable weighted set of targets (DC IDs or Host IDs) with its Maglev table."""

    __slots__ = ("members", "shift", "table")

    def __init__(self, members: Iterable[tuple[int, int]], shift: int = 0) -> None:
        cleaned = tuple(sorted((int(t), int(w)) for t, w in members if w > 0))
        if not cleaned:
            raise UsageError("a replica set needs at least one member with weight > 0")
        if any(t <= 0 for t, _ in cleaned):
            raise UsageError("replica targets are non-zero IDs (zero means 'not refined')")
        if len({t for t, _ in cleaned}) != len(cleaned):
            raise UsageError("a replica set lists a target twice")
        self.members: tuple[tuple[int, int], ...] = cleaned
        self.shift = shift
        self.table: tuple[int, ...] = _maglev(cleaned, TABLE_SIZE)

    def pick(self, flow: int) -> int:
        """The member serving ``flow``; the same answer for the same Flow ID, everywhere."""
        table = self.table
        return table[(flow >> self.shift) % len(table)]

    def shares(self) -> dict[int, float]:
        """Fraction of the table owned by each member (what a uniform flow mix sees)."""
        counts: dict[int, int] = {}
        for target in self.table:
            counts[target] = counts.get(target, 0) + 1
        return {t: n / len(self.table) for t, n in counts.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplicaSet):
            return NotImplemented
        return self.members == other.members and self.shift == other.shift

    def __hash__(self) -> int:
        return hash((self.members, self.shift))

    def __repr__(self) -> str:
        return f"ReplicaSet({list(self.members)!r}, shift={self.shift})"


def _maglev(members: tuple[tuple[int, int], ...], size: int) -> tuple[int, ...]:
    offsets = []
    skips = []
    for target, _ in members:
        h = mix64(target)
        offsets.append(h % size)
        skips.append(mix64(h ^ 0x5BD1E995) % (size - 1) + 1)
    table = [0] * size
    filled = 0
    nexts = [0] * len(members)
    while True:
        for i, (target, weight) in enumerate(members):
            for _ in range(weight):
                slot = (offsets[i] + nexts[i] * skips[i]) % size
                while table[slot]:
                    nexts[i] += 1
                    slot = (offsets[i] + nexts[i] * skips[i]) % size
                table[slot] = target
                nexts[i] += 1
                filled += 1
                if filled == size:
                    return tuple(table)


class PrefixTable:
    """Object ID -> value, exact match first, then longest prefix over the ID bits.

    Exact entries live in one dict keyed by the raw 32-byte ID (the fast path). Prefix
    rules live in one dict per prefix length, probed from the longest length down.
    """

    __slots__ = ("_exact", "_lengths", "_prefixes")

    def __init__(self) -> None:
        self._exact: dict[bytes, ReplicaSet] = {}
        self._prefixes: dict[int, dict[int, ReplicaSet]] = {}
        self._lengths: list[int] = []

    def __len__(self) -> int:
        return len(self._exact) + sum(len(d) for d in self._prefixes.values())

    def set_exact(self, obj: bytes, value: ReplicaSet) -> None:
        self._exact[obj] = value

    def remove_exact(self, obj: bytes) -> None:
        self._exact.pop(obj, None)

    def set_prefix(self, prefix: int, bits: int, value: ReplicaSet) -> None:
        if not 0 < bits <= OBJECT_ID_BYTES * 8:
            raise UsageError(f"prefix length must be 1..256, got {bits}")
        if prefix >> bits:
            raise UsageError(f"prefix {prefix:#x} is longer than {bits} bits")
        self._prefixes.setdefault(bits, {})[prefix] = value
        self._lengths = sorted(self._prefixes, reverse=True)

    def remove_prefix(self, prefix: int, bits: int) -> None:
        rules = self._prefixes.get(bits)
        if rules is not None:
            rules.pop(prefix, None)
            if not rules:
                del self._prefixes[bits]
                self._lengths = sorted(self._prefixes, reverse=True)

    def lookup(self, obj: bytes) -> ReplicaSet | None:
        """The replica set for ``obj``, or None if no exact entry or prefix rule covers it."""
        found = self._exact.get(obj)
        if found is not None or not self._lengths:
            return found
        value = int.from_bytes(obj, "big")
        for bits in self._lengths:
            found = self._prefixes[bits].get(value >> (256 - bits))
            if found is not None:
                return found
        return None

    def exact_items(self) -> Mapping[bytes, ReplicaSet]:
        return self._exact

    def values(self) -> list[ReplicaSet]:
        """Every prefix rule's replica set."""
        return [rs for rules in self._prefixes.values() for rs in rules.values()]

    def as_wire(self) -> dict[str, tuple[tuple[int, int], ...]]:
        """The prefix rules as ``"hex/bits"`` -> members (the ``prefixes`` wire form)."""
        return {
            f"{prefix:x}/{bits}": rs.members
            for bits, rules in self._prefixes.items()
            for prefix, rs in rules.items()
        }
