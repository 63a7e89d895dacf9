"""Unmodified third-party libraries reach real servers published on the network, by name,
through ``scaffold.names``; each across a replica failure where the library's own retry logic
applies (README "Drop-in for Python's networking" has the table of what runs here).

The servers are real processes (``redis-server``, ``python -m http.server``) published with
``scaffold.Publisher``, or aiohttp applications serving objects. Clients run as a user would
write them: ``redis.asyncio.Redis(host="cache.scaffold")``, ``aiohttp.ClientSession``,
``httpx.AsyncClient``, ``http.client`` and ``urllib`` on ``http://files.scaffold:8000/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
import redis.asyncio
from aiohttp import web

import scaffold
from scaffold.runtime.aio import run, wait_until

Main = Callable[[scaffold.Testbed], Awaitable[None]]
LOCAL = "127.0.0.1"


def with_testbed(main: Main) -> None:
    async def go() -> None:
        async with scaffold.Testbed(datacenters=2, hosts_per_datacenter=3) as net:
            await asyncio.wait_for(main(net), 90)

    run(go())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        port: int = sock.getsockname()[1]
        return port


class Servers:
    """Server processes this test started; each is killed by its pid at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    async def start(self, *argv: str, port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)

        async def answers() -> bool:
            try:
                _, writer = await asyncio.open_connection(LOCAL, port)
            except OSError:
                return False
            writer.close()
            return True

        await wait_until(answers, 10, f"{argv[0]} on port {port}")
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait(5)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


@pytest.fixture
def servers() -> Iterator[Servers]:
    started = Servers()
    yield started
    started.stop_all()


def redis_server(port: int) -> tuple[str, ...]:
    return ("redis-server", "--bind", LOCAL, "--port", str(port), "--save", "", "--appendonly", "no")


def http_server(port: int, root: Path) -> tuple[str, ...]:
    return (sys.executable, "-m", "http.server", str(port), "--bind", LOCAL, "--directory", str(root))


async def publish(host: scaffold.Host, name: str, port: int) -> scaffold.Publisher:
    publisher = scaffold.Publisher(host, name, (LOCAL, port), check_interval=0.2)
    await publisher.start()
    return publisher


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (scripts/system-deps)")
def test_redis_asyncio_commands_pipelines_pubsub_across_a_killed_redis(servers: Servers) -> None:
    async def main(net: scaffold.Testbed) -> None:
        port_a, port_b = free_port(), free_port()
        redis_a = await servers.start(*redis_server(port_a), port=port_a)
        publishers = [await publish(net.host("dc1-h1"), "cache", port_a)]
        with scaffold.names(net.host("dc2-h2")) as binding:
            # redis-py's defaults: a pool, RESP3, 10 retries with backoff on connection errors
            client = redis.asyncio.Redis(host="cache.scaffold", port=6379)
            for i in range(200):
                await client.set(f"key:{i}", i)
            assert [await client.get(f"key:{i}") for i in (0, 99, 199)] == [b"0", b"99", b"199"]
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(1000):
                    pipe.incr("counter")
                assert await pipe.execute() == list(range(1, 1001))
            pubsub = client.pubsub()
            await pubsub.subscribe("news")
            assert await client.publish("news", "hello") == 1
            assert await next_message(pubsub) == b"hello"

            # A second replica joins; the first redis-server is SIGKILLed under the client.
            await servers.start(*redis_server(port_b), port=port_b)
            publishers.append(await publish(net.host("dc2-h1"), "cache", port_b))
            assert await client.config_get("port") == {"port": str(port_a)}
            servers.kill(redis_a)
            # redis-py's retry: the pooled connection broke, it reconnects by name, and the
            # new flow reaches the survivor once the dead target's publisher withdrew.
            assert await client.set("after", "failover") is True
            assert await client.get("after") == b"failover"
            assert await client.config_get("port") == {"port": str(port_b)}

            # redis-py's pub/sub re-subscribes when it reconnects, now on the survivor
            async def resubscribed() -> bool:
                with contextlib.suppress(redis.ConnectionError):
                    await pubsub.get_message(timeout=0.05)
                numsub = await client.pubsub_numsub("news")
                return numsub == [(b"news", 1)]

            await wait_until(resubscribed, 15, "the subscription re-made on the survivor")
            assert await client.publish("news", "again") == 1
            assert await next_message(pubsub) == b"again"
            await pubsub.aclose()
            await client.aclose()
            assert binding.connections >= 3  # the first two, then at least one after the kill
        for publisher in publishers:
            await publisher.close()

    with_testbed(main)


async def next_message(pubsub: redis.asyncio.client.PubSub) -> bytes:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            data: bytes = message["data"]
            return data
    raise TimeoutError("no message")


def test_aiohttp_client_and_servers_on_an_object_across_a_host_failure() -> None:
    async def main(net: scaffold.Testbed) -> None:
        host_key = web.AppKey("host", str)

        async def whoami(request: web.Request) -> web.Response:
            return web.json_response({"host": request.app[host_key], "remote": request.remote})

        runners = {}
        for name in ("dc1-h1", "dc2-h1"):
            app = web.Application()
            app[host_key] = name
            app.router.add_get("/", whoami)
            runners[name] = web.AppRunner(app)
            await runners[name].setup()
        # one replica from aiohttp's own TCPSite on a name, one from Host.create_server
        with scaffold.names(net.host("dc1-h1")):
            await web.TCPSite(runners["dc1-h1"], "api.scaffold", 8080).start()
        server = runners["dc2-h1"].server
        assert server is not None  # made by setup() above
        await net.host("dc2-h1").create_server(server, "api")

        client_host = net.host("dc1-h2")
        with scaffold.names(client_host) as binding:
            async with aiohttp.ClientSession() as session:

                async def get() -> dict[str, str]:
                    async with session.get("http://api.scaffold:8080/") as response:
                        assert response.status == 200
                        body: dict[str, str] = await response.json()
                        return body

                first = await get()
                assert first["remote"] == client_host.name  # peername of the server's transport
                assert all([(await get())["host"] == first["host"] for _ in range(20)])
                assert binding.connections == 1  # one kept-alive connection served them all

                # The machine of the serving replica dies. aiohttp's next request on its
                # pooled connection is reset (the flow is re-resolved to the survivor, which
                # does not know it); aiohttp retries an idempotent request on a new
                # connection, which reaches the survivor.
                await net.host(first["host"]).node.close()
                survivor = "dc2-h1" if first["host"] == "dc1-h1" else "dc1-h1"
                assert (await get())["host"] == survivor
                assert binding.connections == 2
        for runner in runners.values():
            await runner.cleanup()

    with_testbed(main)


def test_httpx_async_client_retries_its_connect_while_the_only_replica_restarts(
    servers: Servers, tmp_path: Path
) -> None:
    (tmp_path / "hello.txt").write_text("hello from http.server\n")

    async def main(net: scaffold.Testbed) -> None:
        port = free_port()
        server = await servers.start(*http_server(port, tmp_path), port=port)
        publisher = await publish(net.host("dc1-h1"), "files", port)
        with scaffold.names(net.host("dc2-h2")) as binding:
            # httpx's own retry: connection failures (a refused name: ConnectError) are
            # retried with backoff (0, 0.5, 1, 2... s)
            transport = httpx.AsyncHTTPTransport(retries=6)
            async with httpx.AsyncClient(transport=transport, timeout=10) as client:
                url = "http://files.scaffold:8000/hello.txt"
                for _ in range(5):
                    response = await client.get(url)
                    assert response.text == "hello from http.server\n"
                # the only replica dies: the publisher withdraws it, the name is refused
                servers.kill(server)
                await wait_until(lambda: not publisher.healthy, 5, "the replica withdrawn")
                async with httpx.AsyncClient(timeout=10) as without_retries:
                    with pytest.raises(httpx.ConnectError):
                        await without_retries.get(url)
                # a request now waits in httpx's retries while the server comes back
                request = asyncio.create_task(client.get(url))
                await servers.start(*http_server(port, tmp_path), port=port)
                response = await asyncio.wait_for(request, 20)
                assert response.status_code == 200 and response.text == "hello from http.server\n"
                assert binding.failures["ObjectNotFound"] >= 2  # refused, then retried
        await publisher.close()

    with_testbed(main)


def test_http_client_and_urllib_across_a_host_failure(servers: Servers, tmp_path: Path) -> None:
    (tmp_path / "index.txt").write_text("served by http.server\n")

    async def main(net: scaffold.Testbed) -> None:
        ports = [free_port(), free_port()]
        publishers = []
        for host, port in zip(("dc1-h1", "dc2-h1"), ports, strict=True):
            await servers.start(*http_server(port, tmp_path), port=port)
            publishers.append(await publish(net.host(host), "files", port))

        def get(path: str) -> tuple[int, bytes, object]:
            conn = http.client.HTTPConnection("files.scaffold", 8000, timeout=10)
            conn.request("GET", path)
            response = conn.getresponse()
            result = response.status, response.read(), conn.sock
            conn.close()
            return result

        def urlopen(url: str) -> bytes:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=10) as response:
                body: bytes = response.read()
                return body

        with scaffold.names(net.host("dc2-h2")) as binding:
            for _ in range(5):
                status, body, _ = await asyncio.to_thread(get, "/index.txt")
                assert (status, body) == (200, b"served by http.server\n")
            body = await asyncio.to_thread(urlopen, "http://files.scaffold:8000/index.txt")
            assert body == b"served by http.server\n"
            # One replica's machine dies between requests. http.client has no retry of its
            # own; the network re-resolves the flows hashed to the dead host (orphaned
            # first packets go back to an object switch) and every request is answered.
            await publishers[0].host.node.close()
            for _ in range(10):
                status, body, _ = await asyncio.to_thread(get, "/index.txt")
                assert status == 200
            missing = await asyncio.to_thread(get, "/missing")
            assert missing[0] == 404
            assert binding.connections == 17 and not binding.failures
        await publishers[1].close()

    with_testbed(main)


def test_smtplib_accepts_the_socket_of_a_name() -> None:
    """``smtplib`` only needs ``socket.create_connection`` to give something it can
    ``makefile`` and ``sendall`` on: a tiny SMTP responder served on an object shows it."""
    import smtplib

    received: list[bytes] = []

    async def smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mail.scaffold ready\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                received.append(await reader.readuntil(b"\r\n.\r\n"))
                writer.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    async def main(net: scaffold.Testbed) -> None:
        await net.host("dc1-h1").start_server(smtp, "mail")

        def send() -> None:
            with smtplib.SMTP("mail.scaffold", 25, timeout=10) as client:
                client.sendmail("a@example.org", ["b@example.org"], "Subject: hi\r\n\r\nover SCAFFOLD\r\n")

        with scaffold.names(net.host("dc2-h1")):
            await asyncio.to_thread(send)
        assert received and b"over SCAFFOLD" in received[0]

    with_testbed(main)
