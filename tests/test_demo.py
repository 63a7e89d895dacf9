"""``scaffold demo`` end to end: a real process, real UDP over loopback, the JSON contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TOP_KEYS = {
    "ok",
    "runtime",
    "topology",
    "objects",
    "flows",
    "refinement",
    "switches",
    "drops",
    "events",
    "locality",
}


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_json() -> dict[str, Any]:
    proc = run_cli("demo", "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    doc = json.loads(proc.stdout)  # stdout holds exactly one JSON document
    assert isinstance(doc, dict)
    return doc


def test_demo_json_shape(demo_json: dict[str, Any]) -> None:
    doc = demo_json
    assert set(doc) == TOP_KEYS
    assert doc["ok"] is True and doc["runtime"] == "aio"
    topo = doc["topology"]
    assert topo["datacenters"] >= 2 and topo["object_switches"] >= 2 and topo["flow_switches"] >= 2


def test_demo_serves_flows_locally_under_nearest(demo_json: dict[str, Any]) -> None:
    loc = demo_json["locality"]
    assert loc["could_be_local"] >= 10 and loc["served_locally"] == loc["could_be_local"]
    assert loc["served_by_a_nearest_dc"] == len(loc["flows"])
    assert all(r["served_dc"] == r["client_dc"] for r in loc["flows"] if r["replica_in_client_dc"])


def test_demo_object_has_three_weighted_replicas_in_two_dcs(demo_json: dict[str, Any]) -> None:
    obj = demo_json["objects"][0]
    assert obj["object"].startswith("obj:") and len(obj["object"]) == 4 + 64
    replicas = obj["replicas"]
    assert len(replicas) >= 3
    assert len({r["dc"] for r in replicas}) >= 2
    assert len({r["weight"] for r in replicas}) >= 2


def test_demo_flows_are_verified_and_served_by_named_replicas(demo_json: dict[str, Any]) -> None:
    replica_hosts = {r["host"] for o in demo_json["objects"] for r in o["replicas"]} | {"west-h4"}
    flows = demo_json["flows"]
    assert len(flows) >= 20
    client_dcs = {c.split("-")[0] for c in (f["client"] for f in flows)}
    assert len(client_dcs) >= 2
    for f in flows:
        assert f["verified"] is True
        assert f["served_by"] and set(f["served_by"]) <= replica_hosts
        assert f["packets"] > 0 and f["bytes"] > 0
    assert sum(1 for f in flows if f["completed"]) >= 20


EVENT_KEYS = {
    "t",
    "kind",
    "target",
    "flows_affected",
    "flows_recovered",
    "flows_failed_cleanly",
    "recovery_ms",
    "bytes_lost",
    "bytes_duplicated",
}
KINDS = {
    "server-failure",
    "drain",
    "rebalance",
    "object-migration",
    "vm-migration",
    "client-mobility",
    "route-failure",
}


def test_demo_churn_events_lose_nothing(demo_json: dict[str, Any]) -> None:
    events = demo_json["events"]
    assert {e["kind"] for e in events} == KINDS
    for e in events:
        assert set(e) == EVENT_KEYS
        assert e["bytes_lost"] == 0 and e["bytes_duplicated"] == 0
        assert e["flows_recovered"] + e["flows_failed_cleanly"] == e["flows_affected"]
        assert set(e["recovery_ms"]) == {"p50", "max"}
        if e["kind"] != "server-failure":
            assert e["flows_failed_cleanly"] == 0, e
    by_kind = {e["kind"]: e for e in events}
    for kind in ("server-failure", "object-migration", "vm-migration", "client-mobility", "route-failure"):
        assert by_kind[kind]["flows_affected"] > 0, kind
    assert by_kind["server-failure"]["flows_recovered"] > 0  # resumable flows went on
    assert by_kind["server-failure"]["flows_failed_cleanly"] > 0  # non-resumable ones did not


def test_demo_refinement_trace(demo_json: dict[str, Any]) -> None:
    hops = demo_json["refinement"]
    first, last = hops[0], hops[-1]
    assert first["role"] == "host" and first["dst"]["dc"] is None and first["dst"]["host"] is None
    assert first["dst"]["socket"] is None and first["dst"]["obj"].startswith("obj:")
    dc_hop = next(h for h in hops if h["dst"]["dc"])
    host_hop = next(h for h in hops if h["dst"]["host"])
    assert dc_hop["role"] == "object-switch" and host_hop["role"] == "object-switch"
    assert last["role"] == "host" and last["dst"]["socket"] is not None
    assert last["node"] == last["dst"]["host"]
    roles = {h["role"] for h in hops}
    assert roles == {"host", "flow-switch", "object-switch"}


def test_demo_switches_hold_no_flow_state_and_count_drops(demo_json: dict[str, Any]) -> None:
    switches = demo_json["switches"]
    assert {s["role"] for s in switches} == {"object", "flow"}
    assert all(s["per_flow_entries"] == 0 and s["table_entries"] > 0 for s in switches)
    drops = demo_json["drops"]
    for reason in ("truncated", "bad-version", "bad-proto", "bad-flags"):
        assert drops.get(reason, 0) > 0, reason


def test_demo_human_output_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "goodput.png"
    proc = run_cli("demo", "--flows", "20", "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    for title in (
        "Objects and replicas",
        "Flows (24)",
        "Refinement",
        "Switch tables",
        "Drops",
        "Churn timeline",
    ):
        assert title in proc.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_bad_arguments() -> None:
    proc = run_cli("demo", "--flows", "zero")
    assert proc.returncode == 2
    assert "not a whole number" in proc.stderr
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
