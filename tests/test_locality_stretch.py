"""The 50-datacenter stretch check of issue 14 on the object switch cores (docs/protocol.md §3.5).

A random connected backbone of 50 DCs with random link delays, objects with 5 replica DCs each,
random flows from every DC: the DC an object switch picks for a first packet is compared with
the best possible replica (the cheapest route from the flow's source DC). Then a few replica
DCs get a capacity, the spill-over plan gives their accept fractions, and no capped DC may take
more than its capacity plus 5 %. The switches are the real cores fed real ``TableSync``
records; only the controller's part (costs, plan) is computed here, as the controller will.
"""

from __future__ import annotations

import random
from collections import Counter

from scaffold.core.locality import Spill, plan_accept
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.routing import costs
from scaffold.wire.control import Replicas, SwitchTables, TableSync

DCS = 50
OBJECTS = 4
REPLICAS = 5
FLOWS = 60_000
SEED = 14


def backbone(rng: random.Random) -> list[tuple[str, str, float]]:
    """A random spanning tree plus as many random chords, delays 1..40 ms."""
    names = [f"dc{k}" for k in range(1, DCS + 1)]
    edges = {}
    for k in range(1, DCS):
        edges[frozenset((names[k], names[rng.randrange(k)]))] = rng.uniform(0.001, 0.040)
    while len(edges) < 2 * DCS:
        a, b = rng.sample(names, 2)
        edges.setdefault(frozenset((a, b)), rng.uniform(0.001, 0.040))
    links = []
    for e, d in edges.items():
        a, b = sorted(e)
        links.append((a, b, d))
    return links


def cost_table(edges: list[tuple[str, str, float]]) -> dict[int, dict[int, int]]:
    # DC IDs 1..50 from the names; microseconds, as the controller puts them on the wire
    dist = costs([f"dc{k}" for k in range(1, DCS + 1)], edges)
    return {int(a[2:]): {int(b[2:]): round(c * 1e6) for b, c in row.items()} for a, row in dist.items()}


def world(
    spill: dict[str, Spill] | None = None,
) -> tuple[dict[int, dict[int, int]], dict[str, Replicas], list[ObjectSwitch]]:
    rng = random.Random(SEED)
    table = cost_table(backbone(rng))
    wide: dict[str, Replicas] = {}
    for k in range(OBJECTS):
        dcs = sorted(rng.sample(range(1, DCS + 1), REPLICAS))
        wide[bytes([k + 1] * 32).hex()] = tuple((d, rng.randint(1, 3)) for d in dcs)
    switches = []
    for dc in range(1, DCS + 1):
        sw = ObjectSwitch(f"dc{dc}-os", f"dc{dc}")
        local: dict[str, Replicas] = {
            k: ((1000 * dc + 1, 1),) for k, members in wide.items() if dc in dict(members)
        }
        tables = SwitchTables(
            wide=wide, local=local, dc_costs=table, spill=spill or {}, gateway=f"dc{dc}-fs1"
        )
        sw.receive_control(TableSync(version=1, dc_id=dc, tables=tables), 0.0)
        switches.append(sw)
    return table, wide, switches


def first_packets(switches: list[ObjectSwitch]) -> list[tuple[str, int, int]]:
    """(object, source DC, chosen DC) of random first packets, each resolved by the object
    switch of its own DC and checked against another DC's switch (they must agree)."""
    rng = random.Random(SEED + 1)
    keys = sorted(switches[0].snapshot().wide)
    out = []
    for _ in range(FLOWS):
        key, src, flow = rng.choice(keys), rng.randint(1, DCS), rng.getrandbits(64)
        obj = bytes.fromhex(key)
        here = switches[src - 1].resolve(obj, flow, src)
        other = switches[rng.randrange(DCS)].resolve(obj, flow, src)
        assert here is not None and other is not None and here[0] == other[0]
        out.append((key, src, here[0]))
    return out


def stretch(
    table: dict[int, dict[int, int]], wide: dict[str, Replicas], picks: list[tuple[str, int, int]]
) -> float:
    """Mean over first packets of (route cost to the chosen DC + 1 ms) / (to the best + 1 ms):
    the 1 ms stands for the path inside a DC, so a local hit is 1, not 0/0."""
    total = 0.0
    for key, src, dc in picks:
        best = min(table[src][d] for d, _ in wide[key])
        total += (table[src][dc] + 1000) / (best + 1000)
    return total / len(picks)


def test_nearest_first_packets_have_no_stretch_and_switches_agree() -> None:
    table, wide, switches = world()
    picks = first_packets(switches)
    assert stretch(table, wide, picks) == 1.0


def test_capacity_limited_dcs_stay_within_capacity_and_stretch_stays_low() -> None:
    table, wide, _ = world()
    # uncapped load per (object, replica DC) under nearest, in expectation: demand is uniform
    per_src = FLOWS / OBJECTS / DCS
    demand = {src: per_src for src in range(1, DCS + 1)}
    spill: dict[str, Spill] = {}
    capacities: dict[tuple[str, int], float] = {}
    for key, members in wide.items():
        # cap the busiest replica DC of each object at half of what nearest would send it
        load = Counter(min((table[s][d], d) for d, _ in members)[1] for s in demand)
        busiest, sources = load.most_common(1)[0]
        cap = sources * per_src / 2
        capacities[key, busiest] = cap
        spill[key] = plan_accept(members, {busiest: cap}, demand, table)
    table, wide, switches = world(spill)
    picks = first_packets(switches)
    served = Counter((key, dc) for key, _, dc in picks)
    for (key, dc), cap in capacities.items():
        assert served[key, dc] <= cap * 1.05, (key, dc, served[key, dc], cap)
        assert served[key, dc] >= cap * 0.9  # spill moves the excess, not the DC's share
    assert stretch(table, wide, picks) <= 1.1
