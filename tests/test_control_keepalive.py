"""Control connections of live nodes outlast the controller's idle timeout (docs/protocol.md
§6.6): every node, hosts included, keeps its connection alive; only a silent peer is cut.

A host's liveness goes to its gateway (§6.2), so before the keepalive covered hosts a host
that bound nothing new was cut after 30 s of quiet control, declared dead ("disconnected") and
its replicas left the tables until it registered again: clients of a long test on a loaded
machine got "no replica registered".

A keepalive is an empty frame (``KEEPALIVE_FRAME``): the controller reads it and handles
nothing (no record to decode or dispatch, nothing to flush). Hosts, which are many, get a
longer idle timeout than switches (``host_idle_timeout``), announced in ``Welcome``; they keep
alive every third of it.
"""

from __future__ import annotations

import asyncio

from scaffold.core.topology import make_topology
from scaffold.runtime.aio import ConnectionLimits, EmbeddedNetwork, run, wait_until
from scaffold.wire import control

#: the controller's idle timeout: nodes keep alive every third of it, so a stall of up to
#: two thirds of it on a loaded machine is tolerated
IDLE = 2.0
#: a registered host's
HOST_IDLE = 2 * IDLE


def test_a_keepalive_frame_is_no_record() -> None:
    decoder = control.FrameDecoder()
    heartbeat = control.frame(control.Heartbeat("east-h1", 1))
    wire = control.KEEPALIVE_FRAME * 3 + heartbeat + control.KEEPALIVE_FRAME
    assert decoder.feed(wire[:5]) == [] and decoder.partial  # a keepalive, then a frame begun
    assert decoder.feed(wire[5:]) == [control.Heartbeat("east-h1", 1)]
    assert not decoder.partial


def test_live_hosts_and_switches_outlast_the_idle_timeouts_and_silent_peers_do_not() -> None:
    async def main() -> None:
        limits = ConnectionLimits(idle_timeout=IDLE, host_idle_timeout=HOST_IDLE)
        async with EmbeddedNetwork(make_topology(2, 2), tls=False, limits=limits) as net:
            controller = net.controller
            hosts = controller.core.registry.hosts
            real = set(hosts)
            assert real and all(net.nodes[name].keepalive_interval() == HOST_IDLE / 3 for name in real)
            # Two peers that say nothing more, connected after every node's last record but
            # its keepalives: one that never says Hello is cut after IDLE, a host after
            # HOST_IDLE -- and a node without keepalives would have been cut before them.
            silent = await asyncio.open_connection(*controller.address)
            quiet_host = await asyncio.open_connection(*controller.address)
            hello = control.Hello("quiet-h1", "host", gateway="dc1-fs1", address=("127.0.0.1", 9))
            quiet_host[1].write(control.frame(hello))
            decoder = control.FrameDecoder(control.MAX_FRAME_FROM_CONTROLLER)
            welcome = decoder.feed(await quiet_host[0].read(65536))
            assert [m.idle_timeout for m in welcome if isinstance(m, control.Welcome)] == [HOST_IDLE]
            started = asyncio.get_running_loop().time()
            try:
                await wait_until(silent[0].at_eof, 10 * IDLE, "the silent peer cut")
                assert controller.stats["idle-timeout"] == 1
                await wait_until(quiet_host[0].at_eof, 10 * HOST_IDLE, "the quiet host cut")
                assert asyncio.get_running_loop().time() - started >= HOST_IDLE
            finally:
                silent[1].close()
                quiet_host[1].close()
            assert controller.stats["idle-timeout"] == 2
            down = [(e.target, e.detail) for e in controller.core.events if e.kind == "host-down"]
            assert down == [("quiet-h1", "disconnected")]
            assert all(hosts[name].alive for name in real)

    run(main())
