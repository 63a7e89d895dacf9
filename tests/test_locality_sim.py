"""Nearest-replica resolution through whole networks in the sim (docs/protocol.md §3.5): route
changes move new flows only, and a re-resolution after a failure lands every packet of a
flow on the nearest survivor, byte-exact."""

from __future__ import annotations

import pytest

from churn_apps import CONTENT, Download, Downloader, serve_content
from scaffold.core.controller.commands import Link, SetPolicy, Status
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.topology import default_topology
from scaffold.errors import UsageError
from scaffold.runtime.sim import SimNetwork

SIZE = 512 * 1024


def network(seed: int) -> SimNetwork:
    net = SimNetwork(default_topology(), seed=seed)
    net.set_all_links(bandwidth=20e6)  # transfers last long enough for the churn
    net.start()
    net.settle()
    return net


def servers(net: SimNetwork, download: Download) -> list[str]:
    """Who served a download, in order (recorded as it ran: the flow is gone once closed)."""
    return [net.controller.host_name(h) or "?" for h in download.servers]


def test_a_cut_link_moves_new_flows_to_the_new_nearest_and_placed_flows_stay() -> None:
    net = network(51)
    # north sees east and west at the same cost (3 ms each): shared by weight 1:1
    serve_content(net, {"east-h1": 1, "west-h1": 1}, SIZE)
    downloader = Downloader()
    early = [downloader.open(net, ("north-h1", "north-h2")[i % 2]) for i in range(16)]
    net.run(0.2)
    placed = {(d.host, d.socket_id): servers(net, d)[0] for d in early}
    assert set(placed.values()) == {"east-h1", "west-h1"}
    net.set_link("north-fs1", "east-fs1", up=False)
    net.command(Link(a="north", b="east", up=False))  # east is now 3 + 4 ms from north
    net.run(0.05)
    late = [downloader.open(net, ("north-h1", "north-h2")[i % 2]) for i in range(16)]
    assert net.run_while(lambda: not downloader.done(), timeout=60)
    for d in early:
        assert servers(net, d) == [placed[d.host, d.socket_id]]  # kept its replica
    assert {servers(net, d)[0] for d in late} == {"west-h1"}
    for d in (*early, *late):
        assert d.checker.ok and d.checker.offset == SIZE and d.ended == "closed"


def test_re_resolution_after_a_failure_picks_the_nearest_survivor() -> None:
    net = network(52)
    # east's clients are served at home; east-h1 dies: north (3 ms) is nearer than west (4 ms)
    serve_content(net, {"east-h1": 1, "north-h2": 1, "west-h1": 1}, 4 * SIZE)
    downloader = Downloader()
    flows = [downloader.open(net, ("east-h3", "east-h4")[i % 2]) for i in range(10)]
    net.run(0.3)
    assert {servers(net, d)[0] for d in flows} == {"east-h1"}
    net.kill("east-h1")
    assert net.run_while(lambda: not downloader.done(), timeout=60)
    for d in flows:
        # every packet after the failure went to the same survivor: the nearest one
        assert servers(net, d) == ["east-h1", "north-h2"]
        assert d.checker.ok and d.checker.offset == 4 * SIZE and d.ended == "closed"


def test_set_policy_reaches_every_object_switch_and_status() -> None:
    net = network(53)
    serve_content(net, {"east-h1": 1, "west-h1": 3}, SIZE)
    key = CONTENT.raw.hex()
    switches = [net.switch(f"{dc}-os") for dc in ("east", "west", "north")]
    assert all(not isinstance(sw, ObjectSwitch) or key not in sw.snapshot().policies for sw in switches)
    net.command(SetPolicy(object="content", policy="weighted"))
    net.run(0.05)
    for sw in switches:
        assert isinstance(sw, ObjectSwitch) and sw.snapshot().policies == {key: "weighted"}
    east = net.controller.dc_ids["east"]
    # from east, weighted shares 1:3 with west instead of keeping every flow at home
    picks = {(switches[0].resolve(CONTENT.raw, flow, east) or (0, 0))[0] for flow in range(200)}
    assert len(picks) == 2
    status = net.command(Status())
    assert next(o for o in status["objects"] if o["name"] == "content")["policy"] == "weighted"
    with pytest.raises(UsageError):
        SetPolicy(object="content", policy="fastest")
