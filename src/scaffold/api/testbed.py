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

from ..core.controller import Command, Controller
from ..core.topology import Topology, make_topology
from ..errors import UsageError
from ..runtime.aio import EmbeddedNetwork, call_from_thread
from ..runtime.store import Store
from ..transport import StreamOptions
from .host import Host

__all__ = ["ControllerHandle", "Testbed"]

T = TypeVar("T")


class ControllerHandle:
    """The controller of a running embedded network.

    Its state reads through (``hosts``, ``objects``, ``events``, ``status()``, ...);
    ``command(record)`` runs an operator command (``core.controller.commands``) and sends its
    records before it returns.
    """

    def __init__(self, network: EmbeddedNetwork) -> None:
        self._network = network

    @property
    def core(self) -> Controller:
        return self._network.controller.core

    def __getattr__(self, name: str) -> Any:
        return getattr(self._network.controller.core, name)

    def command(self, command: Command) -> dict[str, Any]:
        """Run ``command`` now, e.g. ``command(Drain("east-h1", "web"))``; its result.

        Raises:
            UsageError: an unknown host, object, datacenter or link.
        """
        return self._network.controller.command(command)


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
        self.hosts = [Host(self.network, self.network.host(h.name)) for h in self.topology.hosts()]

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
            asyncio.run_coroutine_threadsafe(_cancel_tasks(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


async def _cancel_tasks() -> None:
    """Cancel what still runs on this loop (handlers of servers, say) and let it finish, as
    ``asyncio.run`` does before it closes its loop."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
