"""Topology files: the examples load, a round trip is exact, and every malformed file is
refused with its line and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaffold.core.topology import default_topology
from scaffold.deploy.netns.plan import node_command, plan
from scaffold.deploy.serve_spec import Service, parse_serve
from scaffold.deploy.topology_file import dump_topology, load_topology, parse_bandwidth, parse_topology
from scaffold.errors import ConfigError

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))

GOOD = """\
name = "t"

[[datacenter]]
name = "a"
flow_switches = 2
hosts = 3

[[datacenter]]
name = "b"
hosts = [{ name = "b-web", gateway = "b-fs1" }]

[[link]]
a = "a"
b = "b"
delay_ms = 5
loss_percent = 1
bandwidth = "10mbit"

[[object]]
name = "web"
replicas = { "a-h1" = 1, "b-web" = 3 }
resumable = true
"""


def test_examples_exist_and_load() -> None:
    assert {p.name for p in EXAMPLES} >= {"triangle.toml", "demo.toml", "pair.toml", "lossy-wan.toml"}
    for path in EXAMPLES:
        loaded = load_topology(path)
        assert loaded.topology.datacenters and loaded.name


def test_triangle_is_the_demo_network_serving_nothing_and_demo_adds_its_services() -> None:
    demo = default_topology()
    triangle = load_topology(Path(__file__).parent.parent / "examples" / "triangle.toml").topology
    with_services = load_topology(Path(__file__).parent.parent / "examples" / "demo.toml").topology
    for loaded in (triangle, with_services):
        assert loaded.datacenters == demo.datacenters
        assert loaded.backbone == demo.backbone
    assert triangle.objects == ()
    assert with_services.objects == demo.objects


def test_a_good_file() -> None:
    loaded = parse_topology(GOOD)
    topo = loaded.topology
    assert loaded.name == "t"
    assert topo.datacenter("a").flow_switches == ("a-fs1", "a-fs2")
    assert [(h.name, h.gateway) for h in topo.datacenter("a").hosts] == [
        ("a-h1", "a-fs1"),
        ("a-h2", "a-fs2"),
        ("a-h3", "a-fs1"),
    ]
    link = topo.backbone[0]
    assert (link.delay, link.loss, link.bandwidth) == (0.005, 0.01, 10e6)
    assert topo.objects[0].replicas == (("a-h1", 1), ("b-web", 3))
    assert topo.objects[0].resumable


def test_dump_reads_back_exactly() -> None:
    weighted = parse_topology(GOOD + 'policy = "weighted"\ncapacity = { "b-web" = 2.5 }\n').topology
    assert weighted.objects[0].policy == "weighted"
    assert weighted.objects[0].capacities == (("b-web", 2.5),)
    assert weighted.objects[0].capacity_of("b-web") == 2.5 and weighted.objects[0].capacity_of("a-h1") == 0
    for topo in (default_topology(), parse_topology(GOOD).topology, weighted):
        assert parse_topology(dump_topology(topo)).topology == topo


@pytest.mark.parametrize(
    ("old", "new", "line", "reason"),
    [
        ('name = "t"', 'name = "t', 1, "TOML syntax error"),
        ("hosts = 3", "hosts = 3\ncolour = 1", 7, "unknown key 'colour'"),
        ("flow_switches = 2", "flow_switches = 0", 5, "flow_switches must be between 1 and 1000"),
        ('gateway = "b-fs1"', 'gateway = "a-fs1"', 10, "is not a flow switch of datacenter 'b'"),
        ('b = "b"', 'b = "c"', 14, "no datacenter 'c'"),
        ('b = "b"', 'b = "a"', 14, "joins a datacenter to itself"),
        ("delay_ms = 5", "delay_ms = -5", 15, "delay_ms must be a number >= 0"),
        ("loss_percent = 1", "loss_percent = 100", 16, "loss_percent must be a number >= 0 and < 100"),
        ('bandwidth = "10mbit"', 'bandwidth = "fast"', 17, "bandwidth must be a number"),
        ('"b-web" = 3', '"b-nope" = 3', 21, "replica 'b-nope' is not a host"),
        ('"b-web" = 3', '"b-web" = 0', 21, "weight of 'b-web' must be a whole number > 0"),
        (
            'name = "b"\nhosts = [{ name = "b-web", gateway = "b-fs1" }]',
            'name = "a"',
            9,
            "datacenter 'a' is defined twice",
        ),
        ('replicas = { "a-h1" = 1, "b-web" = 3 }', "replicas = []", 21, "has no replica"),
        ("resumable = true", 'resumable = true\npolicy = "fastest"', 23, "policy must be"),
        ("resumable = true", 'resumable = true\ncapacity = { "a-h2" = 5 }', 23, "'a-h2', which is not"),
        ("resumable = true", 'resumable = true\ncapacity = { "a-h1" = 0 }', 23, "must be a number of new"),
        ("resumable = true", "resumable = true\ncapacity = 5", 23, "capacity must be {replica"),
    ],
)
def test_malformed_files_name_the_line_and_the_reason(old: str, new: str, line: int, reason: str) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ConfigError) as info:
        parse_topology(text, "net.toml")
    message = str(info.value)
    assert message.startswith(f"net.toml:{line}: "), message
    assert reason in message


def test_duplicate_node_name_points_at_it() -> None:
    text = GOOD.replace('{ name = "b-web", gateway = "b-fs1" }', '{ name = "a-h2", gateway = "b-fs1" }')
    with pytest.raises(ConfigError, match=r"^<topology>:10: node name 'a-h2' is used twice"):
        parse_topology(text)


def test_no_datacenter_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one"):
        parse_topology('name = "x"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load_topology(tmp_path / "nope.toml")


def test_bandwidth_units() -> None:
    assert parse_bandwidth("1gbit") == 1e9
    assert parse_bandwidth("2.5 Mbit") == 2.5e6
    assert parse_bandwidth(64000) == 64000.0
    for bad in ("0mbit", True, "1 parsec", -3):
        with pytest.raises(ConfigError):
            parse_bandwidth(bad)


def test_the_namespace_plan_hands_each_replica_its_policy_and_capacity() -> None:
    topo = parse_topology(GOOD + 'policy = "weighted"\ncapacity = { "b-web" = 2.5 }\n').topology
    state = plan(topo, "t", "abc123", 77, "/tmp/run")
    argv = {n: node_command(state, state.nodes[n], topo, "t.toml", False) for n in ("a-h1", "b-web")}
    serves = {
        n: [parse_serve(a.split("=", 1)[1]) for a in v if a.startswith("--serve=")] for n, v in argv.items()
    }
    assert serves == {
        "a-h1": [Service("web", 1, True, "weighted", 0.0)],
        "b-web": [Service("web", 3, True, "weighted", 2.5)],
    }
    for bad in ("web:policy=fastest", "web:capacity=-1", "web:2:colour=red", "web:0"):
        with pytest.raises(ConfigError, match="--serve: want"):
            parse_serve(bad)
