"""Where the demo's flows were served: the client's datacenter against the serving one.

Under the ``nearest`` policy (docs/protocol.md §3.5) a flow whose client's datacenter holds
a replica of its object is served there; this module reports, per flow, both datacenters and
the share served locally, and the demo check that every such flow was.
"""

from __future__ import annotations

from typing import Any

from ..core.routing import costs
from ..core.topology import Topology

__all__ = ["locality_check", "locality_report"]


def locality_report(
    flows: list[dict[str, Any]], objects: list[dict[str, Any]], topology: Topology
) -> dict[str, Any]:
    """Per flow: client, its DC, the DC that served it first, and whether that DC held a
    replica; and how many of the flows that could be served locally were."""
    replica_dcs = {o["object"]: {r["dc"] for r in o["replicas"]} for o in objects}
    # the route costs with every backbone link up, as when the demo's flows start
    edges = [(link.a, link.b, link.delay or 1e-6) for link in topology.backbone]
    dist = costs([dc.name for dc in topology.datacenters], edges)
    rows = []
    for f in flows:
        if not f["served_by"]:
            continue  # it never reached a replica (failed before its first reply)
        client_dc = topology.dc_of(f["client"])
        served_dc = topology.dc_of(f["served_by"][0])
        row = dist.get(client_dc, {})
        best = min((row.get(dc, float("inf")) for dc in replica_dcs.get(f["object"], ())), default=0.0)
        rows.append(
            {
                "flow": f["flow"],
                "client": f["client"],
                "client_dc": client_dc,
                "served_dc": served_dc,
                "replica_in_client_dc": client_dc in replica_dcs.get(f["object"], ()),
                "nearest": row.get(served_dc, float("inf")) <= best,
            }
        )
    could = [r for r in rows if r["replica_in_client_dc"]]
    local = sum(1 for r in could if r["served_dc"] == r["client_dc"])
    return {
        "flows": rows,
        "could_be_local": len(could),
        "served_locally": local,
        "local_share": round(local / len(could), 3) if could else None,
        "served_by_a_nearest_dc": sum(1 for r in rows if r["nearest"]),
    }


def locality_check(report: dict[str, Any]) -> tuple[str, bool, str]:
    """The demo check: every flow whose client's DC holds a replica was served there, and
    every flow by a DC at the least route cost from its client's."""
    could, local = report["could_be_local"], report["served_locally"]
    nearest, total = report["served_by_a_nearest_dc"], len(report["flows"])
    return (
        "flows served in their own datacenter if it has a replica, else the nearest (§3.5)",
        could > 0 and local == could and nearest == total,
        f"local {local} of {could}, nearest {nearest} of {total}",
    )
