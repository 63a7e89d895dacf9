"""Joining a running network as a host, from another process or another machine.

``await join("me", gateway="dc1-fs1", controller=("10.0.0.1", 7400), credentials="creds/me")``
starts a host stack with its own UDP socket and its own ``AddressBook``, registers it with the
network's controller through the chosen gateway flow switch -- over mutual TLS, with the host
certificate in the credentials directory, which must name ``me`` -- and returns a ``Host``:
the same application API as a ``Testbed``'s hosts. The gateway learns the host's address from
the controller (the host announces it in ``Hello``); the host learns the gateway's from
``Welcome``, unless the caller already knows it (``gateway_address``).

Nothing of the network lives in this process, so what a ``Host`` asks of its network
(``HostNetwork``: a node's DC, Host ID -> name, "wait until the object switches know my
replica") is answered by ``JoinedNetwork`` over the controller's admin port (``status`` and
``counters``), which takes an operator's credentials (``operator=``). Without them a joined
host still works, but knows no other node's name or DC and ``start_server`` returns as soon
as the ``Bind`` is sent. Finding the network (and issuing credentials) through the state file
of ``scaffold up`` is a deployment matter: ``scaffold.deploy.join_from_state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

from ..core.controller.commands import Counters, Status
from ..core.host import HostStack
from ..errors import ConfigError, ScaffoldError, UsageError
from ..ids import ObjectId
from ..runtime import admin
from ..runtime.aio import Address, AddressBook, EmuLink, NodeRuntime, wait_until
from ..runtime.tls import Credentials
from ..transport import StreamOptions
from .host import Host

__all__ = ["JoinedNetwork", "join", "local_address_towards"]

#: seconds between two admin calls while waiting for the controller
POLL = 0.02


class JoinedNetwork:
    """A running network seen by one host that joined it from this process: the controller's
    admin port answers what its ``Host`` asks (``HostNetwork``)."""

    def __init__(
        self,
        controller: Address | list[Address],
        node: NodeRuntime[HostStack],
        status: dict[str, Any],
        operator: Credentials | None = None,
    ) -> None:
        self.controller_address = controller
        #: an operator's credentials, for the network views (None: none of them)
        self.operator = operator
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
        result: dict[str, Any] = await admin.call(
            self.controller_address, Status(), credentials=self.operator
        )
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
        if self.operator is None and self.node.credentials is not None:
            return name
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
        if self.operator is None and self.node.credentials is not None:
            return  # nothing to ask the controller with: the Bind is on its way
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
            counters = await admin.call(self.controller_address, Counters(), credentials=self.operator)
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


def _credentials(value: Credentials | str | os.PathLike[str] | None) -> Credentials | None:
    return value if value is None or isinstance(value, Credentials) else Credentials(value)


async def join(
    name: str,
    *,
    gateway: str,
    controller: Address | list[Address],
    credentials: Credentials | str | os.PathLike[str] | None = None,
    operator: Credentials | str | os.PathLike[str] | None = None,
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

    ``credentials`` is the host's credentials directory (a host certificate for ``name``;
    None only for a controller without TLS); ``operator`` an operator's, for the network
    views (``JoinedNetwork``) and the checks below before joining. ``gateway_address`` is
    the gateway's data-plane address when it is known ahead (else it comes in ``Welcome``).
    ``bind`` is the local UDP address (default: the address the kernel uses towards the
    controller, any port); ``advertise`` the IP the gateway should send to, when ``bind`` is
    a wildcard. ``links`` sets the egress link emulation (keys ``(name, peer)``); with
    ``stats_interval`` the host reports its counters to the controller that often.

    Raises:
        ConfigError: ``gateway`` is not a flow switch of the network, the name is taken by
            a live node, the credentials are not a host's called ``name``, or the controller
            refused the host (the reason says why).
        ScaffoldError: the controller cannot be reached, or the gateway is not connected to it
            yet (worth retrying).
        TimeoutError: the host was not registered within ``timeout`` seconds.
    """
    own = _credentials(credentials)
    views = _credentials(operator)
    first = controller if isinstance(controller, tuple) else controller[0]
    if own is not None and (own.name != name or own.role != "host"):
        raise ConfigError(
            f"the credentials in {own.directory} are {own.role} {own.name!r}'s, not host {name!r}'s"
        )
    status: dict[str, Any] = {}
    if views is not None or own is None:
        status = await admin.call(controller, Status(), timeout=timeout, credentials=views)
        _check_joinable(status, name, gateway, first, gateway_address)
    book = AddressBook()
    if gateway_address is not None:
        book.add(gateway, gateway_address)
    if bind is None:
        bind = (local_address_towards(first), 0)
    core = HostStack(name, gateway, stream_options=stream_options)
    node = NodeRuntime(
        core,
        book,
        links if links is not None else {},
        controller,
        bind=bind,
        advertise=advertise,
        credentials=own,
    )
    node.stats_interval = stats_interval
    network = JoinedNetwork(controller, node, status, operator=views)
    host = Host(network, node)
    try:
        try:
            await node.start()
        except OSError as exc:
            raise ScaffoldError(f"cannot reach the controller at {first[0]}:{first[1]}: {exc}") from None
        await wait_until(
            lambda: core.registered or node.refused is not None, timeout, f"{name} to register", interval=POLL
        )
        if node.refused is not None:
            raise ConfigError(f"the controller refused host {name!r}: {node.refused}")
        if gateway not in book.address:
            # Welcome had no address for it: the gateway has not connected yet.
            raise ScaffoldError(f"gateway {gateway!r} is not connected to the controller yet")
    except BaseException:
        await host.close()
        raise
    network.host_names[core.host_id] = name
    return host


def _check_joinable(
    status: dict[str, Any], name: str, gateway: str, controller: Address, gateway_address: Address | None
) -> None:
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
