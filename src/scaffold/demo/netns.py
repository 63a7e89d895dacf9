"""The namespace runtime's side of the demo scenario: churn through the controller daemon,
a veth set down and SIGKILL (``NetnsScenarioNetwork``), the controller leader's kill, and
waiting for the daemons' counters (docs/deployment.md, docs/architecture.md §6)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..api.host import Host
from ..core.controller import Command
from ..core.controller.commands import Counters, Status
from ..core.topology import Topology
from ..deploy.netns.network import NetnsNetwork
from ..errors import ScaffoldError
from ..runtime import admin
from ..runtime.aio import Address

__all__ = ["NETNS_CLIENTS", "NetnsScenarioNetwork", "all_reported", "kill_leader", "switch_entries"]

#: the scenario's clients: joined hosts, each in its own namespace, in this process
NETNS_CLIENTS = ("north-h1", "east-h3", "west-h2", "north-h2", "east-h4", "west-h3")


class NetnsScenarioNetwork:
    """``ScenarioNetwork`` over a ``NetnsNetwork``: churn commands go to the controller
    daemon, a link fails by ``ip link set down`` (the border switches report the port), a
    server fails by SIGKILL."""

    def __init__(self, net: NetnsNetwork, clients: dict[str, Host]) -> None:
        self.net = net
        self.clients = clients

    @property
    def topology(self) -> Topology:
        return self.net.topology

    def host(self, name: str) -> Host:
        return self.clients[name]

    async def command(self, command: Command) -> Any:
        return await admin.call(self.net.controller, command, credentials=self.net.operator)

    async def cut_link(self, dc_a: str, dc_b: str) -> None:
        await asyncio.to_thread(self.net.link_down, dc_a, dc_b)

    async def kill_host(self, name: str) -> None:
        await asyncio.to_thread(self.net.kill, name)

    async def controller_hosts(self) -> dict[str, str]:
        status = await admin.call(self.net.controller, Status(), credentials=self.net.operator)
        return {h["name"]: h["dc"] for h in status["hosts"]}


async def all_reported(
    net: NetnsNetwork, nodes: dict[str, Address], clients: dict[str, Host], sent: Counter[str]
) -> bool:
    """Whether the controller holds counters of every one of ``nodes`` still alive (the
    demo's own client hosts excepted: their counters are read in-process), each with at
    least as many drops as the junk ``sent`` to it."""
    try:
        counters = await admin.call(net.controller, Counters(), timeout=2.0, credentials=net.operator)
    except ScaffoldError:
        return False
    return all(
        name in counters and sum(counters[name].get("drops", {}).values()) >= sent[name]
        for name in nodes
        if name not in clients and net.alive(name)
    )


async def kill_leader(
    net: NetnsNetwork, after: float, say: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """SIGKILL the leading controller replica ``after`` seconds from now; how long until
    another one led (asked of the survivors every 50 ms), and the nodes' counters as the dead
    leader held them (the only ones of a node killed before it reported to the new leader)."""
    await asyncio.sleep(after)
    status = await admin.call(net.controller, Status(), credentials=net.operator)
    counters = await admin.call(net.controller, Counters(), credentials=net.operator)
    leader = next(r for r in status["controllers"] if r["leader"])
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    await asyncio.to_thread(net.kill, leader["name"])  # it waits for the process to be gone
    survivors = [tuple(r["address"]) for r in status["controllers"] if not r["leader"]]
    say(f"controller {leader['name']} (leading) SIGKILLed")
    while loop.time() - killed_at < 10.0:
        try:
            now = await admin.call(survivors, Status(), timeout=0.5, credentials=net.operator)
        except ScaffoldError:
            await asyncio.sleep(0.05)
            continue
        new = next((r["name"] for r in now["controllers"] if r["leader"]), None)
        if new is not None and new != leader["name"]:
            took = round(loop.time() - killed_at, 3)
            say(f"controller {new} leads, {took} s after the kill")
            return {"killed": leader["name"], "leader": new, "new_leader_after_s": took}, counters
        await asyncio.sleep(0.05)
    return {"killed": leader["name"], "leader": None, "new_leader_after_s": None}, counters


async def switch_entries(net: NetnsNetwork) -> dict[str, int]:
    """Forwarding-table sizes the switch processes last reported."""
    counters: dict[str, Any] = (await net.status())["counters"]
    return {
        name: int(c.get("table_entries", 0))
        for name, c in counters.items()
        if c.get("role") in ("flow-switch", "object-switch")
    }
