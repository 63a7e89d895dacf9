"""Joining the network that ``scaffold up`` runs, found through its state file.

``scaffold.join`` takes explicit addresses (a controller, a gateway) and credentials. A
network started by ``scaffold up`` writes them to its state file (``state_file.py``), and in
``--netns`` mode also the one local address that reaches its namespaces, and keeps its CA in
the credential store beside it; ``join_from_state`` reads them there and issues the joining
host its certificate, so ``scaffold ingress``, ``scaffold publish`` and programs on the same
machine (and user) join with a name alone (docs/deployment.md §3).
"""

from __future__ import annotations

import os
from typing import Any

from ..api.host import Host
from ..api.join import join
from ..errors import ConfigError
from .state_file import DEFAULT_STATE, load_state

__all__ = ["join_from_state"]


async def join_from_state(
    name: str,
    *,
    state: str | os.PathLike[str] | None = None,
    gateway: str | None = None,
    **options: Any,
) -> Host:
    """Join the network of state file ``state`` (default ``./.scaffold/state.json``) as host
    ``name``, attached to ``gateway`` (default: the network's first flow switch). Other
    ``options`` go to ``scaffold.join``.

    The host gets a certificate for ``name`` from the network's CA (issued now, or the one
    issued before), and uses the operator's credentials for the network views.

    Raises:
        ConfigError: no state file, no such flow switch, a bad name, or the name is taken by
            a live node.
        ScaffoldError, TimeoutError: as ``scaffold.join``.
    """
    net = load_state(state if state is not None else DEFAULT_STATE)
    store = net.credential_store()
    if gateway is None:
        gateway = next((n.name for n in net.nodes.values() if n.role == "flow-switch"), None)
        if gateway is None:
            raise ConfigError(f"network {net.name!r} has no flow switch to attach to")
    node = net.nodes.get(gateway)
    if net.mode == "netns" and options.get("bind") is None:
        # The namespaces are reached from here through the access veth only.
        options["bind"] = (net.access_ip, 0)
    return await join(
        name,
        gateway=gateway,
        controller=net.controller,
        gateway_address=node.address if node is not None else None,
        credentials=store.node(name, "host"),
        operator=store.operator(),
        **options,
    )
