"""A controller that dies and comes back: flows go on, state survives (aio runtime)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
from pathlib import Path

import scaffold
from scaffold.core.controller.commands import Link, Status
from scaffold.runtime.aio import run, wait_until
from scaffold.runtime.sqlite_store import SqliteStore


async def echo(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_flows_survive_a_controller_restart_and_state_comes_back(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "controller.sqlite3")

    async def main() -> None:
        async with scaffold.Testbed(datacenters=2, hosts_per_datacenter=2, store=store) as net:
            await net.host("dc1-h1").start_server(echo, "echo")
            reader, writer = await net.host("dc2-h2").open_connection("echo")
            ids_before = {h.name: h.stack.host_id for h in net.hosts}
            sent = bytearray()
            received = bytearray()

            async def stream_for(seconds: float) -> None:
                loop = asyncio.get_running_loop()
                until = loop.time() + seconds
                while loop.time() < until:
                    chunk = os.urandom(4096)
                    writer.write(chunk)
                    sent.extend(chunk)
                    await writer.drain()
                    received.extend(await reader.readexactly(len(chunk)))

            await stream_for(0.3)
            await net.network.stop_controller()
            await stream_for(1.5)  # longer than the heartbeat deadline: nobody may be declared dead
            await net.network.start_controller()
            nodes = list(net.network.nodes.values())
            await wait_until(
                lambda: all(n.stats["controller-reconnected"] >= 1 for n in nodes),
                10,
                "every node to reconnect",
            )
            await stream_for(0.5)
            assert hashlib.sha256(received).digest() == hashlib.sha256(sent).digest()
            ctl = net.controller
            assert {name: r.host_id for name, r in ctl.hosts.items()} == ids_before
            assert all(r.alive for r in ctl.hosts.values())
            assert any(ctl.objects.values())  # the replica of "echo" is known again
            # and the restarted controller serves new registrations and connections
            await echo_served_and_reached(net, "dc2-h1", "dc1-h2", "echo2", b"after restart")

    run(main())


def test_nodes_reconnect_after_the_controller_resets_their_connections() -> None:
    """A controller killed while a node's reports wait unread in its socket resets that
    connection (RST, not FIN): the node's read fails rather than ending, and it must reconnect
    as after an EOF -- else it never reports to the next leader (netns demo, leader SIGKILLed)."""

    async def main() -> None:
        async with scaffold.Testbed(datacenters=2, hosts_per_datacenter=1) as net:
            ctl = net.network.controller
            nodes = list(net.network.nodes.values())
            await wait_until(lambda: set(ctl._writers) == {n.name for n in nodes}, 10, "every node connected")
            for writer in list(ctl._writers.values()):
                # linger 0: closing sends RST, as the kernel does for a dead process's socket
                # with data unread
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            await wait_until(
                lambda: all(n.stats["controller-reconnected"] >= 1 for n in nodes),
                10,
                "every node to reconnect",
            )
            assert all(n.stats["controller-lost"] >= 1 for n in nodes)
            # and the control plane works again: a new object is served and reached
            await echo_served_and_reached(net, "dc1-h1", "dc2-h1", "echo", b"after the reset")

    run(main())


async def echo_served_and_reached(
    net: scaffold.Testbed, server: str, client: str, name: str, payload: bytes
) -> None:
    """``server`` serves ``name`` (an echo), and ``payload`` sent from ``client`` comes back."""
    await net.host(server).start_server(echo, name)
    reader, writer = await net.host(client).open_connection(name)
    writer.write(payload)
    writer.write_eof()
    assert await reader.read(-1) == payload


def test_admin_commands_over_the_control_port() -> None:
    from scaffold.runtime.admin import AdminError, call, call_raw

    async def main() -> None:
        async with scaffold.Testbed(datacenters=3, hosts_per_datacenter=1) as net:
            await net.host("dc1-h1").start_server(echo, "echo")
            address = net.network.controller.address
            operator = net.network.operator_credentials
            status = await call(address, Status(), credentials=operator)
            assert {h["name"] for h in status["hosts"]} == {"dc1-h1", "dc2-h1", "dc3-h1"}
            assert status["objects"][0]["name"] == "echo"
            assert await call(address, Link("dc1", "dc2", False), credentials=operator) == {
                "link": "dc1-dc2",
                "up": False,
            }
            status = await call(address, Status(), credentials=operator)
            assert [l["up"] for l in status["links"] if {l["a"], l["b"]} == {"dc1", "dc2"}] == [False]
            try:
                await call(address, Link("dc1", "nowhere", False), credentials=operator)
            except AdminError as exc:
                assert "no backbone link" in str(exc)
            else:
                raise AssertionError("a bad link was accepted")
            try:
                await call_raw(address, "frobnicate", {}, credentials=operator)
            except AdminError as exc:
                assert "unknown command" in str(exc)
            else:
                raise AssertionError("an unknown command was accepted")

    run(main())
