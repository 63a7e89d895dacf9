"""The churn commands against a running network: ``scaffold drain``, ``set-weight``,
``migrate-object``, ``migrate-host`` and ``move-host``.

Each sends one admin command to the controller (found through the state file of ``scaffold
up``, or ``--controller HOST:PORT``) and prints what it did; the controller's refusal (an
unknown host, object or datacenter) is a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console

from ..deploy.address import parse_address
from ..deploy.state_file import DEFAULT_STATE, load_state
from ..runtime import admin

__all__ = ["add_commands"]

Address = tuple[str, int]


def _controller(args: argparse.Namespace) -> Address:
    if args.controller:
        return parse_address(args.controller)
    return load_state(args.state).controller


def _run(command: str, build: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from ..runtime.aio import run as run_async

        result = run_async(admin.call(_controller(args), command, **build(args)))
        if args.json:
            json.dump(result, sys.stdout)
            sys.stdout.write("\n")
        else:
            Console().print(f"[green]{command}[/] " + ", ".join(f"{k}={v}" for k, v in result.items()))
        return 0

    return run


def add_commands(sub: Any) -> None:
    """Register the churn subcommands on the ``scaffold`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state", default=str(DEFAULT_STATE), help="state file of `scaffold up`")
    common.add_argument("--controller", help="the controller's HOST:PORT instead of a state file")
    common.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("drain", parents=[common], help="planned downtime: no new flows to a replica")
    p.add_argument("host")
    p.add_argument("object", nargs="?", help="one object (default: every object the host serves)")
    p.set_defaults(func=_run("drain", lambda a: {"host": a.host, "object": a.object}))

    p = sub.add_parser("set-weight", parents=[common], help="load balancing: change a replica's weight")
    p.add_argument("object")
    p.add_argument("host")
    p.add_argument("weight", type=int)
    p.set_defaults(
        func=_run("set-weight", lambda a: {"object": a.object, "host": a.host, "weight": a.weight})
    )

    p = sub.add_parser("migrate-object", parents=[common], help="move a replica and its live flows")
    p.add_argument("object")
    p.add_argument("from_host")
    p.add_argument("to_host")
    p.set_defaults(
        func=_run(
            "migrate-object", lambda a: {"object": a.object, "from_host": a.from_host, "to_host": a.to_host}
        )
    )

    p = sub.add_parser("migrate-host", parents=[common], help="VM migration: move a host to another DC")
    p.add_argument("host")
    p.add_argument("dc")
    p.add_argument("--gateway", help="the flow switch to attach to (default: the DC's last one)")
    p.set_defaults(func=_run("migrate-host", lambda a: {"host": a.host, "dc": a.dc, "gateway": a.gateway}))

    p = sub.add_parser("move-host", parents=[common], help="client mobility: re-attach a host elsewhere")
    p.add_argument("host")
    p.add_argument("gateway")
    p.set_defaults(func=_run("move-host", lambda a: {"host": a.host, "gateway": a.gateway}))
