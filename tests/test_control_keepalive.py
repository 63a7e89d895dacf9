"""Control connections of live nodes outlast the controller's idle timeout (docs/protocol.md
§6.6): every node, hosts included, sends a keepalive ``Heartbeat``; only a silent peer is cut.

A host's liveness goes to its gateway (§6.2), so before the keepalive covered hosts a host
that bound nothing new was cut after 30 s of quiet control, declared dead ("disconnected") and
its replicas left the tables until it registered again: clients of a long test on a loaded
machine got "no replica registered".
"""

from __future__ import annotations

import asyncio

from scaffold.core.topology import make_topology
from scaffold.runtime.aio import ConnectionLimits, EmbeddedNetwork, run, wait_until

#: the controller's idle timeout: nodes keep alive every third of it, so a stall of up to
#: two thirds of it on a loaded machine is tolerated
IDLE = 2.0


def test_live_hosts_and_switches_outlast_the_idle_timeout_and_a_silent_peer_does_not() -> None:
    async def main() -> None:
        limits = ConnectionLimits(idle_timeout=IDLE)
        async with EmbeddedNetwork(make_topology(2, 2), tls=False, limits=limits) as net:
            controller = net.controller
            # A peer that never says anything, connected after every node's last record but
            # its keepalives: it is cut after IDLE, and a node without them would have been
            # cut before it.
            reader, silent = await asyncio.open_connection(*controller.address)
            try:
                await wait_until(reader.at_eof, 10 * IDLE, "the silent peer cut")
            finally:
                silent.close()
            assert controller.stats["idle-timeout"] == 1
            down = [(e.target, e.detail) for e in controller.core.events if e.kind == "host-down"]
            assert down == []
            hosts = controller.core.registry.hosts
            assert hosts and all(record.alive for record in hosts.values())

    run(main())
