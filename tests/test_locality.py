"""Locality-aware replica choice: tiers, cascade, spill-over plan, and the object switch using
them by the packet's source DC, with every switch agreeing (docs/protocol.md §3.5)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from scaffold.core.controller import Controller
from scaffold.core.controller.demand import DemandBook
from scaffold.core.locality import (
    ACCEPT_SCALE,
    SIBLINGS,
    Policy,
    Spill,
    TierCache,
    choose,
    expected_shares,
    plan_accept,
    tiers,
)
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.routing import costs
from scaffold.core.topology import default_topology
from scaffold.errors import MalformedPacket, UsageError
from scaffold.wire import control
from scaffold.wire import header as wire_header
from scaffold.wire.control import SwitchTables, TableDelta, TableKeys, TableSync
from scaffold.wire.header import Header, Proto

OBJ = bytes(range(32))
KEY = OBJ.hex()
#: a line of four DCs 1 - 2 - 3 - 4, one cost unit (µs) per hop: cost(a, b) = |a - b|
LINE = {a: {b: abs(a - b) for b in range(1, 5)} for a in range(1, 5)}


def flows(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(64) for _ in range(n)]


# -- tiers and the cascade -------------------------------------------------------------------


def test_tiers_group_by_cost_cheapest_first_and_put_the_unreachable_last() -> None:
    members = [(1, 1), (2, 5), (3, 1), (9, 1)]
    assert tiers(members, {1: 3, 2: 1, 3: 1}) == [[(2, 5), (3, 1)], [(1, 1)], [(9, 1)]]
    assert tiers(members, None) == [members]
    assert tiers([], {1: 0}) == []


def test_own_dc_wins_and_equal_cost_dcs_share_by_weight() -> None:
    cache = TierCache()
    members = ((1, 1), (2, 1), (3, 3), (4, 1))
    # from DC 1 its own replica takes every flow
    assert {choose(f, cache.cascade(members, 1, LINE)) for f in flows(500)} == {1}
    # from DC 2 (cost 0 to itself) likewise; drop DC 2 and its neighbours 1 and 3 tie at cost 1
    tied = ((1, 1), (3, 3), (4, 1))
    counts = Counter(choose(f, cache.cascade(tied, 2, LINE)) for f in flows(4000))
    assert set(counts) == {1, 3}
    assert counts[3] / 4000 == pytest.approx(0.75, abs=0.03)


def test_choice_depends_only_on_the_inputs() -> None:
    members = ((1, 2), (3, 1), (4, 1))
    a, b = TierCache(), TierCache()
    b.cascade(((1, 1),), 2, LINE)  # a different history of the cache changes nothing
    for flow in flows(300):
        for src in (1, 2, 3, 4):
            assert choose(flow, a.cascade(members, src, LINE)) == choose(flow, b.cascade(members, src, LINE))


def test_unknown_source_falls_back_to_the_weighted_share() -> None:
    members = ((1, 1), (4, 3))
    counts = Counter(choose(f, TierCache().cascade(members, 77, LINE)) for f in flows(4000))
    assert counts[4] / 4000 == pytest.approx(0.75, abs=0.03)


def test_empty_cascade_raises() -> None:
    with pytest.raises(UsageError):
        choose(1, ())


def test_a_dc_accepting_a_fraction_spills_the_rest_to_the_next_tier() -> None:
    members = ((1, 1), (2, 1), (4, 1))
    half = ((1, 0, ACCEPT_SCALE // 2),)
    cascade = TierCache().cascade(members, 1, LINE, half)
    counts = Counter(choose(f, cascade) for f in flows(6000))
    assert counts[1] / 6000 == pytest.approx(0.5, abs=0.03)
    assert counts[2] / 6000 == pytest.approx(0.5, abs=0.03)  # next nearest, not DC 4
    assert expected_shares(cascade) == pytest.approx({1: 0.5, 2: 0.5}, abs=0.001)


def test_the_last_tier_takes_flows_everyone_refuses() -> None:
    members = ((1, 1), (2, 1))
    nobody = ((1, 0, 0), (2, 0, 0))
    cascade = TierCache().cascade(members, 1, LINE, nobody)
    assert {choose(f, cascade) for f in flows(200)} == {2}


def test_plan_keeps_every_capped_dc_within_capacity() -> None:
    members = ((1, 1), (2, 1), (3, 1))
    demand = {1: 100.0, 2: 10.0, 3: 10.0, 4: 50.0}
    capacities = {1: 40.0, 3: 30.0}
    accept = plan_accept(members, capacities, demand, LINE)
    assert accept and {dc for dc, _, _ in accept} <= {1, 3}
    cache = TierCache()
    load: defaultdict[int, float] = defaultdict(float)
    for src, rate in demand.items():
        for dc, share in expected_shares(cache.cascade(members, src, LINE, accept)).items():
            load[dc] += rate * share
    assert sum(load.values()) == pytest.approx(sum(demand.values()))
    for dc, cap in capacities.items():
        assert load[dc] <= cap * 1.001, (dc, load)
    assert load[1] >= 39.0  # spill-over takes only the excess, not more


def test_a_full_dc_refuses_first_the_sources_that_lose_least() -> None:
    # DC 1 is offered its own flows (next replica 3 hops away) and DC 2's (next one 1 hop
    # further than DC 1): it keeps its own and refuses DC 2's
    accept = plan_accept(((1, 1), (4, 1)), {1: 60.0}, {1: 60.0, 2: 40.0}, LINE)
    assert accept == ((1, 2, 0),)


def test_plan_without_caps_or_pressure_is_empty() -> None:
    assert plan_accept(((1, 1),), {}, {1: 5.0}, LINE) == ()
    assert plan_accept(((1, 1), (2, 1)), {1: 100.0}, {1: 5.0}, LINE) == ()


def test_route_costs_are_shortest_path_sums() -> None:
    dist = costs(["a", "b", "c"], [("a", "b", 1.0), ("b", "c", 2.0), ("a", "c", 5.0)])
    assert dist["a"] == {"a": 0.0, "b": 1.0, "c": 3.0}
    assert dist["c"]["a"] == 3.0


# -- the object switch -----------------------------------------------------------------------


def switch(dc_id: int, tables: SwitchTables) -> ObjectSwitch:
    sw = ObjectSwitch(f"dc{dc_id}-os", f"dc{dc_id}")
    sw.receive_control(TableSync(version=1, dc_id=dc_id, tables=tables), 0.0)
    assert sw.synced
    return sw


def tables(
    wide: dict[str, control.Replicas],
    dc_id: int,
    *,
    dc_costs: dict[int, dict[int, int]] | None = None,
    policies: dict[str, str] | None = None,
    spill: dict[str, Spill] | None = None,
) -> SwitchTables:
    local: dict[str, control.Replicas] = (
        {KEY: ((100 * dc_id + 1, 1),)} if any(d == dc_id for d, _ in wide.get(KEY, ())) else {}
    )
    return SwitchTables(
        wide=wide,
        local=local,
        gateway=f"dc{dc_id}-fs1",
        dc_costs=dc_costs or {},
        policies=policies or {},
        spill=spill or {},
    )


REPLICAS: dict[str, control.Replicas] = {KEY: ((1, 1), (3, 2))}


def test_switches_send_first_packets_to_the_nearest_replica_and_agree() -> None:
    switches = [switch(d, tables(REPLICAS, d, dc_costs=LINE)) for d in (1, 2, 3, 4)]
    for flow in flows(300):
        for src, nearest in ((1, 1), (3, 3), (4, 3)):
            picks = {sw.resolve(OBJ, flow, src) for sw in switches}
            dcs = {p[0] for p in picks if p}
            assert dcs == {nearest}, (src, picks)
        # from DC 2, replicas 1 and 3 tie at cost 1: weights 1:2 share, the same everywhere
        assert len({(sw.resolve(OBJ, flow, 2) or (0, 0))[0] for sw in switches}) == 1
    tie = Counter((switches[1].resolve(OBJ, f, 2) or (0, 0))[0] for f in flows(3000))
    assert tie[3] / 3000 == pytest.approx(2 / 3, abs=0.03)


def test_a_first_packet_carries_its_source_dc_to_the_choice() -> None:
    sw = switch(2, tables(REPLICAS, 2, dc_costs=LINE))
    for src, want in ((1, 1), (4, 3)):
        pkt = wire_header.encode(Header(Proto.DATAGRAM, 12345, OBJ, src_dc=src, src_host=7))
        sw.receive_datagram(pkt, "dc2-fs1", 0.0)
        (_, out), *_ = sw.datagrams_to_send(0.0)
        assert wire_header.parse(bytes(out)).dst_dc == want


def test_weighted_policy_and_missing_costs_keep_the_global_share() -> None:
    weighted = switch(1, tables(REPLICAS, 1, dc_costs=LINE, policies={KEY: Policy.WEIGHTED.value}))
    nocosts = switch(1, tables(REPLICAS, 1))
    for sw in (weighted, nocosts):
        counts = Counter((sw.resolve(OBJ, f, 1) or (0, 0))[0] for f in flows(3000))
        assert counts[3] / 3000 == pytest.approx(2 / 3, abs=0.03), counts


def test_a_placed_flow_keeps_its_replica_when_costs_change() -> None:
    sw = switch(2, tables(REPLICAS, 2, dc_costs=LINE))
    flow = 4242
    dc, host = sw.refine(OBJ, flow, 0, 0, 4) or (0, 0)
    assert dc == 3
    # DC 1 becomes the nearest for everybody: new flows move, the placed one does not
    cheap = {a: {b: (0 if a == b else 1 if b == 1 else 9) for b in range(1, 5)} for a in range(1, 5)}
    sw.receive_control(TableDelta(version=2, upsert=SwitchTables(dc_costs=cheap), remove=TableKeys()), 0.0)
    assert sw.version == 2
    assert (sw.resolve(OBJ, flow, 4) or (0, 0))[0] == 1
    assert sw.refine(OBJ, flow, dc, host, 4) == (dc, host)  # the header's locator stands


def test_re_resolution_after_the_nearest_replica_dies_picks_the_next_nearest_everywhere() -> None:
    three: dict[str, control.Replicas] = {KEY: ((1, 1), (3, 1), (4, 1))}
    switches = [switch(d, tables(three, d, dc_costs=LINE)) for d in (1, 2, 3, 4)]
    flow = 99
    assert (switches[0].resolve(OBJ, flow, 3) or (0, 0))[0] == 3
    # DC 3 loses its replica: one delta to every switch (wide without 3, DC 3's local gone)
    for sw in switches:
        remove = TableKeys(local=[KEY] if sw.dc_id == 3 else [])
        sw.receive_control(
            TableDelta(version=2, upsert=SwitchTables(wide={KEY: ((1, 1), (4, 1))}), remove=remove), 0
        )
    # the orphan (DC 3, no host) is re-resolved by DC 3's switch; any switch agrees on DC 4
    dc3 = switches[2]
    assert dc3.refine(OBJ, flow, 3, 0, 3) == (4, 0)
    assert {(sw.refine(OBJ, flow, 0, 0, 3) or (0, 0))[0] for sw in switches} == {4}


def test_spill_fractions_and_policies_arrive_and_leave_by_delta() -> None:
    sw = switch(1, tables(REPLICAS, 1, dc_costs=LINE))
    delta = SwitchTables(spill={KEY: ((1, 0, 0),)})
    sw.receive_control(TableDelta(version=2, upsert=delta, remove=TableKeys()), 0.0)
    assert {(sw.resolve(OBJ, f, 1) or (0, 0))[0] for f in flows(100)} == {3}
    assert sw.snapshot().spill == {KEY: ((1, 0, 0),)}
    sw.receive_control(TableDelta(version=3, upsert=SwitchTables(), remove=TableKeys(spill=[KEY])), 0.0)
    assert {(sw.resolve(OBJ, f, 1) or (0, 0))[0] for f in flows(100)} == {1}
    bad = SwitchTables(policies={"zz": "weighted", KEY: "fastest"})
    sw.receive_control(TableDelta(version=4, upsert=bad, remove=TableKeys()), 0.0)
    assert sw.drops["bad-table-entry"] == 2


def test_locality_tables_survive_the_wire() -> None:
    t = SwitchTables(dc_costs=LINE, policies={KEY: "weighted"}, spill={KEY: ((1, 2, 7),)})
    back = control.decode(control.encode(TableSync(version=1, dc_id=1, tables=t)))
    assert isinstance(back, TableSync) and back.tables == t


def test_objects_under_an_owner_prefix_rule_follow_their_policy_too() -> None:
    prefix = int.from_bytes(OBJ[:8], "big")
    rule: dict[str, control.Replicas] = {f"{prefix:x}/64": ((1, 1), (3, 2))}
    sw = switch(2, SwitchTables(prefixes=rule, gateway="dc2-fs1", dc_costs=LINE))
    other = OBJ[:8] + bytes(24)  # no exact entry: the rule answers
    assert {(sw.resolve(other, f, 4) or (0, 0))[0] for f in flows(200)} == {3}
    weighted = SwitchTables(policies={other.hex(): Policy.WEIGHTED.value})
    sw.receive_control(TableDelta(version=2, upsert=weighted, remove=TableKeys()), 0.0)
    assert {(sw.resolve(other, f, 4) or (0, 0))[0] for f in flows(200)} == {1, 3}
    assert {(sw.resolve(OBJ, f, 4) or (0, 0))[0] for f in flows(200)} == {3}  # its sibling: nearest


def test_a_refused_flow_tries_the_other_dcs_of_its_tier_first() -> None:
    # from DC 2, DCs 1 and 3 tie at cost 1; DC 1 takes a quarter of what it is offered
    members = ((1, 1), (3, 1), (4, 1))
    cascade = TierCache().cascade(members, 2, LINE, ((1, 0, ACCEPT_SCALE // 4),))
    counts = Counter(choose(f, cascade) for f in flows(8000))
    assert set(counts) == {1, 3}  # never DC 4, the next tier
    expected = expected_shares(cascade)
    assert expected == pytest.approx({1: 0.125, 3: 0.875}, abs=0.01)
    for dc, share in expected.items():
        assert counts[dc] / 8000 == pytest.approx(share, abs=0.02)


def test_a_tier_larger_than_the_sibling_limit_spills_to_the_next_tier() -> None:
    costs = {0: {dc: (1 if dc <= SIBLINGS + 1 else 2) for dc in range(1, SIBLINGS + 3)}}
    members = tuple((dc, 1) for dc in range(1, SIBLINGS + 3))
    nobody = tuple((dc, 0, 0) for dc in range(1, SIBLINGS + 2))
    cascade = TierCache().cascade(members, 0, costs, nobody)
    assert {choose(f, cascade) for f in flows(300)} == {SIBLINGS + 2}


# -- measured demand ---------------------------------------------------------------------------


def first_packet(src: int, flow: int, obj: bytes = OBJ) -> bytes:
    return wire_header.encode(Header(Proto.DATAGRAM, flow, obj, src_dc=src, src_host=7))


def test_an_object_switch_counts_first_packets_of_watched_objects_and_reports_them() -> None:
    other = bytes([9] * 32)
    wide = {**REPLICAS, other.hex(): ((1, 1),)}
    sw = switch(2, tables(wide, 2, dc_costs=LINE, spill={KEY: ()}))
    assert sw.get_timer() is None
    for k, src in enumerate((1, 1, 4, 99)):  # 99: no DC the cost table knows; not counted
        sw.receive_datagram(first_packet(src, k), "dc2-fs1", 10.0)
    sw.receive_datagram(first_packet(1, 7, other), "dc2-fs1", 10.0)  # not watched
    # a packet that already names its DC is not a new flow's choice
    placed = wire_header.encode(Header(Proto.DATAGRAM, 8, OBJ, dst_dc=3, src_dc=1, src_host=7))
    sw.receive_datagram(placed, "dc2-fs1", 10.0)
    assert sw.get_timer() == 11.0
    sw.handle_timer(11.0)
    (report,) = sw.control_to_send()
    assert report == control.Demand(node=sw.name, interval=1.0, flows={KEY: {1: 2, 4: 1}})
    # idle: one empty report, then silence
    sw.handle_timer(12.0)
    assert sw.control_to_send() == [control.Demand(node=sw.name, interval=1.0, flows={})]
    assert sw.get_timer() is None
    # the entry goes: nothing counted any more
    sw.receive_control(TableDelta(version=2, upsert=SwitchTables(), remove=TableKeys(spill=[KEY])), 0.0)
    sw.receive_datagram(first_packet(1, 9), "dc2-fs1", 13.0)
    assert sw.get_timer() is None


def test_demand_reports_are_bounded_by_the_decoder() -> None:
    many = {f"{k:064x}": {1: 1} for k in range(control.DEMAND_OBJECTS + 1)}
    body = control.encode(control.Demand(node="x", interval=1.0, flows=many))
    with pytest.raises(MalformedPacket):
        control.decode(body)
    with pytest.raises(MalformedPacket):
        control.decode(control.encode(control.Demand(node="x", interval=0.0)))


def test_the_demand_book_sums_switches_and_replans_only_on_a_real_move() -> None:
    book = DemandBook(lambda key: key == KEY, {1, 2})
    flows = {KEY: {1: 80, 7: 9}, "ff" * 32: {1: 5}}
    first = book.report("a-os", control.Demand(node="a-os", interval=2.0, flows=flows))
    assert first == {KEY: {1: 40.0}}  # objects nobody plans for, sources that are no DC: ignored
    assert book.report("b-os", control.Demand(node="b-os", interval=1.0, flows={KEY: {2: 20}})) == {
        KEY: {1: 40.0, 2: 20.0}
    }
    # counting noise under the hysteresis: no replan
    assert book.report("a-os", control.Demand(node="a-os", interval=1.0, flows={KEY: {1: 43}})) == {}
    assert book.report("a-os", control.Demand(node="a-os", interval=1.0, flows={KEY: {1: 60}})) == {
        KEY: {1: 60.0, 2: 20.0}
    }
    assert book.forget("b-os") == {KEY: {1: 60.0}}
    assert book.report("a-os", control.Demand(node="a-os", interval=1.0)) == {KEY: {}}
    assert book.published == {}


def test_only_object_switches_report_demand() -> None:
    ctl = Controller(default_topology())
    report = control.Demand(node="east-fs1", interval=1.0, flows={KEY: {1: 1_000_000}})
    for node in ("east-fs1", "east-h1", "nobody"):
        ctl.receive_message(node, report, 0.0)
    assert ctl.drops["demand-not-object-switch"] == 3 and not ctl.tables.measured.published
