"""Issue 14's 50-datacenter check through a whole simulated network (docs/protocol.md §3.5):
random link delays, objects with 5 replicas each, first packets from every datacenter. The
controller computes the route costs, the object switches choose, the replicas report who
reached them; each flow's serving DC is compared with the best possible replica."""

from __future__ import annotations

import random
from collections import defaultdict

from scaffold.core.host import Flow, HostStack
from scaffold.core.host.flows import Role
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.topology import DatacenterSpec, HostSpec, LinkSpec, Topology
from scaffold.ids import ObjectId
from scaffold.runtime.sim import SimNetwork

DCS = 50
SEED = 14


def topology(rng: random.Random) -> Topology:
    dcs = tuple(
        DatacenterSpec(f"dc{k}", (f"dc{k}-fs1",), f"dc{k}-os", (HostSpec(f"dc{k}-h1", f"dc{k}-fs1"),))
        for k in range(1, DCS + 1)
    )
    edges: dict[frozenset[str], float] = {}
    for k in range(2, DCS + 1):  # a random spanning tree, then as many chords
        edges[frozenset((f"dc{k}", f"dc{rng.randrange(1, k)}"))] = rng.uniform(0.001, 0.020)
    while len(edges) < 2 * DCS:
        a, b = rng.sample(range(1, DCS + 1), 2)
        edges.setdefault(frozenset((f"dc{a}", f"dc{b}")), rng.uniform(0.001, 0.020))
    links = tuple(link(e, d) for e, d in sorted(edges.items(), key=lambda x: sorted(x[0])))
    return Topology(dcs, links)


def link(ends: frozenset[str], delay: float) -> LinkSpec:
    a, b = sorted(ends)
    return LinkSpec(a, b, delay=delay)


def bind(net: SimNetwork, host: str, obj: ObjectId) -> None:
    def act(core: HostStack, now: float) -> None:
        core.bind(obj, 1, str(obj))

    net.act(host, act)


def open_flow(net: SimNetwork, host: str, raw: bytes) -> Flow:
    def act(core: HostStack, now: float) -> Flow:
        return core.open_flow(ObjectId(raw), now)

    flow: Flow = net.act(host, act)
    return flow


def send(net: SimNetwork, host: str, flow: Flow) -> None:
    def act(core: HostStack, now: float) -> None:
        core.send_datagram(flow.socket_id, b"hi", now)

    net.act(host, act)


def test_first_packets_reach_the_nearest_replica_on_50_datacenters() -> None:
    rng = random.Random(SEED)
    net = SimNetwork(topology(rng), seed=SEED)
    net.start()
    net.settle(timeout=5.0)
    objects = {}
    for k in range(4):
        obj = ObjectId.from_name(f"obj{k}")
        replicas = sorted(rng.sample(range(1, DCS + 1), 5))
        objects[obj.raw] = replicas
        for dc in replicas:
            bind(net, f"dc{dc}-h1", obj)
    net.run(0.1)
    flows = []
    for src in range(1, DCS + 1):
        for raw in objects:
            flow = open_flow(net, f"dc{src}-h1", raw)
            send(net, f"dc{src}-h1", flow)
            flows.append((src, raw, flow.flow))
    net.run(0.5)
    served: dict[int, set[int]] = defaultdict(set)
    for dc in range(1, DCS + 1):
        for f in net.host(f"dc{dc}-h1").flows.values():
            if f.role == Role.SERVER:
                served[f.flow].add(dc)
    dc1_os = net.switch("dc1-os")
    assert isinstance(dc1_os, ObjectSwitch)
    costs = dc1_os.dc_costs
    ids = net.controller.dc_ids
    stretch = []
    for src, raw, flow_id in flows:
        (dc,) = served[flow_id]  # exactly one replica saw the flow
        src_id, dc_id = ids[f"dc{src}"], ids[f"dc{dc}"]
        best = min(costs[src_id][ids[f"dc{r}"]] for r in objects[raw])
        stretch.append((costs[src_id][dc_id] + 1000) / (best + 1000))
    assert len(stretch) == DCS * len(objects)
    assert sum(stretch) / len(stretch) <= 1.1
    assert max(stretch) == 1.0  # without capacities, always a nearest replica
