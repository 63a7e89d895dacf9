"""Operator commands are defined once, as records (docs/protocol.md §6.5): the admin dispatch
and the CLI derive from them, and a bad argument is an error reply, never an exception."""

from __future__ import annotations

import pytest

from scaffold.cli.admin import record_from
from scaffold.cli.main import build_parser
from scaffold.core.controller import COMMANDS, Command, Controller
from scaffold.core.controller.commands import (
    Drain,
    Events,
    Link,
    LinkSettings,
    MigrateHost,
    Port,
    SetPolicy,
    SetWeight,
)
from scaffold.core.topology import default_topology
from scaffold.errors import UsageError
from scaffold.ids import ObjectId
from scaffold.wire import control

WEB = ObjectId.from_name("web").raw.hex()


def cli_words(cls: type[Command]) -> list[str]:
    return [cls.name] if cls.top_level else ["admin", cls.name]


def help_of(words: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*words, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps long lines


def test_every_command_has_an_admin_name_and_a_cli_subcommand_with_its_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert set(COMMANDS) == {
        "status",
        "counters",
        "events",
        "link",
        "link-settings",
        "port",
        "drain",
        "set-weight",
        "set-policy",
        "migrate-object",
        "migrate-host",
        "move-host",
        "allow",
        "disallow",
    }
    ctl = Controller(default_topology())
    for name, cls in COMMANDS.items():
        assert cls.name == name
        reply = ctl.admin(control.AdminRequest(1, name, {}), 0.0)
        assert "unknown command" not in reply.error, name
        text = help_of(cli_words(cls), capsys)
        assert cls.help() in text, name
        for arg in cls.arguments():
            assert arg.help, f"{name} {arg.name} has no help"
            assert " ".join(arg.help.split()) in text, f"{name} {arg.name}"


def test_the_cli_usage_of_the_churn_commands_builds_their_records() -> None:
    parser = build_parser()
    cases: list[tuple[list[str], Command]] = [
        (["drain", "east-h1"], Drain("east-h1")),
        (["drain", "east-h1", "web"], Drain("east-h1", "web")),
        (["set-weight", "web", "east-h1", "4"], SetWeight("web", "east-h1", 4)),
        (["set-policy", "web", "weighted"], SetPolicy("web", "weighted")),
        (
            ["migrate-host", "east-h2", "north", "--gateway", "north-fs1"],
            MigrateHost("east-h2", "north", "north-fs1"),
        ),
        (["admin", "link", "east", "west", "down"], Link("east", "west", False)),
        (["admin", "port", "east-fs1", "west-fs1", "up"], Port("east-fs1", "west-fs1", True)),
        (
            ["admin", "link-settings", "east", "west", "--delay-ms", "5", "--no-up"],
            LinkSettings("east", "west", 5.0, None, False),
        ),
        (["admin", "events"], Events()),
        (["admin", "events", "--since", "7", "--limit", "3"], Events(since=7, limit=3)),
    ]
    for words, expected in cases:
        args = parser.parse_args(words)
        cls = type(expected)
        assert record_from(cls, args) == expected
        # and the record crosses the wire as its admin name and arguments, keyed ``object``
        assert cls.from_args(expected.args()) == expected
    assert SetWeight("web", "east-h1", 4).args() == {"object": "web", "host": "east-h1", "weight": 4}


@pytest.mark.parametrize(
    ("name", "args", "error"),
    [
        ("set-weight", {"object": "web", "host": "east-h1", "weight": 0}, "weight must be > 0"),
        ("events", {"limit": 0}, "limit must be between 1 and 1000"),
        ("events", {"since": -1}, "since must be >= 0"),
        ("set-weight", {"object": "web", "host": "east-h1", "weight": 65536}, "at most 65535"),
        ("set-weight", {"object": "web", "host": "east-h1", "weight": "4"}, "Expected `int`, got `str`"),
        ("set-weight", {"obj": "web", "host": "east-h1", "weight": 4}, "unknown field `obj`"),
        ("set-weight", {"object": "web", "weight": 4}, "missing required field `host`"),
        ("set-weight", {"object": "nothing", "host": "east-h1", "weight": 4}, "no object 'nothing'"),
        ("set-weight", {"object": "web", "host": "west-h4", "weight": 4}, "not a replica"),
        ("drain", {"host": "nobody"}, "no host named 'nobody'"),
        ("link", {"a": "east", "b": "nowhere", "up": False}, "no backbone link"),
        ("link", {"a": "east", "b": "west", "up": "down"}, "Expected `bool`"),
        ("link-settings", {"a": "east", "b": "west", "loss": 1.5}, "loss must be a fraction in [0, 1]"),
        ("link-settings", {"a": "east", "b": "west", "delay_ms": -1}, "delay must be >= 0 ms"),
        ("link-settings", {"a": "east-h1", "b": "west-h1"}, "not neighbours"),
        ("port", {"node": "ghost", "peer": "east-fs1", "up": False}, "no node named 'ghost'"),
        ("migrate-host", {"host": "east-h1", "dc": "mars"}, "no datacenter named 'mars'"),
        ("move-host", {"host": "east-h1", "gateway": "east-os"}, "not a flow switch"),
        (
            "migrate-object",
            {"object": "web", "from_host": "east-h1", "to_host": "east-h1"},
            "already a replica",
        ),
        ("counters", {}, "answered by the controller's runtime"),
        ("frobnicate", {}, "unknown command 'frobnicate'"),
    ],
)
def test_a_bad_argument_is_an_error_reply(name: str, args: dict[str, control.AdminValue], error: str) -> None:
    ctl = Controller(default_topology())
    ctl.receive_message("east-h1", control.Hello(node="east-h1", role="host", gateway="east-fs1"), 0.0)
    ctl.receive_message("east-h1", control.Bind(WEB, 1, "web"), 0.0)
    before = ctl.snapshot()
    reply = ctl.admin(control.AdminRequest(7, name, args), 0.1)
    assert (reply.id, reply.ok) == (7, False)
    assert error in reply.error
    assert reply.error.startswith(f"{name}: ") or name not in COMMANDS
    assert ctl.snapshot() == before  # a refused command changed nothing


def test_range_checks_hold_however_a_record_is_made() -> None:
    with pytest.raises(UsageError, match="weight must be > 0"):
        SetWeight("web", "east-h1", 0)
    with pytest.raises(UsageError, match="loss must be a fraction"):
        LinkSettings("east", "west", loss=-0.1)
