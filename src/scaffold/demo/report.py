"""Human-readable rendering of reports with rich tables (the JSON form is in ``demo``)."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from .results import DemoReport

__all__ = ["print_demo"]


def print_demo(report: DemoReport, console: Console) -> None:
    t = report.topology
    console.print(
        f"[bold]SCAFFOLD demo[/] on the [cyan]{report.runtime}[/] runtime: "
        f"{t['datacenters']} datacenters, {t['object_switches']} object switches, "
        f"{t['flow_switches']} flow switches, {t['hosts']} hosts  ({report.duration:.1f} s)"
    )
    served = Counter(h for f in report.flows for h in f["served_by"][:1] if f["object"] == f["object"])
    objects = Table(title="Objects and replicas", title_justify="left")
    for col in ("object", "id", "replica", "dc", "weight", "weight share", "flows served", "flow share"):
        objects.add_column(
            col,
            justify="right" if col in {"weight", "weight share", "flows served", "flow share"} else "left",
        )
    for obj in report.objects:
        total = sum(r["weight"] for r in obj["replicas"]) or 1
        nflows = sum(served[r["host"]] for r in obj["replicas"]) or 1
        for i, r in enumerate(obj["replicas"]):
            objects.add_row(
                obj["name"] if i == 0 else "",
                obj["object"][:16] + "…" if i == 0 else "",
                r["host"],
                r["dc"],
                str(r["weight"]),
                f"{r['weight'] / total:.0%}",
                str(served[r["host"]]),
                f"{served[r['host']] / nflows:.0%}",
            )
    console.print(objects)

    flows = Table(title=f"Flows ({len(report.flows)})", title_justify="left")
    for col in ("flow", "client", "object", "served by", "packets", "bytes", "result"):
        flows.add_column(col, justify="right" if col in {"packets", "bytes"} else "left")
    names = {o["object"]: o["name"] for o in report.objects}
    for f in report.flows:
        if not f["verified"]:
            result = "[red]BAD BYTES[/]"
        elif f.get("error"):
            result = "[yellow]failed cleanly[/]"
        else:
            result = "[green]verified[/]"
        flows.add_row(
            f["flow"],
            f["client"],
            names.get(f["object"], f["object"][:12]),
            " → ".join(f["served_by"]) or "-",
            str(f["packets"]),
            f"{f['bytes']:,}",
            result,
        )
    console.print(flows)
    loc = report.locality
    if loc:
        console.print(
            f"Locality (nearest, docs/protocol.md §3.5): {loc['served_locally']} of "
            f"{loc['could_be_local']} flows whose client's datacenter holds a replica were served there; "
            f"{loc['served_by_a_nearest_dc']} of {len(loc['flows'])} by a nearest datacenter"
        )

    trace = Table(
        title="Refinement of one first packet (destination as each hop sent it on)", title_justify="left"
    )
    for col in ("hop", "node", "role", "Obj ID", "DC ID", "Host ID", "Socket ID"):
        trace.add_column(col)
    for i, hop in enumerate(report.refinement):
        d = hop["dst"]
        trace.add_row(
            str(i),
            hop["node"],
            hop["role"],
            d["obj"][:14] + "…",
            d["dc"] or "·",
            d["host"] or "·",
            d["socket"] or "·",
        )
    console.print(trace)

    switches = Table(title="Switch tables", title_justify="left")
    for col in ("switch", "role", "table entries", "per-flow entries"):
        switches.add_column(col, justify="right" if "entries" in col else "left")
    for s in report.switches:
        entries, per_flow = s["table_entries"], s["per_flow_entries"]
        switches.add_row(
            s["node"],
            s["role"],
            "-" if entries is None else str(entries),  # netns: inside another process
            "-" if per_flow is None else str(per_flow),
        )
    console.print(switches)

    drops = Table(title=f"Drops ({report.junk_sent} malformed datagrams were injected)", title_justify="left")
    drops.add_column("reason")
    drops.add_column("count", justify="right")
    for reason, n in report.drops.items():
        drops.add_row(reason, str(n))
    console.print(drops)

    if report.events:
        timeline = Table(title="Churn timeline", title_justify="left")
        for col in (
            "t (s)",
            "event",
            "target",
            "affected",
            "recovered",
            "failed cleanly",
            "recovery p50 / max (ms)",
            "lost",
            "dup",
        ):
            timeline.add_column(col, justify="left" if col in {"event", "target"} else "right")
        for e in report.events:
            timeline.add_row(
                f"{e['t']:.2f}",
                e["kind"],
                e["target"],
                str(e["flows_affected"]),
                str(e["flows_recovered"]),
                str(e["flows_failed_cleanly"]),
                f"{e['recovery_ms']['p50']:.0f} / {e['recovery_ms']['max']:.0f}",
                str(e["bytes_lost"]),
                str(e["bytes_duplicated"]),
            )
        console.print(timeline)

    for name, passed, detail in report.goals:
        mark = "[green]✔[/]" if passed else "[yellow]~[/]"
        console.print(f" {mark} goal: {name}  [dim]{detail}[/]")
    for name, passed, detail in report.checks:
        mark = "[green]✔[/]" if passed else "[red]✘[/]"
        console.print(f" {mark} {name}  [dim]{detail}[/]")
    console.print("[bold green]OK[/]" if report.ok else "[bold red]FAILED[/]")
