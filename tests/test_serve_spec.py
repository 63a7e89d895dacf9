"""The ``--serve`` spec (deploy/serve_spec.py): names that hold ':' are served whole, options
are taken from the right only when they are options, and ambiguous input is refused."""

from __future__ import annotations

import pytest

from scaffold.deploy.serve_spec import Service, format_serve, parse_serve
from scaffold.deploy.topology_file import parse_topology
from scaffold.errors import ConfigError
from scaffold.ids import ObjectId

WEB = str(ObjectId.from_name("web"))  # obj: + 64 hex digits
OWNED = "owner:" + "ab" * 32 + "/photos:2020"
ALL_DIGITS = "obj:" + "1" * 64  # hex digits that read as a number: still the name


@pytest.mark.parametrize(
    ("item", "service"),
    [
        ("web", Service("web")),
        ("web:2:resume:policy=weighted:capacity=2.5", Service("web", 2, True, "weighted", 2.5)),
        ("web:resume:capacity=3:policy=nearest", Service("web", 1, True, "nearest", 3.0)),
        ("web:8080", Service("web", 8080)),  # a trailing number is the weight...
        ("web:8080:1", Service("web:8080", 1)),  # ...so a name ending in one gives its weight
        ("api:v2", Service("api:v2")),
        ("api:v2:3:resume", Service("api:v2", 3, True)),
        ("a=b", Service("a=b")),  # the first part is always the name's
        (WEB, Service(WEB)),
        (f"{WEB}:2:resume", Service(WEB, 2, True)),
        (f"{ALL_DIGITS}:3", Service(ALL_DIGITS, 3)),
        (ALL_DIGITS, Service(ALL_DIGITS)),
        (OWNED, Service("owner:" + "ab" * 32 + "/photos", 2020)),
        (f"{OWNED}:1:policy=nearest", Service(OWNED, 1, False, "nearest")),
    ],
)
def test_options_are_read_from_the_right_and_the_rest_is_the_name(item: str, service: Service) -> None:
    assert parse_serve(item) == service
    assert parse_serve(format_serve(service)) == service


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ":2",  # no name
        "web:",
        "web::2",
        "web:0",
        "web:65536",  # weights are 1..65535
        "web:policy=fastest",
        "web:capacity=-1",
        "web:2:colour=red",  # an unknown option is not taken for part of the name
        "web:policy=nearest:policy=weighted",
        "obj:12:2",  # a malformed Object ID text
        "owner:zz/photos",
    ],
)
def test_malformed_specs_are_refused_with_the_syntax(bad: str) -> None:
    with pytest.raises(ConfigError, match="--serve: want"):
        parse_serve(bad)


@pytest.mark.parametrize(
    ("ambiguous", "name_left"),
    [
        ("web:resume:2", "web:resume"),  # options out of order
        ("web:capacity=1:2", "web:capacity=1"),
        ("web:2:resume:resume", "web:2:resume"),
        ("x:policy=a:1", "x:policy=a"),
    ],
)
def test_a_name_left_ending_in_an_option_is_ambiguous(ambiguous: str, name_left: str) -> None:
    # the error names the Object ID such a name is served by
    with pytest.raises(ConfigError, match=f"ambiguous.*{ObjectId.from_name(name_left)}"):
        parse_serve(ambiguous)


def test_a_topology_file_refuses_an_object_name_serve_cannot_carry() -> None:
    base = '[[datacenter]]\nname = "a"\nhosts = 1\n\n[[object]]\nname = "{}"\nreplicas = ["a-h1"]\n'
    assert parse_topology(base.format("api:v2")).topology.objects[0].name == "api:v2"
    with pytest.raises(ConfigError, match=r":6: object 'web:resume'.*ambiguous"):
        parse_topology(base.format("web:resume"))
