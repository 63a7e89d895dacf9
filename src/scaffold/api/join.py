"""Joining a running network as a host, from another process or another machine.

``await join("me", gateway="dc1-fs1", controller=("10.0.0.1", 7400))`` starts a host stack
with its own UDP socket and its own ``AddressBook``, registers it with the network's
controller through the chosen gateway flow switch, and returns a ``Host``: the same
application API as a ``Testbed``'s hosts. The gateway learns the host's address from the
controller (the host announces it in ``Hello``); the host learns the gateway's from
``Welcome``, unless the caller already knows it (``gateway_address``).

Nothing of the network lives in this process, so what a ``Host`` asks of its network
(``HostNetwork``: a node's DC, Host ID -> name, "wait until the object switches know my
replica") is answered by ``JoinedNetwork`` over the controller's admin port (``status`` and
``counters``). Finding the network through the state file of ``scaffold up`` is a
deployment matter: ``scaffold.deploy.join_from_state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from ..core.controller.commands import Counters, Status
from ..core.host import HostStack
from ..errors import ConfigError, ScaffoldError, UsageError
from ..ids import ObjectId
from ..runtime import admin
from ..runtime.aio import Address, AddressBook, EmuLink, NodeRuntime, wait_until
from ..transport import StreamOptions
from .host import Host

__all__ = ["JoinedNetwork", "join", "local_address_towards"]

#: seconds between two admin calls while waiting for the controller
POLL = 0.02


class JoinedNetwork:
    """A running network seen by one host that joined it from this process: the controller's
    admin port answers what its ``Host`` asks (``HostNetwork``)."""

    def __init__(
        self, controller: Address | list[Address], node: NodeRuntime[HostStack], status: dict[str, Any]
    ) -> None:
        self.controller_address = controller
        #: the joined host's runtime (the one node of the network in this process)
        self.node = node
        self.node_dc: dict[str, str] = {}
        self.host_names: dict[int, str] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._learn(status)
        # A new host is in its gateway's datacenter.
        self.node_dc.setdefault(node.name, self.node_dc.get(node.core.gateway, ""))

    def _learn(self, status: dict[str, Any]) -> None:
        for switch in status.get("switches", []):
            self.node_dc[str(switch["name"])] = str(switch["dc"])
        for host in status.get("hosts", []):
            self.node_dc[str(host["name"])] = str(host["dc"])
            self.host_names[int(host["host_id"])] = str(host["name"])

    async def status(self) -> dict[str, Any]:
        """The controller's ``status`` (and what it says is remembered).

        Raises:
            ScaffoldError: the controller cannot be reached or refused.
        """
        result: dict[str, Any] = await admin.call(self.controller_address, Status())
        self._learn(result)
        return result

    def dc_of(self, node: str) -> str:
        """The datacenter of ``node``, as the controller last said.

        Raises:
            ConfigError: the controller did not name such a node.
        """
        dc = self.node_dc.get(node)
        if dc is None:
            raise ConfigError(f"no node named {node!r} in the joined network")
        return dc

    def host_name(self, host_id: int) -> str | None:
        """The name of Host ID ``host_id`` as the controller last said; None if it did not
        name it yet (then the controller is asked in the background, for next time)."""
        name = self.host_names.get(host_id)
        if name is None and host_id and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return name

    async def _refresh(self) -> None:
        with contextlib.suppress(ScaffoldError, OSError):
            await self.status()

    async def wait_for_object(self, obj: ObjectId, host: str | None = None, timeout: float = 5.0) -> None:
        """Wait until the controller registered ``obj`` (on ``host``, if given) and every
        connected object switch reported applying the tables that include it.

        Raises:
            TimeoutError: not within ``timeout`` seconds (each step).
            ScaffoldError: the controller cannot be reached.
        """
        key = "obj:" + obj.raw.hex()
        status: dict[str, Any] = {}

        async def registered() -> bool:
            nonlocal status
            status = await self.status()
            entry = next((o for o in status["objects"] if o["object"] == key), None)
            return entry is not None and any(
                (host is None or r["host"] == host) and r["alive"] for r in entry["replicas"]
            )

        await wait_until(registered, timeout, f"the controller to register {obj.short()}", interval=POLL)
        targets = {
            s["name"]: s["version"]
            for s in status["switches"]
            if s["role"] == "object-switch" and s["connected"]
        }

        async def applied() -> bool:
            counters = await admin.call(self.controller_address, Counters())
            return all(counters.get(name, {}).get("version", 0) >= v for name, v in targets.items())

        await wait_until(applied, timeout, f"object switches to learn {obj.short()}", interval=POLL)

    async def leave(self, host: str) -> None:
        """The joined host leaves: its socket and control connection close.

        Raises:
            UsageError: ``host`` is not the host that joined (the only one here).
        """
        if host != self.node.name:
            raise UsageError(f"{host!r} did not join from here ({self.node.name!r} did)")
        await self.node.close()
        if self._refreshing is not None:
            self._refreshing.cancel()


def local_address_towards(address: Address) -> str:
    """The local IP the kernel would use to reach ``address`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(address)
        ip: str = probe.getsockname()[0]
        return ip


async def join(
    name: str,
    *,
    gateway: str,
    controller: Address | list[Address],
    gateway_address: Address | None = None,
    bind: Address | None = None,
    advertise: str | None = None,
    timeout: float = 10.0,
    stream_options: StreamOptions | None = None,
    links: dict[tuple[str, str], EmuLink] | None = None,
    stats_interval: float | None = None,
) -> Host:
    """Join the running network whose controller is at ``controller`` as host ``name``,
    attached to the flow switch ``gateway``, and return its application handle (leave with
    ``await host.close()``, or use ``async with``).

    ``gateway_address`` is the gateway's data-plane address when it is known ahead (else it
    comes in ``Welcome``). ``bind`` is the local UDP address (default: the address the kernel
    uses towards the controller, any port); ``advertise`` the IP the gateway should send to,
    when ``bind`` is a wildcard. ``links`` sets the egress link emulation (keys ``(name,
    peer)``); with ``stats_interval`` the host reports its counters to the controller that
    often.

    Raises:
        ConfigError: ``gateway`` is not a flow switch of the network, or the name is taken by
            a live node.
        ScaffoldError: the controller cannot be reached, or the gateway is not connected to it
            yet (worth retrying).
        TimeoutError: the host was not registered within ``timeout`` seconds.
    """
    status: dict[str, Any] = await admin.call(controller, Status(), timeout=timeout)
    switch = next((s for s in status["switches"] if s["name"] == gateway), None)
    if switch is None or switch["role"] != "flow-switch":
        raise ConfigError(
            f"{gateway!r} is not a flow switch of the network at {controller[0]}:{controller[1]}"
        )
    if not switch["connected"] and gateway_address is None:
        # Its address reaches us in Welcome only if the controller knows it.
        raise ScaffoldError(f"gateway {gateway!r} is not connected to the controller yet")
    if any(h["name"] == name and h["alive"] for h in status["hosts"]) or any(
        s["name"] == name for s in status["switches"]
    ):
        raise ConfigError(f"the network already has a live node called {name!r}")
    book = AddressBook()
    if gateway_address is not None:
        book.add(gateway, gateway_address)
    if bind is None:
        bind = (local_address_towards(controller if isinstance(controller, tuple) else controller[0]), 0)
    core = HostStack(name, gateway, stream_options=stream_options)
    node = NodeRuntime(
        core, book, links if links is not None else {}, controller, bind=bind, advertise=advertise
    )
    node.stats_interval = stats_interval
    network = JoinedNetwork(controller, node, status)
    host = Host(network, node)
    try:
        await node.start()
        await wait_until(lambda: core.registered, timeout, f"{name} to register", interval=POLL)
    except BaseException:
        await host.close()
        raise
    network.host_names[core.host_id] = name
    return host
