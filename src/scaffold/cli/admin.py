"""The controller's operator commands on the command line, one subcommand per command record.

The churn commands are top-level (``scaffold drain HOST [OBJECT]``, ``set-weight``,
``migrate-object``, ``migrate-host``, ``move-host``); the others are under ``scaffold admin``
(``link``, ``link-settings``, ``port``, ``status``, ``counters``). Subcommands, arguments and
their help all come from the records (``core.controller.commands``). Each sends one admin
command to the controller (found through the state file of ``scaffold up``, or
``--controller HOST:PORT``) with an operator's credentials (from the state file's credential
store, or ``--credentials DIR``) and prints its result; a bad argument or the controller's
refusal (an unknown host, object or datacenter; not an operator) is a one-line error and exit
status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console

from ..core.controller import COMMANDS, Command
from ..deploy.address import parse_addresses
from ..deploy.state_file import DEFAULT_STATE, load_state
from ..errors import ConfigError
from ..runtime import admin
from ..runtime.tls import Credentials

__all__ = ["add_commands", "controller_access", "record_from"]

Address = tuple[str, int]

_SWITCH = {"up": True, "down": False, "true": True, "false": False, "yes": True, "no": False}


def controller_access(args: argparse.Namespace) -> tuple[list[Address], Credentials]:
    """The controller and the operator credentials to reach it with: ``--controller`` and
    ``--credentials``, else what the state file ``--state`` names.

    Raises:
        ConfigError: no state file, a bad address, or no credentials.
    """
    given = getattr(args, "credentials", None)
    if getattr(args, "controller", None):
        if not given:
            raise ConfigError("--controller needs --credentials DIR (an operator's)")
        return parse_addresses(args.controller), Credentials(given)
    state = load_state(args.state)
    return state.controller_addresses, Credentials(given) if given else state.operator()


def _switch(text: str) -> bool:
    try:
        return _SWITCH[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"say up or down, not {text!r}") from None


def _add_arguments(parser: argparse.ArgumentParser, cls: type[Command]) -> None:
    for arg in cls.arguments():
        help_text = arg.help.replace("%", "%%")
        kind: Any = _switch if arg.type is bool else arg.type
        if arg.required:
            metavar = "{up,down}" if arg.type is bool else arg.name.upper()
            parser.add_argument(arg.name, type=kind, metavar=metavar, help=help_text)
        elif arg.positional:
            parser.add_argument(arg.name, type=kind, nargs="?", metavar=arg.name.upper(), help=help_text)
        elif arg.type is bool:
            flag = "--" + arg.name.replace("_", "-")
            parser.add_argument(flag, dest=arg.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            flag = "--" + arg.name.replace("_", "-")
            parser.add_argument(flag, dest=arg.name, type=kind, metavar=arg.name.upper(), help=help_text)


def record_from(cls: type[Command], args: argparse.Namespace) -> Command:
    """The command record a parsed command line asks for; an option not given is left out, so
    the record's own default applies.

    Raises:
        UsageError: an argument the record refuses.
    """
    given = {arg.name: getattr(args, arg.name) for arg in cls.arguments()}
    return cls.from_args({name: value for name, value in given.items() if value is not None})


def _runner(cls: type[Command]) -> Any:
    def run(args: argparse.Namespace) -> int:
        from ..runtime.aio import run as run_async

        command = record_from(cls, args)
        address, credentials = controller_access(args)
        result = run_async(admin.call(address, command, credentials=credentials))
        flat = isinstance(result, dict) and all(not isinstance(v, dict | list) for v in result.values())
        if args.json or not flat:
            json.dump(result, sys.stdout, indent=None if flat else 2)
            sys.stdout.write("\n")
        else:
            Console().print(f"[green]{cls.name}[/] " + ", ".join(f"{k}={v}" for k, v in result.items()))
        return 0

    return run


def add_commands(sub: Any) -> None:
    """Register a subcommand for every operator command on the ``scaffold`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state", default=str(DEFAULT_STATE), help="state file of `scaffold up`")
    common.add_argument("--controller", help="the controller's HOST:PORT instead of a state file")
    common.add_argument(
        "--credentials", help="an operator's credentials directory (default: the state file's)"
    )
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    others = ", ".join(cls.name for cls in COMMANDS.values() if not cls.top_level)
    group = sub.add_parser("admin", help=f"the controller's other operator commands: {others}")
    more = group.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    for cls in COMMANDS.values():
        parser = (sub if cls.top_level else more).add_parser(
            cls.name, parents=[common], help=cls.help(), description=cls.help()
        )
        _add_arguments(parser, cls)
        parser.set_defaults(func=_runner(cls))
