"""``scaffold controller``: the controller as a daemon.

It reads the network's topology file, listens for node connections and operator commands on
``--listen`` (TCP, mutual TLS with ``--credentials``; loopback unless told otherwise), keeps
its registrations in ``--store`` (a SQLite database, so a killed and restarted controller
remembers Host IDs and replicas) -- or, with ``--etcd``, is one replica of several sharing the
network through etcd -- and logs every decision it takes.
"""

from __future__ import annotations

import argparse
import asyncio

from ...core.controller import Controller
from ...core.topology import Topology
from ...errors import ConfigError, ScaffoldError
from ...runtime.aio import ControllerRuntime, paused_collector
from ...runtime.sqlite_store import SqliteStore
from ...runtime.store import MemoryStore, Store
from ...runtime.tls import Credentials
from ..address import parse_address
from ..topology_file import load_topology
from .jsonlog import JsonLog
from .runner import add_metrics_argument, serve_metrics

__all__ = ["DEFAULT_CONTROL_PORT", "add_arguments", "serve"]

DEFAULT_CONTROL_PORT = 7400
#: the controller's store, under the state directory of ``scaffold up`` (docs/deployment.md)
DEFAULT_STORE = ".scaffold/controller.sqlite3"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topology", help="the network's topology file (TOML)")
    parser.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_CONTROL_PORT}",
        help="TCP address to listen on (HOST:PORT; default loopback only)",
    )
    parser.add_argument("--credentials", help="the controller's credentials directory (role controller)")
    parser.add_argument("--crl", help="a CRL file of the network's CA: its certificates are refused")
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        help=f"keep registrations in this SQLite file (default {DEFAULT_STORE}; ':memory:' keeps nothing)",
    )
    parser.add_argument(
        "--etcd",
        default="",
        help="replicate through this etcd cluster (HOST:PORT,...): lead or stand by (replaces --store)",
    )
    parser.add_argument(
        "--network", default="", help="with --etcd: the network's name (default: the topology's)"
    )
    parser.add_argument(
        "--advertise", default=None, help="with --etcd: the IP other nodes reach this replica on"
    )
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
    if args.etcd:
        await _serve_replica(args, loaded.topology, args.network or loaded.name, credentials, log, stop)
        return
    store: Store = MemoryStore() if args.store in ("", ":memory:") else SqliteStore(args.store)
    with paused_collector():  # a million restored rows: no collection walks them as they come
        saved = store.load()
        core = Controller(
            loaded.topology,
            heartbeat_interval=args.heartbeat_interval,
            dead_after=args.dead_after,
            saved=saved,
        )
        restored = saved is not None
        del saved  # the core holds what it needs of it
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
        store=args.store if isinstance(store, SqliteStore) else "memory",
        restored=restored,
    )
    metrics = serve_metrics(args, lambda: runtime.metric_batches(nodes=args.metrics_nodes), log)
    try:
        await stop.wait()
    finally:
        if metrics is not None:
            metrics.close()
        await runtime.close()


async def _serve_replica(
    args: argparse.Namespace,
    topology: Topology,
    network: str,
    credentials: Credentials,
    log: JsonLog,
    stop: asyncio.Event,
) -> None:
    """Run one controller replica of ``network`` through etcd until ``stop`` is set."""
    from ...runtime.etcd import ControllerReplica, Etcd, parse_endpoints

    try:
        endpoints = parse_endpoints(args.etcd)
    except ScaffoldError as exc:
        raise ConfigError(str(exc)) from None
    replica = ControllerReplica(
        args.name,
        topology,
        Etcd(endpoints),
        network=network,
        bind=parse_address(args.listen),
        advertise=args.advertise,
        heartbeat_interval=args.heartbeat_interval,
        dead_after=args.dead_after,
        on_log=lambda what, fields: log.info(what, **fields),
        credentials=credentials,
        crl=args.crl,
    )
    replica.runtime.on_event = lambda event, now: log.info(
        event.kind, target=event.target, detail=event.detail
    )
    await replica.start()
    address = replica.address
    log.info("listening", address=f"{address[0]}:{address[1]}", network=network, etcd=args.etcd)
    try:
        await stop.wait()
    finally:
        await replica.close()
