"""Network descriptions and their validation (scaffold.topology)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scaffold.core.topology import (
    DatacenterSpec,
    HostSpec,
    LinkSpec,
    ObjectSpec,
    Topology,
    default_topology,
)
from scaffold.errors import ConfigError


def dc(name: str, switches: int = 2, hosts: int = 2) -> DatacenterSpec:
    fss = tuple(f"{name}-fs{i}" for i in range(1, switches + 1))
    hs = tuple(HostSpec(f"{name}-h{i}", fss[(i - 1) % len(fss)]) for i in range(1, hosts + 1))
    return DatacenterSpec(name, fss, f"{name}-os", hs)


def two_dcs(
    *,
    datacenters: tuple[DatacenterSpec, ...] | None = None,
    backbone: tuple[LinkSpec, ...] | None = None,
    objects: tuple[ObjectSpec, ...] | None = None,
    local_delay: float = 0.0,
    controller: str = "controller",
) -> Topology:
    """Datacenters a and b linked, ``web`` on a-h1 and b-h2; what is given replaces its part."""
    return Topology(
        datacenters=(dc("a"), dc("b")) if datacenters is None else datacenters,
        backbone=(LinkSpec("a", "b", delay=0.01),) if backbone is None else backbone,
        objects=(ObjectSpec("web", (("a-h1", 1), ("b-h2", 2))),) if objects is None else objects,
        local_delay=local_delay,
        controller=controller,
    )


# -- the default network ---------------------------------------------------------------------


def test_default_topology_validates_and_matches_its_description() -> None:
    topo = default_topology()
    assert [d.name for d in topo.datacenters] == ["east", "west", "north"]
    assert topo.datacenter("east").border == "east-fs1"
    assert len(topo.datacenter("east").hosts) == 4
    assert len(topo.datacenter("north").hosts) == 2
    assert topo.datacenter("north").flow_switches == ("north-fs1",)
    assert {frozenset((link.a, link.b)) for link in topo.backbone} == {
        frozenset(("east", "west")),
        frozenset(("west", "north")),
        frozenset(("north", "east")),
    }
    web, session = topo.objects
    assert web.name == "web" and web.resumable
    assert web.replicas == (("east-h1", 1), ("east-h2", 2), ("west-h1", 3))
    assert session.name == "session" and not session.resumable
    assert session.replicas == (("east-h2", 1), ("west-h1", 1))
    # re-validating the same description succeeds
    Topology(topo.datacenters, topo.backbone, topo.objects, topo.local_delay, topo.controller)


def test_roles_and_datacenters_of_nodes() -> None:
    topo = default_topology()
    assert topo.role_of("east-h1") == "host"
    assert topo.role_of("east-fs2") == "flow-switch"
    assert topo.role_of("west-os") == "object-switch"
    assert topo.role_of("controller") == "controller"
    assert topo.dc_of("west-h3") == "west"
    assert topo.dc_of("north-os") == "north"
    nodes = topo.nodes()
    assert len(nodes) == (2 + 1 + 4) * 2 + (1 + 1 + 2)
    assert "controller" not in nodes
    assert [h.name for h in topo.hosts()][:4] == ["east-h1", "east-h2", "east-h3", "east-h4"]
    with pytest.raises(ConfigError, match="nowhere"):
        topo.role_of("nowhere")
    with pytest.raises(ConfigError, match="nowhere"):
        topo.dc_of("nowhere")
    with pytest.raises(ConfigError, match="mars"):
        topo.datacenter("mars")


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(lambda: Topology(()), "at least one datacenter", id="no-datacenter"),
        pytest.param(
            lambda: two_dcs(datacenters=(dc("a"), dc("a"))),
            "datacenter 'a' is defined twice",
            id="duplicate-dc",
        ),
        pytest.param(
            lambda: two_dcs(datacenters=(DatacenterSpec("a", (), "a-os"), dc("b"))),
            "datacenter 'a' has no flow switch",
            id="no-flow-switch",
        ),
        pytest.param(
            lambda: two_dcs(datacenters=(DatacenterSpec("a", ("x", "x"), "a-os"), dc("b")), objects=()),
            "node name 'x' is used twice",
            id="duplicate-switch-name",
        ),
        pytest.param(
            lambda: two_dcs(
                datacenters=(
                    dc("a"),
                    DatacenterSpec("b", ("b-fs1",), "b-os", (HostSpec("a-h1", "b-fs1"),)),
                ),
                objects=(),
            ),
            "node name 'a-h1' is used twice",
            id="duplicate-host-across-dcs",
        ),
        pytest.param(
            lambda: two_dcs(datacenters=(DatacenterSpec("a", ("a-fs1",), "a-fs1"), dc("b"))),
            "node name 'a-fs1' is used twice",
            id="object-switch-named-like-flow-switch",
        ),
        pytest.param(
            lambda: two_dcs(
                datacenters=(DatacenterSpec("a", ("a-fs1",), "a-os"), dc("b")),
                controller="a-fs1",
                objects=(),
            ),
            "node name 'a-fs1' is used twice",
            id="node-named-like-controller",
        ),
        pytest.param(
            lambda: two_dcs(datacenters=(DatacenterSpec("a", ("",), "a-os"), dc("b"))),
            "has no name",
            id="empty-node-name",
        ),
        pytest.param(
            lambda: two_dcs(
                datacenters=(
                    DatacenterSpec("a", ("a-fs1",), "a-os", (HostSpec("a-h1", "a-fs9"),)),
                    dc("b"),
                ),
                objects=(),
            ),
            "gateway 'a-fs9' is not a flow switch",
            id="unknown-gateway",
        ),
        pytest.param(
            lambda: two_dcs(
                datacenters=(
                    DatacenterSpec("a", ("a-fs1",), "a-os", (HostSpec("a-h1", "b-fs1"),)),
                    dc("b"),
                ),
                objects=(),
            ),
            "gateway 'b-fs1' is not a flow switch of datacenter 'a'",
            id="gateway-in-another-dc",
        ),
        pytest.param(
            lambda: two_dcs(
                datacenters=(
                    DatacenterSpec("a", ("a-fs1",), "a-os", (HostSpec("a-h1", "a-os"),)),
                    dc("b"),
                ),
                objects=(),
            ),
            "gateway 'a-os' is not a flow switch",
            id="gateway-is-object-switch",
        ),
        pytest.param(
            lambda: two_dcs(backbone=(LinkSpec("a", "mars"),)),
            "no datacenter 'mars'",
            id="backbone-to-unknown-dc",
        ),
        pytest.param(
            lambda: two_dcs(backbone=(LinkSpec("venus", "b"),)),
            "no datacenter 'venus'",
            id="backbone-from-unknown-dc",
        ),
        pytest.param(
            lambda: two_dcs(backbone=(LinkSpec("a", "a"),)),
            "joins a datacenter to itself",
            id="self-link",
        ),
        pytest.param(
            lambda: two_dcs(backbone=(LinkSpec("a", "b"), LinkSpec("a", "b", delay=1.0))),
            "backbone link a-b is defined twice",
            id="duplicate-link",
        ),
        pytest.param(
            lambda: two_dcs(backbone=(LinkSpec("a", "b"), LinkSpec("b", "a"))),
            "backbone link b-a is defined twice",
            id="duplicate-link-reversed",
        ),
        pytest.param(
            lambda: two_dcs(backbone=(LinkSpec("a", "b", delay=-0.001),)),
            "0 <= delay",
            id="negative-delay",
        ),
        pytest.param(
            lambda: two_dcs(backbone=(LinkSpec("a", "b", loss=1.0),)),
            "0 <= loss < 1",
            id="loss-one",
        ),
        pytest.param(
            lambda: two_dcs(backbone=(LinkSpec("a", "b", loss=-0.1),)),
            "0 <= loss < 1",
            id="negative-loss",
        ),
        pytest.param(
            lambda: two_dcs(backbone=(LinkSpec("a", "b", loss=float("nan")),)),
            "0 <= loss < 1",
            id="nan-loss",
        ),
        pytest.param(
            lambda: two_dcs(objects=(ObjectSpec("web", ()),)),
            "object 'web' has no replica",
            id="object-without-replica",
        ),
        pytest.param(
            lambda: two_dcs(objects=(ObjectSpec("web", (("a-fs1", 1),)),)),
            "replica 'a-fs1' is not a host",
            id="replica-is-a-switch",
        ),
        pytest.param(
            lambda: two_dcs(objects=(ObjectSpec("web", (("ghost", 1),)),)),
            "replica 'ghost' is not a host",
            id="replica-unknown",
        ),
        pytest.param(
            lambda: two_dcs(objects=(ObjectSpec("web", (("a-h1", 0),)),)),
            "weight of 'a-h1' must be > 0",
            id="zero-weight",
        ),
        pytest.param(
            lambda: two_dcs(objects=(ObjectSpec("web", (("a-h1", 1), ("a-h2", -3))),)),
            "weight of 'a-h2' must be > 0",
            id="negative-weight",
        ),
    ],
)
def test_validation_errors_name_the_problem(build: Callable[[], Topology], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert message in str(info.value)


def test_nan_backbone_delay_is_rejected() -> None:
    with pytest.raises(ConfigError, match="delay"):
        two_dcs(backbone=(LinkSpec("a", "b", delay=float("nan")),))


def test_negative_local_delay_is_rejected() -> None:
    with pytest.raises(ConfigError, match="delay"):
        two_dcs(local_delay=-0.001)


def test_valid_edge_values_are_accepted() -> None:
    topo = two_dcs(backbone=(LinkSpec("a", "b", delay=0.0, loss=0.0),))
    assert topo.backbone[0].loss == 0.0
    two_dcs(backbone=(LinkSpec("a", "b", delay=1.5, loss=0.999),))
    two_dcs(backbone=())  # disconnected datacenters are allowed
    two_dcs(objects=())


# -- node-level links ------------------------------------------------------------------------


def _pairs(links: list[LinkSpec]) -> list[frozenset[str]]:
    return [frozenset((link.a, link.b)) for link in links]


def test_node_links_of_the_default_topology() -> None:
    topo = default_topology()
    links = topo.node_links()
    pairs = _pairs(links)
    assert len(pairs) == len(set(pairs))  # no link twice
    expected = {
        # edge switch - border switch
        frozenset(("east-fs2", "east-fs1")),
        frozenset(("west-fs2", "west-fs1")),
        # object switch - border switch
        frozenset(("east-os", "east-fs1")),
        frozenset(("west-os", "west-fs1")),
        frozenset(("north-os", "north-fs1")),
        # host - gateway (hosts alternate between the two flow switches)
        frozenset(("east-h1", "east-fs1")),
        frozenset(("east-h2", "east-fs2")),
        frozenset(("east-h3", "east-fs1")),
        frozenset(("east-h4", "east-fs2")),
        frozenset(("west-h1", "west-fs1")),
        frozenset(("west-h2", "west-fs2")),
        frozenset(("west-h3", "west-fs1")),
        frozenset(("west-h4", "west-fs2")),
        frozenset(("north-h1", "north-fs1")),
        frozenset(("north-h2", "north-fs1")),
        # border - border, one per backbone link
        frozenset(("east-fs1", "west-fs1")),
        frozenset(("west-fs1", "north-fs1")),
        frozenset(("north-fs1", "east-fs1")),
    }
    assert set(pairs) == expected
    by_pair = dict(zip(pairs, links, strict=True))
    assert by_pair[frozenset(("east-fs1", "west-fs1"))].delay == 0.004
    assert by_pair[frozenset(("west-fs1", "north-fs1"))].delay == 0.003


def test_node_links_carry_backbone_properties_and_local_delay() -> None:
    topo = two_dcs(backbone=(LinkSpec("a", "b", delay=0.02, loss=0.1, bandwidth=1e6),), local_delay=0.001)
    links = {frozenset((link.a, link.b)): link for link in topo.node_links()}
    wide = links[frozenset(("a-fs1", "b-fs1"))]
    assert (wide.delay, wide.loss, wide.bandwidth) == (0.02, 0.1, 1e6)
    local = links[frozenset(("a-h2", "a-fs2"))]
    assert (local.delay, local.loss, local.bandwidth) == (0.001, 0.0, None)
    assert links[frozenset(("a-os", "a-fs1"))].delay == 0.001
    assert links[frozenset(("b-fs2", "b-fs1"))].delay == 0.001
    # every node appears in at least one link
    ends = {end for pair in links for end in pair}
    assert ends == set(topo.nodes())


# -- with_host -------------------------------------------------------------------------------


def test_with_host_adds_a_host_to_the_gateways_datacenter() -> None:
    topo = default_topology()
    bigger = topo.with_host(HostSpec("west-h9", "west-fs2"))
    assert bigger.role_of("west-h9") == "host"
    assert bigger.dc_of("west-h9") == "west"
    assert bigger.datacenter("west").hosts[-1] == HostSpec("west-h9", "west-fs2")
    assert len(bigger.hosts()) == len(topo.hosts()) + 1
    assert frozenset(("west-h9", "west-fs2")) in _pairs(bigger.node_links())
    # the other datacenters, backbone and objects are untouched; the original is unchanged
    assert bigger.datacenter("east") == topo.datacenter("east")
    assert bigger.backbone == topo.backbone
    assert bigger.objects == topo.objects
    assert "west-h9" not in topo.nodes()
    with pytest.raises(ConfigError):
        topo.role_of("west-h9")


def test_with_host_keeps_settings() -> None:
    topo = two_dcs(local_delay=0.005, controller="ctl")
    bigger = topo.with_host(HostSpec("b-h7", "b-fs1"))
    assert bigger.local_delay == 0.005
    assert bigger.controller == "ctl"
    assert bigger.role_of("ctl") == "controller"


def test_with_host_rejects_unknown_gateway_and_duplicate_names() -> None:
    topo = default_topology()
    with pytest.raises(ConfigError, match="nowhere"):
        topo.with_host(HostSpec("x", "nowhere"))
    with pytest.raises(ConfigError, match="used twice"):
        topo.with_host(HostSpec("east-h1", "east-fs1"))
    with pytest.raises(ConfigError, match="not a flow switch"):
        topo.with_host(HostSpec("x", "east-os"))
