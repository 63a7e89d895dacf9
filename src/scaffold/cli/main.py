"""The ``scaffold`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from ..errors import ScaffoldError, UsageError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from ..demo.report import print_demo
    from ..demo.run import DemoOptions, netns_options, run_demo, run_demo_netns
    from ..runtime.aio import run

    err = Console(stderr=True)
    options = netns_options() if args.netns else DemoOptions()
    options.seed = args.seed
    if args.flows is not None:
        options.flows = args.flows
    if args.controllers != 1:
        if not args.netns:
            raise UsageError("--controllers needs --netns (replicas run as processes)")
        options.controllers = args.controllers
    if args.size is not None:
        options.size = args.size
    if args.pace is not None:
        options.pace = args.pace
    progress = None if args.json else (lambda text: err.print(f"[dim]… {text}[/]"))
    report = run((run_demo_netns if args.netns else run_demo)(options, progress))
    if args.json:
        json.dump(report.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        # The tables want about 120 columns; a narrower terminal wraps them.
        print_demo(report, Console(width=max(Console().width, 120)))
    if args.plot:
        from ..demo.plot import plot_goodput

        plot_goodput(report, args.plot)
        err.print(f"[dim]… goodput plot written to {args.plot}[/]")
    return 0 if report.ok else 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaffold", description="SCAFFOLD: a service-centric network.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the demo scenario on the embedded default network")
    demo.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    demo.add_argument("--flows", type=_positive, help="resumable client flows (default 24; 18 with --netns)")
    demo.add_argument(
        "--netns",
        action="store_true",
        help="every node a process in its own network namespace (needs root and ip netns)",
    )
    demo.add_argument(
        "--plot", metavar="FILE.png", help="draw per-flow goodput over time with the churn events"
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed of the scenario (default 7)")
    demo.add_argument(
        "--controllers",
        type=_positive,
        default=1,
        help="netns: replicated controllers on etcd; the leader is SIGKILLed mid-churn",
    )
    demo.add_argument(
        "--size",
        type=_positive,
        metavar="BYTES",
        help="bytes each flow downloads (default 2 MiB; 1 MiB with --netns)",
    )
    demo.add_argument(
        "--pace",
        type=float,
        metavar="SECONDS",
        help="the service's pace: seconds per 4 KiB (default 0.025; 0.05 with --netns)",
    )
    demo.set_defaults(func=_demo)
    from .daemons import add_commands

    add_commands(sub)  # controller, switch, host, up, down, status, fault
    from .admin import add_commands as add_admin_commands

    add_admin_commands(sub)  # drain, set-weight, migrate-object, migrate-host, move-host, admin ...
    from .gateway import add_commands as add_gateway_commands

    add_gateway_commands(sub)  # ingress, publish (docs/gateway.md)
    from .trust import add_commands as add_trust_commands

    add_trust_commands(sub)  # credentials, owner, grant (docs/security.md)
    from .metrics import add_commands as add_metrics_commands

    add_metrics_commands(sub)  # metrics targets, metrics catalogue (docs/operations.md)
    from .connect import add_commands as add_connect_commands

    add_connect_commands(sub)  # connect NAME: netcat on an object name
    from .top import add_commands as add_top_commands

    add_top_commands(sub)  # top: the live view
    from .dissector import add_commands as add_dissector_commands

    add_dissector_commands(sub)  # dissector path | install: the Wireshark dissector
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..deploy.daemons.workers import follow_supervisor

    follow_supervisor()  # a pool's worker never outlives its supervisor
    try:
        code: int = args.func(args)
    except ScaffoldError as exc:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}")  # text from anywhere: never markup
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
