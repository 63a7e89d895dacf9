"""Joining a running network as a host, from another process or another machine.

``await join(name="me", state=".scaffold/state.json")`` (or ``gateway=..., controller=...``)
starts a host stack with its own UDP socket and its own ``AddressBook``, registers it with the
network's controller through the chosen gateway flow switch, and returns a ``JoinedHost``:
the same application API as ``scaffold.Host`` (``start_server``, ``open_connection``,
``datagram_endpoint``). The gateway learns the host's address from the controller (the host
announces it in ``Hello``); the host learns the gateway's from ``Welcome``.

What ``Host`` asks of its network (its DC, Host ID -> name, "wait until the object switches
know my replica") is answered by ``RemoteNetwork`` over the controller's admin port
(``status`` and ``counters``), since nothing of the network lives in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..core.host import HostStack
from ..deploy.state_file import DEFAULT_STATE, load_state
from ..errors import ConfigError, ScaffoldError, UsageError
from ..ids import ObjectId
from ..runtime import admin
from ..runtime.aio import AddressBook, EmuLink, NodeRuntime
from ..transport import StreamOptions
from .host import Host

if TYPE_CHECKING:
    from ..runtime.aio import EmbeddedNetwork

__all__ = ["JoinedHost", "RemoteNetwork", "join", "local_address_towards"]

Address = tuple[str, int]
POLL = 0.02


class _RemoteTopology:
    """The part of ``Topology`` a ``Host`` uses: which DC a node is in."""

    def __init__(self, remote: RemoteNetwork) -> None:
        self._remote = remote

    def dc_of(self, node: str) -> str:
        dc = self._remote.node_dc.get(node)
        if dc is None:
            raise ConfigError(f"no node named {node!r} in the joined network")
        return dc


class _RemoteControllerCore:
    """The part of ``Controller`` a ``Host`` uses: Host ID -> name."""

    def __init__(self, remote: RemoteNetwork) -> None:
        self._remote = remote

    def host_name(self, host_id: int) -> str | None:
        return self._remote.host_name(host_id)


class _RemoteController:
    def __init__(self, remote: RemoteNetwork) -> None:
        self.core = _RemoteControllerCore(remote)


class RemoteNetwork:
    """A running network seen from outside, through its controller's admin port."""

    def __init__(self, controller: Address, status: dict[str, Any]) -> None:
        self.controller_address = controller
        self.topology = _RemoteTopology(self)
        self.controller = _RemoteController(self)
        self.node_dc: dict[str, str] = {}
        self.host_names: dict[int, str] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._learn(status)

    def _learn(self, status: dict[str, Any]) -> None:
        for switch in status.get("switches", []):
            self.node_dc[str(switch["name"])] = str(switch["dc"])
        for host in status.get("hosts", []):
            self.node_dc[str(host["name"])] = str(host["dc"])
            self.host_names[int(host["host_id"])] = str(host["name"])

    async def status(self) -> dict[str, Any]:
        """The controller's ``status`` (and what it says is remembered)."""
        result: dict[str, Any] = await admin.call(self.controller_address, "status")
        self._learn(result)
        return result

    def host_name(self, host_id: int) -> str | None:
        name = self.host_names.get(host_id)
        if name is None and host_id and (self._refreshing is None or self._refreshing.done()):
            # Learn it for next time; a report asking now gets None ("unknown").
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return name

    async def _refresh(self) -> None:
        with contextlib.suppress(Exception):
            await self.status()

    async def wait_for_object(self, obj: ObjectId, host: str | None = None, timeout: float = 5.0) -> None:
        """Wait until the controller registered ``obj`` (on ``host``, if given) and every
        connected object switch reported applying the tables that include it.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = "obj:" + obj.raw.hex()
        while True:
            status = await self.status()
            entry = next((o for o in status["objects"] if o["object"] == key), None)
            if entry is not None and any(
                (host is None or r["host"] == host) and r["alive"] for r in entry["replicas"]
            ):
                break
            if loop.time() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout:.1f} s waiting for the controller to register {obj}"
                )
            await asyncio.sleep(POLL)
        targets = {
            s["name"]: s["version"]
            for s in status["switches"]
            if s["role"] == "object-switch" and s["connected"]
        }
        while True:
            counters = await admin.call(self.controller_address, "counters")
            if all(counters.get(name, {}).get("version", 0) >= version for name, version in targets.items()):
                return
            if loop.time() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout:.1f} s waiting for object switches to learn {obj}"
                )
            await asyncio.sleep(POLL)

    def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()


class JoinedHost(Host):
    """A ``Host`` whose network runs elsewhere. Close it with ``await host.close()`` or use
    ``async with``."""

    def __init__(self, remote: RemoteNetwork, node: NodeRuntime) -> None:
        remote.node_dc.setdefault(node.name, remote.node_dc.get(cast(HostStack, node.core).gateway, ""))
        # ``Host`` only uses the attributes ``RemoteNetwork`` provides (see the module docstring).
        super().__init__(cast("EmbeddedNetwork", remote), node)
        self.remote = remote

    async def close(self) -> None:
        """Leave the network: close the socket and the control connection (the controller
        then marks this host dead and withdraws its replicas)."""
        await self.node.close()
        self.remote.close()

    async def __aenter__(self) -> JoinedHost:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def local_address_towards(address: Address) -> str:
    """The local IP the kernel would use to reach ``address`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(address)
        ip: str = probe.getsockname()[0]
        return ip


async def join(
    name: str,
    *,
    gateway: str | None = None,
    controller: Address | None = None,
    state: str | Path | None = None,
    bind: Address | None = None,
    advertise: str | None = None,
    timeout: float = 10.0,
    stream_options: StreamOptions | None = None,
    links: dict[tuple[str, str], EmuLink] | None = None,
    stats_interval: float | None = None,
) -> JoinedHost:
    """Join a running network as host ``name`` and return its application handle.

    Give either ``state`` (a state file written by ``scaffold up``; the default
    ``./.scaffold/state.json`` when neither is given) or ``controller`` (its address) with
    ``gateway`` (a flow switch's name). ``bind`` is the local UDP address (default: the
    address the kernel uses towards the controller, any port); ``advertise`` the IP the
    gateway should send to, when ``bind`` is a wildcard. ``links`` sets the egress link
    emulation (keys ``(name, peer)``); with ``stats_interval`` the host reports its counters
    to the controller that often.

    Raises:
        ConfigError: no such gateway, no state file, or the name is taken by a live host.
        ScaffoldError: the controller cannot be reached, or the gateway is not connected to it
            yet (worth retrying).
        TimeoutError: the host was not registered within ``timeout`` seconds.
    """
    book = AddressBook()
    if controller is None:
        net = load_state(state if state is not None else DEFAULT_STATE)
        controller = net.controller
        if gateway is None:
            gateway = next((n.name for n in net.nodes.values() if n.role == "flow-switch"), None)
        if gateway is not None and gateway in net.nodes and net.nodes[gateway].address is not None:
            book.add(gateway, net.nodes[gateway].address)  # type: ignore[arg-type]
        if bind is None and net.mode == "netns":
            bind = (net.access_ip, 0)
    if gateway is None:
        raise UsageError("join needs the name of a gateway flow switch")
    status: dict[str, Any] = await admin.call(controller, "status", timeout=timeout)
    switch = next((s for s in status["switches"] if s["name"] == gateway), None)
    if switch is None or switch["role"] != "flow-switch":
        raise ConfigError(
            f"{gateway!r} is not a flow switch of the network at {controller[0]}:{controller[1]}"
        )
    if not switch["connected"] and gateway not in book.address:
        # Its address reaches us in Welcome only if the controller knows it.
        raise ScaffoldError(f"gateway {gateway!r} is not connected to the controller yet")
    if any(h["name"] == name and h["alive"] for h in status["hosts"]) or any(
        s["name"] == name for s in status["switches"]
    ):
        raise ConfigError(f"the network already has a live node called {name!r}")
    if bind is None:
        bind = (local_address_towards(controller), 0)
    remote = RemoteNetwork(controller, status)
    core = HostStack(name, gateway, stream_options=stream_options)
    node = NodeRuntime(
        core, book, links if links is not None else {}, controller, bind=bind, advertise=advertise
    )
    node.stats_interval = stats_interval
    host = JoinedHost(remote, node)
    try:
        await node.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not core.registered:
            if loop.time() > deadline:
                raise TimeoutError(f"{name} was not registered within {timeout:.1f} s")
            await asyncio.sleep(POLL)
    except BaseException:
        await host.close()
        raise
    remote.host_names[core.host_id] = name
    return host
