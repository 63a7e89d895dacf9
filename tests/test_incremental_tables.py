"""Incremental tables (core/controller/tables.py, incremental.py): they always equal the tables
computed from scratch; bursts coalesce into one delta per switch; syncs and deltas come in
parts that a switch applies at once; owner-prefix rules cover an owner's objects."""

from __future__ import annotations

import random

from conftest import count_calls
from oracle_tables import full_tables
from scaffold.core.controller import Controller
from scaffold.core.controller.commands import Drain, Link, MigrateHost, MoveHost, SetWeight
from scaffold.core.controller.incremental import GroupedTable, prefix_key
from scaffold.core.flow_switch import FlowSwitch
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.topology import Topology, default_topology, make_topology
from scaffold.ids import ObjectId
from scaffold.wire import control
from scaffold.wire.control import RECORD_BUDGET

Switches = dict[str, FlowSwitch | ObjectSwitch]


def network(topo: Topology | None = None) -> tuple[Controller, Switches]:
    ctl = Controller(topo or default_topology(), open_binding=True)
    return ctl, connect(ctl)


def connect(ctl: Controller) -> Switches:
    """A switch for every one of ``ctl``'s topology, each said Hello and holding its tables."""
    switches: Switches = {}
    for dc in ctl.topology.datacenters:
        for fs in dc.flow_switches:
            switches[fs] = FlowSwitch(fs, dc.name)
        switches[dc.object_switch] = ObjectSwitch(dc.object_switch, dc.name)
    for sw in switches.values():
        sw.hello(("127.0.0.1", 1000 + len(sw.name)))
        for message in sw.control_to_send():
            ctl.receive_message(sw.name, message, 0.0)
    deliver(ctl, switches)
    return switches


def deliver(ctl: Controller, switches: Switches) -> dict[str, list[control.ControlMessage]]:
    """Close the coalescing window and hand every record to its switch (encoded, as on the
    wire); the records each switch got."""
    ctl.flush_tables()
    got: dict[str, list[control.ControlMessage]] = {}
    for node, message in ctl.messages_to_send():
        if node in switches:
            wire = control.encode(message)
            assert len(wire) <= RECORD_BUDGET + 4096, "a part larger than the budget"
            got.setdefault(node, []).append(message)
            switches[node].receive_control(control.decode(wire), 0.0)
            for reply in switches[node].control_to_send():
                ctl.receive_message(node, reply, 0.0)
    return got


def assert_consistent(ctl: Controller, switches: Switches) -> None:
    for name, switch in switches.items():
        assert ctl.tables.desired(name) == full_tables(ctl, name), name
        assert switch.snapshot() == ctl.tables.desired(name), name
        assert switch.version == ctl.switches[name].version


def register(ctl: Controller, host: str, gateway: str) -> None:
    # With an address, as a runtime's host says Hello: a restored controller takes only hosts
    # that registered with one as alive (docs/protocol.md §6.4).
    port = 7000 + sum(host.encode()) % 1000
    hello = control.Hello(node=host, role="host", gateway=gateway, address=("127.0.0.1", port))
    ctl.receive_message(host, hello, 0.0)


def test_random_churn_keeps_incremental_tables_equal_to_tables_from_scratch() -> None:
    ctl, switches = network()
    rng = random.Random(4)
    hosts = [h.name for h in ctl.topology.hosts()]
    for host in hosts:
        register(ctl, host, ctl.topology.hosts()[hosts.index(host)].gateway)
    objects = [ObjectId.from_name(f"o{i}").raw.hex() for i in range(30)]
    gateways = [fs for dc in ctl.topology.datacenters for fs in dc.flow_switches]
    for step in range(300):
        host, obj = rng.choice(hosts), rng.choice(objects)
        kind = rng.randrange(9)
        if kind <= 2:
            ctl.receive_message(host, control.Bind(obj=obj, weight=rng.randint(1, 4)), 0.0)
        elif kind == 3:
            ctl.receive_message(host, control.Unbind(obj=obj), 0.0)
        elif kind == 4:
            ctl.node_disconnected(host, 0.0)
        elif kind == 5:
            register(ctl, host, rng.choice(gateways))
            ctl.receive_message(host, control.Heartbeat(node=host, seq=step), 0.0)
        elif kind == 6 and host in ctl.objects.get(obj, {}):
            ctl.command(rng.choice([Drain(host, obj), SetWeight(obj, host, rng.randint(1, 9))]), 0.0)
        elif kind == 7:
            dc = rng.choice(ctl.topology.datacenters)
            cmd = MigrateHost(host, dc.name) if rng.random() < 0.5 else MoveHost(host, rng.choice(gateways))
            ctl.command(cmd, 0.0)
        elif kind == 8:
            link = rng.choice(ctl.topology.backbone)
            ctl.command(Link(link.a, link.b, rng.random() < 0.5), 0.0)
        if step % 7 == 0:
            deliver(ctl, switches)
            assert_consistent(ctl, switches)
    deliver(ctl, switches)
    assert_consistent(ctl, switches)


def test_a_burst_of_ten_thousand_binds_is_one_delta_per_switch() -> None:
    ctl, switches = network()
    register(ctl, "east-h1", "east-fs1")
    deliver(ctl, switches)
    for i in range(10_000):
        ctl.receive_message("east-h1", control.Bind(obj=ObjectId.from_name(f"b{i}").raw.hex()), 1.0)
    timer = ctl.get_timer()
    assert timer is not None and timer <= 1.0 + 0.05  # one window, from the first
    got = deliver(ctl, switches)
    # Every object switch got one delta (one version, in parts that fit a frame); the flow
    # switches nothing: no route changed.
    for name, switch in switches.items():
        records = got.get(name, [])
        if isinstance(switch, ObjectSwitch):
            assert {m.version for m in records if isinstance(m, control.TableDelta)} == {switch.version}
            assert len(records) <= 4
        else:
            assert records == []
    assert switches["west-os"].table_sizes()["wide"] == 10_000
    assert switches["east-os"].table_sizes()["local"] == 10_000
    assert_consistent(ctl, switches)


def test_a_sync_in_parts_is_applied_only_when_complete() -> None:
    topo = make_topology(datacenters=2, hosts_per_datacenter=1)
    ctl, switches = network(topo)
    host = topo.hosts()[0]
    register(ctl, host.name, host.gateway)
    for i in range(12_000):
        ctl.receive_message(host.name, control.Bind(obj=ObjectId.from_name(f"s{i}").raw.hex()), 0.0)
    deliver(ctl, switches)
    os_name = topo.datacenters[1].object_switch
    ctl.receive_message(os_name, control.SyncRequest(node=os_name, have_version=0), 0.0)
    ctl.flush_tables()
    parts = [m for n, m in ctl.messages_to_send() if n == os_name]
    assert len(parts) > 1 and all(isinstance(p, control.TableSync) for p in parts)
    assert [p.more for p in parts if isinstance(p, control.TableSync)] == [True] * (len(parts) - 1) + [False]
    fresh = ObjectSwitch(os_name, topo.datacenters[1].name)
    probe = ObjectId.from_name("s11999").raw
    for part in parts[:-1]:
        fresh.receive_control(control.decode(control.encode(part)), 0.0)
        assert not fresh.synced and fresh.resolve(probe, 7) is None  # still the old (no) tables
    fresh.receive_control(control.decode(control.encode(parts[-1])), 0.0)
    assert fresh.synced and fresh.resolve(probe, 7) is not None
    assert fresh.snapshot() == ctl.tables.desired(os_name)


def test_an_owner_prefix_rule_covers_objects_that_share_replicas() -> None:
    ctl, switches = network()
    for host, gateway in (("east-h1", "east-fs1"), ("west-h1", "west-fs1")):
        register(ctl, host, gateway)
    owned = [ObjectId.from_owner(b"alice-key", f"photo/{i}") for i in range(50)]
    for obj in owned:
        ctl.receive_message("east-h1", control.Bind(obj=obj.raw.hex()), 0.0)
    odd = owned[7].raw.hex()
    ctl.receive_message("west-h1", control.Bind(obj=odd), 0.0)  # one object with other replicas
    deliver(ctl, switches)
    north = switches["north-os"]
    assert isinstance(north, ObjectSwitch)
    snap = north.snapshot()
    rule = prefix_key(owned[0].raw.hex()[:16])
    assert snap.prefixes == {rule: ((ctl.dc_ids["east"], 1),)}
    assert set(snap.wide) == {odd}  # one rule for the owner, one exception
    east, west = ctl.dc_ids["east"], ctl.dc_ids["west"]
    for k, obj in enumerate(owned):
        dc, _ = north.resolve(obj.raw, 1000 + k) or (0, 0)
        assert dc == east or (obj.raw.hex() == odd and dc in (east, west))
    # The exception's replicas die: its exact entry says "none", the rule does not answer.
    ctl.node_disconnected("east-h1", 0.0)
    ctl.node_disconnected("west-h1", 0.0)
    deliver(ctl, switches)
    assert north.resolve(owned[7].raw, 5) is None and north.resolve(owned[3].raw, 5) is None
    assert_consistent_rules(ctl, switches)


def assert_consistent_rules(ctl: Controller, switches: Switches) -> None:
    for name, switch in switches.items():
        assert switch.snapshot() == ctl.tables.desired(name), name


def test_grouped_table_rule_follows_the_most_common_entry() -> None:
    table = GroupedTable()
    a, b = ((1, 1),), ((2, 1),)
    keys = [f"{'ab' * 8}{i:048x}" for i in range(5)]
    for key in keys[:3]:
        table.set(key, a)
    for key in keys[3:]:
        table.set(key, b)
    assert list(table.rules.values()) == [a] and set(table.exact) == set(keys[3:])
    table.set(keys[0], b)
    table.set(keys[1], b)  # now b is held by 4 of 5: the rule moves
    assert list(table.rules.values()) == [b] and set(table.exact) == {keys[2]}
    for key in keys:
        table.set(key, None, registered=False)
    assert not table.rules and not table.exact


def test_a_restored_controller_starts_with_the_tables_built_one_change_at_a_time() -> None:
    """A starting controller loads every object at once (``Tables._load_objects``,
    ``GroupedTable.load``: each object computed once) and ends where the incremental tables
    are: owner groups under their rule, a member off the rule, drains, a policy."""
    ctl, switches = network()
    hosts = ctl.topology.hosts()
    for h in hosts:
        register(ctl, h.name, h.gateway)
        ctl.receive_message(h.name, control.Heartbeat(node=h.name, seq=1), 0.0)
    grouped = [ObjectId.from_owner(b"\x01" * 32, f"g{i}").raw.hex() for i in range(4)]
    plain = [ObjectId.from_name(f"p{i}").raw.hex() for i in range(20)]
    for key in grouped[:3]:
        ctl.receive_message(hosts[0].name, control.Bind(obj=key), 0.0)
    ctl.receive_message(hosts[-1].name, control.Bind(obj=grouped[3]), 0.0)  # off the rule
    for i, key in enumerate(plain):
        ctl.receive_message(hosts[i % len(hosts)].name, control.Bind(obj=key, weight=1 + i % 3), 0.0)
        if i % 2:
            ctl.receive_message(hosts[(i + 3) % len(hosts)].name, control.Bind(obj=key), 0.0)
    ctl.receive_message(hosts[0].name, control.Bind(obj=plain[0], policy="weighted"), 0.0)
    ctl.command(Drain(hosts[1].name, plain[1]), 0.0)
    deliver(ctl, switches)
    assert ctl.tables.wide.rules  # the owner's rule is there to restore

    restored, fresh = network_restored(ctl)
    for name in switches:
        assert restored.tables.desired(name) == ctl.tables.desired(name), name
        assert fresh[name].snapshot() == switches[name].snapshot(), name
    assert restored.tables._object_dcs == ctl.tables._object_dcs
    assert restored.tables.policies == ctl.tables.policies


def network_restored(ctl: Controller) -> tuple[Controller, Switches]:
    """A controller started from ``ctl``'s rows, and new switches connected to it."""
    restored = Controller(ctl.topology, saved=ctl.snapshot(), open_binding=True)
    return restored, connect(restored)


def test_a_registration_costs_the_same_work_at_any_number_of_objects() -> None:
    # Work counted, not timed: the Python calls of a burst of Binds, its flush to every switch
    # and its state changes, at 2,000 and at 20,000 objects registered (docs/protocol.md §6.2).
    # A walk over the objects, or over switches per registration, would show here.
    ctl = Controller(make_topology(datacenters=8, hosts_per_datacenter=4), open_binding=True)
    hosts = [h for h in ctl.topology.hosts()]
    for h in hosts:
        register(ctl, h.name, h.gateway)
    connect(ctl)

    def burst(first: int, count: int) -> None:
        for i in range(first, first + count):
            host = hosts[i % len(hosts)].name
            ctl.receive_message(host, control.Bind(obj=ObjectId.from_name(f"o{i}").raw.hex()), 1.0)
        ctl.flush_tables()
        ctl.messages_to_send()
        ctl.state_changes()

    def calls(first: int, count: int) -> int:
        return count_calls(lambda: burst(first, count))

    burst(0, 2_000)
    small = calls(2_000, 500)
    burst(2_500, 17_500)
    large = calls(20_000, 500)
    assert abs(large - small) <= small // 50, (small, large)
    assert small / 500 < 80  # per registration, its flush and its state changes
