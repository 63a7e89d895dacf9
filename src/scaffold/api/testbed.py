"""``Testbed``: an embedded SCAFFOLD network for applications, tests and notebooks.

``async with scaffold.Testbed(datacenters=2, hosts_per_datacenter=3) as net`` starts a
controller, switches and hosts in this process over loopback UDP and gives ``net.hosts``, the
``Host`` handles applications use. ``Testbed.threaded(...)`` runs the same network on a
background event loop, for code that uses the blocking ``scaffold.socket`` API.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..core.controller import Controller
from ..core.store import Store
from ..core.topology import Topology, make_topology
from ..errors import UsageError
from ..runtime.aio import EmbeddedNetwork, call_from_thread
from ..transport import StreamOptions
from .host import Host

__all__ = ["ControllerHandle", "Testbed"]

T = TypeVar("T")


class ControllerHandle:
    """The controller of a running embedded network.

    Its state reads through (``hosts``, ``objects``, ``events``, ``status()``, ...); its
    commands take effect at once, their records sent before they return. Each raises
    ``UsageError`` for an unknown host, object, datacenter or link.
    """

    def __init__(self, network: EmbeddedNetwork) -> None:
        self._network = network

    @property
    def core(self) -> Controller:
        return self._network.controller.core

    def __getattr__(self, name: str) -> Any:
        return getattr(self._network.controller.core, name)

    def _command(self, name: str, **args: Any) -> Any:
        return self._network.controller.command(name, **args)

    def drain(self, host: str, obj: str | None = None) -> list[str]:
        """Planned downtime: no new flows of ``obj`` (default: all) to ``host``."""
        result: list[str] = self._command("drain", host=host, obj=obj)
        return result

    def set_weight(self, obj: str, host: str, weight: int) -> None:
        """Load balancing: only new flows follow the new weight."""
        self._command("set_weight", obj=obj, host=host, weight=weight)

    def migrate_object(self, obj: str, from_host: str, to_host: str) -> None:
        """Move a replica and its live flows to another host."""
        self._command("migrate_object", obj=obj, from_host=from_host, to_host=to_host)

    def migrate_host(self, host: str, dc: str, gateway: str | None = None) -> str:
        """VM migration to datacenter ``dc``; returns the new gateway."""
        gw: str = self._command("migrate_host", host=host, dc=dc, gateway=gateway)
        return gw

    def move_host(self, host: str, gateway: str) -> None:
        """Client mobility: re-attach ``host`` at ``gateway``."""
        self._command("move_host", host=host, gateway=gateway)

    def set_link(self, a: str, b: str, up: bool) -> None:
        """Mark the backbone link between datacenters ``a`` and ``b`` up or down."""
        self._command("set_link", a=a, b=b, up=up)


class Testbed:
    """A running embedded network and its hosts."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        datacenters: int = 2,
        hosts_per_datacenter: int = 3,
        *,
        flow_switches_per_datacenter: int = 1,
        backbone_delay: float = 0.002,
        topology: Topology | None = None,
        heartbeat_interval: float = 0.2,
        dead_after: int = 3,
        stream_options: StreamOptions | None = None,
        seed: int | None = None,
        store: Store | None = None,
    ) -> None:
        self.topology = topology or make_topology(
            datacenters,
            hosts_per_datacenter,
            flow_switches_per_datacenter=flow_switches_per_datacenter,
            backbone_delay=backbone_delay,
        )
        self.network = EmbeddedNetwork(
            self.topology,
            heartbeat_interval=heartbeat_interval,
            dead_after=dead_after,
            seed=seed,
            stream_options=stream_options,
            store=store,
        )
        self.hosts: list[Host] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Testbed:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.network.start()
        self.hosts = [Host(self.network, self.network.nodes[h.name]) for h in self.topology.hosts()]

    async def close(self) -> None:
        await self.network.close()

    @property
    def controller(self) -> ControllerHandle:
        """The running controller: its state and its churn commands."""
        return ControllerHandle(self.network)

    def host(self, name: str) -> Host:
        """The host called ``name``.

        Raises:
            UsageError: there is no such host.
        """
        for host in self.hosts:
            if host.name == name:
                return host
        raise UsageError(f"no host named {name!r}")

    async def add_host(self, name: str, gateway: str) -> Host:
        """Attach, register and return one more host."""
        node = await self.network.add_host(name, gateway)
        host = Host(self.network, node)
        self.hosts.append(host)
        return host

    # -- running on a background loop ----------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the testbed's loop from another thread and wait for its result.

        Raises:
            UsageError: called from the testbed's own loop thread (it would deadlock).
        """
        if self.loop is None:
            coro.close()
            raise UsageError("the testbed is not running")
        return call_from_thread(self.loop, coro, timeout)

    @classmethod
    @contextmanager
    def threaded(cls, *args: Any, **kwargs: Any) -> Iterator[Testbed]:
        """Run a testbed on a background thread's event loop (for the blocking API)."""
        from ..runtime.aio import new_event_loop

        testbed = cls(*args, **kwargs)
        loop = new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="scaffold-testbed", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(testbed.start(), loop).result(30)
            yield testbed
        finally:
            asyncio.run_coroutine_threadsafe(testbed.close(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
