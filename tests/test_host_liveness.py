"""Host liveness under stalls (docs/protocol.md §6.2), in the sim's virtual time: a gateway
that was stalled does not blame its hosts for the silence it could not hear, a host stalled
past the window is declared dead and its flows move without losing a byte, and a really dead
host is still found within the bound."""

from __future__ import annotations

from churn_apps import CONTENT, Downloader, serve_content
from scaffold.core.events import Datagram
from scaffold.core.flow_switch import CHECKS, FlowSwitch
from scaffold.core.topology import default_topology
from scaffold.runtime.sim import SimNetwork
from scaffold.wire import header as wire_header
from scaffold.wire import stream as wire_stream
from scaffold.wire.header import Header, Proto

SIZE = 2 * 1024 * 1024
REPLICAS = {"east-h1": 1, "east-h2": 2, "west-h1": 3}
CLIENTS = ["north-h1", "north-h2", "east-h3", "west-h2", "west-h3", "west-h4"]


def network(seed: int) -> SimNetwork:
    net = SimNetwork(default_topology(), seed=seed)
    net.set_all_links(bandwidth=20e6)  # transfers last seconds; a link's queue holds 0.1 s
    net.start()
    net.settle()
    return net


def downloads(net: SimNetwork, count: int) -> Downloader:
    serve_content(net, REPLICAS, SIZE)
    downloader = Downloader()
    for i in range(count):
        downloader.open(net, CLIENTS[i % len(CLIENTS)])
    net.run(0.5)
    assert not downloader.done()
    return downloader


def deaths(net: SimNetwork, since: float = 0.0) -> list[tuple[float, str]]:
    return [(e.at, e.target) for e in net.controller.events if e.kind == "host-down" and e.at >= since]


def servers(net: SimNetwork, downloader: Downloader) -> dict[tuple[str, int], list[int]]:
    """The Host IDs that served each download so far (a finished one: until it ended)."""
    out = {}
    for key, d in downloader.downloads.items():
        flow = net.host(d.host).flows.get(d.socket_id)
        out[key] = list(flow.served_by) if flow is not None else d.servers
    return out


def finish_exact(net: SimNetwork, downloader: Downloader) -> None:
    assert net.run_while(lambda: not downloader.done(), timeout=60)
    for d in downloader.downloads.values():
        assert d.ended == "closed" and d.checker.ok and d.checker.offset == SIZE, (d.host, d.checker.__dict__)


def test_a_stalled_gateway_declares_no_live_host_dead_and_still_finds_a_dead_one() -> None:
    net = network(51)
    downloader = downloads(net, 12)
    before = servers(net, downloader)
    gateway = net.switch("west-fs1")  # west-h1 (a replica) and west-h3 (a client) hang off it
    assert isinstance(gateway, FlowSwitch)
    limit = gateway.presence_timeout
    stalled = net.now
    net.stall("west-fs1", 2.0)  # over three times the window: every host's silence, seen from it
    net.run(2.0 + 2 * limit)
    assert deaths(net) == []
    assert gateway.stalls_forgiven == 1
    assert gateway.reported_down == 0
    assert servers(net, downloader) == before  # no flow moved
    # A host that really dies during a stall is still found: within the window and two check
    # periods of the gateway running again.
    net.kill("west-h3")
    killed = net.now
    net.stall("west-fs1", 1.0)
    assert net.run_while(lambda: not deaths(net), timeout=5.0)
    [(at, host)] = deaths(net)
    assert host == "west-h3"
    assert killed + 1.0 < at <= killed + 1.0 + limit + 2 * limit / CHECKS + 0.01
    assert gateway.stalls_forgiven == 2
    net.alive.add("west-h3")  # it comes back: its downloads resume from its servers
    net.act("west-h3", lambda core, now: None)
    finish_exact(net, downloader)
    assert sum(net.host(h).counters["flow-resumed"] for h in REPLICAS) == 0  # no replica died
    assert stalled < killed


def test_a_host_stalled_past_the_window_is_declared_dead_and_its_flows_move_whole() -> None:
    net = network(52)
    downloader = downloads(net, 12)
    victim = "west-h1"
    victim_id = net.controller.hosts[victim].host_id
    moved = [k for k, s in servers(net, downloader).items() if s == [victim_id]]
    assert moved
    start = net.now
    net.stall(victim, 2.0)  # a paused process: silent at its gateway, its connection still open
    assert net.run_while(lambda: not deaths(net), timeout=2.0)
    assert [host for _, host in deaths(net)] == [victim]
    assert deaths(net)[0][0] - start <= 0.8  # the window, a check period, the last beat's age
    net.run(2.0)  # it runs again: heard at its gateway, alive again
    assert net.controller.hosts[victim].alive
    finish_exact(net, downloader)
    assert [host for _, host in deaths(net)] == [victim]  # nobody else, ever
    after = servers(net, downloader)
    assert all(victim_id not in after[k][-1:] for k in moved if after[k])
    assert sum(net.host(h).counters["flow-resumed"] for h in REPLICAS if h != victim) == len(moved)


def test_a_host_stalled_under_bulk_data_for_less_than_the_window_stays_alive() -> None:
    """A server busy for 1.5 heartbeat intervals, again and again: on waking, its overdue
    presence packet is the first datagram it sends, before the data of that pass (a full
    send buffer drops what comes last)."""
    net = network(53)
    downloader = downloads(net, 12)
    victims = ("west-h1", "east-h2")
    firsts: list[bytes] = []
    send = net._send

    def watch(name: str, out: list[Datagram]) -> None:  # observes, sends unchanged
        if name in victims and name in resumed and out:
            resumed.discard(name)
            firsts.append(bytes(out[0][1]))
        send(name, out)

    resumed: set[str] = set()
    net._send = watch  # type: ignore[method-assign]
    for _ in range(10):
        for victim in victims:
            net.stall(victim, 0.3)  # it sends nothing until it runs again
        resumed.update(victims)
        net.run(0.45)
    assert deaths(net) == []
    assert len(firsts) == 20
    assert all(first[1] == Proto.PRESENCE for first in firsts)
    finish_exact(net, downloader)


def test_a_reset_for_a_host_that_looks_gone_is_not_re_resolved() -> None:
    """A server woken from a stall speaks before its gateway's "up" reached the tables; its
    client resets that superseded copy of the flow (§3.4). Re-resolved as an orphan, the RST
    would reach the replica that took the flow over and kill the healthy copy (seen on
    processes: the flow then went back to the woken server, which lacked the bytes, and
    hung). A flow switch drops it; any other orphan is still re-resolved."""
    net = network(54)
    gateway = net.switch("west-fs1")
    assert isinstance(gateway, FlowSwitch)
    gone = 4242  # a Host ID of this DC with no route
    header = Header(Proto.STREAM, 7, CONTENT.raw, gateway.dc_id, gone, 3, gateway.dc_id, 1, 1)
    rst = wire_stream.encode(wire_stream.StreamSegment(wire_stream.StreamType.RST, 99))
    data = wire_stream.encode(wire_stream.StreamSegment(wire_stream.StreamType.DATA, 99, seq=1))
    gateway.receive_datagram(wire_header.encode(header, rst), "west-h3", net.now)
    assert gateway.datagrams_to_send(net.now) == [] and gateway.drops["orphan-rst"] == 1
    gateway.receive_datagram(wire_header.encode(header, data), "west-h3", net.now)
    [(hop, _)] = gateway.datagrams_to_send(net.now)
    assert hop == gateway.object_switch and gateway.counters["orphan-redirected"] == 1
