"""The application API on the aio runtime: real UDP sockets over loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import TypedDict, Unpack

import pytest

import scaffold
from scaffold.api.streams import StreamProtocol
from scaffold.runtime.aio import run, wait_until

Main = Callable[[scaffold.Testbed], Awaitable[None]]


class Options(TypedDict, total=False):
    """The ``scaffold.Testbed`` arguments these tests change."""

    datacenters: int
    hosts_per_datacenter: int
    stream_options: scaffold.StreamOptions


def with_testbed(main: Main, **options: Unpack[Options]) -> None:
    async def go() -> None:
        async with scaffold.Testbed(**options) as net:
            await asyncio.wait_for(main(net), 120)

    run(go())


async def echo(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_hundred_streams_of_one_mib_echo_byte_exact_across_dcs() -> None:
    async def main(net: scaffold.Testbed) -> None:
        server_host = net.host("dc1-h1")
        await server_host.start_server(echo, "echo")
        clients = [h for h in net.hosts if h.dc == "dc2"]

        async def one(i: int) -> bool:
            reader, writer = await clients[i % len(clients)].open_connection("echo")
            payload = os.urandom(1 << 20)

            async def send() -> None:
                for k in range(0, len(payload), 65536):
                    writer.write(payload[k : k + 65536])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            got = await reader.read(-1)
            await sender
            assert writer.get_extra_info("peer_host") == "dc1-h1"
            return hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()

        results = await asyncio.gather(*(one(i) for i in range(100)))
        assert all(results)

    with_testbed(main, datacenters=2, hosts_per_datacenter=3)


def test_slow_reader_bounds_the_senders_memory() -> None:
    send_buffer = 128 * 1024

    async def main(net: scaffold.Testbed) -> None:
        stalled = asyncio.Event()
        received = bytearray()

        async def sleepy(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
            await stalled.wait()
            received.extend(await reader.read(-1))
            writer.close()

        await net.host("dc1-h1").start_server(sleepy, "sleepy")
        client = net.host("dc2-h1")
        _reader, writer = await client.open_connection("sleepy")
        transport = client.stack.stream(writer.get_extra_info("socket_id"))
        high = writer.transport.get_write_buffer_limits()[1]
        payload = os.urandom(4 << 20)
        peak = {"buffered": 0, "in_flight": 0}
        chunk = 32768

        async def send() -> None:
            for k in range(0, len(payload), chunk):
                writer.write(payload[k : k + chunk])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.0
        while loop.time() < until:  # the reader does not read for 2 s
            peak["buffered"] = max(peak["buffered"], transport.buffered)
            peak["in_flight"] = max(peak["in_flight"], transport.bytes_in_flight)
            await asyncio.sleep(0.01)
        assert not sender.done()
        # What the writer holds: its send buffer, asyncio's high-water mark above it, and at
        # most the one write that drain() made wait -- not the 4 MiB it wants to send.
        assert peak["buffered"] <= send_buffer + high + chunk
        assert peak["in_flight"] <= 256 * 1024  # the receiver's whole buffer, never more
        stalled.set()
        await sender
        await writer.wait_closed()
        assert bytes(received) == payload

    with_testbed(main, stream_options=scaffold.StreamOptions(send_buffer=send_buffer))


def test_object_nobody_serves_fails_fast_with_object_not_found() -> None:
    async def main(net: scaffold.Testbed) -> None:
        # No timeout at all: only the object switch's explicit answer can end the wait
        # with ObjectNotFound (a lost handshake would end in BrokenPathError).
        with pytest.raises(scaffold.ObjectNotFound):
            await net.hosts[0].open_connection("nobody-serves-this", timeout=None)
        endpoint = await net.hosts[0].datagram_endpoint()
        await endpoint.sendto(b"?", "nobody-either")
        with pytest.raises(scaffold.ObjectNotFound):
            await endpoint.recvfrom()

    with_testbed(main)


def test_dead_peer_raises_broken_path_error() -> None:
    async def main(net: scaffold.Testbed) -> None:
        server = net.host("dc1-h1")
        await server.start_server(echo, "echo")
        reader, writer = await net.host("dc2-h1").open_connection("echo")
        writer.write(b"x" * 1000)
        await writer.drain()
        assert len(await reader.readexactly(1000)) == 1000
        await server.node.close()  # the server host dies: socket closed, nothing answers
        writer.write(b"y" * 100_000)
        with pytest.raises(scaffold.BrokenPathError):
            await writer.drain()
            await reader.read(1)

    with_testbed(main, stream_options=scaffold.StreamOptions(min_rto=0.02, max_retries=3, max_rto=0.1))


def test_a_host_that_closes_leaves_the_network_and_its_replica_is_withdrawn() -> None:
    async def main(net: scaffold.Testbed) -> None:
        leaving, staying, client = net.host("dc1-h1"), net.host("dc1-h2"), net.host("dc2-h1")
        await leaving.start_server(echo, "echo")
        await staying.start_server(echo, "echo")
        async with leaving:  # leaves at the end of the block
            assert not leaving.node.closed
        node = leaving.node  # read afresh: mypy holds the attribute at "not closed", asserted above
        assert node.closed
        ctl = net.controller
        await wait_until(lambda: not ctl.hosts["dc1-h1"].alive, 5.0, "dc1-h1 declared dead")
        # the withdrawal went out with the death: once the object switches applied it...
        await net.network.wait_for_object(scaffold.ObjectId.from_name("echo"), "dc1-h2")
        for _ in range(8):  # ...every new flow reaches the replica that stayed (1:1 weights)
            _, writer = await client.open_connection("echo")
            assert writer.get_extra_info("peer_host") == "dc1-h2"
            writer.close()

    with_testbed(main)


def test_misuse_raises_usage_errors() -> None:
    async def main(net: scaffold.Testbed) -> None:
        host = net.hosts[0]
        await host.start_server(echo, "twice")
        with pytest.raises(scaffold.UsageError):
            await host.start_server(echo, "twice")
        _reader, writer = await net.hosts[-1].open_connection("twice")
        with pytest.raises(scaffold.UsageError, match="TLS"):
            await writer.start_tls(ssl.create_default_context())
        writer.write_eof()
        with pytest.raises(RuntimeError):  # as asyncio's transports
            writer.write(b"after eof")
        _reader, writer = await net.hosts[-1].open_connection("twice")
        writer.close()
        writer.write(b"late")  # dropped, as asyncio drops writes to a closed transport
        assert writer.is_closing()
        sock = scaffold.socket(scaffold.SOCK_STREAM, host=host)
        with pytest.raises(scaffold.UsageError):
            sock.connect("twice")  # a blocking call on the network's own loop would deadlock
        with pytest.raises(scaffold.UsageError):
            scaffold.socket(99, host=host)
        assert issubclass(scaffold.UsageError, scaffold.ScaffoldError)
        assert issubclass(scaffold.ObjectNotFound, scaffold.PathError)
        # what networking libraries catch: refused for a name nobody serves, reset for a flow
        assert issubclass(scaffold.ObjectNotFound, ConnectionRefusedError)
        assert issubclass(scaffold.BrokenPathError, ConnectionResetError)

    with_testbed(main)


def test_server_learns_flow_and_host() -> None:
    async def main(net: scaffold.Testbed) -> None:
        seen: dict[str, object] = {}

        async def who(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
            seen.update(
                flow=writer.get_extra_info("flow"),
                host=writer.get_extra_info("host"),
                peer=writer.get_extra_info("peer_host"),
            )
            writer.write(b"hi")
            writer.close()

        await net.host("dc1-h2").start_server(who, "who")
        reader, writer = await net.host("dc2-h3").open_connection("who")
        assert await reader.read(-1) == b"hi"
        assert seen == {"flow": writer.get_extra_info("flow"), "host": "dc1-h2", "peer": "dc2-h3"}

    with_testbed(main)


def test_a_streams_tap_sees_its_bytes_first_and_is_told_of_the_end_once() -> None:
    """``StreamProtocol.tap`` (what the HTTP ingress parses responses with): each chunk
    before the reader, which keeps the ones the tap leaves; None once at the end -- at
    EOF, not again when the connection is then lost."""

    async def main(net: scaffold.Testbed) -> None:
        async def greet(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
            await reader.readexactly(1)
            writer.write(b"hello")
            writer.close()

        await net.host("dc1-h2").start_server(greet, "greet")
        reader, writer = await net.host("dc2-h3").open_connection("greet")
        protocol = writer.transport.get_protocol()
        assert isinstance(protocol, StreamProtocol)
        seen: list[bytes | None] = []

        def tap(data: bytes | None) -> bool:
            seen.append(data)
            return False  # left to the reader

        protocol.tap = tap
        writer.write(b"?")
        assert await asyncio.wait_for(reader.read(), 30) == b"hello"
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 30)
        assert b"".join(d for d in seen if d is not None) == b"hello"
        assert seen[-1] is None and seen.count(None) == 1

    with_testbed(main)


def test_start_server_counts_how_handlers_end_and_closes_their_streams() -> None:
    """A handler that returns, one that raises and one whose client resets the stream: each
    is counted, each stream is closed by the server (the client reads EOF), none is kept."""

    async def main(net: scaffold.Testbed) -> None:
        async def handler(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
            request = await reader.readexactly(4)
            if request == b"fail":
                raise ValueError("refused")
            writer.write(request)
            if request == b"hold":
                await reader.read()  # until the client goes: a reset raises here
            # Neither the handler nor the client closes: the server closes once it returns.

        server = await net.host("dc1-h1").start_server(handler, "counted")
        client = net.host("dc2-h1")
        for request in (b"okay", b"fail"):
            reader, writer = await client.open_connection("counted")
            writer.write(request)
            assert await asyncio.wait_for(reader.read(-1), 30) == (b"" if request == b"fail" else request)
        reader, writer = await client.open_connection("counted")
        writer.write(b"hold")
        assert await asyncio.wait_for(reader.readexactly(4), 30) == b"hold"
        writer.transport.abort()
        await wait_until(lambda: not server.tasks and not server.connections, 30, "every handler ended")
        assert (server.handled, server.failed) == (1, 2)
        assert server.errors == ["ValueError: refused"]

    with_testbed(main)


def test_blocking_socket_api_from_threads() -> None:
    with scaffold.Testbed.threaded(datacenters=2, hosts_per_datacenter=2) as net:
        a, b = net.hosts[0], net.hosts[-1]
        listener = scaffold.socket(scaffold.SOCK_STREAM, host=a)
        listener.bind("echo")
        listener.listen()
        accepted: list[tuple[str, str]] = []

        def serve() -> None:
            conn, peer = listener.accept()
            accepted.append(peer)
            while data := conn.recv(4096):
                conn.sendall(data)
            conn.close()

        thread = threading.Thread(target=serve)
        thread.start()
        with scaffold.socket(scaffold.SOCK_STREAM, host=b) as s:
            s.settimeout(10)
            s.connect("echo")
            s.sendall(b"over blocking sockets")
            s.shutdown(scaffold.SHUT_WR)
            out = b""
            while data := s.recv(7):
                out += data
            assert out == b"over blocking sockets"
        thread.join(10)
        assert accepted and accepted[0][0] == b.name

        udp_server = scaffold.socket(scaffold.SOCK_DGRAM, host=a)
        udp_server.bind("udp-echo")
        client = scaffold.socket(scaffold.SOCK_DGRAM, host=b)
        client.settimeout(5)
        client.sendto(b"ping", "udp-echo")
        data, peer = udp_server.recvfrom(100)
        udp_server.sendto(data.upper(), peer)
        assert client.recvfrom(100)[0] == b"PING"

        idle = scaffold.socket(scaffold.SOCK_DGRAM, host=b)
        idle.bind("silence")
        idle.settimeout(0.2)
        with pytest.raises(TimeoutError):
            idle.recvfrom(10)
        with pytest.raises(scaffold.ObjectNotFound):
            scaffold.socket(scaffold.SOCK_STREAM, host=b).connect("missing")
        for sock in (listener, udp_server, client, idle):
            sock.close()


def test_start_server_sets_the_objects_policy_and_its_replicas_capacity() -> None:
    async def main(net: scaffold.Testbed) -> None:
        await net.host("dc1-h1").start_server(echo, "local-echo", policy="weighted", capacity=25.0)
        ctl = net.controller.core
        key = scaffold.ObjectId.from_name("local-echo").raw.hex()
        assert ctl.registry.policies[key] == "weighted"
        assert ctl.registry.capacities[key] == {"dc1-h1": 25.0}
        with pytest.raises(scaffold.UsageError):
            await net.host("dc1-h2").start_server(echo, "local-echo", policy="fastest")

    with_testbed(main)
