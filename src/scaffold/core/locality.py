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
   the DC ID decides; a flow it refuses tries the other DCs of its tier, then the next tier.
   The last DC tried takes the flow if every DC refuses (refusing is for load, not liveness).
3. ``plan_accept``: the controller turns capacities and the demand per source DC into accept
   fractions per (replica DC, source DC), by running the same cascade in expectation, so the
   flows a DC accepts stay within its capacity. A DC over capacity refuses first the sources
   that lose least: those with another DC at the same cost, then those whose next tier is
   closest; its own DC and those with no close alternative keep it.

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
    "SIBLINGS",
    "DcCosts",
    "Members",
    "Spill",
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
#: (ID, integer) pairs sorted by ID: replica DCs and weights
Members = tuple[tuple[int, int], ...]
#: (DC ID, source DC ID, accept fraction out of ``ACCEPT_SCALE``) sorted: the flows from the
#: source that DC takes, source 0 standing for every source without its own line
Spill = tuple[tuple[int, int, int], ...]

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

    Each tier's Maglev table picks one DC; if it refuses the flow (spill-over), the tier's
    other DCs are tried (``_sibling``, tiers of at most ``SIBLINGS``), then the next tier.
    The last DC tried takes the flow even if it refuses (docs/protocol.md §3.5).

    Raises:
        UsageError: the cascade is empty.
    """
    if not cascade:
        raise UsageError("no replica DC to choose from")
    dc = 0
    for rs, accept in cascade:
        dc = rs.pick(flow)
        if not accept:
            return dc
        rest = rs.members
        while True:
            if _accepts(flow, dc, accept.get(dc, _FULL)):
                return dc
            rest = tuple(m for m in rest if m[0] != dc)
            if not rest or len(rs.members) > SIBLINGS:
                break
            dc = _sibling(flow, rest)
    return dc


#: a tier of at most this many DCs tries its other DCs before the next tier on a refusal
#: (the plan's expectation walks their orders: at most SIBLINGS! of them)
SIBLINGS = 5


def _sibling(flow: int, rest: Members) -> int:
    """A DC of ``rest`` by weight for a refused flow: integer-only, the same everywhere."""
    point = mix64(flow ^ (0xA5A5 + len(rest))) % sum(w for _, w in rest)
    for dc, weight in rest:
        if point < weight:
            return dc
        point -= weight
    return rest[-1][0]  # not reached: point < the sum of the weights


class TierCache:
    """The cascade of Maglev tiers per (replica set, source DC), built once and reused.

    An object switch holds one; ``clear`` it when the cost table or an accept fraction
    changes. Objects on the same replica DCs share entries, so the cache is bounded by
    distinct replica sets times source DCs, and ``limit`` bounds it outright.
    """

    __slots__ = ("_cache", "_sets", "get", "limit")

    def __init__(self, limit: int = 65_536) -> None:
        self._cache: dict[tuple[Members, int, Spill], tuple[Tier, ...]] = {}
        #: the cascade cached for (members, source DC, spill), or None: the hot path's
        #: lookup, the dict's own ``get`` (the dict is only ever cleared, never replaced)
        self.get = self._cache.get
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
        accept: Spill = (),
        shift: int = 0,
    ) -> tuple[Tier, ...]:
        """The tiers for a flow from DC ``src`` to an object on ``members``.

        ``accept`` lists the fractions of the DCs that spill (a DC without a line for
        ``src`` or for source 0 takes every flow it is offered).
        """
        key = (members, src, accept)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= self.limit:
                self.clear()
            limits = {dc: f for dc, source, f in accept if source == 0}
            limits.update({dc: f for dc, source, f in accept if source == src})
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
    """(accepted, offered) fraction of the flows per DC, in expectation (what ``choose``
    does, with the Maglev shares of each tier and weight shares among siblings)."""
    accepted: dict[int, float] = {}
    offered: dict[int, float] = {}
    mass = 1.0
    for i, (rs, accept) in enumerate(cascade):
        last = i == len(cascade) - 1
        retry = len(rs.members) <= SIBLINGS
        refused = 0.0
        # (DC offered the flow, its mass, the tier's DCs not tried yet before it)
        todo = [(dc, mass * share, rs.members) for dc, share in rs.shares().items()]
        while todo:
            dc, m, rest = todo.pop()
            offered[dc] = offered.get(dc, 0.0) + m
            p = accept.get(dc, _FULL) / _FULL
            accepted[dc] = accepted.get(dc, 0.0) + m * p
            out = m * (1 - p)
            if out <= 0:
                continue
            rest = tuple(x for x in rest if x[0] != dc)
            if retry and rest:
                total = sum(w for _, w in rest)
                todo += [(t, out * w / total, rest) for t, w in rest]
            elif last:
                accepted[dc] += out  # the last DC tried takes it
            else:
                refused += out
        mass = refused
        if mass <= 0:
            break
    return accepted, offered


def plan_accept(
    members: Members,
    capacities: Mapping[int, float],
    demand: Mapping[int, float],
    costs: DcCosts,
    rounds: int = 20,
) -> Spill:
    """Accept fractions per (DC, source) so no DC takes more than its capacity.

    ``capacities`` maps a replica DC ID to the flows it takes (absent: unlimited),
    ``demand`` a source DC ID to the flows it sends, in the same unit (flows per second, or
    concurrent flows). Each round runs the cascade of every source in expectation; a DC
    offered more than its capacity keeps the sources with most to lose (the cost of their
    next tier minus the cost to it, ties by source ID) and refuses the rest, the last one
    kept in part. Fractions only go down, so the rounds converge; a DC still over after
    ``rounds`` (every alternative full) ends as close as the others' capacities allow.
    """
    accept: dict[tuple[int, int], int] = {}
    for _ in range(rounds):
        offers = _offers(members, demand, costs, accept)
        changed = False
        for dc, cap in sorted(capacities.items()):
            by_source = offers.get(dc, {})
            if sum(mass for mass, _ in by_source.values()) <= cap:
                continue
            room = cap
            for src, (mass, _) in sorted(by_source.items(), key=lambda item: (-item[1][1], item[0])):
                # floored, so the DC ends under its capacity, never over
                fraction = _FULL if mass <= room else int(_FULL * max(room, 0.0) / mass)
                room -= mass * fraction / _FULL
                if fraction < accept.get((dc, src), _FULL):
                    accept[dc, src] = fraction
                    changed = True
        if not changed:
            break
    return tuple(sorted((dc, src, f) for (dc, src), f in accept.items()))


def _offers(
    members: Members,
    demand: Mapping[int, float],
    costs: DcCosts,
    accept: Mapping[tuple[int, int], int],
) -> dict[int, dict[int, tuple[float, float]]]:
    """DC -> source -> (flows offered to it before its own refusal, what refusing costs
    the source: the cost of its next tier minus the cost to this DC; infinite if none)."""
    spill = tuple(sorted((dc, src, f) for (dc, src), f in accept.items()))
    offers: dict[int, dict[int, tuple[float, float]]] = {}
    cache = TierCache()
    for src, rate in sorted(demand.items()):
        row = costs.get(src)
        cascade = cache.cascade(members, src, costs, spill)
        _, offered = _walk(cascade)
        for i, (rs, _) in enumerate(cascade):
            nxt = cascade[i + 1][0].members[0][0] if i + 1 < len(cascade) else None
            for dc, _ in rs.members:
                if dc not in offered:
                    continue
                loss = float("inf")
                if 1 < len(rs.members) <= SIBLINGS:
                    loss = 0.0  # a DC of the same tier, at the same cost, tries it next
                elif row is not None and nxt is not None and nxt in row and dc in row:
                    loss = row[nxt] - row[dc]
                offers.setdefault(dc, {})[src] = (rate * offered[dc], loss)
    return offers
