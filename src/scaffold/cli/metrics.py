"""``scaffold metrics``: what Prometheus needs to know about a network (docs/operations.md §1).

``scaffold metrics targets`` prints the Prometheus endpoints of a network from ``scaffold
up`` (its state file) as a ``file_sd_configs`` document: the embedded network's one
endpoint, or with ``--netns`` every daemon's. ``scaffold metrics catalogue`` prints every
metric the code defines (name, kind, labels, help) -- ``--markdown`` as the table of
docs/operations.md, which a test compares with the catalogue.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..core.metrics import CATALOGUE, Metric
from ..deploy.state_file import DEFAULT_STATE, load_state
from ..runtime.prometheus import PREFIX

__all__ = ["add_commands", "catalogue_markdown"]


def add_commands(sub: Any) -> None:
    group = sub.add_parser("metrics", help="Prometheus: a network's scrape targets, the metric catalogue")
    kinds = group.add_subparsers(dest="metrics_command", required=True, metavar="COMMAND")
    targets = kinds.add_parser("targets", help="a network's metrics endpoints, as Prometheus file_sd JSON")
    targets.add_argument("--state", default=str(DEFAULT_STATE), help="state file of `scaffold up`")
    targets.set_defaults(func=_targets)
    catalogue = kinds.add_parser("catalogue", help="every metric: name, kind, labels, meaning")
    catalogue.add_argument("--markdown", action="store_true", help="as the table of docs/operations.md")
    catalogue.set_defaults(func=_catalogue)


def _targets(args: argparse.Namespace) -> int:
    state = load_state(args.state)
    endpoints = [f"{host}:{port}" for host, port in state.metrics_targets()]
    document = [{"targets": endpoints, "labels": {"scaffold_network": state.name}}] if endpoints else []
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if not endpoints:
        print(
            f"network {state.name!r} serves no metrics (start it with `scaffold up --metrics`)",
            file=sys.stderr,
        )
        return 1
    return 0


def _all_metrics() -> list[Metric]:
    # Each module defines the metrics it counts when it is imported: these are all of them.
    from ..core import flow_switch, object_switch  # noqa: F401
    from ..core.controller import controller  # noqa: F401
    from ..core.host import stats  # noqa: F401
    from ..deploy.daemons import workers  # noqa: F401
    from ..gateway import stats as gateway_stats  # noqa: F401
    from ..runtime import convergence, metrics  # noqa: F401
    from ..runtime.aio import controller as controller_runtime  # noqa: F401

    return [CATALOGUE[name] for name in sorted(CATALOGUE)]


def _exposed_name(metric: Metric) -> str:
    """The name Prometheus shows (counters keep ``_total``; a histogram has its ``_bucket``,
    ``_sum`` and ``_count`` series)."""
    return PREFIX + metric.name


def catalogue_markdown() -> str:
    """The metric table of docs/operations.md, generated from the catalogue."""
    lines = ["| metric | kind | labels | what it counts |", "|---|---|---|---|"]
    for metric in _all_metrics():
        labels = ", ".join(f"`{label}`" for label in metric.labels)
        kind = str(metric.kind)
        text = metric.help.replace("|", "\\|")
        lines.append(f"| `{_exposed_name(metric)}` | {kind} | {labels} | {text} |")
    return "\n".join(lines) + "\n"


def _catalogue(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(catalogue_markdown())
        return 0
    document = [
        {
            "name": _exposed_name(m),
            "kind": str(m.kind),
            "unit": m.unit,
            "labels": list(m.labels),
            "help": m.help,
            **({"buckets": list(m.buckets)} if m.buckets else {}),
        }
        for m in _all_metrics()
    ]
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
