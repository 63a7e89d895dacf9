"""The operator's guide (docs/operations.md) lists every metric the code defines, and the
Grafana dashboard asks only for metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from scaffold.cli.metrics import catalogue_markdown
from scaffold.core.metrics import metric_of
from scaffold.runtime.prometheus import PREFIX

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "examples" / "grafana-dashboard.json"


def test_the_guide_lists_every_metric_as_the_catalogue_says() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    table = text.split("<!-- metrics:begin -->\n", 1)[1].split("<!-- metrics:end -->", 1)[0]
    # To refresh it: scaffold metrics catalogue --markdown
    assert table == catalogue_markdown()


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in doc["panels"] for target in panel["targets"]]


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 16
    names = {name for query in queries for name in re.findall(rf"\b{PREFIX}[a-z_]+", query)}
    unknown = [name for name in names if metric_of(name.removeprefix(PREFIX)) is None]
    assert names and unknown == []
    # Every kind of metric the issue asks an operator to watch has a panel.
    for wanted in (
        "forwarded_packets",
        "drops",
        "flows",
        "retransmitted",
        "rtt",
        "flow_pause",
        "actions",
        "controller_events",
        "convergence",
        "registrations",
        "gateway_requests",
        "gateway_request_duration",
    ):
        assert any(wanted in name for name in names), wanted
