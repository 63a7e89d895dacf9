"""``scaffold switch --role flow|object``: one switch as a daemon.

It binds its UDP socket on ``--listen``, announces ``--advertise`` (the IP its neighbours
reach it on) to the controller, and forwards on the tables the controller installs -- and on
its last tables while the controller is away. ``--link PEER=MS`` sets the egress delay
towards a neighbour (our own link emulation; ``scaffold fault delay`` changes it later).

Port status: with ``--port PEER=DEV`` the switch watches the kernel's operational state of
the network interface that leads to ``PEER`` and reports every change to the controller
(admin command ``port``). A border switch's port to another DC's border switch is a backbone
link: the controller marks it down or up and recomputes the DC routes (docs/deployment.md).

With ``--workers N`` (N > 1) the switch runs as N worker processes sharing its UDP address,
supervised by this one (``switch_pool.py``, docs/deployment.md §8); ``--no-offload`` turns
the kernel's GSO / GRO batching off (one system call per datagram).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
from pathlib import Path

from ...core.controller.commands import Port
from ...core.engine import NodeEngine
from ...core.flow_switch import FlowSwitch
from ...core.object_switch import ObjectSwitch
from ...errors import ConfigError, ScaffoldError
from ...runtime import admin
from ...runtime.aio import Address, AddressBook, EmuLink, NodeRuntime
from ...runtime.metrics import node_summary
from ...runtime.prometheus import Batch
from ...runtime.tls import Credentials
from ..address import parse_address, parse_addresses
from .jsonlog import JsonLog
from .runner import add_metrics_argument, parse_peer_values, serve_metrics
from .switch_pool import start_pool
from .workers import until_orphaned

__all__ = [
    "DEFAULT_DATA_PORT",
    "PortMonitor",
    "add_arguments",
    "add_node_arguments",
    "connect",
    "node_credentials",
    "serve",
]

DEFAULT_DATA_PORT = 7000
PORT_POLL = 0.05
REPORT_RETRY = 0.5
_UNREACHABLE = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every data-plane daemon has."""
    parser.add_argument("--name", help="this node's name, as in the topology")
    parser.add_argument(
        "--controller",
        help="the controller's address (HOST:PORT), or every replica's (HOST:PORT,HOST:PORT,...)",
    )
    parser.add_argument("--credentials", help="this node's credentials directory (its certificate)")
    parser.add_argument(
        "--listen", default=f"0.0.0.0:{DEFAULT_DATA_PORT}", help="UDP address to bind (HOST:PORT)"
    )
    parser.add_argument(
        "--advertise", default=None, help="IP that neighbours send to (default: the bound IP)"
    )
    parser.add_argument(
        "--link", action="append", default=[], metavar="PEER=MS", help="egress delay towards a neighbour (ms)"
    )
    parser.add_argument("--stats-interval", type=float, default=1.0, help="report counters this often, s")
    add_metrics_argument(parser)
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="give up if the controller is unreachable this long",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_node_arguments(parser)
    parser.add_argument("--role", choices=("flow", "object"), default="flow", help="flow or object switch")
    parser.add_argument("--dc", help="the datacenter this switch belongs to")
    parser.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="PEER=DEV",
        help="watch interface DEV, the port to PEER",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the UDP address (SO_REUSEPORT)"
    )
    parser.add_argument(
        "--no-offload", action="store_true", help="no GSO / GRO batching: one system call per datagram"
    )
    parser.add_argument("--worker-of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)


def emulated_links(name: str, items: list[str]) -> dict[tuple[str, str], EmuLink]:
    """``--link PEER=MS`` flags as the runtime's egress links.

    Raises:
        ConfigError: a delay is not a number >= 0.
    """
    links: dict[tuple[str, str], EmuLink] = {}
    for peer, value in parse_peer_values(items, "--link").items():
        try:
            delay = float(value) / 1000
        except ValueError:
            raise ConfigError(f"--link {peer}={value}: the delay must be a number of ms") from None
        if not delay >= 0:
            raise ConfigError(f"--link {peer}={value}: the delay must be >= 0")
        links[(name, peer)] = EmuLink(delay)
    return links


def node_credentials(args: argparse.Namespace, role: str) -> Credentials:
    """The node's credentials (``--credentials``), checked to be ``role``'s called ``--name``.

    Raises:
        ConfigError: missing, unreadable, or someone else's.
    """
    required(args, "credentials")
    credentials = Credentials(args.credentials)
    if credentials.name != args.name or credentials.role != role:
        raise ConfigError(
            f"{args.credentials}: the credentials of {credentials.role} {credentials.name!r}, "
            f"not of {role} {args.name!r}"
        )
    return credentials


def required(args: argparse.Namespace, *names: str) -> None:
    """Raises ``ConfigError`` naming the first missing option."""
    for name in names:
        if not getattr(args, name, None):
            raise ConfigError(f"missing --{name.replace('_', '-')}")


async def connect(node: NodeRuntime[NodeEngine], timeout: float, log: JsonLog, stop: asyncio.Event) -> None:
    """Start ``node``, retrying while the controller cannot be reached (bounded by ``timeout``).

    Raises:
        ScaffoldError: the controller stayed unreachable for ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    started = False
    while not stop.is_set():
        try:
            if not started:
                await node.start()
                started = True
            else:
                await node.connect_controller()
            return
        except OSError as exc:
            if isinstance(exc, ConnectionError | TimeoutError) or exc.errno in _UNREACHABLE:
                started = True  # the socket is up; only the controller is not (yet)
            else:
                raise  # e.g. the listen address cannot be bound
            if loop.time() > deadline:
                raise ScaffoldError(f"controller {node.controller_address} unreachable: {exc}") from None
            log.warning("controller unreachable, retrying", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_RETRY)


class PortMonitor:
    """Watches interfaces (``/sys/class/net/DEV/operstate``) and reports changes to the
    controller; a report that cannot be delivered is retried until it is or the port changes
    again."""

    def __init__(
        self,
        node: str,
        ports: dict[str, str],
        controller: list[tuple[str, int]],
        log: JsonLog,
        credentials: Credentials | None = None,
    ) -> None:
        self.node = node
        #: the switch's own: the controller takes ``port`` from a switch about itself
        self.credentials = credentials
        self.ports = ports
        self.controller = controller
        self.log = log
        self.state: dict[str, bool] = {peer: self.read(dev) for peer, dev in ports.items()}
        self.pending: dict[str, bool] = {}

    @staticmethod
    def read(dev: str) -> bool:
        try:
            return Path(f"/sys/class/net/{dev}/operstate").read_text().strip() == "up"
        except OSError:
            return False

    async def run(self, stop: asyncio.Event) -> None:
        next_try = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            for peer, dev in self.ports.items():
                up = self.read(dev)
                if up != self.state[peer]:
                    self.state[peer] = up
                    self.pending[peer] = up
                    next_try = 0.0
                    self.log.info("port up" if up else "port down", peer=peer, dev=dev)
            if self.pending and loop.time() >= next_try:
                for peer, up in list(self.pending.items()):
                    try:
                        await admin.call(
                            self.controller,
                            Port(self.node, peer, up),
                            timeout=2.0,
                            credentials=self.credentials,
                        )
                    except ScaffoldError as exc:
                        self.log.warning("port report failed, will retry", peer=peer, error=str(exc))
                        next_try = loop.time() + REPORT_RETRY
                        break
                    if self.pending.get(peer) == up:
                        del self.pending[peer]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PORT_POLL)


async def serve(args: argparse.Namespace, log: JsonLog, stop: asyncio.Event) -> None:
    """Run one switch until ``stop`` is set.

    Raises:
        ConfigError: a missing or bad option.
        ScaffoldError: the controller was never reachable.
    """
    required(args, "name", "dc", "controller")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: at least 1")
    controllers = parse_addresses(args.controller)
    core = FlowSwitch(args.name, args.dc) if args.role == "flow" else ObjectSwitch(args.name, args.dc)
    worker = bool(args.worker_of)
    # A worker's controller is its supervisor's hub, a Unix socket (switch_pool.py) in a
    # private directory, so it needs no credentials; the supervisor has the real controller,
    # its certificate, and only it watches ports.
    controller: str | list[Address] = args.worker_of or controllers
    credentials = None if worker else node_credentials(args, core.role)
    listen = parse_address(args.listen)
    node: NodeRuntime[NodeEngine]
    if args.workers > 1 and not worker:
        node = await start_pool(args, core, controllers, listen, log, stop, credentials)
    else:
        node = NodeRuntime(
            core,
            AddressBook(),
            emulated_links(args.name, args.link),
            controller,
            bind=listen,
            advertise=args.advertise,
            offload=not args.no_offload,
            reuse_port=worker,
            credentials=credentials,
        )
    node.stats_interval = args.stats_interval
    ports = {} if worker else parse_peer_values(args.port, "--port")
    await connect(node, args.connect_timeout, log, stop)
    log.info(
        "started",
        role=core.role,
        dc=args.dc,
        address=f"{node.address[0]}:{node.address[1]}",
        **({"worker": args.worker_index} if worker else {"workers": args.workers}),
    )
    # A supervisor's metrics are its workers' sums (switch_pool.SupervisorRuntime.metrics).
    metrics = serve_metrics(
        args, lambda: [Batch({"node": node.name, "role": core.role}, node.metrics())], log
    )
    monitor = None
    if ports:
        monitor = asyncio.create_task(PortMonitor(args.name, ports, controllers, log, credentials).run(stop))
    if worker:
        monitor = asyncio.create_task(until_orphaned(stop))
    synced = False
    try:
        while not stop.is_set():
            if core.synced and not synced:
                synced = True
                log.info("tables received", version=core.version)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        if metrics is not None:
            metrics.close()
        if monitor is not None:
            await monitor
        await node.close()
        summary = node_summary(core.role, node.metrics())
        log.info(
            "counters", forwarded=summary["forwarded"], drops=summary["drops"], runtime=summary["runtime"]
        )
