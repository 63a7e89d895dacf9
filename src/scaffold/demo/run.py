"""``scaffold demo``: the embedded default network under churn, checked and reported.

It starts the default topology on the ``aio`` runtime (loopback UDP, no root), serves two
objects (``web``, resumable, three weighted replicas over two DCs; ``session``, not
resumable), and runs the churn scenario (``scenario.Scenario``): client flows from every DC
download verifiable data while the seven kinds of churn happen, and a junk sender throws
malformed datagrams at every node. The report (``results.DemoReport``, read out by
``collect``) lists objects and replicas, flows and who served them, the refinement trace of
one first packet, switch table sizes, drops, and one entry per churn event; its checks
(``checks``) decide the exit status.

``run_demo_netns`` (``scaffold demo --netns``) runs the same scenario with every node a
process in its own network namespace (``netns``): replicas are host daemons serving the
pattern, clients join from this process inside their own namespaces, the route failure is a
veth set down and the server failure a SIGKILL. Switch tables and the hops inside other
processes are not observable there, so its report leaves those out (``None``) and skips
those two checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.host import Host
from ..api.testbed import Testbed
from ..core.controller.commands import Status
from ..core.topology import Topology, default_topology
from ..deploy.netns.network import NetnsNetwork
from ..deploy.netns.plan import DATA_PORT
from ..runtime import admin
from ..runtime.aio import Address, wait_until
from .collect import collect_embedded, collect_netns, table_entries
from .junk import inject_junk
from .netns import NETNS_CLIENTS, NetnsScenarioNetwork, all_reported, kill_leader, switch_entries
from .results import DemoReport
from .scenario import Scenario, ScenarioNetwork

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
        entries_before = table_entries(net)
        entries_with_flows: dict[str, int] = {}

        def snapshot() -> None:
            # Table sizes with every flow established, before churn changes hosts and routes.
            entries_with_flows.update(table_entries(net))

        targets = {name: node.address for name, node in net.network.nodes.items()}
        junk = asyncio.create_task(inject_junk(targets, rng, options.junk_per_node))
        say(f"{len(scenario.runs)} flows downloading verified data; churn every {options.spacing} s")
        await scenario.run(timeout=options.timeout, before_churn=snapshot)
        junk_sent = await junk
        await asyncio.sleep(0.05)
        say("flows done")
        report = collect_embedded(net, scenario, entries_before, entries_with_flows, junk_sent)
        report.duration = loop.time() - started
        return report


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
            entries_before = await switch_entries(net)
            snapshots: list[asyncio.Task[dict[str, int]]] = []

            def snapshot() -> None:
                # With every flow established, before churn changes hosts and routes (the
                # switches report their table sizes every second).
                snapshots.append(asyncio.create_task(switch_entries(net)))

            junk = asyncio.create_task(inject_junk(targets, rng, options.junk_per_node))
            say(f"{len(scenario.runs)} flows downloading verified data; churn every {options.spacing} s")
            failover: asyncio.Task[tuple[dict[str, Any], dict[str, Any]]] | None = None
            if options.controllers > 1:
                # After the client's move, before the server failure, which the new leader has
                # to notice (the churn that needs a host's cooperation, a migration say, would
                # race with the hosts reconnecting to it).
                failover = asyncio.create_task(kill_leader(net, 6.5 * options.spacing, say))
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
                await wait_until(lambda: all_reported(net, targets, clients, junk_sent), 15, "all counters")
            say("flows done")
            report = await collect_netns(
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
