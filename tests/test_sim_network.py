"""Whole-network behaviour in the deterministic sim (issue: a working SCAFFOLD network)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from conftest import WEB, node_core, serve_objects
from scaffold.core.flow_switch import FlowSwitch
from scaffold.core.host import Flow, HostStack, ObjectNotFoundEvent, Role
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.topology import default_topology
from scaffold.ids import ObjectId
from scaffold.runtime.sim import SimNetwork
from scaffold.wire import header as wire_header
from scaffold.wire.header import MAX_TTL, Header, Proto

CLIENTS = ["north-h1", "north-h2", "east-h3", "east-h4", "west-h2", "west-h3", "west-h4"]
REPLICAS = {"east-h1": 1, "east-h2": 2, "west-h1": 3}


def send(net: SimNetwork, client: str, flow: Flow, data: bytes) -> None:
    """``client`` sends ``data`` on ``flow``."""

    def act(core: HostStack, now: float) -> None:
        core.send_datagram(flow.socket_id, data, now)

    net.act(client, act)


def open_flows(
    net: SimNetwork, count: int, *, before_reply: int = 2, after_reply: int = 1
) -> list[tuple[str, Flow]]:
    """Open ``count`` flows round-robin over the clients; each sends ``before_reply`` datagrams
    at once (still unrefined) and ``after_reply`` more once the first reply refined it."""
    flows = []
    for i in range(count):
        client = CLIENTS[i % len(CLIENTS)]
        flow = net.act(client, lambda core, now: core.open_flow(WEB, now))
        for k in range(before_reply):
            send(net, client, flow, b"early %d" % k)
        flows.append((client, flow))
    net.run(0.2)
    for client, flow in flows:
        for k in range(after_reply):
            send(net, client, flow, b"late %d" % k)
    net.run(0.2)
    return flows


def server_view(net: SimNetwork) -> dict[int, dict[str, int]]:
    """Flow ID -> {replica host: packets it received for that flow}."""
    seen: dict[int, dict[str, int]] = defaultdict(dict)
    for name in REPLICAS:
        for flow in net.host(name).flows.values():
            if flow.role == Role.SERVER:
                seen[flow.flow][name] = seen[flow.flow].get(name, 0) + flow.packets_received
    return seen


#: each replica's share under ``nearest`` (docs/protocol.md §3.5), for the clients round-robin:
#: east's 2 clients stay in east (east-h1:east-h2 = 1:2), west's 3 in west (west-h1), and
#: north's 2 see east and west at the same cost (3 ms), shared by DC weight 3:3
NEAREST_SHARES = {
    "east-h1": (2 / 7) * (1 / 3) + (2 / 7) * (1 / 2) * (1 / 3),
    "east-h2": (2 / 7) * (2 / 3) + (2 / 7) * (1 / 2) * (2 / 3),
    "west-h1": 3 / 7 + (2 / 7) * (1 / 2),
}


def test_nearest_shares_and_flow_affinity(net: SimNetwork) -> None:
    flows = open_flows(net, 1000)
    seen = server_view(net)
    assert len(seen) == 1000
    # Every packet of each flow reached exactly one replica, early (unrefined) ones included.
    for _, flow in flows:
        assert len(seen[flow.flow]) == 1, seen[flow.flow]
        assert sum(seen[flow.flow].values()) == 3
        assert len(flow.served_by) == 1
        assert flow.packets_received == 3  # all three echoes came back
    counts = Counter(next(iter(v)) for v in seen.values())
    for host, share in NEAREST_SHARES.items():
        assert abs(counts[host] / 1000 - share) <= 0.1 * share, (host, counts[host])
    # and every flow from a DC with a replica was served in that DC
    for client, flow in flows:
        served = net.topology.dc_of(next(iter(seen[flow.flow])))
        if net.topology.dc_of(client) in ("east", "west"):
            assert served == net.topology.dc_of(client), (client, served)


def _state_size(switch: FlowSwitch | ObjectSwitch) -> int:
    """Entries in every container a switch holds (tables, interned sets, counters...)."""
    size = 0
    for value in vars(switch).values():
        if isinstance(value, dict | list | set | tuple):
            size += len(value)
            if isinstance(value, dict):
                size += sum(len(v) for v in value.values() if isinstance(v, dict | list | set))
        elif hasattr(value, "__len__") and not isinstance(value, str | bytes):
            size += len(value)
    return size


def test_no_per_flow_state_in_switches() -> None:
    sizes = []
    for count in (10, 10_000):
        network = SimNetwork(default_topology(), seed=3)
        network.start()
        network.settle()
        serve_objects(network)
        open_flows(network, count, before_reply=1, after_reply=0)
        assert len(server_view(network)) == count
        switches = [network.switch(n) for n in network.nodes if network.nodes[n].role != "host"]
        sizes.append({s.name: (s.table_sizes(), _state_size(s)) for s in switches})
    assert sizes[0] == sizes[1]


def test_refinement_trace(net: SimNetwork) -> None:
    flow = net.act("north-h1", lambda core, now: core.open_flow(WEB, now, trace=True))
    net.act("north-h1", lambda core, now: core.send_datagram(flow.socket_id, b"trace me", now))
    net.run(0.2)
    hops = sorted(
        (t for n in net.nodes.values() for t in n.trace if t.flow == flow.flow), key=lambda t: -t.ttl
    )
    # client first (TTL 32), destination host last (same TTL as the hop that delivered it)
    client, server = hops[0], next(t for t in hops if t.role == "host" and t.node != "north-h1")
    assert (client.node, client.dc, client.host, client.socket) == ("north-h1", 0, 0, 0)
    dc_filler = next(t for t in hops if t.dc)
    assert dc_filler.role == "object-switch" and dc_filler.node == "north-os"
    host_filler = next(t for t in hops if t.host)
    dest_dc = net.controller.dc_name(host_filler.dc)
    assert host_filler.role == "object-switch"
    assert net.topology.dc_of(host_filler.node) == dest_dc != "north"
    assert server.socket != 0 and server.host == host_filler.host
    assert net.controller.host_name(server.host) == server.node


def test_malformed_datagrams_to_every_node_are_counted(net: SimNetwork) -> None:
    rng = random.Random(5)
    good = wire_header.encode(Header(Proto.DATAGRAM, 9, WEB.raw, ttl=MAX_TTL), bytes(12))
    junk = {
        "truncated": [good[:n] for n in range(0, wire_header.HEADER_LEN, 7)],
        "bad-version": [b"\x07" + good[1:], b"\x00" + rng.randbytes(200)],
        "bad-proto": [good[:1] + b"\x63" + good[2:]],
        "bad-flags": [good[:2] + b"\x80" + good[3:]],
    }
    before = {name: Counter(node_core(node).drops) for name, node in net.nodes.items()}
    for name in net.nodes:
        for payloads in junk.values():
            for data in payloads:
                net.inject(name, data)
    flows = open_flows(net, 20)
    for name, node in net.nodes.items():
        grown = Counter(node_core(node).drops)
        grown.subtract(before[name])
        for reason, payloads in junk.items():
            assert grown[reason] >= len(payloads), (name, reason, dict(grown))
    assert all(f.packets_received == 3 for _, f in flows)


def test_random_bytes_never_crash_a_node(net: SimNetwork) -> None:
    rng = random.Random(8)
    for _ in range(300):
        for name in net.nodes:
            net.inject(name, rng.randbytes(rng.randint(0, 200)))
    net.run(0.1)
    assert sum(sum(node_core(n).drops.values()) for n in net.nodes.values()) >= 300 * len(net.nodes) * 0.99
    assert all(f.packets_received == 3 for _, f in open_flows(net, 5))


def test_object_not_found_is_answered() -> None:
    network = SimNetwork(default_topology(), seed=2)
    network.start()
    network.settle()
    nobody = ObjectId.from_name("nobody-serves-this")
    flow = network.act("east-h3", lambda core, now: core.open_flow(nobody, now))
    network.act("east-h3", lambda core, now: core.send_datagram(flow.socket_id, b"?", now))
    network.run(0.05)
    assert ObjectNotFoundEvent(flow.socket_id, nobody.raw) in network.events["east-h3"]


def test_switches_keep_forwarding_without_the_controller(net: SimNetwork) -> None:
    net.stop_controller()
    net.run(2.0)  # long past any heartbeat deadline
    flows = open_flows(net, 30)
    assert all(f.packets_received == 3 for _, f in flows)


def test_dead_replica_leaves_the_tables_after_missed_heartbeats(net: SimNetwork) -> None:
    net.kill("west-h1")
    net.run(0.2 * 3 + 0.5)
    assert any(e.kind == "host-down" and e.target == "west-h1" for e in net.controller.events)
    for node in net.nodes.values():
        if isinstance(node, ObjectSwitch):
            wide = node.snapshot().wide[WEB.raw.hex()]
            assert {dc for dc, _ in wide} == {net.controller.dc_ids["east"]}
    flows = open_flows(net, 50)
    assert all(f.served_by and net.controller.host_name(f.served_by[0]) != "west-h1" for _, f in flows)
    assert all(f.packets_received == 3 for _, f in flows)


def test_sim_is_deterministic() -> None:
    def run() -> list[tuple[int, tuple[int, ...]]]:
        network = SimNetwork(default_topology(), seed=99)
        network.start()
        network.settle()
        serve_objects(network)
        return [(f.flow, f.served_by) for _, f in open_flows(network, 50)]

    assert run() == run()


def test_lossy_links_lose_packets_but_never_misdeliver() -> None:
    network = SimNetwork(default_topology(), seed=4)
    network.start()
    network.settle()
    serve_objects(network)
    network.set_all_links(loss=0.2, jitter=0.002)
    flows = open_flows(network, 100)
    seen = server_view(network)
    assert all(len(seen.get(f.flow, {})) <= 1 for _, f in flows)
    received = sum(f.packets_received for _, f in flows)
    assert 0 < received < 300  # some echoes were lost, none invented
    assert all(len(f.served_by) <= 1 for _, f in flows)
