"""Prometheus metrics: the exporter in memory, then every kind of endpoint scraped by a real
Prometheus server (Debian ``prometheus``, from ``scripts/system-deps``) and linted by
``promtool check metrics``, while traffic flows through an ingress."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from cli_processes import SCAFFOLD, Processes, free_port, run_cli, wait_for, wait_for_port
from scaffold.core.metrics import DROPS, Sample
from scaffold.deploy.state_file import load_state
from scaffold.gateway.stats import GatewayStats
from scaffold.runtime.convergence import ConvergenceTracker
from scaffold.runtime.prometheus import Batch, SampleCollector, families
from scaffold.runtime.tls import CredentialStore
from test_operations import dashboard_queries

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def exposition(batches: list[Batch]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SampleCollector(lambda: batches))
    return generate_latest(registry).decode()


def promtool_check(text: str) -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_samples_become_prefixed_families_and_hostile_ones_are_left_out() -> None:
    stats = GatewayStats(connections=2, bytes_in=5)
    stats.connect_latency.observe(0.003)
    good = Batch({"node": "ingress-1", "role": "ingress", "object": "web"}, stats.metrics())
    switch = Batch({"node": "east-fs1", "role": "flow-switch"}, DROPS.by({"bad-version": 3}))
    hostile = Batch(
        {"node": "liar", "role": "host", "bad label!": "x"},
        [
            Sample("no_such_metric_total", 1),
            Sample("drops_total", 1, {"why": "wrong label"}),
            Sample("drops_total", math.nan, {"reason": "nan"}),
            Sample("gateway_connections_total", 7, {"node": "overrides a const label"}),
            Sample("gateway_connect_duration_seconds_bucket", 5, {"le": "0.1"}),  # no +Inf, no sum
            Sample("gateway_connect_duration_seconds_bucket", 1, {"le": "not a number"}),
        ],
    )
    twice = Batch({"node": "east-fs1", "role": "flow-switch"}, DROPS.by({"bad-version": 99}))
    found = {f.name: f for f in families([good, switch, hostile, twice])}
    assert "scaffold_no_such_metric" not in found
    drops = found["scaffold_drops"]  # a counter family; its samples end in _total
    assert drops.type == "counter"
    assert [(s.name, s.labels, s.value) for s in drops.samples] == [
        ("scaffold_drops_total", {"node": "east-fs1", "role": "flow-switch", "reason": "bad-version"}, 3)
    ]
    latency = found["scaffold_gateway_connect_duration_seconds"]
    assert latency.type == "histogram" and latency.unit == "seconds"
    buckets = {s.labels["le"]: s.value for s in latency.samples if s.name.endswith("_bucket")}
    assert buckets["0.0025"] == 0 and buckets["0.005"] == 1 and buckets["+Inf"] == 1
    assert {s.labels["node"] for s in latency.samples} == {"ingress-1"}
    if PROMTOOL is not None:
        promtool_check(exposition([good, switch, hostile, twice]))


def test_a_histogram_whose_counts_go_down_is_not_exported() -> None:
    stats = GatewayStats()
    stats.request_latency.observe(0.5)
    broken = [
        Sample(s.name, 9, s.labels) if s.labels.get("le") == "0.5" else s
        for s in stats.request_latency.samples()
    ]
    found = {f.name: f for f in families([Batch({"node": "n"}, broken)])}
    assert found["scaffold_gateway_request_duration_seconds"].samples == []
    fine = {f.name: f for f in families([Batch({"node": "n"}, stats.request_latency.samples())])}
    assert fine["scaffold_gateway_request_duration_seconds"].samples


def test_convergence_is_the_time_until_every_switch_applied_a_push() -> None:
    tracker = ConvergenceTracker(limit=2)
    tracker.sent({"a": 3, "b": 5}, now=10.0)
    tracker.applied("a", 3, now=10.1)
    assert tracker.histogram.count == 0  # b has not applied its version yet
    tracker.applied("b", 4, now=10.2)
    assert tracker.histogram.count == 0  # an older version is not the one sent
    tracker.applied("b", 6, now=10.3)  # a later one includes it
    assert tracker.histogram.count == 1 and tracker.histogram.sum == pytest.approx(0.3)
    tracker.sent({"a": 4}, now=11.0)
    tracker.disconnected("a")  # gone: not an observation
    assert tracker.histogram.count == 1
    for k in range(3):
        tracker.sent({"c": k}, now=12.0)
    assert tracker.unconfirmed == 1  # the oldest of three pushes, over the limit of two


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    doc = json.loads(scrape(url))
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def poll(what: str, condition: Any, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


DAEMON_TOPOLOGY = """\
name = "daemons"
[[datacenter]]
name = "dc1"
hosts = ["dc1-h1"]

[[object]]
name = "echo"
replicas = ["dc1-h1"]
"""


@pytest.mark.slow
@pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None, reason="prometheus is not installed (scripts/system-deps)"
)
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (scripts/system-deps)")
def test_prometheus_scrapes_every_endpoint_and_sees_ingress_traffic(
    tmp_path: Path, processes: Processes
) -> None:
    assert PROMETHEUS is not None
    # 1. The embedded network of `scaffold up`, one endpoint for all of it.
    up, up_log = processes.spawn("up", *SCAFFOLD, "up", "--metrics", "127.0.0.1:0")
    wait_for(up_log, "is up", up)
    state = load_state(tmp_path / ".scaffold" / "state.json")
    assert state.metrics is not None
    targets = run_cli(tmp_path, "metrics", "targets")
    assert targets.returncode == 0, targets.stderr
    assert json.loads(targets.stdout)[0]["targets"] == [f"{state.metrics[0]}:{state.metrics[1]}"]
    endpoints = {"up": state.metrics}
    # 2. A publisher and an HTTP ingress that joined it, each with its endpoint.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "hello.txt").write_text("hello\n")
    web, ingress_port = free_port(), free_port()
    processes.spawn(
        "http", sys.executable, "-m", "http.server", str(web), "--bind", "127.0.0.1", "--directory", "site"
    )
    wait_for_port(web)
    for role, argv in (
        ("publish", ["publish", "web", "--target", f"127.0.0.1:{web}"]),
        (
            "ingress",
            ["ingress", "web", "--http", "--listen", f"127.0.0.1:{ingress_port}", "--gateway", "west-fs1"],
        ),
    ):
        endpoints[role] = ("127.0.0.1", free_port())
        proc, log = processes.spawn(role, *SCAFFOLD, *argv, "--metrics", f"127.0.0.1:{endpoints[role][1]}")
        wait_for(log, "metrics http://", proc)
    # 3. One daemon of each kind, each with its endpoint (the controller re-exports the others).
    (tmp_path / "daemons.toml").write_text(DAEMON_TOPOLOGY)
    control = f"127.0.0.1:{free_port()}"
    store = CredentialStore(tmp_path / "daemon-credentials")
    daemons = {
        "controller": ["controller", "--topology", "daemons.toml", "--listen", control, "--metrics-nodes"],
        "flow-switch": ["switch", "--role", "flow", "--name", "dc1-fs1", "--dc", "dc1"],
        "object-switch": ["switch", "--role", "object", "--name", "dc1-os", "--dc", "dc1"],
        "host": ["host", "--name", "dc1-h1", "--gateway", "dc1-fs1", "--serve", "echo"],
    }
    names = {
        "controller": "controller",
        "flow-switch": "dc1-fs1",
        "object-switch": "dc1-os",
        "host": "dc1-h1",
    }
    for kind, argv in daemons.items():
        endpoints[kind] = ("127.0.0.1", free_port())
        extra = ["--credentials", str(store.node(names[kind], kind).directory)]
        if kind != "controller":
            extra += ["--controller", control, "--listen", "127.0.0.1:0"]
        proc, log = processes.spawn(
            kind, *SCAFFOLD, *argv, *extra, "--metrics", f"127.0.0.1:{endpoints[kind][1]}"
        )
        wait_for(log, '"msg":"metrics"', proc)

    # Every endpoint's exposition passes promtool's lint.
    for name, (host, port) in endpoints.items():
        text = scrape(f"http://{host}:{port}/metrics")
        assert "scaffold_" in text, name
        promtool_check(text)

    # A real Prometheus scrapes them all, every half second.
    web_port = free_port()
    config = tmp_path / "prometheus.yml"
    scrape_configs = [
        {"job_name": name, "scrape_interval": "500ms", "static_configs": [{"targets": [f"{h}:{p}"]}]}
        for name, (h, p) in endpoints.items()
    ]
    config.write_text(json.dumps({"global": {"scrape_timeout": "400ms"}, "scrape_configs": scrape_configs}))
    server, server_log = processes.spawn(
        "prometheus",
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{web_port}",
        "--log.level=warn",
    )
    prometheus = f"http://127.0.0.1:{web_port}"
    poll("prometheus to start", lambda: server.poll() is None and scrape(f"{prometheus}/-/ready"))

    def all_up() -> bool:
        up_series = query(prometheus, "up")
        return len(up_series) == len(endpoints) and all(s["value"][1] == "1" for s in up_series)

    poll("every target to be up", all_up)
    requests = 'scaffold_gateway_requests_total{role="ingress"}'
    assert poll("the ingress's counter", lambda: query(prometheus, requests))[0]["value"][1] == "0"

    # Traffic through the ingress moves its counters, as Prometheus sees them.
    for _ in range(5):
        got = subprocess.run(
            ["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{ingress_port}/hello.txt"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert (got.returncode, got.stdout) == (0, "hello\n"), got.stderr

    def at_least(expr: str, value: float) -> bool:
        return any(float(s["value"][1]) >= value for s in query(prometheus, expr))

    poll("5 requests", lambda: at_least(requests, 5))
    poll(
        "5 latencies", lambda: at_least('scaffold_gateway_request_duration_seconds_count{role="ingress"}', 5)
    )
    poll(
        "bytes to the client",
        lambda: at_least('scaffold_gateway_transferred_bytes_total{direction="to-client"}', 5),
    )
    poll(
        "the publisher's streams", lambda: at_least('scaffold_gateway_connections_total{role="publisher"}', 5)
    )
    poll("packets forwarded in `up`", lambda: at_least('sum(scaffold_forwarded_packets_total{job="up"})', 20))
    poll(
        "daemon registrations",
        lambda: at_least('scaffold_registrations_total{job="controller",node_role="host"}', 1),
    )
    poll(
        "re-exported reports", lambda: at_least('scaffold_table_version{job="controller",node="dc1-fs1"}', 1)
    )
    poll(
        "convergence observed",
        lambda: at_least('scaffold_controller_convergence_seconds_count{job="controller"}', 1),
    )
    # Every query of the Grafana dashboard is one Prometheus accepts, over these series.
    for expr in dashboard_queries():
        query(prometheus, expr.replace("$__rate_interval", "1m"))
    assert "level=error" not in server_log.read_text()
    assert run_cli(tmp_path, "down").returncode == 0
    assert up.wait(15) == 0
