"""The drop-in contract: asyncio protocols on SCAFFOLD transports, and ``scaffold.names``
(docs/architecture.md §7). Third-party libraries run in ``test_dropin_libraries.py``."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable

import pytest

import scaffold
from scaffold.api.names import ADDRESS_BLOCK
from scaffold.runtime.aio import run, wait_until

Main = Callable[[scaffold.Testbed], Awaitable[None]]
LOOP_HOOKS = ("getaddrinfo", "create_connection", "sock_connect", "create_server", "start_tls")


def with_testbed(main: Main) -> None:
    async def go() -> None:
        async with scaffold.Testbed(datacenters=2, hosts_per_datacenter=2) as net:
            await asyncio.wait_for(main(net), 60)

    run(go())


class Recorder(asyncio.Protocol):
    """Records every callback, in order."""

    def __init__(self, *, pause_reading: bool = False, keep_open: bool = False) -> None:
        self.calls: list[str] = []
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pause_on_connect = pause_reading
        self.keep_open = keep_open
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def _note(self, call: str) -> None:
        if not self.calls or self.calls[-1] != call:
            self.calls.append(call)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._note("made")
        if self.pause_on_connect:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self._note("data")

    def eof_received(self) -> bool:
        self._note("eof")
        return self.keep_open

    def pause_writing(self) -> None:
        self._note("pause")

    def resume_writing(self) -> None:
        self._note("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self._note("lost")
        self.lost.set_result(exc)


def test_an_asyncio_protocol_runs_on_a_stream_as_on_tcp() -> None:
    async def main(net: scaffold.Testbed) -> None:
        a, b = net.host("dc1-h1"), net.host("dc2-h1")
        served: list[Recorder] = []

        def serving() -> Recorder:
            served.append(Recorder(pause_reading=True, keep_open=True))
            return served[-1]

        server = await a.create_server(serving, "proto")
        assert isinstance(server, asyncio.AbstractServer) and server.is_serving()
        transport, client = await scaffold.create_connection(Recorder, "proto", host=b)
        assert client.calls == ["made"]  # before create_connection returned, as asyncio
        assert transport.get_extra_info("peername") == ("proto", 0)
        socket_id = transport.get_extra_info("socket_id")
        assert transport.get_extra_info("sockname") == (b.name, socket_id)
        assert transport.get_extra_info("peer_host") == a.name
        assert transport.get_extra_info("object") == str(scaffold.ObjectId.from_name("proto"))
        assert transport.get_extra_info("sslcontext") is None
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # what redis-py does
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.family == socket.AF_INET and sock.fileno() == -1

        # Flow control end to end: the server does not read, so its window closes, the
        # client's buffer fills past the high-water mark and its protocol is paused...
        transport.set_write_buffer_limits(high=0)
        payload = bytes(range(256)) * 4096  # 1 MiB
        transport.write(payload)
        await wait_until(lambda: bool(served), 5, "the server's protocol")
        peer = served[0]
        assert peer.transport is not None
        assert peer.transport.get_extra_info("peername") == (b.name, socket_id)
        assert peer.transport.get_extra_info("sockname") == ("proto", 0)
        assert client.calls == ["made", "pause"] and transport.get_write_buffer_size() > 0
        assert not peer.transport.is_reading() and not peer.data
        # ...and resumed once the server reads again.
        peer.transport.resume_reading()
        await wait_until(lambda: len(peer.data) == len(payload), 20, "every byte")
        await wait_until(lambda: client.calls == ["made", "pause", "resume"], 5, "resume_writing")
        assert bytes(peer.data) == payload

        # EOF: the server keeps its side open (eof_received true), answers and closes; the
        # client's protocol returns false from eof_received, so its transport closes.
        transport.write_eof()
        await wait_until(lambda: peer.calls[-1] == "eof", 5, "the server's eof_received")
        peer.transport.write(b"bye")
        peer.transport.close()
        assert await asyncio.wait_for(client.lost, 5) is None
        assert client.calls[-3:] == ["data", "eof", "lost"] and client.data == b"bye"
        assert await asyncio.wait_for(peer.lost, 5) is None and transport.is_closing()

        # abort() resets: the peer's protocol loses the connection with BrokenPathError.
        transport, client = await scaffold.create_connection(Recorder, "proto", host=b)
        await wait_until(lambda: len(served) == 2, 5, "the second connection")
        transport.abort()
        assert await asyncio.wait_for(client.lost, 5) is None
        assert isinstance(await asyncio.wait_for(served[1].lost, 5), scaffold.BrokenPathError)
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
        assert not server.is_serving()

    with_testbed(main)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_names_reach_objects_and_leave_every_other_destination_alone() -> None:
    async def main(net: scaffold.Testbed) -> None:
        a, b = net.host("dc1-h1"), net.host("dc2-h1")
        await a.start_server(echo, "echo")
        tcp = await asyncio.start_server(echo, "127.0.0.1", 0)
        tcp_address = tcp.sockets[0].getsockname()
        loop = asyncio.get_running_loop()
        stdlib_create_connection = socket.create_connection

        with scaffold.names(b) as binding:
            reader, writer = await asyncio.open_connection("echo.scaffold", 7)  # any port
            writer.write(b"one line\nand the rest")
            writer.write_eof()
            assert await reader.readuntil(b"\n") == b"one line\n"
            assert await reader.readexactly(8) == b"and the "
            assert await reader.read() == b"rest" and reader.at_eof()
            assert writer.get_extra_info("peer_host") == a.name
            assert writer.get_extra_info("peername") == ("echo.scaffold", 7)
            with pytest.raises(scaffold.UsageError, match="TLS"):  # asyncio's own writer
                await writer.start_tls(ssl.create_default_context())
            writer.close()
            await writer.wait_closed()

            # a resolver gets a loopback address, which leads to the object as well
            infos = await loop.getaddrinfo("ECHO.scaffold.", "http")
            sockaddr = infos[0][4]
            assert len(sockaddr) == 2  # IPv4: (address, port)
            address, port = sockaddr
            assert isinstance(address, str) and isinstance(port, int)
            assert ipaddress_in_block(address) and port == 80
            reader, writer = await asyncio.open_connection(address, port)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            writer.close()

            # everything else is untouched: kernel TCP, with a real socket
            reader, writer = await asyncio.open_connection(*tcp_address)
            assert isinstance(writer.get_extra_info("socket").fileno(), int)
            assert writer.get_extra_info("socket").fileno() >= 0
            writer.close()
            with pytest.raises(ConnectionRefusedError):  # what a library catches
                await asyncio.open_connection("nobody.scaffold", 80)

            # serving through names: asyncio.start_server binds an object on the host
            greeter = await asyncio.start_server(lambda r, w: w.close(), "greet.scaffold", 8080)
            assert greeter.sockets[0].getsockname() == ("greet", 8080)
            reader, writer = await a.open_connection("greet")
            assert await reader.read() == b"" and writer.get_extra_info("peer_host") == b.name
            greeter.close()

            # nesting: an inner binding for another suffix, through another host
            async with scaffold.names(a, suffix=".inner"):
                _, writer = await asyncio.open_connection("echo.inner", 1)
                assert writer.get_extra_info("host") == a.name
                writer.close()

            # the blocking side, from a thread: socket.create_connection gives a socket
            def blocking() -> bytes:
                with socket.create_connection(("echo.scaffold", 7), timeout=5) as sock:
                    sock.sendall(b"blocking")
                    sock.shutdown(socket.SHUT_WR)
                    return sock.makefile("rb").read()

            assert await asyncio.to_thread(blocking) == b"blocking"
            assert binding.connections == 3 and binding.failures == {"ObjectNotFound": 1}

        # what was replaced is back, exactly
        assert socket.create_connection is stdlib_create_connection
        assert not set(LOOP_HOOKS) & set(vars(loop))
        with pytest.raises(OSError):  # the name means nothing any more
            await asyncio.open_connection("echo.scaffold", 7)
        tcp.close()

    with_testbed(main)


def ipaddress_in_block(address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address) in ADDRESS_BLOCK


def test_names_are_entered_and_left_from_any_thread() -> None:
    with scaffold.Testbed.threaded(datacenters=1, hosts_per_datacenter=2) as net:
        host = net.hosts[0]
        # a transport closed from another thread (asyncio's StreamWriter.__del__ does that)
        # hands the close to its loop instead of touching the host stack from here
        net.call(net.hosts[1].start_server(echo, "echo"), timeout=10)
        _, writer = net.call(host.open_connection("echo"), timeout=10)
        writer.close()
        net.call(asyncio.wait_for(writer.wait_closed(), 5))

        bindings = [scaffold.names(host, suffix=f".t{i}") for i in range(8)]
        barrier = threading.Barrier(len(bindings))

        def cycle(binding: scaffold.Names) -> None:
            for _ in range(20):
                barrier.wait(5)
                with binding:
                    assert binding.object_name(f"x{binding.suffix}") == "x"

        threads = [threading.Thread(target=cycle, args=(b,)) for b in bindings]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert socket.create_connection.__module__ == "socket"
        assert not set(LOOP_HOOKS) & set(vars(host.loop))


class Buffered(asyncio.BufferedProtocol):
    """A buffered protocol with a small buffer: data arrives in many ``buffer_updated``."""

    def __init__(self) -> None:
        self.buffer = bytearray(1000)
        self.data = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buffer[:nbytes]

    def eof_received(self) -> None:
        self.done.set_result(None)


class Failing(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        raise ValueError("a bug in the protocol")


def test_buffered_protocols_and_a_failing_protocol_as_asyncio_treats_them() -> None:
    async def main(net: scaffold.Testbed) -> None:
        a, b = net.host("dc1-h1"), net.host("dc2-h1")
        payload = bytes(range(256)) * 100

        async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(payload)
            writer.write_eof()
            await reader.read()

        await a.start_server(send, "sender")
        transport, buffered = await b.create_connection(Buffered, "sender")
        await asyncio.wait_for(buffered.done, 10)
        assert bytes(buffered.data) == payload
        transport.close()

        # An exception in a callback goes to the loop's exception handler and aborts the
        # flow (the server's reader sees the reset), as asyncio's transports do.
        reported: list[dict[str, object]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context))
        transport, _ = await b.create_connection(Failing, "sender")
        await wait_until(lambda: bool(reported), 5, "the error reported")
        assert isinstance(reported[0]["exception"], ValueError) and transport.is_closing()
        loop.set_exception_handler(None)

    with_testbed(main)


def test_a_connect_sends_its_syn_at_once_and_a_server_makes_its_protocol_in_one_turn() -> None:
    """Latency of a stream's setup, counted in turns of the loop rather than timed: the SYN
    leaves while ``create_connection`` starts (not after the turn it was called in), and a
    server's protocol hears ``connection_made`` and the SYN's data in the callback that made
    it (not a turn later)."""

    async def main(net: scaffold.Testbed) -> None:
        a, b = net.host("dc1-h1"), net.host("dc2-h1")
        served: list[Recorder] = []
        made_in_start: list[list[str]] = []

        def serving() -> Recorder:
            served.append(Recorder(keep_open=True))
            return served[-1]

        server = await a.create_server(serving, "turns")
        start = server._start

        def start_and_look(transport: scaffold.StreamTransport) -> None:
            start(transport)
            made_in_start.append(list(served[-1].calls))

        server._start = start_and_look  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        connecting = asyncio.ensure_future(b.create_connection(Recorder, "turns", data=b"hello"))
        await asyncio.sleep(0)  # the connect's first step ran; no flush of the host since
        assert len(b.stack.flows) == 1 and b.stack.datagrams_to_send(loop.time()) == []
        transport, _ = await asyncio.wait_for(connecting, 5)
        await wait_until(lambda: bool(made_in_start), 5, "the server's protocol")
        assert made_in_start == [["made", "data"]] and served[0].data == b"hello"
        transport.close()
        server.close()

    with_testbed(main)


def test_a_connect_nobody_answers_times_out_and_leaves_nothing_behind() -> None:
    async def main(net: scaffold.Testbed) -> None:
        a, b = net.host("dc1-h1"), net.host("dc2-h1")
        await a.start_server(echo, "silent")
        links = [link for (src, _), link in b.node.links.items() if src == b.name]
        assert links
        for link in links:
            link.up = False  # the SYN and its retransmissions never leave b
        with pytest.raises(TimeoutError):
            await b.create_connection(Recorder, "silent", timeout=0.2)
        assert not b.stack.flows and not b._connecting and not b._transports
        for link in links:
            link.up = True
        transport, _ = await b.create_connection(Recorder, "silent", timeout=5)
        transport.close()

    with_testbed(main)
