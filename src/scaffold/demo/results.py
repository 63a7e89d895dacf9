"""``DemoReport``: what one ``scaffold demo`` run measured, as the documented JSON document,
and the fields both runtimes fill the same way (docs/architecture.md §6)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..core.topology import Topology
from ..ids import ObjectId
from .locality import locality_report
from .scenario import FlowRun, Scenario

__all__ = ["DemoReport", "assemble_report"]


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


def assemble_report(
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
        flows=[flow_json(run) for run in scenario.runs],
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


def flow_json(run: FlowRun) -> dict[str, Any]:
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
