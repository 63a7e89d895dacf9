"""The daemon commands: ``scaffold controller``, ``switch`` and ``host`` (one process per node).

``add_commands`` registers them, and the network commands of ``cli/network.py`` (``up``,
``down``, ``status``, ``fault``), on the ``scaffold`` command line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_commands"]


def _daemon(kind: str) -> Any:
    def start(args: argparse.Namespace) -> int:
        from ..deploy.daemons import controller, host, switch
        from ..deploy.daemons.runner import run_daemon, with_config

        module = {"controller": controller, "switch": switch, "host": host}[kind]
        with_config(args._parser, args, _given(sys.argv[1:]))
        name = args.name or (kind if kind == "controller" else "")
        return run_daemon(module.serve, args, name or kind)

    return start


def _given(argv: list[str]) -> set[str]:
    """Destinations of the long flags present on the command line (they beat the config)."""
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}


def add_commands(sub: Any) -> None:
    """Add the daemon and operator subcommands to the ``scaffold`` parser's subparsers."""
    from ..deploy.daemons import controller, host, switch
    from . import network

    for kind, module, text in (
        ("controller", controller, "run the controller daemon"),
        ("switch", switch, "run a flow or object switch daemon"),
        ("host", host, "run a host daemon (optionally serving echo on objects)"),
    ):
        parser = sub.add_parser(kind, help=text, description=(module.__doc__ or "").split("\n\n")[0])
        parser.add_argument("--config", help="a TOML file with the same settings as the long flags")
        parser.add_argument("--debug", action="store_true", help="log debug records too")
        if kind == "controller":
            parser.add_argument("--name", default="controller", help="the controller's name in the topology")
        module.add_arguments(parser)
        parser.set_defaults(func=_daemon(kind), _parser=parser)
    network.add_commands(sub)
