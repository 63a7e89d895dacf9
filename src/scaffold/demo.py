"""``scaffold demo``: the embedded default network doing its job, checked and reported.

It builds the default topology on the ``aio`` runtime (loopback UDP, no root), registers the
replicas of each object with an echo service, runs client flows from hosts in every DC that
exchange random data and verify every echo, while a junk sender throws malformed datagrams
at every node. The report (``DemoReport``) lists objects and replicas, flows and who served
them, the refinement trace of one first packet, switch table sizes and drop counters; the
checks in ``DemoReport.checks`` decide the exit status.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .core.flow_switch import FlowSwitch
from .core.host import DatagramReceived, Flow, HostEvent, HostStack
from .core.object_switch import ObjectSwitch
from .ids import ObjectId
from .runtime.aio import EmbeddedNetwork, NodeRuntime
from .topology import Topology, default_topology
from .wire import header as wire_header
from .wire.header import MAX_TTL, VERSION, Header, Proto

__all__ = ["DemoOptions", "DemoReport", "run_demo"]


@dataclass(slots=True)
class DemoOptions:
    flows: int = 24
    messages: int = 24
    seed: int = 7
    junk_per_node: int = 40
    timeout: float = 45.0
    topology: Topology = field(default_factory=default_topology)


@dataclass(slots=True)
class DemoReport:
    """Everything ``scaffold demo`` measured; ``as_json()`` is the documented document."""

    runtime: str
    topology: dict[str, int]
    objects: list[dict[str, Any]]
    flows: list[dict[str, Any]]
    refinement: list[dict[str, Any]]
    switches: list[dict[str, Any]]
    drops: dict[str, int]
    events: list[dict[str, Any]]
    checks: list[tuple[str, bool, str]]
    junk_sent: int = 0
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "runtime": self.runtime,
            "topology": self.topology,
            "objects": self.objects,
            "flows": self.flows,
            "refinement": self.refinement,
            "switches": self.switches,
            "drops": self.drops,
            "events": self.events,
        }


class _EchoClient:
    """One client flow: send a message, wait for its echo, verify, repeat."""

    def __init__(self, node: NodeRuntime, flow: Flow, rng: random.Random) -> None:
        self.node = node
        self.flow = flow
        self.rng = rng
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.verified = True
        self.exchanged = 0

    async def run(self, messages: int, *, attempts: int = 8, wait: float = 0.25) -> None:
        host = self.node.core
        assert isinstance(host, HostStack)
        loop = asyncio.get_running_loop()
        for seq in range(messages):
            size = self.rng.randint(16, 1000)
            payload = struct.pack("!I", seq) + self.rng.randbytes(size)
            for _ in range(attempts):
                host.send_datagram(self.flow.socket_id, payload, loop.time())
                self.node.flush()
                try:
                    reply = await asyncio.wait_for(self._reply_for(seq), wait)
                except TimeoutError:
                    continue
                if reply != payload:
                    self.verified = False
                self.exchanged += 1
                break
            else:
                self.verified = False
                return

    async def _reply_for(self, seq: int) -> bytes:
        while True:
            reply = await self.replies.get()
            if len(reply) >= 4 and struct.unpack_from("!I", reply)[0] == seq:
                return reply


def _echo(stack: HostStack, event: HostEvent, now: float) -> None:
    if isinstance(event, DatagramReceived):
        stack.send_datagram(event.socket_id, event.data, now)


def _junk(rng: random.Random, template: bytes) -> list[bytes]:
    """Malformed datagrams, one kind after another: each is invalid for a known reason."""
    out = []
    for i in range(40):
        kind = i % 6
        if kind == 0:  # truncated header
            out.append(template[: rng.randrange(0, wire_header.HEADER_LEN)])
        elif kind == 1:  # random bytes with a wrong version byte
            data = bytearray(rng.randbytes(rng.randint(1, 300)))
            data[0] = rng.choice([0, 2, 7, 255])
            out.append(bytes(data))
        elif kind == 2:  # wrong version, otherwise fine
            out.append(bytes([VERSION + 1]) + template[1:])
        elif kind == 3:  # unknown proto
            out.append(template[:1] + bytes([99]) + template[2:])
        elif kind == 4:  # unknown flags
            out.append(template[:2] + bytes([0x80]) + template[3:])
        else:  # TTL exhausted
            out.append(template[:3] + bytes([0]) + template[4:])
    return out


async def run_demo(options: DemoOptions, progress: Callable[[str], None] | None = None) -> DemoReport:
    """Run the demo scenario on the ``aio`` runtime and return its report."""
    say = progress or (lambda _: None)
    rng = random.Random(options.seed)
    topology = options.topology
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with EmbeddedNetwork(topology, seed=options.seed) as net:
        say(f"network up: {len(net.nodes)} nodes")
        # 1. Replicas bind their objects (with weights) and run an echo service.
        for obj in topology.objects:
            oid = ObjectId.from_name(obj.name)
            for host_name, weight in obj.replicas:
                node = net.host(host_name)
                assert isinstance(node.core, HostStack)
                node.core.bind(oid, weight, obj.name)
                node.on_event = _echo
                node.flush()

        def tables_ready() -> bool:
            for obj in topology.objects:
                raw = ObjectId.from_name(obj.name).raw
                for node in net.nodes.values():
                    if isinstance(node.core, ObjectSwitch) and node.core.wide.lookup(raw) is None:
                        return False
            return True

        await net.wait_for(tables_ready, 5.0, "object tables to reach every object switch")
        say("objects registered: " + ", ".join(o.name for o in topology.objects))
        entries_before = {
            n: node.core.table_entries()
            for n, node in net.nodes.items()
            if not isinstance(node.core, HostStack)
        }

        # 2. Junk at every node while the flows run.
        template = wire_header.encode(
            Header(Proto.DATAGRAM, 1, ObjectId.from_name("junk").raw, ttl=MAX_TTL), b"x" * 12
        )
        junk_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        junk_sock.setblocking(False)

        async def inject() -> Counter[str]:
            sent: Counter[str] = Counter()
            batches = [(name, node.address, _junk(rng, template)) for name, node in net.nodes.items()]
            for round_ in range(options.junk_per_node):
                for name, address, datagrams in batches:
                    try:
                        junk_sock.sendto(datagrams[round_ % len(datagrams)], address)
                        sent[name] += 1
                    except BlockingIOError:
                        pass
                await asyncio.sleep(0.002)
            return sent

        # 3. Client flows from hosts in every datacenter.
        replica_hosts = {h for o in topology.objects for h, _ in o.replicas}
        clients = [h.name for h in topology.hosts() if h.name not in replica_hosts] or [
            h.name for h in topology.hosts()
        ]
        target = ObjectId.from_name(topology.objects[0].name)
        runners: list[_EchoClient] = []
        by_socket: dict[tuple[str, int], _EchoClient] = {}
        trace_client = next(
            (c for c in clients if topology.dc_of(c) not in {topology.dc_of(h) for h in replica_hosts}),
            clients[0],
        )
        order = [trace_client] + [c for c in clients if c != trace_client]
        for i in range(options.flows):
            client = order[i % len(order)]
            node = net.host(client)
            assert isinstance(node.core, HostStack)
            flow = node.core.open_flow(target, loop.time(), trace=(i == 0))
            runner = _EchoClient(node, flow, random.Random(rng.getrandbits(64)))
            runners.append(runner)
            by_socket[(client, flow.socket_id)] = runner

        def dispatch(stack: HostStack, event: HostEvent, now: float) -> None:
            if isinstance(event, DatagramReceived):
                runner = by_socket.get((stack.name, event.socket_id))
                if runner is not None:
                    runner.replies.put_nowait(event.data)

        for client in clients:
            net.host(client).on_event = dispatch
        say(f"running {len(runners)} flows x {options.messages} echoed messages, junk at every node")
        junk_task = asyncio.create_task(inject())
        await asyncio.wait_for(asyncio.gather(*(r.run(options.messages) for r in runners)), options.timeout)
        junk_sent = await junk_task
        junk_sock.close()
        await asyncio.sleep(0.05)  # let the last junk datagrams be counted
        say("flows done")

        # 4. Collect the report.
        report = _collect(net, topology, runners, entries_before, junk_sent, trace_client)
        report.duration = loop.time() - started
        return report


def _collect(
    net: EmbeddedNetwork,
    topology: Topology,
    runners: list[_EchoClient],
    entries_before: dict[str, int],
    junk_sent: Counter[str],
    trace_client: str,
) -> DemoReport:
    ctl = net.controller.core

    def host_name(host_id: int) -> str | None:
        return ctl.host_name(host_id) if host_id else None

    objects = []
    for obj in topology.objects:
        oid = ObjectId.from_name(obj.name)
        objects.append(
            {
                "object": str(oid),
                "name": obj.name,
                "replicas": [{"host": h, "dc": topology.dc_of(h), "weight": w} for h, w in obj.replicas],
            }
        )
    flows = []
    for r in runners:
        f = r.flow
        flows.append(
            {
                "flow": f"{f.flow:016x}",
                "object": str(ObjectId(f.obj)),
                "client": r.node.name,
                "served_by": [host_name(h) or str(h) for h in f.served_by],
                "packets": f.packets_sent + f.packets_received,
                "bytes": f.bytes_sent + f.bytes_received,
                "verified": r.verified and r.exchanged > 0,
            }
        )
    traced = runners[0].flow.flow
    hops = [t for node in net.nodes.values() for t in node.core.trace if t.flow == traced]
    hops.sort(key=lambda t: (-t.ttl, t.role == "host" and t.node != trace_client, t.at))
    refinement = [
        {
            "node": t.node,
            "role": t.role,
            "dst": {
                "obj": str(ObjectId(t.obj)),
                "dc": ctl.dc_name(t.dc) if t.dc else None,
                "host": host_name(t.host),
                "socket": str(t.socket) if t.socket else None,
            },
        }
        for t in hops
    ]
    switches = []
    drops: Counter[str] = Counter()
    uncounted = []
    for name, node in net.nodes.items():
        core = node.core
        drops.update(core.drops)
        if sum(core.drops.values()) < junk_sent[name]:
            uncounted.append(name)
        if isinstance(core, FlowSwitch | ObjectSwitch):
            entries = core.table_entries()
            switches.append(
                {
                    "node": name,
                    "role": "object" if isinstance(core, ObjectSwitch) else "flow",
                    "table_entries": entries,
                    "per_flow_entries": max(0, entries - entries_before.get(name, entries)),
                }
            )
    report = DemoReport(
        runtime="aio",
        topology={
            "datacenters": len(topology.datacenters),
            "object_switches": len(topology.datacenters),
            "flow_switches": sum(len(dc.flow_switches) for dc in topology.datacenters),
            "hosts": len(topology.hosts()),
        },
        objects=objects,
        flows=flows,
        refinement=refinement,
        switches=switches,
        drops=dict(sorted(drops.items())),
        events=[],
        checks=[],
        junk_sent=sum(junk_sent.values()),
    )
    report.checks = _checks(report, topology, uncounted)
    return report


def _checks(report: DemoReport, topology: Topology, uncounted: list[str]) -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, bool, str]] = []
    flows = report.flows
    ok_flows = sum(1 for f in flows if f["verified"])
    checks.append(
        (
            "every flow exchanged verified data",
            ok_flows == len(flows) and bool(flows),
            f"{ok_flows}/{len(flows)}",
        )
    )
    single = sum(1 for f in flows if len(f["served_by"]) == 1)
    checks.append(("every flow stayed on one replica", single == len(flows), f"{single}/{len(flows)}"))
    replicas = {h for o in topology.objects for h, _ in o.replicas}
    used = {h for f in flows for h in f["served_by"]}
    checks.append(("only registered replicas served", used <= replicas, ", ".join(sorted(used))))
    dcs_clients = {topology.dc_of(f["client"]) for f in flows}
    checks.append(("clients in several datacenters", len(dcs_clients) >= 2, ", ".join(sorted(dcs_clients))))
    per_flow = sum(s["per_flow_entries"] for s in report.switches)
    checks.append(("no per-flow state in any switch", per_flow == 0, f"{per_flow} entries grew"))
    checks.append(_trace_check(report.refinement, topology))
    dropped = sum(report.drops.values())
    checks.append(
        (
            "every malformed datagram dropped and counted",
            not uncounted and report.junk_sent > 0,
            f"{report.junk_sent} sent, {dropped} drops counted"
            + (f"; short at {', '.join(uncounted)}" if uncounted else ""),
        )
    )
    return checks


def _trace_check(hops: list[dict[str, Any]], topology: Topology) -> tuple[str, bool, str]:
    name = "refinement: Obj ID -> DC ID -> Host ID -> Socket ID"
    if len(hops) < 3:
        return name, False, f"{len(hops)} hops traced"
    first, last = hops[0], hops[-1]
    problems = []
    if first["role"] != "host" or any(first["dst"][k] for k in ("dc", "host", "socket")):
        problems.append("the client did not send Obj ID alone")
    dc_by = next((h for h in hops if h["dst"]["dc"]), None)
    if dc_by is None or dc_by["role"] != "object-switch":
        problems.append("DC ID not filled by an object switch")
    host_by = next((h for h in hops if h["dst"]["host"]), None)
    if host_by is None or host_by["role"] != "object-switch":
        problems.append("Host ID not filled by an object switch")
    elif topology.dc_of(host_by["node"]) != host_by["dst"]["dc"]:
        problems.append("Host ID not filled in the destination DC")
    if last["role"] != "host" or not last["dst"]["socket"]:
        problems.append("Socket ID not filled at the host")
    return name, not problems, "; ".join(problems) or " -> ".join(h["node"] for h in hops)
