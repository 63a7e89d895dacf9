"""``EmbeddedNetwork``: a whole topology in this process over loopback UDP, the embedded default.

It is also the network ``Host`` handles of a ``Testbed`` belong to: it answers what a host
asks of its network (``scaffold.api.network.HostNetwork``) from the controller and switches
in this process.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Any, TypeVar

from ...core.controller import Controller
from ...core.engine import NodeEngine
from ...core.flow_switch import FlowSwitch
from ...core.host import HostStack
from ...core.metrics import total
from ...core.object_switch import ObjectSwitch
from ...core.switch import TABLE_VERSION
from ...core.topology import Topology
from ...errors import UsageError
from ...ids import ObjectId
from ...transport import StreamOptions
from ..prometheus import Batch
from ..store import MemoryStore, Store
from ..tls import Credentials, CredentialStore
from .controller import ConnectionLimits, ControllerRuntime
from .links import Address, AddressBook, EmuLink
from .loop import wait_until
from .node import KEEPALIVE, NodeRuntime

__all__ = ["EmbeddedNetwork"]

CoreT = TypeVar("CoreT", bound=NodeEngine)


class EmbeddedNetwork:
    """A whole topology in this process over loopback UDP: the embedded default.

    Use as ``async with EmbeddedNetwork(topology) as net: ...``. Backbone delays and losses
    of the topology are applied by the egress link stage. Every control connection is mutual
    TLS under a CA of its own (``credentials``: a ``CredentialStore`` in ``credentials_dir``,
    else in a temporary directory removed at ``close``); ``tls=False`` runs them on plain TCP,
    only to measure what TLS costs. With ``open_binding`` (the default) any host may serve any
    plain-named object; without, only where the topology's objects allow (docs/protocol.md
    §6.7).
    """

    def __init__(
        self,
        topology: Topology,
        *,
        heartbeat_interval: float = 0.2,
        dead_after: int = 3,
        seed: int | None = None,
        stream_options: StreamOptions | None = None,
        store: Store | None = None,
        credentials_dir: str | os.PathLike[str] | None = None,
        tls: bool = True,
        open_binding: bool = True,
        controller_address: Address = ("127.0.0.1", 0),
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.topology = topology
        #: the controller's connection bounds; every node keeps its connection alive within
        #: a third of their idle timeout (docs/protocol.md §6.6)
        self.limits = limits or ConnectionLimits()
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self.credentials: CredentialStore | None = None
        if tls:
            if credentials_dir is None:
                self._temporary = tempfile.TemporaryDirectory(prefix="scaffold-credentials-")
                credentials_dir = self._temporary.name
            self.credentials = CredentialStore(credentials_dir)
        self.book = AddressBook()
        self.links: dict[tuple[str, str], EmuLink] = {}
        for link in topology.node_links():
            self.links[(link.a, link.b)] = EmuLink(link.delay, link.loss)
            self.links[(link.b, link.a)] = EmuLink(link.delay, link.loss)
        self._controller_options: dict[str, Any] = {
            "heartbeat_interval": heartbeat_interval,
            "dead_after": dead_after,
            "open_binding": open_binding,
        }
        #: the controller's durable state; a restarted controller starts from it
        self.store: Store = store if store is not None else MemoryStore()
        self.controller = self._controller(controller_address)
        self.nodes: dict[str, NodeRuntime[NodeEngine]] = {}
        self._hosts: dict[str, NodeRuntime[HostStack]] = {}
        self.stream_options = stream_options
        self._seeded = seed is not None
        self._rng = random.Random(seed)

    async def __aenter__(self) -> EmbeddedNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, *, ready_timeout: float = 10.0) -> None:
        await self.controller.start()
        for dc in self.topology.datacenters:
            for fs in dc.flow_switches:
                await self._start_node(self._node(FlowSwitch(fs, dc.name)))
            await self._start_node(self._node(ObjectSwitch(dc.object_switch, dc.name)))
        for spec in self.topology.hosts():
            await self._start_host(spec.name, spec.gateway)
        await wait_until(self.ready, ready_timeout, "the network to come up")

    @property
    def operator_credentials(self) -> Credentials | None:
        """The operator's credentials for admin commands (None without TLS)."""
        return self.credentials.operator() if self.credentials is not None else None

    def node_credentials(self, name: str, role: str) -> Credentials | None:
        """Node ``name``'s credentials in ``role``, issued on first use (None without TLS)."""
        return self.credentials.node(name, role) if self.credentials is not None else None

    def _node(self, core: CoreT) -> NodeRuntime[CoreT]:
        rng = random.Random(self._rng.getrandbits(64))
        credentials = self.node_credentials(core.name, core.role)
        node = NodeRuntime(
            core, self.book, self.links, self.controller.address, rng=rng, credentials=credentials
        )
        node.keepalive = min(KEEPALIVE, self.limits.idle_timeout / 3)
        return node

    async def _start_host(self, name: str, gateway: str) -> NodeRuntime[HostStack]:
        # With a seed, Flow IDs and nonces (hence replica choices) repeat from run to run.
        rng = random.Random(self._rng.getrandbits(64)) if self._seeded else None
        node = self._node(HostStack(name, gateway, rng, stream_options=self.stream_options))
        self._hosts[name] = node
        await self._start_node(node)
        return node

    async def _start_node(self, node: NodeRuntime[NodeEngine]) -> None:
        self.nodes[node.name] = node
        await node.start()

    async def add_host(self, name: str, gateway: str) -> NodeRuntime[HostStack]:
        """Attach and register one more host."""
        if name in self.nodes:
            raise UsageError(f"node {name!r} exists")
        self.topology = self.topology.with_host(self.topology.hosts()[0].__class__(name, gateway))
        self.controller.core.topology = self.topology
        for key in ((name, gateway), (gateway, name)):
            self.links[key] = EmuLink(self.topology.local_delay)
        node = await self._start_host(name, gateway)
        await wait_until(lambda: node.core.registered, 5.0, f"{name} to register")
        return node

    async def close(self) -> None:
        for node in list(self.nodes.values()):
            await node.close()
        await self.controller.close()
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    async def stop_controller(self) -> None:
        """Stop the controller; switches keep forwarding on their last tables and every
        node keeps trying to reconnect."""
        await self.controller.close()

    async def start_controller(self) -> None:
        """Start a new controller on the same address, from the same store (a restart)."""
        self.controller = self._controller(self.controller.address)
        await self.controller.start()

    def _controller(self, bind: Address) -> ControllerRuntime:
        core = Controller(self.topology, saved=self.store.load(), **self._controller_options)
        credentials = self.node_credentials(self.topology.controller, "controller")
        crl = str(self.credentials.ca.crl_path) if self.credentials is not None else None
        return ControllerRuntime(core, bind, self.store, credentials=credentials, crl=crl, limits=self.limits)

    def set_link(
        self,
        a: str,
        b: str,
        *,
        up: bool | None = None,
        delay: float | None = None,
        loss: float | None = None,
        mtu: int | None = None,
    ) -> None:
        """Change the emulation of the node-level link a-b, both directions (a cut cable:
        ``up=False``; ``mtu``: larger datagrams are dropped, 0 for none).

        Raises:
            UsageError: there is no such link.
        """
        for key in ((a, b), (b, a)):
            link = self.links.get(key)
            if link is None:
                raise UsageError(f"no link between {a!r} and {b!r}")
            if up is not None:
                link.up = up
            if delay is not None:
                link.delay = delay
            if loss is not None:
                link.loss = loss
            if mtu is not None:
                link.mtu = mtu

    def host(self, name: str) -> NodeRuntime[HostStack]:
        """The runtime of host ``name``.

        Raises:
            UsageError: there is no such host.
        """
        node = self._hosts.get(name)
        if node is None:
            raise UsageError(f"{name!r} is not a host")
        return node

    # -- what a Host asks of its network (scaffold.api.network.HostNetwork) --------------

    def dc_of(self, node: str) -> str:
        """The datacenter of ``node``.

        Raises:
            ConfigError: the topology has no such node.
        """
        return self.topology.dc_of(node)

    def host_name(self, host_id: int) -> str | None:
        """The name of the host the controller gave ``host_id``; None if it gave it to none."""
        return self.controller.core.host_name(host_id)

    async def leave(self, host: str) -> None:
        """Host ``host`` leaves: its socket and control connection close (the controller
        then marks it dead and withdraws its replicas).

        Raises:
            UsageError: there is no such host.
        """
        await self.host(host).close()

    async def wait_for_object(self, obj: ObjectId, host: str | None = None, timeout: float = 5.0) -> None:
        """Wait until the controller registered ``obj`` (on ``host``, if given) and every
        object switch applied the tables that include it.

        Raises:
            TimeoutError: not within ``timeout`` seconds (each step).
        """
        ctl = self.controller.core
        key = obj.raw.hex()

        def registered() -> bool:
            replicas = ctl.objects.get(key, {})
            return host in replicas if host is not None else bool(replicas)

        await wait_until(registered, timeout, f"the controller to register {obj.short()}")
        # The version that holds it (the next one, while the change waits in the
        # controller's coalescing window).
        targets = {
            name: ctl.tables.version_for(name)
            for name, state in ctl.switches.items()
            if state.role == "object-switch" and state.connected
        }

        def applied() -> bool:
            return all(
                total(self.nodes[name].core.metrics(), TABLE_VERSION.name) >= version
                for name, version in targets.items()
            )

        await wait_until(applied, timeout, f"object switches to learn {obj.short()}")

    def metric_batches(self) -> list[Batch]:
        """Every node's metrics and the controller's, each labelled with its node and role
        (one Prometheus endpoint for the whole network, ``runtime/prometheus.py``)."""
        return [
            *self.controller.metric_batches(),
            *(
                Batch({"node": name, "role": node.core.role}, node.metrics())
                for name, node in self.nodes.items()
            ),
        ]

    def ready(self) -> bool:
        """Every node is ready: switches hold tables, hosts are registered."""
        return all(node.core.ready for node in self.nodes.values())
