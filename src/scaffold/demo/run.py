"""``scaffold demo``: the embedded default network under churn, checked and reported.

It starts the default topology on the ``aio`` runtime (loopback UDP, no root), serves two
objects (``web``, resumable, three weighted replicas over two DCs; ``session``, not
resumable), and runs the churn scenario (``scenario.Scenario``): client flows from every DC
download verifiable data while the seven kinds of churn happen, and a junk sender throws
malformed datagrams at every node. The report lists objects and replicas, flows and who
served them, the refinement trace of one first packet, switch table sizes, drops, and one
entry per churn event; ``DemoReport.checks`` decide the exit status.

``run_demo_netns`` (``scaffold demo --netns``) runs the same scenario with every node a
process in its own network namespace: replicas are host daemons serving the pattern, clients
join from this process inside their own namespaces, the route failure is a veth set down and
the server failure a SIGKILL. Switch tables and the hops inside other processes are not
observable there, so its report leaves those out (``None``) and skips those two checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.host import Host
from ..api.testbed import Testbed
from ..core.controller import Command
from ..core.controller.commands import Counters, Status
from ..core.metrics import DROPS, by_label, total
from ..core.switch import TABLE_ENTRIES
from ..core.topology import Topology, default_topology
from ..deploy.netns.network import NetnsNetwork
from ..deploy.netns.plan import DATA_PORT
from ..errors import ScaffoldError
from ..ids import ObjectId
from ..runtime import admin
from ..runtime.aio import Address, wait_until
from .junk import inject_junk
from .locality import locality_check, locality_report
from .scenario import FlowRun, Scenario, ScenarioNetwork

__all__ = ["DemoOptions", "DemoReport", "netns_options", "run_demo", "run_demo_netns"]


@dataclass(slots=True)
class DemoOptions:
    flows: int = 24
    session_flows: int = 4
    seed: int = 7
    junk_per_node: int = 40
    #: bytes each flow downloads, and the server's pace (4 KiB per ``pace`` seconds)
    size: int = 2 << 20
    pace: float = 0.025
    #: seconds between churn events
    spacing: float = 1.4
    timeout: float = 50.0
    topology: Topology = field(default_factory=default_topology)
    #: netns: controller replicas on etcd; with more than one, the leading replica is
    #: SIGKILLed in the middle of the churn (``failover`` in the report)
    controllers: int = 1


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
    #: netns with replicated controllers: the leader killed and who took over, how fast
    failover: dict[str, Any] = field(default_factory=dict)
    goals: list[tuple[str, bool, str]] = field(default_factory=list)
    junk_sent: int = 0
    duration: float = 0.0
    #: per flow: (time, verified bytes) samples, for the goodput plot
    progress: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    #: per flow: the client's DC and the serving one; the share served locally (§3.5)
    locality: dict[str, Any] = field(default_factory=dict)

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
            "locality": self.locality,
            **({"failover": self.failover} if self.failover else {}),
        }


def _scenario(net: Testbed | ScenarioNetwork, options: DemoOptions, say: Callable[[str], None]) -> Scenario:
    return Scenario(
        net,
        flows=options.flows,
        session_flows=options.session_flows,
        size=options.size,
        pace=options.pace,
        spacing=options.spacing,
        say=say,
    )


async def run_demo(options: DemoOptions, progress: Callable[[str], None] | None = None) -> DemoReport:
    """Run the demo scenario on the ``aio`` runtime and return its report."""
    say = progress or (lambda _: None)
    rng = random.Random(options.seed)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with Testbed(topology=options.topology, seed=options.seed) as net:
        say(f"network up: {len(net.network.nodes)} nodes, controller at {net.network.controller.address[1]}")
        scenario = _scenario(net, options, say)
        await scenario.serve()
        say("objects served: " + ", ".join(o.name for o in options.topology.objects))
        entries_before = _table_entries(net)
        entries_with_flows: dict[str, int] = {}

        def snapshot() -> None:
            # Table sizes with every flow established, before churn changes hosts and routes.
            entries_with_flows.update(_table_entries(net))

        targets = {name: node.address for name, node in net.network.nodes.items()}
        junk = asyncio.create_task(inject_junk(targets, rng, options.junk_per_node))
        say(f"{len(scenario.runs)} flows downloading verified data; churn every {options.spacing} s")
        await scenario.run(timeout=options.timeout, before_churn=snapshot)
        junk_sent = await junk
        await asyncio.sleep(0.05)
        say("flows done")
        report = _collect(net, scenario, entries_before, entries_with_flows, junk_sent)
        report.duration = loop.time() - started
        return report


def _table_entries(net: Testbed) -> dict[str, int]:
    """Forwarding-table entries of every switch (hosts hold no forwarding tables)."""
    return {
        name: int(total(node.core.metrics(), TABLE_ENTRIES.name))
        for name, node in net.network.nodes.items()
        if node.core.role != "host"
    }


def _collect(
    net: Testbed,
    scenario: Scenario,
    entries_before: dict[str, int],
    entries_with_flows: dict[str, int],
    junk_sent: Counter[str],
) -> DemoReport:
    topology = net.topology
    refinement = _refinement(net, scenario.runs[0])
    switches = []
    drops: Counter[str] = Counter()
    uncounted = []
    for name, node in net.network.nodes.items():
        samples = node.core.metrics()
        node_drops = by_label(samples, DROPS.name, "reason")
        drops.update({reason: int(n) for reason, n in node_drops.items()})
        if sum(node_drops.values()) < junk_sent[name] and not node.closed:
            uncounted.append(f"{name} ({sum(node_drops.values())} of {junk_sent[name]})")
        if node.core.role != "host":
            entries = int(total(samples, TABLE_ENTRIES.name))
            switches.append(
                {
                    "node": name,
                    "role": "object" if node.core.role == "object-switch" else "flow",
                    "table_entries": entries,
                    # entries that appeared between "no flow" and "every flow established"
                    "per_flow_entries": max(0, entries_with_flows.get(name, 0) - entries_before.get(name, 0)),
                }
            )
    report = _assemble("aio", topology, scenario, refinement, switches, drops, junk_sent)
    report.checks = _checks(report, topology, scenario, uncounted)
    report.goals = _goals(report.events)
    return report


def _assemble(
    runtime: str,
    topology: Topology,
    scenario: Scenario,
    refinement: list[dict[str, Any]],
    switches: list[dict[str, Any]],
    drops: Counter[str],
    junk_sent: Counter[str],
) -> DemoReport:
    """The report fields both runtimes fill the same way (checks and goals come after)."""
    report = DemoReport(
        runtime=runtime,
        topology={
            "datacenters": len(topology.datacenters),
            "object_switches": len(topology.datacenters),
            "flow_switches": sum(len(dc.flow_switches) for dc in topology.datacenters),
            "hosts": len(topology.hosts()),
        },
        objects=[
            {
                "object": str(ObjectId.from_name(obj.name)),
                "name": obj.name,
                "replicas": [{"host": h, "dc": topology.dc_of(h), "weight": w} for h, w in obj.replicas],
            }
            for obj in topology.objects
        ],
        flows=[_flow_json(run) for run in scenario.runs],
        refinement=refinement,
        switches=switches,
        drops=dict(sorted(drops.items())),
        events=scenario.event_reports(),
        checks=[],
        junk_sent=sum(junk_sent.values()),
        progress={f"{r.client}/{r.obj}#{r.index}": r.progress for r in scenario.runs},
    )
    report.locality = locality_report(report.flows, report.objects, topology)
    return report


def _flow_json(run: FlowRun) -> dict[str, Any]:
    packets = run.writer.get_extra_info("packets") if run.writer is not None else (0, 0)
    return {
        "flow": run.flow,
        "object": str(ObjectId.from_name(run.obj)),
        "client": run.client,
        "served_by": run.served_by,
        "packets": sum(packets),
        "bytes": run.checker.offset,
        "verified": run.checker.ok and (run.complete or bool(run.error)),
        "completed": run.complete,
        "error": run.error or None,
    }


def _refinement(net: Testbed, run: FlowRun) -> list[dict[str, Any]]:
    ctl = net.controller.core
    traced = int(run.flow, 16) if run.flow else -1
    hops = [t for node in net.network.nodes.values() for t in node.core.trace if t.flow == traced]
    hops.sort(key=lambda t: (-t.ttl, t.role == "host" and t.node != run.client, t.at))
    return [
        {
            "node": t.node,
            "role": t.role,
            "flow": f"{t.flow:016x}",
            "ttl": t.ttl,
            "dst": {
                "obj": str(ObjectId(t.obj)),
                "dc": ctl.dc_name(t.dc) if t.dc else None,
                "host": ctl.host_name(t.host) if t.host else None,
                "socket": str(t.socket) if t.socket else None,
            },
            # as on the wire (0: not refined yet), to compare with a capture
            "dst_ids": {"dc": t.dc, "host": t.host, "socket": t.socket},
        }
        for t in hops
    ]


def _checks(
    report: DemoReport, topology: Topology, scenario: Scenario, uncounted: list[str]
) -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, bool, str]] = []
    flows = report.flows
    verified = sum(1 for f in flows if f["verified"])
    checks.append(
        (
            "every flow's bytes verified (or it failed cleanly)",
            verified == len(flows) and len(flows) >= 20,
            f"{verified}/{len(flows)}",
        )
    )
    lost = sum(r.checker.lost + r.checker.corrupted for r in scenario.runs)
    dup = sum(r.checker.duplicated for r in scenario.runs)
    checks.append(
        ("no byte lost, duplicated or corrupted", lost == 0 and dup == 0, f"lost {lost}, duplicated {dup}")
    )
    failed = [r for r in scenario.runs if r.error]
    only_session = all(not r.resumable for r in failed)
    checks.append(
        (
            "only non-resumable flows failed (cleanly)",
            only_session,
            f"{len(failed)} failed: " + ", ".join(sorted({r.obj for r in failed}))
            if failed
            else "none failed",
        )
    )
    checks.append(locality_check(report.locality))
    replicas = {h for o in topology.objects for h, _ in o.replicas} | {"west-h4"}
    used = {h for f in flows for h in f["served_by"]}
    checks.append(("only registered replicas served", used <= replicas, ", ".join(sorted(used))))
    client_dcs = {topology.dc_of(f["client"]) for f in flows}
    checks.append(("clients in several datacenters", len(client_dcs) >= 2, ", ".join(sorted(client_dcs))))
    per_flow = sum(s["per_flow_entries"] or 0 for s in report.switches)
    checks.append(("no per-flow state in any switch", per_flow == 0, f"{per_flow} entries grew"))
    checks.append(_trace_check(report.refinement, topology))
    checks.append(
        (
            "every malformed datagram dropped and counted",
            not uncounted and report.junk_sent > 0,
            f"{report.junk_sent} sent, {sum(report.drops.values())} drops counted"
            + (f"; short at {', '.join(uncounted)}" if uncounted else ""),
        )
    )
    kinds = {e["kind"] for e in report.events}
    balanced = all(
        e["flows_recovered"] + e["flows_failed_cleanly"] == e["flows_affected"] for e in report.events
    )
    checks.append(
        ("all seven kinds of churn happened", len(kinds) == 7, ", ".join(e["kind"] for e in report.events))
    )
    checks.append(
        (
            "every affected flow recovered or failed cleanly",
            balanced,
            "; ".join(
                f"{e['kind']}: {e['flows_recovered']}+{e['flows_failed_cleanly']}/{e['flows_affected']}"
                for e in report.events
            ),
        )
    )
    return checks


def _goals(events: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """Timing goals: reported, not part of the exit status (timings on shared machines vary)."""
    goals = []
    for e in events:
        if e["kind"] == "server-failure" and e["flows_affected"]:
            p50 = e["recovery_ms"]["p50"]
            goals.append(("server failure: detection + redirection p50 <= 1 s", p50 <= 1000, f"{p50:.0f} ms"))
        if e["kind"] in ("object-migration", "vm-migration") and e["flows_affected"]:
            p50 = e["recovery_ms"]["p50"]
            goals.append((f"{e['kind']}: pause p50 <= 100 ms", p50 <= 100, f"{p50:.0f} ms"))
    return goals


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


# -- the namespace runtime ------------------------------------------------------------------

#: the scenario's clients: joined hosts, each in its own namespace, in this process
NETNS_CLIENTS = ("north-h1", "east-h3", "west-h2", "north-h2", "east-h4", "west-h3")


class NetnsScenarioNetwork:
    """``ScenarioNetwork`` over a ``NetnsNetwork``: churn commands go to the controller
    daemon, a link fails by ``ip link set down`` (the border switches report the port), a
    server fails by SIGKILL."""

    def __init__(self, net: NetnsNetwork, clients: dict[str, Host]) -> None:
        self.net = net
        self.clients = clients

    @property
    def topology(self) -> Topology:
        return self.net.topology

    def host(self, name: str) -> Host:
        return self.clients[name]

    async def command(self, command: Command) -> Any:
        return await admin.call(self.net.controller, command, credentials=self.net.operator)

    async def cut_link(self, dc_a: str, dc_b: str) -> None:
        await asyncio.to_thread(self.net.link_down, dc_a, dc_b)

    async def kill_host(self, name: str) -> None:
        await asyncio.to_thread(self.net.kill, name)

    async def controller_hosts(self) -> dict[str, str]:
        status = await admin.call(self.net.controller, Status(), credentials=self.net.operator)
        return {h["name"]: h["dc"] for h in status["hosts"]}


def netns_options() -> DemoOptions:
    """The demo's sizes for the namespace runtime: every node a Python process on a few
    cores, so fewer flows, at a slower pace (still more than 20 flows, all the churn)."""
    return DemoOptions(flows=18, session_flows=4, size=1 << 20, pace=0.05, spacing=1.5, timeout=40.0)


async def run_demo_netns(
    options: DemoOptions,
    progress: Callable[[str], None] | None = None,
    *,
    state_path: str | Path | None = None,
    run_dir: str | Path | None = None,
    on_start: Callable[[NetnsNetwork], None] | None = None,
) -> DemoReport:
    """Run the demo scenario with every node a process in its own network namespace
    (``NetnsNetwork``; needs root) and return its report (``runtime`` ``"netns"``).
    ``on_start`` sees the network once it is up (tests record its state)."""
    say = progress or (lambda _: None)
    rng = random.Random(options.seed)
    loop = asyncio.get_running_loop()
    started = loop.time()
    topology = options.topology
    # VM migration and client mobility re-attach a host elsewhere: spare veths to the new
    # gateways, unused until then.
    vm_gateway = topology.datacenter("north").flow_switches[-1]
    extra = [("east-h2", vm_gateway), ("north-h1", "west-fs2")]
    with contextlib.ExitStack() as stack:
        if state_path is None:
            state_path = (
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scaffold-demo-"))) / "state.json"
            )
        net = NetnsNetwork(
            topology,
            state_path=state_path,
            run_dir=run_dir,
            external_hosts=set(NETNS_CLIENTS),
            host_options=[
                "--service",
                "pattern",
                "--pattern-size",
                str(options.size),
                "--pattern-pace",
                str(options.pace),
                "--accept-migrations",
                "web",
            ],
            extra_links=extra,
            controllers=options.controllers,
        )
        clients: dict[str, Host] = {}
        try:
            await net.start()
            if on_start is not None:
                on_start(net)
            say(
                f"network up: {len(net.topology.nodes())} nodes in namespaces, controller {net.controller[0]}"
            )
            for name in NETNS_CLIENTS:
                clients[name] = await net.join_host(name)
            await net.wait_ready(20.0)
            say("clients joined: " + ", ".join(NETNS_CLIENTS))
            scenario = _scenario(NetnsScenarioNetwork(net, clients), options, say)
            status = await admin.call(net.controller, Status(), credentials=net.operator)
            targets: dict[str, Address] = {
                n.name: (n.node_ip, DATA_PORT)
                for n in (net.state.nodes.values() if net.state else [])
                if n.role in ("flow-switch", "object-switch", "host") and n.name not in clients
            }
            for h in status["hosts"]:
                if h["name"] in clients and h["address"]:
                    targets[h["name"]] = (h["address"][0], h["address"][1])
            entries_before = await _switch_entries(net)
            snapshots: list[asyncio.Task[dict[str, int]]] = []

            def snapshot() -> None:
                # With every flow established, before churn changes hosts and routes (the
                # switches report their table sizes every second).
                snapshots.append(asyncio.create_task(_switch_entries(net)))

            junk = asyncio.create_task(inject_junk(targets, rng, options.junk_per_node))
            say(f"{len(scenario.runs)} flows downloading verified data; churn every {options.spacing} s")
            failover: asyncio.Task[tuple[dict[str, Any], dict[str, Any]]] | None = None
            if options.controllers > 1:
                # After the client's move, before the server failure, which the new leader has
                # to notice (the churn that needs a host's cooperation, a migration say, would
                # race with the hosts reconnecting to it).
                failover = asyncio.create_task(_kill_leader(net, 6.5 * options.spacing, say))
            await scenario.run(timeout=options.timeout, before_churn=snapshot)
            junk_sent = await junk
            entries_with_flows = await snapshots[0] if snapshots else {}
            failed_over: dict[str, Any] = {}
            earlier: dict[str, Any] = {}  # the counters the dead leader held
            if failover is not None:
                failed_over, earlier = await failover
            # The daemons report their counters every second, and a new leader knows a node's
            # counters only from its first report to it: wait (bounded) until every node still
            # alive has reported the drops of the junk it was sent. One that never does fails
            # the check on counters, not this wait.
            with contextlib.suppress(TimeoutError):
                await wait_until(lambda: _all_reported(net, targets, clients, junk_sent), 15, "all counters")
            say("flows done")
            report = await _collect_netns(
                net, clients, scenario, junk_sent, entries_before, entries_with_flows, earlier
            )
            if failover is not None:
                report.failover = failed_over
                took = failed_over["new_leader_after_s"]
                report.checks.append(
                    (
                        "a new controller leader after the leader's SIGKILL",
                        took is not None,
                        f"{failed_over['killed']} -> {failed_over['leader']} in {took} s (goal 2 s)",
                    )
                )
        finally:
            for host in clients.values():
                with contextlib.suppress(Exception):
                    await host.close()
            await net.close()
        report.duration = loop.time() - started
        return report


def _kernel_udp_drops(pid: int, port: int) -> int:
    """Datagrams the kernel dropped for a full receive buffer at the UDP sockets on ``port``
    in the network namespace of process ``pid`` (``/proc/PID/net/udp``, column ``drops``);
    0 if it cannot be read."""
    try:
        lines = Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    total = 0
    for line in lines:
        fields = line.split()
        if len(fields) >= 13 and fields[1].rsplit(":", 1)[-1] == f"{port:04X}":
            total += int(fields[-1])
    return total


async def _all_reported(
    net: NetnsNetwork, nodes: dict[str, Address], clients: dict[str, Host], sent: Counter[str]
) -> bool:
    """Whether the controller holds counters of every one of ``nodes`` still alive (the
    demo's own client hosts excepted: their counters are read in-process), each with at
    least as many drops as the junk ``sent`` to it."""
    try:
        counters = await admin.call(net.controller, Counters(), timeout=2.0, credentials=net.operator)
    except ScaffoldError:
        return False
    return all(
        name in counters and sum(counters[name].get("drops", {}).values()) >= sent[name]
        for name in nodes
        if name not in clients and net.alive(name)
    )


async def _kill_leader(
    net: NetnsNetwork, after: float, say: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """SIGKILL the leading controller replica ``after`` seconds from now; how long until
    another one led (asked of the survivors every 50 ms), and the nodes' counters as the dead
    leader held them (the only ones of a node killed before it reported to the new leader)."""
    await asyncio.sleep(after)
    status = await admin.call(net.controller, Status(), credentials=net.operator)
    counters = await admin.call(net.controller, Counters(), credentials=net.operator)
    leader = next(r for r in status["controllers"] if r["leader"])
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    await asyncio.to_thread(net.kill, leader["name"])  # it waits for the process to be gone
    survivors = [tuple(r["address"]) for r in status["controllers"] if not r["leader"]]
    say(f"controller {leader['name']} (leading) SIGKILLed")
    while loop.time() - killed_at < 10.0:
        try:
            now = await admin.call(survivors, Status(), timeout=0.5, credentials=net.operator)
        except ScaffoldError:
            await asyncio.sleep(0.05)
            continue
        new = next((r["name"] for r in now["controllers"] if r["leader"]), None)
        if new is not None and new != leader["name"]:
            took = round(loop.time() - killed_at, 3)
            say(f"controller {new} leads, {took} s after the kill")
            return {"killed": leader["name"], "leader": new, "new_leader_after_s": took}, counters
        await asyncio.sleep(0.05)
    return {"killed": leader["name"], "leader": None, "new_leader_after_s": None}, counters


async def _switch_entries(net: NetnsNetwork) -> dict[str, int]:
    """Forwarding-table sizes the switch processes last reported."""
    counters: dict[str, Any] = (await net.status())["counters"]
    return {
        name: int(c.get("table_entries", 0))
        for name, c in counters.items()
        if c.get("role") in ("flow-switch", "object-switch")
    }


async def _collect_netns(
    net: NetnsNetwork,
    clients: dict[str, Host],
    scenario: Scenario,
    junk_sent: Counter[str],
    entries_before: dict[str, int],
    entries_with_flows: dict[str, int],
    earlier: dict[str, Any],
) -> DemoReport:
    topology = net.topology
    status = await net.status()
    counters: dict[str, Any] = status["counters"]
    drops: Counter[str] = Counter()
    uncounted = []
    for name in junk_sent:
        if name in clients:
            node_drops = dict(clients[name].stack.drops)
        elif net.alive(name):
            node_drops = dict(counters.get(name, {}).get("drops", {}))
        else:
            continue  # killed: its counters died with it
        drops.update(node_drops)
        counted = sum(node_drops.values())
        if counted < junk_sent[name] and name not in clients and net.state is not None:
            # On a loaded machine a busy node's socket buffer may be full when junk arrives:
            # the kernel drops and counts those datagrams before the node could see them.
            counted += _kernel_udp_drops(net.state.node(name).pid, DATA_PORT)
        if counted < junk_sent[name]:
            # "no report": the controller never heard from a node it believes alive
            seen = "" if name in clients or name in counters else ", no report"
            uncounted.append(f"{name} ({counted} of {junk_sent[name]}{seen})")
    # Table sizes as the switch processes report them (NodeStats.table_entries).
    switches = [
        {
            "node": s["name"],
            "role": "object" if s["role"] == "object-switch" else "flow",
            "table_entries": int(counters.get(s["name"], {}).get("table_entries", 0)),
            "per_flow_entries": max(
                0, entries_with_flows.get(s["name"], 0) - entries_before.get(s["name"], 0)
            ),
        }
        for s in status["switches"]
    ]
    dc_names = {dc_id: name for name, dc_id in status["datacenters"].items()}
    host_names = {h["host_id"]: h["name"] for h in status["hosts"]}
    first = scenario.runs[0]
    traced = int(first.flow, 16) if first.flow else -1
    # The first packet's trace: the client's own hop, and those the other processes reported
    # (NodeStats.trace).
    hops: list[tuple[str, str, str, int, int, int, int, float]] = [
        (t.node, t.obj.hex(), t.role, t.dc, t.host, t.socket, t.ttl, t.at)
        for t in clients[first.client].stack.trace
        if t.flow == traced
    ]
    reported = {
        (name, *hop)
        for held in (earlier, counters)
        for name, c in held.items()
        if name not in clients
        for hop in c.get("trace", [])
    }
    for name, flow, obj, role, dc, host, sock, ttl, at in reported:
        if flow == traced:
            hops.append((name, obj, role, dc, host, sock, ttl, at))
    hops.sort(key=lambda h: (-h[6], h[2] == "host" and h[0] != first.client, h[7]))
    refinement = [
        {
            "node": node,
            "role": role,
            "flow": f"{traced:016x}",
            "ttl": ttl,
            "dst": {
                "obj": "obj:" + obj,
                "dc": dc_names.get(dc) if dc else None,
                "host": host_names.get(host) if host else None,
                "socket": str(sock) if sock else None,
            },
            "dst_ids": {"dc": dc, "host": host, "socket": sock},
        }
        for node, obj, role, dc, host, sock, ttl, _ in hops
    ]
    report = _assemble("netns", topology, scenario, refinement, switches, drops, junk_sent)
    report.checks = _checks(report, topology, scenario, uncounted)
    report.goals = _goals(report.events)
    return report
