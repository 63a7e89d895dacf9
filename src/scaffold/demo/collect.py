"""A finished demo run's report, read out of its network: in-process from the embedded
network's nodes (``collect_embedded``), or from what the daemons of a namespace network
reported to the controller (``collect_netns``; docs/architecture.md §6)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..api.host import Host
from ..api.testbed import Testbed
from ..core.metrics import DROPS, by_label, total
from ..core.switch import TABLE_ENTRIES
from ..deploy.netns.network import NetnsNetwork
from ..deploy.netns.plan import DATA_PORT
from ..ids import ObjectId
from .checks import judge
from .results import DemoReport, assemble_report
from .scenario import FlowRun, Scenario

__all__ = ["collect_embedded", "collect_netns", "table_entries"]


def table_entries(net: Testbed) -> dict[str, int]:
    """Forwarding-table entries of every switch (hosts hold no forwarding tables)."""
    return {
        name: int(total(node.core.metrics(), TABLE_ENTRIES.name))
        for name, node in net.network.nodes.items()
        if node.core.role != "host"
    }


def collect_embedded(
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
    report = assemble_report("aio", topology, scenario, refinement, switches, drops, junk_sent)
    judge(report, topology, scenario, uncounted)
    return report


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


async def collect_netns(
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
    report = assemble_report("netns", topology, scenario, refinement, switches, drops, junk_sent)
    judge(report, topology, scenario, uncounted)
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
