"""Every kind of churn, one test each, in the deterministic sim (issue: churn without loss)."""

from __future__ import annotations

from churn_apps import CONTENT, Download, Downloader, recovery, serve_content, stall
from conftest import node_core
from scaffold.core.controller.commands import Drain, Link, MigrateHost, MigrateObject, MoveHost, SetWeight
from scaffold.core.controller.tables import COALESCE
from scaffold.core.flow_switch import FlowSwitch
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.topology import default_topology
from scaffold.runtime.sim import SimNetwork
from scaffold.wire import header as wire_header
from scaffold.wire import stream as wire_stream
from scaffold.wire.header import Header, Proto

SIZE = 1024 * 1024
REPLICAS = {"east-h1": 1, "east-h2": 2, "west-h1": 3}
CLIENTS = ["north-h1", "north-h2", "east-h3", "west-h2", "west-h3", "west-h4"]  # east-h4: spare


def network(seed: int) -> SimNetwork:
    """The default topology with 20 Mbit/s links, so that transfers last a few seconds."""
    net = SimNetwork(default_topology(), seed=seed)
    net.set_all_links(bandwidth=20e6)
    net.start()
    net.settle()
    return net


def start_downloads(
    net: SimNetwork, count: int, size: int = SIZE, *, resumable: bool = True, policy: str = ""
) -> Downloader:
    serve_content(net, REPLICAS, size, resumable=resumable, policy=policy)
    downloader = Downloader()
    for i in range(count):
        downloader.open(net, CLIENTS[i % len(CLIENTS)])
    return downloader


def served_by(net: SimNetwork, host: str, socket_id: int) -> list[str]:
    flow = net.host(host).flows.get(socket_id)
    assert flow is not None
    return [net.controller.host_name(h) or "?" for h in flow.served_by]


def refined(sw: ObjectSwitch, flow: int, dc: int) -> tuple[int, int]:
    """The (DC ID, Host ID) ``sw`` fills in for a packet of ``flow`` to the content naming DC
    ``dc`` (0: none) and no host."""
    choice = sw.refine(CONTENT.raw, flow, dc, 0)
    assert choice is not None
    return choice


def finish(net: SimNetwork, downloader: Downloader, timeout: float = 60) -> None:
    assert net.run_while(lambda: not downloader.done(), timeout=timeout)


def assert_exact(downloader: Downloader, size: int = SIZE) -> None:
    for d in downloader.downloads.values():
        assert d.checker.ok and d.checker.offset == size, (d.host, d.checker.__dict__, d.ended)


def test_server_failure_resumable_flows_continue_on_a_surviving_replica() -> None:
    net = network(31)
    downloader = start_downloads(net, 14, size=4 * SIZE)
    net.run(0.3)
    victim = "west-h1"
    affected = [d for d in downloader.downloads.values() if served_by(net, d.host, d.socket_id) == [victim]]
    assert affected
    net.kill(victim)
    killed = net.now
    histories = {(d.host, d.socket_id): served_by(net, d.host, d.socket_id) for d in affected}
    finish(net, downloader)
    assert_exact(downloader, 4 * SIZE)
    for d in affected:
        path = net.host(d.host).flows
        assert (d.host, d.socket_id) in histories
        # the flow kept its Flow ID and nonce and now lives on a survivor
        assert d.ended == "closed"
        assert stall(d, killed) < 1.5  # missed heartbeats (<= 0.8 s) + a probe or RTO
        assert d.socket_id not in path  # closed cleanly at the end
    resumed = sum(net.host(h).counters["flow-resumed"] for h in REPLICAS if h != victim)
    assert resumed == len(affected)
    # Each client measured its flow's pause: from the victim's last packet to the survivor's first.
    pauses = [net.host(h).pauses["host"] for h in {d.host for d in affected}]
    assert sum(p.count for p in pauses) == len(affected)
    assert 0.2 < sum(p.sum for p in pauses) / len(affected) < 1.5


def test_server_failure_non_resumable_flows_fail_cleanly() -> None:
    net = network(32)
    downloader = start_downloads(net, 14, size=4 * SIZE, resumable=False)
    net.run(0.3)
    victim = "east-h2"
    affected = {
        (d.host, d.socket_id)
        for d in downloader.downloads.values()
        if served_by(net, d.host, d.socket_id) == [victim]
    }
    net.kill(victim)
    finish(net, downloader)
    for key, d in downloader.downloads.items():
        if key in affected:
            assert d.ended == "reset" and d.checker.ok  # an error, never a wrong byte
        else:
            assert d.ended == "closed" and d.checker.ok and d.checker.offset == 4 * SIZE


def test_re_resolution_is_stateless_across_object_switches() -> None:
    net = network(33)
    start_downloads(net, 7, size=64 * 1024)
    net.kill("west-h1")
    net.run(1.0)  # the controller withdrew it everywhere
    switches = [n for n in net.nodes.values() if isinstance(n, ObjectSwitch)]
    for flow in range(1, 20_000, 997):
        picks = {refined(sw, flow, 0)[0] for sw in switches}
        assert len(picks) == 1  # every object switch picks the same DC for the same flow
        east = net.controller.dc_ids["east"]
        hosts = {sw.refine(CONTENT.raw, flow, east, 0) for sw in switches if sw.dc_id == east}
        assert len(hosts) == 1
    # and two orphaned packets of one flow, refined by two different object switches
    flow_id = 0x1234_5678_9ABC
    orphans = {
        sw.refine(CONTENT.raw, flow_id, 0, 0) for sw in switches if sw.dc_id != net.controller.dc_ids["east"]
    }
    assert len({p[0] for p in orphans if p}) == 1


def test_drain_stops_new_flows_and_lets_established_ones_finish() -> None:
    net = network(34)
    downloader = start_downloads(net, 14)
    net.run(0.2)
    target = "west-h1"
    established = [
        d for d in downloader.downloads.values() if served_by(net, d.host, d.socket_id) == [target]
    ]
    assert established
    net.command(Drain(host=target, object="content"))
    net.run(0.05)
    late = [downloader.open(net, CLIENTS[i % len(CLIENTS)]) for i in range(40)]
    net.run(0.5)
    assert all(target not in served_by(net, d.host, d.socket_id) for d in late)
    assert all(served_by(net, d.host, d.socket_id) == [target] for d in established if not d.ended)
    finish(net, downloader)
    assert_exact(downloader)
    assert all(d.ended == "closed" for d in established)
    net.run(0.1)
    assert target not in net.controller.objects.get(CONTENT.raw.hex(), {})
    assert any(e.kind == "drain-complete" and e.target == target for e in net.controller.events)


def test_set_weight_changes_only_new_flows() -> None:
    net = network(35)
    # the weights' global share is the ``weighted`` policy (docs/protocol.md §3.5)
    downloader = start_downloads(net, 30, size=256 * 1024, policy="weighted")
    net.run(0.1)
    before = {k: served_by(net, d.host, d.socket_id) for k, d in downloader.downloads.items()}
    net.command(SetWeight(object="content", host="east-h1", weight=30))
    net.run(COALESCE + 0.01)  # the new weights reach the object switches (window + control delay)
    late = [downloader.open(net, CLIENTS[i % len(CLIENTS)]) for i in range(150)]
    net.run(1.0)
    for key, hosts in before.items():
        d = downloader.downloads[key]
        if not d.ended:
            assert served_by(net, d.host, d.socket_id) == hosts  # established flows stayed put
    finish(net, downloader, timeout=120)
    assert_exact(downloader, 256 * 1024)
    east_h1 = net.controller.hosts["east-h1"].host_id
    assert all(len(d.servers) == 1 for d in late)
    share = sum(1 for d in late if d.servers == [east_h1]) / len(late)
    # new weights 30:2:3 -> east gets 32/35 of new flows, east-h1 30/32 of those: ~0.86
    assert 0.75 < share < 0.95


def test_object_migration_moves_live_flows_byte_exact() -> None:
    net = network(36)
    downloader = start_downloads(net, 14, size=4 * SIZE)
    net.run(0.3)
    source, target = "east-h2", "east-h4"
    moving = [d for d in downloader.downloads.values() if served_by(net, d.host, d.socket_id) == [source]]
    assert moving
    net.on_event(target, net.handlers[source])  # the same service runs on the new host
    net.command(MigrateObject(object="content", from_host=source, to_host=target))
    started = net.now
    finish(net, downloader)
    assert_exact(downloader, 4 * SIZE)
    for d in moving:
        assert recovery(d, started) < 0.1  # a short pause, no retransmission timeout
    pauses = [net.host(h).pauses["host"] for h in {d.host for d in moving}]
    assert sum(p.count for p in pauses) == len(moving)
    assert all(p.sum / p.count < 0.1 for p in pauses)  # the pause as the clients saw it
    assert net.host(target).counters["flows-migrated-in"] == len(moving)
    assert source not in net.controller.objects[CONTENT.raw.hex()]
    assert net.controller.objects[CONTENT.raw.hex()][target] == 2


def test_vm_migration_keeps_the_host_id_and_flows() -> None:
    net = network(37)
    downloader = start_downloads(net, 14, size=4 * SIZE)
    net.run(0.3)
    vm = "east-h2"
    host_id = net.host(vm).host_id
    moving = [d for d in downloader.downloads.values() if served_by(net, d.host, d.socket_id) == [vm]]
    assert moving
    gateway = net.command(MigrateHost(host=vm, dc="north"))["gateway"]
    started = net.now
    finish(net, downloader)
    assert_exact(downloader, 4 * SIZE)
    assert net.host(vm).host_id == host_id and net.host(vm).gateway == gateway
    assert net.host(vm).dc_id == net.controller.dc_ids["north"]
    corrected = sum(node_core(n).counters["stale-dc-corrected"] for n in net.nodes.values())
    assert corrected > 0  # packets still naming east were fixed in flight
    for d in moving:
        assert stall(d, started) < 0.5
    # The clients saw the same host answer from another datacenter.
    assert sum(net.host(h).pauses["dc"].count for h in {d.host for d in moving}) == len(moving)


def test_client_mobility_continues_flows_and_rejects_a_forged_move() -> None:
    net = network(38)
    downloader = start_downloads(net, 7, size=4 * SIZE)
    net.run(0.3)
    mobile = "north-h1"
    mine = [d for d in downloader.downloads.values() if d.host == mobile]
    net.command(MoveHost(host=mobile, gateway="west-fs2"))
    finish(net, downloader)
    assert_exact(downloader, 4 * SIZE)
    assert net.host(mobile).counters["moves-announced"] >= len(mine)
    servers = {h: net.host(h) for h in REPLICAS}
    assert sum(s.counters["peer-moved"] + s.counters["peer-relocated"] for s in servers.values()) >= 1


def test_forged_move_without_the_nonce_is_rejected_and_counted() -> None:
    net = network(39)
    downloader = start_downloads(net, 1, size=8 * SIZE)
    net.run(0.3)
    (client, socket_id), download = next(iter(downloader.downloads.items()))
    flow = net.host(client).flows[socket_id]
    server = net.host(net.controller.host_name(flow.peer_host) or "")
    server_flow = next(f for f in server.flows.values() if f.flow == flow.flow)
    attacker = net.host("west-h4")
    # The attacker claims to be the client, now at its own locator, with a guessed nonce.
    segment = wire_stream.encode(wire_stream.StreamSegment(wire_stream.StreamType.DATA, nonce=12345))
    forged = wire_header.encode(
        Header(
            Proto.STREAM,
            flow.flow,
            flow.obj,
            server_flow.socket_id and server.dc_id,
            server.host_id,
            server_flow.socket_id,
            attacker.dc_id,
            attacker.host_id,
            77,
        ),
        segment,
    )
    before = (server_flow.peer_dc, server_flow.peer_host)
    net.inject(server.name, forged)
    net.run(0.01)
    assert server.drops["forged-move"] == 1
    assert (server_flow.peer_dc, server_flow.peer_host) == before
    finish(net, downloader)
    assert download.checker.ok and download.checker.offset == 8 * SIZE


def test_route_failure_reroutes_around_a_cut_backbone_link() -> None:
    net = network(40)
    downloader = start_downloads(net, 14, size=4 * SIZE)
    net.run(0.3)

    # Under nearest, east's and west's clients are served at home; north's share east and
    # west (3 ms each): the flows from north served in east cross the north-east link.
    def dc_served(d: Download) -> str:
        return net.topology.dc_of(net.controller.host_name(d.servers[0]) or "?")

    crossing = [
        d
        for d in downloader.downloads.values()
        if net.topology.dc_of(d.host) == "north" and dc_served(d) == "east"
    ]
    assert crossing
    net.set_link("north-fs1", "east-fs1", up=False)  # the cable is cut...
    net.command(Link(a="north", b="east", up=False))  # ...and the controller learns it
    started = net.now
    finish(net, downloader)
    assert_exact(downloader, 4 * SIZE)
    north = net.controller.dc_ids["north"]
    assert net.switch("east-fs1").tables["dc_routes"][north] == "west-fs1"
    assert all(dc_served(d) == "east" for d in crossing)  # placed flows keep their replica
    assert all(stall(d, started) < 1.0 for d in crossing)


def test_new_flows_during_an_object_migration_hand_off_wait_for_no_timeout() -> None:
    net = SimNetwork(default_topology(), seed=41)  # no bandwidth limit: no queue drops either
    net.start()
    net.settle()
    serve_content(net, REPLICAS, SIZE)
    source, target = "west-h1", "east-h4"
    net.on_event(target, net.handlers[source])
    net.command(MigrateObject(object="content", from_host=source, to_host=target))
    net.run(0.0015)  # the old host has handed the replica over; the tables do not say so yet
    started = net.now
    downloader = Downloader()
    late = [downloader.open(net, CLIENTS[i % len(CLIENTS)]) for i in range(40)]
    finish(net, downloader)
    assert_exact(downloader)
    firsts = [d.progress[0][0] - started for d in late]
    assert max(firsts) < 0.5  # nobody waited for a SYN retransmission (1 s)
    assert net.host(source).counters["forwarded-after-migration"] > 0  # some went to the old host
    assert all(net.controller.host_name(d.servers[0]) != source for d in late)


def test_flows_caught_in_their_handshake_by_a_migration_still_complete() -> None:
    net = network(41)
    downloader = start_downloads(net, 6, size=SIZE)
    net.run(0.2)
    source, target = "west-h1", "east-h4"
    net.on_event(target, net.handlers[source])
    net.command(MigrateObject(object="content", from_host=source, to_host=target))
    # Opened at the same instant: some SYNs reach the old host before it hands over.
    for i in range(40):
        downloader.open(net, CLIENTS[i % len(CLIENTS)])
    finish(net, downloader, timeout=30)  # well before any 60 s idle timeout
    assert_exact(downloader)
    assert all(d.ended == "closed" for d in downloader.downloads.values())


def test_a_client_that_only_looked_dead_gets_its_flows_back_from_their_servers() -> None:
    # A busy client process misses heartbeats: the controller withdraws it for a moment.
    # Its servers' packets are then orphans in its DC; re-resolved on the Object ID they
    # would reach some replica, which would "take over" the flow from its own server and
    # leave the client with nothing to read (the netns demo's 40 s hang).
    net = network(36)
    client = "west-h2"
    downloader = Downloader()
    serve_content(net, REPLICAS, 4 * SIZE)
    for _ in range(6):
        downloader.open(net, client)
    net.run(0.3)
    assert not downloader.done()
    net.kill(client)  # silent: no heartbeats, no packets either way
    assert net.run_while(
        lambda: not any(e.kind == "host-down" and e.target == client for e in net.controller.events),
        timeout=2.0,
    )
    net.run(1.5)  # the servers retransmit into the gap
    net.alive.add(client)  # it wakes up: its timers run again, its heartbeat brings it back
    net.act(client, lambda core, now: None)
    finish(net, downloader)
    assert_exact(downloader, 4 * SIZE)
    assert all(d.ended == "closed" for d in downloader.downloads.values())
    assert sum(net.host(h).counters["flow-resumed"] for h in REPLICAS) == 0  # no replica died
    switches = [n for n in net.nodes.values() if isinstance(n, FlowSwitch)]
    assert sum(sw.drops["orphan-to-client"] for sw in switches) > 0


def test_a_server_that_only_looked_dead_does_not_take_its_flows_back() -> None:
    # A busy server process misses heartbeats: the controller withdraws it, its clients'
    # probes are re-resolved and a surviving replica takes their flows over (RESUME). Then
    # the server wakes up and goes on sending: two live servers for one flow. A client that
    # followed whichever spoke last flipped between them (served_by east-h2, east-h1,
    # east-h2, ...), acking each one's data to the other, until its flows hung.
    net = network(37)
    downloader = start_downloads(net, 8, size=2 * SIZE)
    net.run(0.3)
    victim = "east-h2"
    affected = [d for d in downloader.downloads.values() if served_by(net, d.host, d.socket_id) == [victim]]
    assert affected
    flow_ids = {net.host(d.host).flows[d.socket_id].flow for d in affected}
    net.kill(victim)  # silent, as a stalled process
    assert net.run_while(
        lambda: not any(e.kind == "host-down" and e.target == victim for e in net.controller.events),
        timeout=2.0,
    )
    assert net.run_while(
        lambda: any(len(served_by(net, d.host, d.socket_id)) < 2 for d in affected), timeout=3.0
    )
    net.alive.add(victim)  # it wakes up and retransmits what it had in flight
    net.act(victim, lambda core, now: None)
    histories: dict[tuple[str, int], list[str]] = {}
    while not downloader.done() and net.now < 40:
        net.run(0.1)
        for d in affected:
            if d.socket_id in net.host(d.host).flows:
                histories[d.host, d.socket_id] = served_by(net, d.host, d.socket_id)
    assert_exact(downloader, 2 * SIZE)
    assert all(d.ended == "closed" for d in downloader.downloads.values())
    # Each flow stayed with the replica that took it over.
    assert all(len(h) == 2 and h[0] == victim for h in histories.values()), histories
    assert sum(net.host(d.host).drops["from-superseded-server"] for d in affected) > 0
    # ...and the woken server was told to let go of its stale copies (RST); a copy whose
    # client had finished before it spoke again waits for its idle timeout.
    assert len(flow_ids & {f.flow for f in net.host(victim).flows.values()}) < len(flow_ids)
