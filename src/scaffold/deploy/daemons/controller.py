"""``scaffold controller``: the controller as a daemon.

It reads the network's topology file, listens for node connections and operator commands on
``--listen`` (TCP, mutual TLS with ``--credentials``; loopback unless told otherwise), keeps
its registrations in ``--store`` (a JSON file, so a killed and restarted controller remembers
Host IDs and replicas) and logs every decision it takes.
"""

from __future__ import annotations

import argparse
import asyncio

from ...core.controller import Controller
from ...runtime.aio import ControllerRuntime
from ...runtime.store import FileStore, MemoryStore, Store
from ...runtime.tls import Credentials
from ..address import parse_address
from ..topology_file import load_topology
from .jsonlog import JsonLog
from .runner import add_metrics_argument, serve_metrics

__all__ = ["DEFAULT_CONTROL_PORT", "add_arguments", "serve"]

DEFAULT_CONTROL_PORT = 7400


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topology", help="the network's topology file (TOML)")
    parser.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_CONTROL_PORT}",
        help="TCP address to listen on (HOST:PORT; default loopback only)",
    )
    parser.add_argument("--credentials", help="the controller's credentials directory (role controller)")
    parser.add_argument("--crl", help="a CRL file of the network's CA: its certificates are refused")
    parser.add_argument("--store", default="", help="keep registrations in this JSON file (default: memory)")
    parser.add_argument("--heartbeat-interval", type=float, default=0.2, help="host heartbeat period, s")
    parser.add_argument("--dead-after", type=int, default=3, help="missed heartbeats before a host is dead")
    add_metrics_argument(parser)
    parser.add_argument(
        "--metrics-nodes",
        action="store_true",
        help="--metrics also re-exports every node's last report (NodeStats), labelled by node",
    )


async def serve(args: argparse.Namespace, log: JsonLog, stop: asyncio.Event) -> None:
    """Run the controller until ``stop`` is set.

    Raises:
        ConfigError: no or a malformed topology file, a bad address.
        OSError: the listen address cannot be bound.
    """
    from ...errors import ConfigError

    if not args.topology:
        raise ConfigError("the controller needs --topology FILE")
    if not args.credentials:
        raise ConfigError(
            "the controller needs --credentials DIR"
            " (`scaffold credentials issue controller --role controller`)"
        )
    credentials = Credentials(args.credentials)
    if credentials.role != "controller":
        raise ConfigError(f"{args.credentials}: a {credentials.role}'s credentials, not the controller's")
    loaded = load_topology(args.topology)
    store: Store = FileStore(args.store) if args.store else MemoryStore()
    saved = store.load()
    core = Controller(
        loaded.topology, heartbeat_interval=args.heartbeat_interval, dead_after=args.dead_after, saved=saved
    )
    runtime = ControllerRuntime(
        core, parse_address(args.listen), store, credentials=credentials, crl=args.crl
    )
    runtime.on_event = lambda event, now: log.info(event.kind, target=event.target, detail=event.detail)
    await runtime.start()
    log.info(
        "listening",
        address=f"{runtime.address[0]}:{runtime.address[1]}",
        network=loaded.name,
        nodes=len(loaded.topology.nodes()),
        store=args.store or "memory",
        restored=saved is not None,
    )
    metrics = serve_metrics(args, lambda: runtime.metric_batches(nodes=args.metrics_nodes), log)
    try:
        await stop.wait()
    finally:
        if metrics is not None:
            metrics.close()
        await runtime.close()
