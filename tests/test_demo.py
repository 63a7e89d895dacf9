"""``scaffold demo`` end to end: a real process, real UDP over loopback, the JSON contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TOP_KEYS = {"ok", "runtime", "topology", "objects", "flows", "refinement", "switches", "drops", "events"}


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_json() -> dict:  # type: ignore[type-arg]
    proc = run_cli("demo", "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)  # stdout holds exactly one JSON document


def test_demo_json_shape(demo_json: dict) -> None:  # type: ignore[type-arg]
    doc = demo_json
    assert set(doc) == TOP_KEYS
    assert doc["ok"] is True and doc["runtime"] == "aio"
    topo = doc["topology"]
    assert topo["datacenters"] >= 2 and topo["object_switches"] >= 2 and topo["flow_switches"] >= 2
    assert doc["events"] == []


def test_demo_object_has_three_weighted_replicas_in_two_dcs(demo_json: dict) -> None:  # type: ignore[type-arg]
    obj = demo_json["objects"][0]
    assert obj["object"].startswith("obj:") and len(obj["object"]) == 4 + 64
    replicas = obj["replicas"]
    assert len(replicas) >= 3
    assert len({r["dc"] for r in replicas}) >= 2
    assert len({r["weight"] for r in replicas}) >= 2


def test_demo_flows_are_verified_and_served_by_named_replicas(demo_json: dict) -> None:  # type: ignore[type-arg]
    replica_hosts = {r["host"] for o in demo_json["objects"] for r in o["replicas"]}
    flows = demo_json["flows"]
    assert len(flows) >= 20
    client_dcs = {c.split("-")[0] for c in (f["client"] for f in flows)}
    assert len(client_dcs) >= 2
    for f in flows:
        assert f["verified"] is True
        assert len(f["served_by"]) == 1 and set(f["served_by"]) <= replica_hosts
        assert f["packets"] > 0 and f["bytes"] > 0


def test_demo_refinement_trace(demo_json: dict) -> None:  # type: ignore[type-arg]
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


def test_demo_switches_hold_no_flow_state_and_count_drops(demo_json: dict) -> None:  # type: ignore[type-arg]
    switches = demo_json["switches"]
    assert {s["role"] for s in switches} == {"object", "flow"}
    assert all(s["per_flow_entries"] == 0 and s["table_entries"] > 0 for s in switches)
    drops = demo_json["drops"]
    for reason in ("truncated", "bad-version", "bad-proto", "bad-flags"):
        assert drops.get(reason, 0) > 0, reason


def test_demo_human_output_has_tables() -> None:
    proc = run_cli("demo", "--flows", "20", "--messages", "4")
    assert proc.returncode == 0, proc.stderr
    for title in ("Objects and replicas", "Flows (20)", "Refinement", "Switch tables", "Drops"):
        assert title in proc.stdout


def test_cli_rejects_bad_arguments() -> None:
    proc = run_cli("demo", "--flows", "zero")
    assert proc.returncode == 2
    assert "not a whole number" in proc.stderr
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
