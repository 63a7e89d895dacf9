"""The checks that decide ``scaffold demo``'s exit status, and the timing goals reported
beside them (docs/architecture.md §6): one set for both runtimes."""

from __future__ import annotations

from typing import Any

from ..core.topology import Topology
from .locality import locality_check
from .results import DemoReport
from .scenario import Scenario

__all__ = ["judge"]


def judge(report: DemoReport, topology: Topology, scenario: Scenario, uncounted: list[str]) -> None:
    """Fill ``report.checks`` and ``report.goals``; ``uncounted`` names the nodes that counted
    fewer drops than the malformed datagrams they were sent."""
    report.checks = demo_checks(report, topology, scenario, uncounted)
    report.goals = timing_goals(report.events)


def demo_checks(
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


def timing_goals(events: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
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
