"""``scaffold host``: one host as a daemon, optionally serving objects.

It joins the network through its gateway flow switch (``join``), and with ``--serve
NAME[:WEIGHT]`` runs an echo service on object ``NAME`` (streams: every byte read is written
back), registering itself as a replica with that weight. With ``:resume`` the listener is
resumable: when another replica dies, this one takes over its streams (docs/protocol.md
§4.2.5) -- echo keeps no state, so it can. ``:policy=nearest|weighted`` and ``:capacity=C``
(new flows per second) choose the object's resolution policy and this replica's capacity
(docs/protocol.md §3.5). A name may hold ':'; how the spec is read is ``deploy/serve_spec.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from ...api.host import Host, StreamHandler
from ...api.join import join
from ...api.streams import StreamReader, StreamWriter
from ...errors import ConfigError, ScaffoldError
from ...runtime.prometheus import Batch
from ..address import parse_address, parse_addresses
from ..serve_spec import parse_serve
from .jsonlog import JsonLog
from .runner import serve_metrics
from .switch import REPORT_RETRY, add_node_arguments, emulated_links, node_credentials, required

__all__ = ["add_arguments", "echo", "serve"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_node_arguments(parser)
    parser.add_argument("--gateway", help="the flow switch this host attaches to")
    parser.add_argument(
        "--serve",
        action="append",
        default=[],
        metavar="NAME[:WEIGHT][:resume][:policy=P][:capacity=C]",
        help="serve this object; ':resume': take over streams of a failed replica; ':policy=': "
        "nearest or weighted (protocol §3.5); ':capacity=': new flows/s this replica takes. "
        "Options are read from the right, so NAME may hold ':' (a name ending in ':N' needs "
        "its weight: web:8080:1)",
    )
    parser.add_argument(
        "--service",
        choices=("echo", "pattern"),
        default="echo",
        help="what --serve runs: echo, or a paced download of the verifiable pattern (apps.pattern)",
    )
    parser.add_argument("--pattern-size", type=int, default=2 << 20, help="pattern: bytes per download")
    parser.add_argument("--pattern-pace", type=float, default=0.025, help="pattern: seconds per 4 KiB")
    parser.add_argument(
        "--accept-migrations",
        action="append",
        default=[],
        metavar="NAME",
        help="run the service for flows of NAME migrated here (migrate_object)",
    )


async def echo(reader: StreamReader, writer: StreamWriter) -> None:
    """The echo service: write back every byte read, until the client closes."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def serve(args: argparse.Namespace, log: JsonLog, stop: asyncio.Event) -> None:
    """Run one host until ``stop`` is set.

    Raises:
        ConfigError: a missing or bad option.
        ScaffoldError: the network could not be joined.
    """
    required(args, "name", "gateway", "controller")
    credentials = node_credentials(args, "host")
    services = [parse_serve(item) for item in args.serve]
    controller = parse_addresses(args.controller)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.connect_timeout
    host: Host | None = None
    while host is None:
        try:
            host = await join(
                args.name,
                gateway=args.gateway,
                controller=controller,
                credentials=credentials,
                bind=parse_address(args.listen),
                advertise=args.advertise,
                links=emulated_links(args.name, args.link),
                stats_interval=args.stats_interval,
            )
        except (ScaffoldError, TimeoutError) as exc:
            if isinstance(exc, ConfigError) or loop.time() > deadline or stop.is_set():
                raise ScaffoldError(f"cannot join the network: {exc}") from None
            log.warning("cannot join yet, retrying", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_RETRY)
    log.info(
        "registered",
        host_id=host.stack.host_id,
        dc=host.dc,
        address=f"{host.node.address[0]}:{host.node.address[1]}",
    )
    node = host.node
    metrics = serve_metrics(args, lambda: [Batch({"node": node.name, "role": "host"}, node.metrics())], log)
    try:
        handler: StreamHandler = echo
        if args.service == "pattern":
            from ...apps.content import content_service

            handler = content_service(args.pattern_size, args.pattern_pace)
        for name in args.accept_migrations:
            host.serve_migrations(handler, name)
        for service in services:
            await host.start_server(
                handler,
                service.name,
                weight=service.weight,
                resumable=service.resumable,
                policy=service.policy,
                capacity=service.capacity,
            )
            log.info(
                "serving",
                object=service.name,
                weight=service.weight,
                resumable=service.resumable,
                policy=service.policy,
                capacity=service.capacity,
            )
        await stop.wait()
    finally:
        if metrics is not None:
            metrics.close()
        await host.close()
        log.info("counters", drops=dict(host.stack.drops), runtime=dict(host.node.stats))
