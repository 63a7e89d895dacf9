"""Locality-aware replica choice: the nearest datacenters first, spill-over by capacity.

docs/protocol.md §3.5. Under the ``nearest`` policy the wide-area choice of a flow depends on
(Object ID, Flow ID, the packet's source DC ID, the tables every object switch holds) and on
nothing else, so every object switch that resolves or re-resolves a flow picks the same DC --
with no flow state, as under ``weighted`` (§3.2):

1. ``tiers``: the object's replica DCs grouped by their cost from the source DC (the
   controller's all-pairs route costs, ``dc_costs``), cheapest first. A source DC the cost
   table does not know, or an object under ``weighted``, has one tier: every replica DC.
2. ``choose``: within a tier, the weighted Maglev table of its members picks a DC by the Flow
   ID (``ReplicaSet.pick``, the same table the ``weighted`` policy uses). If that DC accepts
   only a fraction of the flows offered to it (spill-over), a second hash of the Flow ID and
   the DC ID decides; a flow it refuses tries the rest of the DCs, nearest tier first. The
   last DC tried takes the flow if every DC refuses (refusing is for load, not for liveness).
3. ``plan_accept``: the controller turns capacities and the demand per source DC into the
   accept fraction of each replica DC, by running the same cascade in expectation, so the
   flows a DC accepts stay within its capacity.

Flow affinity: a switch chooses only for a packet with no DC ID (a first packet) or an
orphan whose DC has no replica left (§5.1); every later packet carries the chosen DC and Host
ID in its header. A change of costs or capacities therefore moves new flows only; a placed
flow keeps its replica until the replica goes away, and then every switch re-resolves it to
the same nearest survivor (docs/protocol.md §3.5 lists the windows where tables differ).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from ..errors import UsageError
from .replicas import ReplicaSet, mix64

__all__ = [
    "ACCEPT_SCALE",
    "DcCosts",
    "Members",
    "Policy",
    "Tier",
    "TierCache",
    "choose",
    "expected_shares",
    "plan_accept",
    "tiers",
]

#: source DC ID -> (destination DC ID -> route cost in microseconds); a DC reaches itself at 0
DcCosts = Mapping[int, Mapping[int, int]]
#: (Maglev set of the tier's DCs, their accept fractions out of ``ACCEPT_SCALE``, by DC ID)
Tier = tuple[ReplicaSet, Mapping[int, int]]
#: (ID, integer) pairs sorted by ID: replica DCs and weights, or DCs and accept fractions
Members = tuple[tuple[int, int], ...]

#: accept fractions are integers out of 2**16 (exact on the wire and in every process)
ACCEPT_SCALE = 1 << 16
_FULL = ACCEPT_SCALE


class Policy(enum.StrEnum):
    """How an object switch chooses among an object's replica DCs (docs/protocol.md §3.5)."""

    #: the nearest DCs that have replicas, by the controller's route cost; weights share the
    #: load among DCs at the same cost; spill-over to the next nearest by accept fraction
    NEAREST = "nearest"
    #: one global share by weight, the same from every source (the behaviour before §3.5)
    WEIGHTED = "weighted"


def tiers(members: Sequence[tuple[int, int]], costs: Mapping[int, int] | None) -> list[list[tuple[int, int]]]:
    """``members`` (DC ID, weight) grouped by cost from the source, cheapest group first.

    ``costs`` is the source DC's row of the cost table; None (an unknown source DC, or the
    ``weighted`` policy) gives one group of every member. DCs the source cannot reach go in a
    last group: routes may heal, and a refusal to answer would be worse than a long path.
    Members keep their (sorted) order inside a group, so the result depends only on the inputs.
    """
    if costs is None:
        return [list(members)] if members else []
    unreachable = 1 << 62
    groups: dict[int, list[tuple[int, int]]] = {}
    for dc, weight in members:
        groups.setdefault(costs.get(dc, unreachable), []).append((dc, weight))
    return [groups[cost] for cost in sorted(groups)]


def _accepts(flow: int, dc: int, fraction: int) -> bool:
    """Whether ``dc`` accepts ``flow`` when it takes ``fraction`` / 2**16 of what it is offered.

    The hash mixes the DC ID in, so the refusals of different DCs are independent, and uses
    other bits than the Maglev index, so acceptance does not depend on which slot was hit.
    """
    return fraction >= _FULL or (mix64(flow ^ mix64(dc)) >> 48) < fraction


def choose(flow: int, cascade: Sequence[Tier]) -> int:
    """The DC serving ``flow`` from a cascade of tiers (``TierCache.cascade``).

    Each tier's Maglev table picks one DC; if it refuses the flow (spill-over), the next tier
    picks. A refused flow does not try the other DCs of the same tier: with one pick per tier
    the controller's plan is exact and the hot path never builds a table (docs/protocol.md
    §3.5). The last tier's pick takes the flow even if it refuses.

    Raises:
        UsageError: the cascade is empty.
    """
    if not cascade:
        raise UsageError("no replica DC to choose from")
    dc = 0
    for rs, accept in cascade:
        dc = rs.pick(flow)
        if not accept or _accepts(flow, dc, accept.get(dc, _FULL)):
            return dc
    return dc


class TierCache:
    """The cascade of Maglev tiers per (replica set, source DC), built once and reused.

    An object switch holds one; ``clear`` it when the cost table or an accept fraction
    changes. Objects on the same replica DCs share entries, so the cache is bounded by
    distinct replica sets times source DCs, and ``limit`` bounds it outright.
    """

    __slots__ = ("_cache", "_sets", "limit")

    def __init__(self, limit: int = 65_536) -> None:
        self._cache: dict[tuple[Members, int, Members], tuple[Tier, ...]] = {}
        #: one Maglev table per distinct tier, shared by every source and object that has it
        self._sets: dict[Members, ReplicaSet] = {}
        self.limit = limit

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()
        self._sets.clear()

    def cascade(
        self,
        members: tuple[tuple[int, int], ...],
        src: int,
        costs: DcCosts,
        accept: tuple[tuple[int, int], ...] = (),
        shift: int = 0,
    ) -> tuple[Tier, ...]:
        """The tiers for a flow from DC ``src`` to an object on ``members``.

        ``accept`` lists (DC ID, accept fraction out of ``ACCEPT_SCALE``) for the DCs that
        spill (absent: they take every flow offered).
        """
        key = (members, src, accept)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= self.limit:
                self.clear()
            limits = dict(accept)
            found = tuple(
                (self._set(tuple(group), shift), {dc: limits[dc] for dc, _ in group if dc in limits})
                for group in tiers(members, costs.get(src))
            )
            self._cache[key] = found
        return found

    def _set(self, group: Members, shift: int) -> ReplicaSet:
        found = self._sets.get(group)
        if found is None or found.shift != shift:
            found = self._sets[group] = ReplicaSet(group, shift)
        return found


def expected_shares(cascade: Sequence[Tier]) -> dict[int, float]:
    """The fraction of uniformly random flows each DC takes from ``cascade`` (what
    ``choose`` gives in expectation, with the Maglev shares of each tier)."""
    return _walk(cascade)[0]


def _walk(cascade: Sequence[Tier]) -> tuple[dict[int, float], dict[int, float]]:
    """(accepted, offered) fraction of the flows per DC, in expectation."""
    accepted: dict[int, float] = {}
    offered: dict[int, float] = {}
    mass = 1.0
    for i, (rs, accept) in enumerate(cascade):
        refused = 0.0
        last = i == len(cascade) - 1
        for dc, share in rs.shares().items():
            p = 1.0 if last else accept.get(dc, _FULL) / _FULL
            offered[dc] = offered.get(dc, 0.0) + mass * share
            accepted[dc] = accepted.get(dc, 0.0) + mass * share * p
            refused += mass * share * (1 - p)
        mass = refused
        if mass <= 0:
            break
    return accepted, offered


def plan_accept(
    members: tuple[tuple[int, int], ...],
    capacities: Mapping[int, float],
    demand: Mapping[int, float],
    costs: DcCosts,
    rounds: int = 20,
) -> dict[int, int]:
    """Accept fractions (out of ``ACCEPT_SCALE``) so no DC takes more than its capacity.

    ``capacities`` maps a replica DC ID to the flows it takes (absent: unlimited),
    ``demand`` a source DC ID to the flows it sends, in the same unit (flows per second, or
    concurrent flows). Each round runs the cascade of every source in expectation and lowers
    the fraction of each DC offered more than its capacity to capacity / offered; fractions
    only go down, so the rounds converge, and a DC that is still over after ``rounds`` ends
    as close as the others' capacities allow (everybody full: the excess lands somewhere).
    """
    accept: dict[int, int] = {}
    for _ in range(rounds):
        offered = _offered(members, demand, costs, accept)
        changed = False
        for dc, cap in capacities.items():
            load = offered.get(dc, 0.0)
            now = accept.get(dc, _FULL)
            if load > cap and now > 0:
                # a DC appears once in a source's cascade, so what it is offered does not
                # depend on its own fraction: capacity / offered is exact (floored: under)
                want = min(now, int(_FULL * cap / load))
                if want < now:
                    accept[dc] = want
                    changed = True
        if not changed:
            break
    return {dc: f for dc, f in accept.items() if f < _FULL}


def _offered(
    members: tuple[tuple[int, int], ...],
    demand: Mapping[int, float],
    costs: DcCosts,
    accept: Mapping[int, int],
) -> dict[int, float]:
    """Flows offered to each DC (before its own refusal) with the current fractions."""
    offered: dict[int, float] = {}
    cache = TierCache()
    for src, rate in demand.items():
        for dc, share in _walk(cache.cascade(members, src, costs, tuple(sorted(accept.items()))))[1].items():
            offered[dc] = offered.get(dc, 0.0) + rate * share
    return offered
