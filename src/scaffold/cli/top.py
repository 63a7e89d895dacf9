"""``scaffold top``: a live view of a running network (docs/operations.md §3).

Every ``--interval`` seconds it asks the controller (through ``runtime.admin``) for
``status``, ``counters`` (every node's last report) and the ``events`` it has not seen yet,
and shows per node: packets and bytes per second (a flow switch: forwarded; an object
switch: resolutions; a host: stream segments and bytes, both directions), open flows, drops
(total, per second, the main reason), with the latest churn events under it. Rates are the
difference between two reports over the time between them, so the first view needs two polls.

``--once`` prints one view (after two polls) and exits; ``--json`` prints the view as JSON
(one document; without ``--once``, one per line per interval) -- for scripts and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ..core.controller.commands import Counters, Events, Status
from ..deploy.state_file import DEFAULT_STATE
from ..runtime import admin
from ..runtime.tls import Credentials
from .admin import controller_access

__all__ = ["add_commands", "view"]

Address = tuple[str, int]
#: events kept for the view
EVENTS_SHOWN = 12

#: per role: the metrics whose sum is a node's packets and bytes
_PACKETS = {
    "flow-switch": ("forwarded_packets_total",),
    "object-switch": ("resolutions_total",),
    "host": ("stream_sent_segments_total", "stream_received_segments_total"),
}
_BYTES = {
    "flow-switch": ("forwarded_bytes_total",),
    "host": ("stream_sent_bytes_total", "stream_received_bytes_total"),
}
_DROPS = ("drops_total", "runtime_drops_total", "stream_drops_total")


def add_commands(sub: Any) -> None:
    top = sub.add_parser("top", help="a live view: per-node rates, flows, drops and the latest churn events")
    top.add_argument("--state", default=str(DEFAULT_STATE), help="state file of `scaffold up`")
    top.add_argument(
        "--controller", help="the controller's HOST:PORT (replicas: HOST:PORT,...) instead of a state file"
    )
    top.add_argument(
        "--credentials", metavar="DIR", help="an operator's credentials (default: the state file's)"
    )
    top.add_argument("--interval", type=float, default=1.0, help="seconds between two polls (default 1)")
    top.add_argument("--once", action="store_true", help="print one view (two polls) and exit")
    top.add_argument("--json", action="store_true", help="the view as JSON")
    top.set_defaults(func=_top)


@dataclass(slots=True)
class Poll:
    """What the controller said at one poll."""

    at: float  # our monotonic clock
    status: dict[str, Any]
    counters: dict[str, Any]


@dataclass(slots=True)
class Poller:
    #: every controller replica (admin calls follow the leader)
    controller: list[Address]
    credentials: Credentials | None
    since: int = 0
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_SHOWN))

    async def poll(self) -> Poll:
        """Ask the controller once.

        Raises:
            ScaffoldError: it cannot be reached or refused.
        """
        credentials = self.credentials
        status = await admin.call(self.controller, Status(), credentials=credentials)
        counters = await admin.call(self.controller, Counters(), credentials=credentials)
        news = await admin.call(
            self.controller, Events(since=self.since, limit=EVENTS_SHOWN), credentials=credentials
        )
        self.since = int(news["last"])
        for event in news["events"]:
            self.events.append({**event, "age": float(news["now"]) - float(event["at"])})
        return Poll(time.monotonic(), status, counters)


def _sum(metrics: Iterable[list[Any]], names: Iterable[str]) -> float:
    wanted = set(names)
    return float(sum(value for name, value, _ in metrics if name in wanted))


def _by_reason(metrics: Iterable[list[Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value, labels in metrics:
        if name in _DROPS:
            reason = str(labels.get("reason", ""))
            out[reason] = out.get(reason, 0.0) + float(value)
    return out


def _flows(metrics: Iterable[list[Any]]) -> int:
    return int(
        sum(value for name, value, labels in metrics if name == "flows" and labels.get("state") != "closed")
    )


def view(before: Poll, after: Poll, events: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The view of two polls: per node its rates over the time between them, its flows and
    drops; the controller's summary; the latest events (JSON-able)."""
    seconds = max(after.at - before.at, 1e-6)
    status = after.status
    alive = {h["name"]: h["alive"] for h in status.get("hosts", [])}
    alive.update({s["name"]: s["connected"] for s in status.get("switches", [])})
    dcs = {h["name"]: h["dc"] for h in status.get("hosts", [])}
    dcs.update({s["name"]: s["dc"] for s in status.get("switches", [])})
    nodes = []
    for name in sorted(after.counters, key=lambda n: (after.counters[n].get("role", ""), n)):
        now = after.counters[name]
        then = before.counters.get(name, now)
        role = str(now.get("role", ""))
        metrics, old = now.get("metrics", []), then.get("metrics", [])
        drops, old_drops = _by_reason(metrics), _by_reason(old)

        def rate(names: Iterable[str], metrics: list[Any] = metrics, old: list[Any] = old) -> float:
            # A restarted node's counters start again from 0: never a negative rate.
            return max(0.0, _sum(metrics, names) - _sum(old, names)) / seconds

        nodes.append(
            {
                "node": name,
                "role": role,
                "dc": dcs.get(name, ""),
                "up": alive.get(name, True),
                "packets_per_s": rate(_PACKETS.get(role, ())),
                "bytes_per_s": rate(_BYTES.get(role, ())),
                "flows": _flows(metrics),
                "drops": int(sum(drops.values())),
                "drops_per_s": max(0.0, sum(drops.values()) - sum(old_drops.values())) / seconds,
                "top_drop": max(drops, key=lambda r: drops[r]) if drops else "",
            }
        )
    hosts = status.get("hosts", [])
    return {
        "interval": seconds,
        "summary": {
            "hosts_alive": sum(1 for h in hosts if h["alive"]),
            "hosts": len(hosts),
            "switches_connected": sum(1 for s in status.get("switches", []) if s["connected"]),
            "switches": len(status.get("switches", [])),
            "objects": len(status.get("objects", [])),
            "links_down": [f"{link['a']}-{link['b']}" for link in status.get("links", []) if not link["up"]],
        },
        "nodes": nodes,
        "events": list(events),
    }


def _si(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def render(doc: dict[str, Any]) -> Group:
    """The view as rich tables."""
    s = doc["summary"]
    head = (
        f"hosts {s['hosts_alive']}/{s['hosts']} alive   switches {s['switches_connected']}/{s['switches']} "
        f"connected   objects {s['objects']}   links down: {', '.join(s['links_down']) or 'none'}"
    )
    nodes = Table(title=head, title_justify="left", expand=False)
    for column, justify in (
        ("node", "left"),
        ("role", "left"),
        ("dc", "left"),
        ("pkt/s", "right"),
        ("B/s", "right"),
        ("flows", "right"),
        ("drops", "right"),
        ("drops/s", "right"),
        ("top drop reason", "left"),
    ):
        nodes.add_column(column, justify=justify)  # type: ignore[arg-type]
    for n in doc["nodes"]:
        nodes.add_row(
            n["node"] if n["up"] else f"[red]{n['node']} (down)[/]",
            n["role"],
            n["dc"],
            _si(n["packets_per_s"]),
            _si(n["bytes_per_s"]),
            str(n["flows"]) if n["role"] == "host" else "",
            str(n["drops"]),
            f"{n['drops_per_s']:.1f}" if n["drops_per_s"] else "",
            n["top_drop"],
        )
    events = Table(title="Latest events", title_justify="left")
    for column in ("ago", "event", "target", "detail"):
        events.add_column(column)
    for e in reversed(doc["events"]):
        events.add_row(f"{e['age']:.1f} s", e["kind"], e["target"], e["detail"])
    return Group(nodes, events)


def _top(args: argparse.Namespace) -> int:
    from ..runtime.aio import run

    code: int = run(_main(args, *controller_access(args)))
    return code


async def _main(args: argparse.Namespace, controller: list[Address], credentials: Credentials) -> int:
    poller = Poller(controller, credentials)
    interval = max(0.1, args.interval)
    before = await poller.poll()
    await asyncio.sleep(interval)
    after = await poller.poll()
    doc = view(before, after, poller.events)
    if args.once:
        _print(doc, args.json)
        return 0
    if args.json:
        while True:
            print(json.dumps(doc), flush=True)
            before, after = after, await _after(poller, interval)
            doc = view(before, after, poller.events)
    # Until Ctrl-C (the command then exits 130, as any interrupted one).
    with Live(render(doc), console=Console(), auto_refresh=False) as live:
        while True:
            before, after = after, await _after(poller, interval)
            live.update(render(view(before, after, poller.events)), refresh=True)


async def _after(poller: Poller, interval: float) -> Poll:
    await asyncio.sleep(interval)
    return await poller.poll()


def _print(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        Console(width=max(Console().width, 110)).print(render(doc))
