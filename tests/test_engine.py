"""One engine interface for every core, and one way to read a node's metrics."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import WEB
from scaffold.core import metrics
from scaffold.core.controller import Controller
from scaffold.core.controller.commands import Link
from scaffold.core.engine import ControllerEngine, Engine, NodeEngine
from scaffold.core.events import NeighboursLearned, TablesApplied
from scaffold.core.flow_switch import FlowSwitch
from scaffold.core.host import HostStack
from scaffold.core.metrics import LATENCY_BUCKETS, Histogram, MetricKind, by_label, define, metric_of, total
from scaffold.core.object_switch import ObjectSwitch
from scaffold.core.topology import default_topology
from scaffold.errors import UsageError
from scaffold.gateway.stats import GatewayStats
from scaffold.runtime.metrics import node_summary
from scaffold.runtime.sim import SimNetwork
from scaffold.wire import control
from scaffold.wire.control import MetricSample, NodeStats, SwitchTables, TableDelta, TableKeys, TableSync


def test_every_core_offers_the_engine_interface() -> None:
    topology = default_topology()
    nodes: list[NodeEngine] = [FlowSwitch("fs", "east"), ObjectSwitch("os", "east"), HostStack("h", "fs")]
    for core in nodes:
        assert isinstance(core, NodeEngine), core
        assert core.get_timer() is None and core.next_event() is None and not core.ready
    controller = Controller(topology)
    assert isinstance(controller, ControllerEngine) and isinstance(controller, Engine)
    assert not isinstance(controller, NodeEngine)  # its control I/O is per node, it has no packets
    engines: list[Engine] = [*nodes, controller]
    assert [c.role for c in engines] == ["flow-switch", "object-switch", "host", "controller"]


def test_a_switch_tells_its_runtime_about_tables_and_neighbours() -> None:
    switch = FlowSwitch("east-fs1", "east")
    tables = SwitchTables(peers={"east-h1": ("127.0.0.1", 9000)}, host_routes={1: "east-h1"})
    switch.receive_control(TableSync(version=1, dc_id=1, tables=tables), 0.0)
    assert switch.next_event() == NeighboursLearned({"east-h1": ("127.0.0.1", 9000)})
    assert switch.next_event() == TablesApplied(1)
    assert switch.next_event() is None and switch.ready
    # A delta that leaves the peers alone only says "applied"; undrained events do not pile up.
    for version in range(2, 50):
        upsert = SwitchTables(host_routes={version: "east-h1"})
        switch.receive_control(TableDelta(version=version, upsert=upsert, remove=TableKeys()), 0.0)
    assert switch.next_event() == TablesApplied(49)
    assert switch.next_event() is None


def test_the_controller_hands_out_its_decisions_in_order() -> None:
    controller = Controller(default_topology())
    controller.receive_message("east-h1", control.Hello(node="east-h1", role="host", gateway="east-fs1"), 0.0)
    controller.receive_message("east-h1", control.Bind(obj=WEB.raw.hex(), weight=1, name="web"), 0.1)
    kinds = []
    while (event := controller.next_event()) is not None:
        kinds.append(event.kind)
    assert kinds == [e.kind for e in controller.events] == ["host-up", "bind"]
    assert controller.next_event() is None


def samples_are_well_formed(samples: list[MetricSample]) -> None:
    seen = set()
    for s in samples:
        metric = metric_of(s.name)
        assert metric is not None, s
        labels = [k for k in s.labels if not (k == "le" and s.name.endswith("_bucket"))]
        assert sorted(labels) == sorted(metric.labels), s
        assert metric.kind is MetricKind.GAUGE or s.value >= 0, s
        key = (s.name, tuple(sorted(s.labels.items())))
        assert key not in seen, s  # one sample per metric and label set
        seen.add(key)


def test_every_node_reports_defined_metrics_of_what_happened(net: SimNetwork) -> None:
    for name in net.nodes:
        net.inject(name, b"\x07" + bytes(100))  # bad version
    flow = net.act("north-h1", lambda core, now: core.open_stream(WEB, now))
    net.act("north-h1", lambda core, now: core.stream_send(flow.socket_id, b"z" * 5000, now))
    net.run(0.5)
    for name, node in net.nodes.items():
        samples = net.metrics(name)
        samples_are_well_formed(samples)
        assert by_label(samples, "drops_total", "reason")["bad-version"] >= 1, name
        if node.role == "flow-switch":
            flow_switch = net.switch(name)
            assert isinstance(flow_switch, FlowSwitch)
            assert total(samples, "forwarded_packets_total") == flow_switch.forwarded
        if node.role != "host":
            switch = net.switch(name)
            assert total(samples, "table_version") == switch.version > 0
            assert by_label(samples, "table_entries", "table") == switch.table_sizes()
    assert total(net.metrics("north-fs1"), "forwarded_packets_total") > 0  # the client's gateway
    assert total(net.metrics("north-fs1"), "forwarded_bytes_total") >= 76 * total(
        net.metrics("north-fs1"), "forwarded_packets_total"
    )  # at least a header each
    samples_are_well_formed(net.controller.metrics())
    registered = by_label(net.controller.metrics(), "registrations_total", "node_role")
    assert registered == {"host": 10, "flow-switch": 5, "object-switch": 3}
    client = net.metrics("north-h1")
    assert total(client, "stream_sent_bytes_total") == 5000
    assert by_label(client, "flows", "state") == {"established": 1}
    assert total(client, "stream_smoothed_rtt_seconds") > 0
    # A stream that ends keeps counting in the host's totals: counters never go down.
    net.act("north-h1", lambda core, now: core.stream_abort(flow.socket_id, now))
    net.run(0.1)
    after = net.metrics("north-h1")
    assert "flows" not in {s.name for s in after}
    assert total(after, "stream_sent_bytes_total") == 5000


def test_node_stats_carry_samples_and_the_summary_keeps_status_keys(net: SimNetwork) -> None:
    net.inject("east-fs1", b"\x07" + bytes(100))
    net.run(0.01)
    net.stats["east-fs1"]["no-address"] += 2  # as a runtime counts a datagram it could not send
    net.stats["east-fs1"]["controller-lost"] += 1
    samples = net.metrics("east-fs1")
    record = NodeStats(node="east-fs1", role="flow-switch", metrics=samples)
    decoded = control.decode(control.encode(record))
    assert decoded == record
    summary = node_summary("flow-switch", samples)
    switch = net.switch("east-fs1")
    assert isinstance(switch, FlowSwitch)
    assert summary["drops"] == dict(switch.drops)
    assert summary["forwarded"] == switch.forwarded
    assert summary["version"] == switch.version
    assert summary["table_entries"] == sum(switch.table_sizes().values())
    assert summary["runtime"] == {"no-address": 2, "controller-lost": 1}
    assert by_label(samples, "runtime_actions_total", "action") == {"controller-lost": 1}


def test_metric_definitions_follow_the_conventions() -> None:
    with pytest.raises(UsageError):
        define("packets", MetricKind.COUNTER, "a counter must end in _total")
    with pytest.raises(UsageError):
        define("open_total", MetricKind.GAUGE, "only counters end in _total")
    with pytest.raises(UsageError):
        define("Latency_seconds", MetricKind.GAUGE, "lower case")
    with pytest.raises(UsageError):
        define("latency", MetricKind.GAUGE, "the unit is in the name", unit="seconds")
    with pytest.raises(UsageError):
        define("drops_total", MetricKind.COUNTER, "defined differently", labels=("why",))
    assert define("drops_total", metrics.DROPS.kind, metrics.DROPS.help, labels=("reason",)) is not None
    with pytest.raises(UsageError):
        metrics.DROPS.sample(1, action="x")
    assert metrics.DROPS.by(Counter({"b": 2, "a": 1})) == [
        MetricSample("drops_total", 1, {"reason": "a"}),
        MetricSample("drops_total", 2, {"reason": "b"}),
    ]


def test_a_histogram_reads_out_as_prometheus_reads_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "CATALOGUE", dict(metrics.CATALOGUE))  # test metrics stay here
    with pytest.raises(UsageError):
        define("wait_seconds", MetricKind.HISTOGRAM, "no buckets", unit="seconds")
    with pytest.raises(UsageError):
        define("wait_seconds", MetricKind.HISTOGRAM, "not ascending", unit="seconds", buckets=(1.0, 0.5))
    with pytest.raises(UsageError):
        define("wait", MetricKind.HISTOGRAM, "ends in its unit", unit="seconds", buckets=(1.0,))
    with pytest.raises(UsageError):
        define(
            "wait_seconds", MetricKind.GAUGE, "only histograms have buckets", unit="seconds", buckets=(1.0,)
        )
    metric = define(
        "test_wait_seconds",
        MetricKind.HISTOGRAM,
        "a test",
        unit="seconds",
        labels=("why",),
        buckets=(0.1, 1.0),
    )
    with pytest.raises(UsageError):
        Histogram(metric)  # its label is missing
    histogram = Histogram(metric, why="test")
    for value in (0.05, 0.1, 0.5, 3.0, -1.0):
        histogram.observe(value)
    samples = histogram.samples()
    samples_are_well_formed(samples)
    buckets = {s.labels["le"]: s.value for s in samples if s.name == "test_wait_seconds_bucket"}
    assert buckets == {"0.1": 3, "1": 4, "+Inf": 5}  # <= le, cumulative; a negative one counts as 0
    assert total(samples, "test_wait_seconds_count") == 5
    assert total(samples, "test_wait_seconds_sum") == pytest.approx(3.65)
    assert metric_of("test_wait_seconds_bucket") is metric and metric_of("drops_total_sum") is None
    assert tuple(sorted(LATENCY_BUCKETS)) == LATENCY_BUCKETS


def test_gateway_counters_are_metrics_too() -> None:
    stats = GatewayStats(connections=3, active=1, bytes_in=10, bytes_out=20, requests=2)
    stats.error("object-not-found")
    samples = stats.metrics()
    samples_are_well_formed(samples)
    assert by_label(samples, "gateway_transferred_bytes_total", "direction") == {
        "to-service": 10,
        "to-client": 20,
    }
    assert by_label(samples, "gateway_errors_total", "reason") == {"object-not-found": 1}
    assert (total(samples, "gateway_connections_total"), total(samples, "gateway_active_connections")) == (
        3,
        1,
    )


def test_the_controller_event_log_stays_bounded_once_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    from scaffold.core.controller import controller as controller_module

    monkeypatch.setattr(controller_module, "EVENT_LOG_LIMIT", 10)
    monkeypatch.setattr(controller_module, "EVENT_LOG_KEEP", 4)
    controller = Controller(default_topology())
    taken = []
    for i in range(25):
        controller.command(Link("east", "west", i % 2 == 1), float(i))
        taken.append(controller.next_event())
    assert [e.at for e in taken if e is not None] == [float(i) for i in range(25)]
    assert len(controller.events) <= 10 and controller.events[-1].at == 24.0
    assert controller.next_event() is None
    # The log keeps numbering its events past the trim, so a reader can ask for what is new.
    recent = controller.recent_events(since=0, limit=3, now=30.0)
    assert recent["last"] == 25 and [e["seq"] for e in recent["events"]] == [23, 24, 25]
    assert [e["at"] for e in recent["events"]] == [22.0, 23.0, 24.0]
    assert controller.recent_events(since=25, limit=3, now=30.0)["events"] == []
    assert next(e["seq"] for e in controller.recent_events(since=1, limit=1000, now=30.0)["events"]) > 1
