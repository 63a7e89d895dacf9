"""``scaffold ingress`` and ``scaffold publish``: the gateway on the command line.

``add_commands(subparsers)`` registers both subcommands on the ``scaffold`` parser (the one
line ``cli.py`` needs). Each runs until SIGINT or SIGTERM, then closes cleanly (stop
accepting, let connections finish for ``--grace`` seconds, withdraw the replica) and prints
its counters as one JSON line on stderr.

Which network: by default the one ``scaffold up`` runs (its state file, ``--network STATE``
to name another): the command joins it as a host of its own (``--as NAME``, at ``--gateway
SWITCH`` or the first flow switch) through ``deploy.joining.join_from_state``. ``--testbed``
instead starts an embedded ``Testbed`` in this process, so one command serves a whole demo:
``scaffold ingress web --listen :8080 --testbed --publish 127.0.0.1:8000 --publish
127.0.0.1:8001``.

``scaffold publish`` first says which replicas already serve the name (a new target joins
them, and the network spreads flows over all of them). With ``--metrics HOST:PORT`` either
command serves its counters and its host's to Prometheus (docs/operations.md §1).

``--workers N`` (joining only) runs N worker processes under this one, each a host of its
own (``NAME-w0``, ``NAME-w1``, ...): ingress workers share the listening address
(``SO_REUSEPORT``: the kernel spreads the client connections), publisher workers each
register a replica of the object on the same target. A worker that dies is restarted
(``deploy/daemons/workers.py``; docs/gateway.md). With ``--metrics HOST:PORT`` worker ``i``
serves its own counters on ``PORT + i`` (port 0: each picks one and prints it), as a
Prometheus target of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from ..core.controller.commands import Status
from ..deploy.address import parse_address
from ..deploy.state_file import DEFAULT_STATE, load_state
from ..errors import ConfigError, ScaffoldError
from ..gateway.http import HttpOptions
from ..gateway.ingress import Ingress
from ..gateway.publisher import Publisher
from ..gateway.stats import GatewayStats
from ..runtime import admin
from ..runtime.aio import Address
from ..runtime.prometheus import Batch, MetricsEndpoint

if TYPE_CHECKING:
    from ..api.host import Host
    from ..api.testbed import Testbed

__all__ = ["add_commands"]


def _address(text: str) -> Address:
    """``parse_address`` for argparse, which reports only its own error type nicely.

    Raises:
        argparse.ArgumentTypeError: not an address.
    """
    try:
        return parse_address(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _network_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--testbed", action="store_true", help="start an embedded network in this process (2 DCs x 3 hosts)"
    )
    parser.add_argument(
        "--network",
        metavar="STATE",
        help="state file of a `scaffold up` network (default .scaffold/state.json)",
    )
    parser.add_argument(
        "--as", dest="as_name", metavar="NAME", help="joining: this host's name (default: one made up)"
    )
    parser.add_argument("--gateway", metavar="SWITCH", help="joining: the flow switch to attach to")
    parser.add_argument("--host", metavar="HOST", help="with --testbed: the SCAFFOLD host to use")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds open connections get at exit")
    parser.add_argument(
        "--metrics",
        type=_address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics here: the gateway's counters and its host's",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="joining: worker processes, each a host of its own"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


def add_commands(sub: Any) -> None:
    """Register ``ingress`` and ``publish`` on the ``scaffold`` subparsers."""
    ingress = sub.add_parser("ingress", help="serve an object to plain TCP or HTTP clients")
    ingress.add_argument("name", help="the object's name")
    ingress.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    ingress.add_argument("--http", action="store_true", help="HTTP/1.1 aware: keep-alive, retries")
    ingress.add_argument(
        "--max-connections",
        type=int,
        default=10_000,
        help="clients at once (over all --workers); more wait to be accepted (10000)",
    )
    ingress.add_argument(
        "--idle-timeout", type=float, default=120.0, help="seconds a silent connection stays open (120)"
    )
    ingress.add_argument(
        "--header-timeout", type=float, default=10.0, help="--http: seconds a request's head may take (10)"
    )
    ingress.add_argument(
        "--reuse",
        type=int,
        default=32,
        metavar="N",
        help="--http: idle streams kept for later clients' requests, per worker (32; 0: none)",
    )
    ingress.add_argument(
        "--preconnect",
        type=int,
        default=0,
        metavar="N",
        help="raw mode: streams kept open ahead of the clients, per worker (0: none; the target"
        " then sees idle connections)",
    )
    ingress.add_argument(
        "--no-syn-data",
        dest="syn_data",
        action="store_false",
        help="open each stream empty (the client's first bytes do not ride in the SYN)",
    )
    ingress.add_argument(
        "--publish",
        type=_address,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="with --testbed: also publish this TCP server as a replica (repeatable)",
    )
    _network_arguments(ingress)
    ingress.set_defaults(
        func=lambda args: _run(_supervise(args, "ingress") if args.workers > 1 else _ingress_main(args))
    )

    publish = sub.add_parser("publish", help="register a plain TCP server as a replica of an object")
    publish.add_argument("name", help="the object's name")
    publish.add_argument("--target", type=_address, required=True, metavar="HOST:PORT")
    publish.add_argument("--weight", type=int, default=1)
    publish.add_argument(
        "--policy",
        choices=("nearest", "weighted"),
        default="",
        help="how the network picks among the object's replicas (default: leave it; a new object: nearest)",
    )
    publish.add_argument(
        "--capacity",
        type=float,
        default=0.0,
        metavar="FLOWS/S",
        help="new flows per second this target takes; its datacenter spills the rest to the next "
        "nearest (split evenly over --workers)",
    )
    publish.add_argument("--check-interval", type=float, default=0.5, help="seconds between health checks")
    publish.add_argument("--fall", type=int, default=2, help="failed checks that withdraw the replica")
    publish.add_argument("--rise", type=int, default=2, help="passed checks that register it again")
    publish.add_argument("--wait", action="store_true", help="start even if the target does not answer yet")
    publish.add_argument("--grant", help="the owner's grant file, for an owned object (`scaffold grant`)")
    publish.add_argument(
        "--max-connections",
        type=int,
        default=10_000,
        help="streams at once (over all --workers); more are reset (10000)",
    )
    publish.add_argument(
        "--pool",
        type=int,
        default=0,
        metavar="N",
        help="idle connections to the target kept ready for new streams, per worker (0: none)",
    )
    _network_arguments(publish)
    publish.set_defaults(
        func=lambda args: _run(_supervise(args, "publish") if args.workers > 1 else _publish_main(args))
    )


def _run(main: Any) -> int:
    from ..runtime.aio import calm_collector, run

    async def calmly() -> int:
        calm_collector()  # a gateway holding many connections must not stop for a collection
        code: int = await main
        return code

    return run(calmly())


async def _until_signalled(*, worker: bool = False) -> None:
    """Until SIGINT or SIGTERM -- or, for a worker, until its supervisor is gone."""
    from ..deploy.daemons.workers import until_orphaned

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    orphaned = asyncio.create_task(until_orphaned(stop)) if worker else None
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if orphaned is not None:
            await orphaned


@contextlib.asynccontextmanager
async def _network_host(args: argparse.Namespace, role: str) -> AsyncIterator[tuple[Host, Testbed | None]]:
    """The SCAFFOLD host the command works on: a host of an embedded testbed, or this process
    joined to a running network as a host of its own."""
    from ..api.testbed import Testbed
    from ..deploy.joining import join_from_state

    if args.testbed:
        async with Testbed() as net:
            default = net.hosts[-1] if role == "ingress" else net.hosts[0]
            yield (net.host(args.host) if args.host else default), net
        return
    if args.publish if role == "ingress" else False:
        raise ConfigError("--publish goes with --testbed (use `scaffold publish` against a running network)")
    name = args.as_name or f"{role}-{os.getpid()}"
    host = await join_from_state(name, state=args.network, gateway=args.gateway)
    try:
        yield host, None
    finally:
        await host.close()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _metrics(
    args: argparse.Namespace, host: Host, net: Testbed | None, gateways: list[tuple[str, str, GatewayStats]]
) -> Iterator[None]:
    """Serve ``--metrics`` while the command runs: each gateway's counters (labelled with its
    host, role and object), its host's, and with ``--testbed`` the whole embedded network's."""
    if args.metrics is None:
        yield
        return

    def batches() -> list[Batch]:
        out = [
            Batch({"node": h, "role": role, "object": args.name}, stats.metrics())
            for h, role, stats in gateways
        ]
        if net is not None:
            return out + net.network.metric_batches()
        return [*out, Batch({"node": host.name, "role": "host"}, host.node.metrics())]

    endpoint = MetricsEndpoint(batches, args.metrics)
    endpoint.start()
    _say(f"metrics {endpoint.url}")
    try:
        yield
    finally:
        endpoint.close()


async def _replicas(args: argparse.Namespace, net: Testbed | None) -> list[dict[str, Any]]:
    """The replicas that serve ``args.name`` now, as the controller says (none if it cannot
    say: publishing does not depend on it)."""
    try:
        if net is not None:
            controller, operator = net.network.controller.address, net.network.operator_credentials
        else:
            state = load_state(args.network if args.network else DEFAULT_STATE)
            controller, operator = state.controller, state.operator()
        status = await admin.call(controller, Status(), timeout=5.0, credentials=operator)
    except ScaffoldError:
        return []
    for obj in status.get("objects", []):
        if obj.get("name") == args.name:
            return list(obj.get("replicas", []))
    return []


def _describe(replicas: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{r['host']} ({r['dc']}, weight {r['weight']}{'' if r['alive'] else ', down'})" for r in replicas
    )


def _read_grant(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read(4096)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the grant: {exc.strerror or exc}") from None


async def _ingress_main(args: argparse.Namespace) -> int:
    async with _network_host(args, "ingress") as (host, net):
        publishers = []
        if net is not None:
            publishers = [
                Publisher(net.hosts[i % (len(net.hosts) - 1)], args.name, target)
                for i, target in enumerate(args.publish)
            ]
        ingress = Ingress(
            host,
            args.name,
            args.listen,
            http=args.http,
            grace=args.grace,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            header_timeout=args.header_timeout,
            http_options=HttpOptions(reuse=args.reuse),
            syn_data=args.syn_data,
            reuse_port=args.worker,
            preconnect=args.preconnect,
        )
        gateways = [(host.name, "ingress", ingress.stats)]
        gateways += [(p.host.name, "publisher", p.stats) for p in publishers]
        with _metrics(args, host, net, gateways):
            await _serve_ingress(args, host, ingress, publishers)
        summary: dict[str, Any] = {"ingress": ingress.stats.as_json()}
        warm = ingress.warm
        if warm is not None:  # --preconnect: streams given to clients, closed unused, failed
            errors = dict(sorted(warm.waiting_stats.errors.items()))
            summary["preconnect"] = {"taken": warm.taken, "dropped": warm.dropped, "errors": errors}
        summary["publishers"] = [p.stats.as_json() for p in publishers]
        _say(json.dumps(summary))
    return 0


async def _serve_ingress(
    args: argparse.Namespace, host: Host, ingress: Ingress, publishers: list[Publisher]
) -> None:
    try:
        for publisher in publishers:
            await publisher.start()
            target = f"{publisher.target[0]}:{publisher.target[1]}"
            _say(f"published {target} as {args.name!r} on {publisher.host.name}")
        await ingress.start()
        address = ingress.address
        mode = "http" if args.http else "tcp"
        _say(f"ingress {mode} {address[0]}:{address[1]} -> {args.name!r} via {host.name}")
        await _until_signalled(worker=args.worker)
    finally:
        await ingress.close()
        for publisher in publishers:
            await publisher.close()


async def _publish_main(args: argparse.Namespace) -> int:
    async with _network_host(args, "publish") as (host, net):
        others = [r for r in await _replicas(args, net) if r["host"] != host.name]
        if others:
            _say(
                f"note: {args.name!r} is already served by {_describe(others)}; this target joins them "
                "and the network spreads new flows over them: the nearest first, by weight among equals"
            )
        else:
            _say(f"{args.name!r} has no replica yet: this target will serve it alone")
        publisher = Publisher(
            host,
            args.name,
            args.target,
            weight=args.weight,
            policy=args.policy,
            capacity=args.capacity,
            check_interval=args.check_interval,
            fall=args.fall,
            rise=args.rise,
            wait_for_target=args.wait,
            grant=_read_grant(args.grant),
            max_connections=args.max_connections,
            pool=args.pool,
        )
        await publisher.start()
        try:
            _say(f"published {args.target[0]}:{args.target[1]} as {args.name!r} on {host.name}")
            with _metrics(args, host, net, [(host.name, "publisher", publisher.stats)]):
                await _until_signalled(worker=args.worker)
        finally:
            with contextlib.suppress(Exception):
                await publisher.close()
        _say(json.dumps({"publisher": publisher.stats.as_json(), "withdrawals": publisher.withdrawals}))
    return 0


def _worker_command(args: argparse.Namespace, role: str, index: int, listen: Address | None) -> list[str]:
    """Worker ``index``'s command line: this command's flags, as host ``BASE-wINDEX``."""
    base = args.as_name or f"{role}-{os.getpid()}"
    argv = [sys.executable, "-m", "scaffold", role, args.name, "--worker", "--as", f"{base}-w{index}"]
    # The connection cap is the command's: each of its workers takes a share.
    share = -(-args.max_connections // args.workers)
    argv += ["--grace", str(args.grace), "--max-connections", str(share)]
    if args.network:
        argv += ["--network", args.network]
    if args.gateway:
        argv += ["--gateway", args.gateway]
    if args.metrics is not None:
        # Each worker is a host of its own and serves its own counters: worker i on the
        # command's port + i (port 0: each picks a free one and says which).
        host, port = args.metrics
        argv += ["--metrics", f"{host}:{port + index if port else 0}"]
    if role == "ingress":
        assert listen is not None
        argv += ["--listen", f"{listen[0]}:{listen[1]}"]
        if args.http:
            argv.append("--http")
        argv += ["--idle-timeout", str(args.idle_timeout), "--header-timeout", str(args.header_timeout)]
        argv += ["--reuse", str(args.reuse), "--preconnect", str(args.preconnect)]
        if not args.syn_data:
            argv.append("--no-syn-data")
    else:
        argv += ["--target", f"{args.target[0]}:{args.target[1]}", "--weight", str(args.weight)]
        argv += [
            "--check-interval",
            str(args.check_interval),
            "--fall",
            str(args.fall),
            "--rise",
            str(args.rise),
            "--pool",
            str(args.pool),
        ]
        if args.wait:
            argv.append("--wait")
        if args.grant:
            argv += ["--grant", args.grant]
        if args.policy:
            argv += ["--policy", args.policy]
        if args.capacity:
            argv += ["--capacity", repr(args.capacity / args.workers)]
    return argv


async def _supervise(args: argparse.Namespace, role: str) -> int:
    """``--workers N``: run N worker processes until SIGINT/SIGTERM, restarting any that dies.

    Raises:
        ConfigError: ``--workers`` with ``--testbed`` (workers join a running network), or
            ``--metrics`` ports beyond 65535.
    """
    from ..deploy.daemons.jsonlog import JsonLog
    from ..deploy.daemons.workers import WorkerPool

    if args.testbed:
        raise ConfigError("--workers joins a running network: it does not go with --testbed")
    if args.metrics is not None and args.metrics[1] and args.metrics[1] + args.workers - 1 > 65535:
        first = args.metrics[1]
        raise ConfigError(f"--metrics: {args.workers} workers need ports {first} and up, past 65535")
    listen: Address | None = None
    hold: socket.socket | None = None
    if role == "ingress":
        listen = args.listen
        assert listen is not None
        if not listen[1]:
            # One port for every worker: pick it now and hold it (bound, never listening,
            # so it takes no connection) while the workers run.
            hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            hold.bind(listen)
            listen = (listen[0], hold.getsockname()[1])
    pool = WorkerPool(
        [_worker_command(args, role, i, listen) for i in range(args.workers)], JsonLog(f"{role} {args.name}")
    )
    try:
        await pool.start()
        where = f" on {listen[0]}:{listen[1]}" if listen else ""
        _say(f"{role} {args.name!r}: {args.workers} workers{where}")
        if args.metrics is not None and args.metrics[1]:
            host, port = args.metrics
            urls = ", ".join(f"http://{host}:{port + i}/metrics" for i in range(args.workers))
            _say(f"metrics of the workers: {urls}")
        await _until_signalled()
    finally:
        await pool.stop(grace=args.grace + 2)
        if hold is not None:
            hold.close()
    _say(json.dumps({"workers": args.workers, "restarts": pool.restarts}))
    return 0
