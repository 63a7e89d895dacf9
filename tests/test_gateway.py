"""The ingress proxy and the publisher, driven by real unmodified programs.

curl, ``python -m http.server``, ``http.client``, redis-server, redis-cli and
redis-benchmark talk plain TCP to an ``Ingress`` and are published by ``Publisher`` on an
embedded ``Testbed``. Blocking programs run in threads (``asyncio.to_thread``) so the
network, which lives on the test's event loop, keeps running. Every process a test starts is
killed by its pid in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import scaffold
from scaffold.api.host import Connecting
from scaffold.api.streams import StreamProtocol
from scaffold.errors import UsageError
from scaffold.gateway import Ingress, Publisher, TargetUnavailable
from scaffold.gateway.http import ClientSide, HttpOptions, HttpSession
from scaffold.gateway.splice import Splice
from scaffold.gateway.stats import GatewayStats
from scaffold.gateway.warm import REPLAY_LIMIT
from scaffold.runtime.aio import run, wait_until

Main = Callable[[scaffold.Testbed], Awaitable[None]]
LOCAL = "127.0.0.1"


def with_testbed(main: Main, timeout: float = 60.0, *, backbone_delay: float = 0.002) -> None:
    async def go() -> None:
        async with scaffold.Testbed(
            datacenters=2, hosts_per_datacenter=3, backbone_delay=backbone_delay
        ) as net:
            await asyncio.wait_for(main(net), timeout)

    run(go())


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (scripts/system-deps installs it)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with socket.create_connection((LOCAL, port), timeout=0.2):
            return True
    except OSError:
        return False


class Processes:
    """Programs started by one test; each killed by its pid at the end."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.running.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)

    def kill_all(self) -> None:
        for proc in self.running:
            self.kill(proc)


@pytest.fixture
def procs() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.kill_all()


async def http_server(procs: Processes, root: Path, label: str) -> tuple[int, subprocess.Popen[bytes]]:
    """A ``python -m http.server`` replica whose /whoami.txt says ``label``."""
    directory = root / label
    directory.mkdir()
    (directory / "whoami.txt").write_text(f"{label}\n")
    (directory / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    port = free_port()
    proc = procs.start(
        sys.executable, "-m", "http.server", str(port), "--bind", LOCAL, "--directory", str(directory)
    )
    await wait_until(lambda: answers(port), 10, f"http.server on port {port}")
    return port, proc


@contextlib.asynccontextmanager
async def published_web(
    net: scaffold.Testbed, procs: Processes, root: Path, *, http: bool, **checks: float
) -> AsyncIterator[tuple[Ingress, list[Publisher], list[subprocess.Popen[bytes]]]]:
    """Two http.server replicas published from hosts in two DCs, an ingress on a third host.
    Under ``weighted``: the ingress shares its connections over both, not only over the one
    in its own DC (``nearest``, docs/protocol.md §3.5)."""
    publishers: list[Publisher] = []
    servers: list[subprocess.Popen[bytes]] = []
    for label, host in (("replica-a", "dc1-h1"), ("replica-b", "dc2-h1")):
        port, proc = await http_server(procs, root, label)
        servers.append(proc)
        publisher = Publisher(net.host(host), "web", (LOCAL, port), policy="weighted", **checks)  # type: ignore[arg-type]
        await publisher.start()
        publishers.append(publisher)
    ingress = Ingress(net.host("dc1-h3"), "web", (LOCAL, 0), http=http)
    await ingress.start()
    try:
        yield ingress, publishers, servers
    finally:
        await ingress.close(grace=1.0)
        for publisher in publishers:
            await publisher.close()


# -- raw TCP ingress ---------------------------------------------------------------------------


def test_curl_through_raw_ingress_reaches_both_replicas(procs: Processes, tmp_path: Path) -> None:
    curl = need("curl")

    async def main(net: scaffold.Testbed) -> None:
        async with published_web(net, procs, tmp_path, http=False) as (ingress, publishers, _):
            url = f"http://{LOCAL}:{ingress.address[1]}/whoami.txt"
            # One curl, 40 transfers: http.server is HTTP/1.0, so each is a new TCP connection.
            result = await asyncio.to_thread(
                subprocess.run, [curl, "-sS", "--fail", *[url] * 40], capture_output=True, timeout=30
            )
            assert result.returncode == 0, result.stderr
            served = Counter(result.stdout.decode().split())
            assert set(served) == {"replica-a", "replica-b"}, served
            assert sum(served.values()) == 40
            big = await asyncio.to_thread(
                subprocess.run,
                [curl, "-sS", "--fail", f"http://{LOCAL}:{ingress.address[1]}/big.bin"],
                capture_output=True,
                timeout=30,
            )
            assert big.stdout == bytes(range(256)) * 4096
            assert ingress.stats.connections == 41
            assert not ingress.stats.errors
            assert sum(p.stats.connections for p in publishers) == 41

    with_testbed(main)


def test_raw_ingress_half_close_and_unknown_object() -> None:
    async def main(net: scaffold.Testbed) -> None:
        async def reverse(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
            data = await reader.read(-1)  # until the client's half-close
            writer.write(data[::-1])
            await writer.drain()
            writer.close()

        await net.host("dc2-h2").start_server(reverse, "reverse")
        async with Ingress(net.host("dc1-h1"), "reverse", (LOCAL, 0)) as ingress:
            reader, writer = await asyncio.open_connection(*ingress.address)
            writer.write(b"hello, world")
            writer.write_eof()
            assert await reader.read() == b"dlrow ,olleh"
            writer.close()
        async with Ingress(net.host("dc1-h1"), "nobody-serves-this", (LOCAL, 0)) as ingress:
            reader, writer = await asyncio.open_connection(*ingress.address)
            assert await reader.read() == b""  # closed: no replica
            writer.close()
            await wait_until(lambda: ingress.stats.errors["object-not-found"] == 1, 10, "the error count")

    with_testbed(main)


def test_raw_ingress_carries_a_server_that_speaks_first() -> None:
    """A protocol where the server greets first (SMTP, say): the raw ingress finds no bytes to
    put in the SYN, opens the stream after its short wait, and the greeting gets through."""

    async def main(net: scaffold.Testbed) -> None:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 hello\r\n")
            await writer.drain()
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        target = await asyncio.start_server(greet, LOCAL, 0)
        async with (
            Publisher(net.host("dc2-h1"), "smtp", target.sockets[0].getsockname()[:2]),
            Ingress(net.host("dc1-h1"), "smtp", (LOCAL, 0)) as ingress,
        ):
            reader, writer = await asyncio.open_connection(*ingress.address)
            assert await reader.readline() == b"220 hello\r\n"
            writer.write(b"helo me\r\n")
            assert await reader.readline() == b"HELO ME\r\n"
            assert await reader.read() == b""
            writer.close()
            assert ingress.stats.errors == {}
        target.close()

    with_testbed(main)


def test_a_slow_client_holds_back_the_target_through_the_splices() -> None:
    """Backpressure end to end (gateway/splice.py): a target sends 32 MiB as fast as it can to a
    client that reads slowly; the ingress and the publisher hold at most a few chunks each in
    user space (without it they would hold what the client has not read: megabytes)."""
    size, step = 32 << 20, 1 << 16
    most = {"ingress": 0, "publisher": 0}

    async def main(net: scaffold.Testbed) -> None:
        async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            block = bytes(range(256)) * (step // 256)
            for _ in range(size // step):
                writer.write(block)
                await writer.drain()
            writer.close()

        target = await asyncio.start_server(flood, LOCAL, 0)
        loop = asyncio.get_running_loop()
        async with (
            Publisher(net.host("dc2-h1"), "flood", target.sockets[0].getsockname()[:2]) as publisher,
            Ingress(net.host("dc1-h1"), "flood", (LOCAL, 0), syn_data=False) as ingress,
        ):

            def sample() -> None:  # every millisecond: what each gateway holds in user space
                for client in ingress._clients.values():
                    if client.transport is not None:
                        most["ingress"] = max(most["ingress"], client.transport.get_write_buffer_size())
                for server in [publisher.server] if publisher.server is not None else []:
                    for transport in server.connections.values():
                        most["publisher"] = max(most["publisher"], transport.get_write_buffer_size())
                sampler[0] = loop.call_later(0.001, sample)

            sampler = [loop.call_later(0.001, sample)]

            def slow_client() -> int:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, step)
                    s.settimeout(30)
                    s.connect(ingress.address)
                    received = 0
                    while chunk := s.recv(step):
                        received += len(chunk)
                        time.sleep(0.0005)  # paces the reader (a slow client), waits for nothing
                    return received

            try:
                assert await asyncio.to_thread(slow_client) == size
            finally:
                sampler[0].cancel()
        target.close()

    with_testbed(main, timeout=120)
    # asyncio's high-water mark (64 KiB) plus one chunk handed over in a callback (256 KiB)
    assert most["ingress"] < 1 << 20 and most["publisher"] < 1 << 20, most


def test_port_in_use_and_target_refused_are_clear_errors() -> None:
    async def main(net: scaffold.Testbed) -> None:
        with socket.socket() as taken:
            taken.bind((LOCAL, 0))
            taken.listen()
            port = taken.getsockname()[1]
            ingress = Ingress(net.hosts[0], "web", (LOCAL, port))
            with pytest.raises(scaffold.ConfigError, match=f"{LOCAL}:{port}: address already in use"):
                await ingress.start()
        with pytest.raises(scaffold.UsageError, match="object name must not be empty"):
            Ingress(net.hosts[0], "", (LOCAL, 0))  # at once, not at each client
        closed = free_port()
        publisher = Publisher(net.hosts[0], "web", (LOCAL, closed))
        with pytest.raises(TargetUnavailable, match=f"target {LOCAL}:{closed} refused"):
            await publisher.start()
        assert isinstance(TargetUnavailable("x"), scaffold.PathError)
        # Told to wait, it starts unregistered and registers once the target answers.
        waiting = Publisher(net.hosts[0], "late", (LOCAL, closed), wait_for_target=True, check_interval=0.05)
        await waiting.start()
        assert not waiting.healthy
        server = await asyncio.start_server(lambda r, w: w.close(), LOCAL, closed)
        try:
            await wait_until(lambda: waiting.healthy, 10, "the late target to be published")
        finally:
            await waiting.close()
            server.close()

    with_testbed(main)


def test_publisher_resets_a_stream_whose_target_is_gone() -> None:
    """The target's connection starts from the stream's callback (no task of the publisher's):
    refused, it resets the stream (not an EOF: an HTTP ingress retries elsewhere), counts as
    a failed check confirmed at once by an active one, and leaves nothing behind."""

    async def main(net: scaffold.Testbed) -> None:
        target = await asyncio.start_server(lambda r, w: w.close(), LOCAL, 0)
        address = target.sockets[0].getsockname()[:2]
        publisher = Publisher(net.host("dc2-h1"), "gone", address, check_interval=60)  # no timer check
        await publisher.start()
        target.close()
        await target.wait_closed()
        reader, writer = await net.host("dc1-h1").open_connection("gone", data=b"hello")
        with pytest.raises((ConnectionError, scaffold.PathError)):
            await asyncio.wait_for(reader.read(), 10)
        await wait_until(lambda: not publisher.healthy, 10, "the replica to be withdrawn")
        assert publisher.stats.errors == {"target-os-error": 1}, publisher.stats.errors
        assert publisher.stats.active == 0 and not publisher._streams
        writer.close()
        await publisher.close()

    with_testbed(main)


def test_publisher_pool_is_bounded_and_gives_each_connection_to_one_stream() -> None:
    """``pool=2``: the target sees two connections before any stream and never more idle ones;
    each stream takes one (its SYN's bytes reach the target at once) and one replaces it; an
    idle connection the target closes is dropped, never handed out; closing keeps none."""

    async def main(net: scaffold.Testbed) -> None:
        accepted: list[asyncio.StreamWriter] = []  # every connection, the start's check too
        live: set[asyncio.StreamWriter] = set()

        async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)
            live.add(writer)
            while data := await reader.read(65536):
                writer.write(data.upper())
                await writer.drain()
            writer.close()
            live.discard(writer)

        target = await asyncio.start_server(upper, LOCAL, 0)
        address = target.sockets[0].getsockname()[:2]
        publisher = Publisher(net.host("dc2-h1"), "pooled", address, pool=2, check_interval=60)
        await publisher.start()
        pool = publisher.pool
        assert pool is not None
        await wait_until(lambda: len(pool.idle) == 2 and len(live) == 2, 10, "two idle connections")

        async def exchange() -> None:
            reader, writer = await net.host("dc1-h1").open_connection("pooled", data=b"hello")
            assert await reader.readexactly(5) == b"HELLO"
            writer.close()

        for _ in range(3):
            await exchange()
        await wait_until(lambda: len(pool.idle) == 2 and len(live) == 2, 10, "the pool refilled")
        assert pool.taken == 3 and len(accepted) == 1 + 2 + 3  # one replacement per stream, no more
        for writer in list(live):  # the target closes its idle connections
            writer.close()
        await wait_until(lambda: not pool.idle and pool.dropped_count == 2, 10, "the closed ones dropped")
        await exchange()  # connects on its own; the pool refills
        await wait_until(lambda: len(pool.idle) == 2, 10, "the pool refilled again")
        assert pool.taken == 3 and publisher.stats.errors == {}
        await publisher.close()
        assert not pool.idle and not pool.enabled
        await wait_until(lambda: not live, 10, "the target to see them closed")
        target.close()

    with_testbed(main)


class Greeter:
    """A target that greets first (``220 hello``), then answers each line in upper case;
    ``live`` holds its open connections, ``accepted`` counts them all."""

    def __init__(self) -> None:
        self.accepted = 0
        self.live: set[asyncio.StreamWriter] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.live.add(writer)
        writer.write(b"220 hello\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
        writer.close()
        self.live.discard(writer)


async def greeted(port: int, line: bytes = b"helo me\r\n") -> None:
    """A client that speaks at once: the greeting, then its line answered."""
    reader, writer = await asyncio.open_connection(LOCAL, port)
    writer.write(line)
    assert await reader.readline() == b"220 hello\r\n"
    assert await reader.readline() == line.upper()
    writer.close()


def test_raw_ingress_preconnect_gives_clients_streams_opened_ahead() -> None:
    """``preconnect=2``: the first client opens its own stream and two are opened ahead; the
    next clients take them -- their bytes go at once, the target's greeting, said while the
    stream waited, reaches them first -- and one is opened per take; streams the target
    closed while waiting are never taken; closing the ingress closes the waiting ones."""

    async def main(net: scaffold.Testbed) -> None:
        target = Greeter()
        server = await asyncio.start_server(target.serve, LOCAL, 0)
        address = server.sockets[0].getsockname()[:2]
        async with Publisher(net.host("dc2-h1"), "smtp", address, check_interval=60) as publisher:
            ingress = Ingress(net.host("dc1-h1"), "smtp", (LOCAL, 0), preconnect=2)
            await ingress.start()
            warm = ingress.warm
            assert warm is not None and len(warm) == 0  # none before a client came
            checks = target.accepted  # the publisher's start check
            port = ingress.address[1]
            await greeted(port)  # found none: its own stream; two opened ahead
            await wait_until(lambda: warm.ready() == 2, 10, "two streams opened ahead")
            for _ in range(3):
                await greeted(port)
            await wait_until(lambda: warm.ready() == 2, 10, "one opened per take")
            assert (warm.taken, target.accepted - checks) == (3, 1 + 2 + 3)
            assert ingress.stats.preconnected == 3
            await wait_until(lambda: len(target.live) == 2, 10, "the clients' connections closed")
            for writer in list(target.live):  # the target closes the waiting ones
                writer.close()
            await wait_until(lambda: warm.ready() == 0, 10, "the closed ones seen")
            await greeted(port)  # none usable: its own stream, and two more ahead
            await wait_until(lambda: warm.ready() == 2, 10, "two more opened ahead")
            assert (warm.taken, warm.dropped) == (3, 2)
            assert ingress.stats.errors == {} and publisher.stats.errors == {}
            # Five clients' greetings and answers; the waiting streams' greetings count once
            # a client has them.
            assert ingress.stats.bytes_out == 5 * len(b"220 hello\r\nHELO ME\r\n")
            assert not warm.waiting_stats.errors
            await ingress.close()
            await wait_until(lambda: not target.live, 10, "closing keeps none")
        server.close()

    with_testbed(main)


class Answerer:
    """A target that waits for its client: each line answered in upper case, except
    a line ``bye``, on which it hangs up without a word; ``lines`` holds every line it
    read, ``live`` its open connections."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.live: set[asyncio.StreamWriter] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.live.add(writer)
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                self.lines.append(line)
                if line == b"bye\r\n":
                    break
                writer.write(line.upper())
                await writer.drain()
        writer.close()
        self.live.discard(writer)


def test_a_taken_stream_that_ends_before_its_bytes_arrived_sends_them_on_a_new_one() -> None:
    """The target closes a waiting stream's connection just as a client takes the stream:
    the FIN (150 ms of backbone away: the margin the take has) comes back before the client's line reached the
    replica's host -- none of it acknowledged -- so the line goes again in a new stream's
    SYN and the client gets its answer; the target reads it once. A line the target read
    and hung up on is acknowledged: that client gets the end of the stream, not a replay;
    nor does one that sent more than REPLAY_LIMIT before the race."""

    async def main(net: scaffold.Testbed) -> None:
        target = Answerer()
        server = await asyncio.start_server(target.serve, LOCAL, 0)
        address = server.sockets[0].getsockname()[:2]
        async with Publisher(net.host("dc2-h1"), "echo", address, check_interval=60):
            ingress = Ingress(net.host("dc1-h1"), "echo", (LOCAL, 0), preconnect=1)
            await ingress.start()
            warm = ingress.warm
            assert warm is not None
            port = ingress.address[1]

            async def ask(line: bytes) -> bytes:
                reader, writer = await asyncio.open_connection(LOCAL, port)
                writer.write(line)
                answer = await asyncio.wait_for(reader.readline(), 10)
                writer.close()
                return answer

            assert await ask(b"one\r\n") == b"ONE\r\n"  # its own stream; one opened ahead
            await wait_until(lambda: warm.ready() == 1 and len(target.live) == 1, 10, "one waiting")
            next(iter(target.live)).close()  # its FIN is on its way; a client takes the stream
            assert await ask(b"two\r\n") == b"TWO\r\n"
            assert (warm.taken, ingress.stats.retries) == (1, 1)
            assert target.lines == [b"one\r\n", b"two\r\n"]  # the replayed line read once

            await wait_until(lambda: warm.ready() == 1, 10, "one waiting again")
            assert await ask(b"bye\r\n") == b""  # read, then hung up on: no replay
            assert (warm.taken, ingress.stats.retries) == (2, 1)
            assert target.lines == [b"one\r\n", b"two\r\n", b"bye\r\n"]

            # More than REPLAY_LIMIT sent before the service's first byte: none kept, so the
            # same race cuts the client.
            await wait_until(lambda: warm.ready() == 1 and len(target.live) == 1, 10, "one waiting")
            next(iter(target.live)).close()
            assert await ask(b"x" * (REPLAY_LIMIT + 1) + b"\r\n") == b""
            assert (warm.taken, ingress.stats.retries) == (3, 1)
            assert len(target.lines) == 3
            assert ingress.stats.errors == {}
            await ingress.close()
        server.close()

    with_testbed(main, backbone_delay=0.15)


def test_a_replay_that_cannot_open_closes_a_client_whose_transport_was_made_meanwhile() -> None:
    """A taken stream's replay (``gateway/warm.py``) that finds no replica closes its client
    at once -- also when the client's task made its transport while the new stream was
    opening. uvloop then holds the connection, and closing the socket object the replay
    began with would leave the client waiting for the idle timeout. (The race: the taken
    stream's FIN handled in the accept's turn of the loop, before the client's task ran;
    here the replay is begun by hand in that state.)"""

    async def main(net: scaffold.Testbed) -> None:
        loop = asyncio.get_running_loop()
        async with Ingress(net.host("dc1-h1"), "nobody", (LOCAL, 0), idle_timeout=30) as ingress:
            with socket.create_server((LOCAL, 0)) as listener:
                listener.setblocking(False)
                reader, writer = await asyncio.open_connection(*listener.getsockname()[:2])
                conn, _ = await loop.sock_accept(listener)
                splice = Splice(ingress.stats, idle_timeout=30)
                splice.client.sock = conn
                replay = loop.create_task(ingress._replay(splice, b"hello"))
                await asyncio.sleep(0)
                assert not replay.done()  # its stream is opening
                await loop.connect_accepted_socket(lambda: splice.client, sock=conn)
                await replay
                assert await asyncio.wait_for(reader.read(), 5) == b""  # closed now, not in 30 s
                assert ingress.stats.errors == {"object-not-found": 1}
                writer.close()

    with_testbed(main)


def test_streams_opened_ahead_expire_when_no_client_comes() -> None:
    async def main(net: scaffold.Testbed) -> None:
        target = Greeter()
        server = await asyncio.start_server(target.serve, LOCAL, 0)
        address = server.sockets[0].getsockname()[:2]
        async with (
            Publisher(net.host("dc2-h1"), "smtp", address, check_interval=60),
            Ingress(net.host("dc1-h1"), "smtp", (LOCAL, 0), preconnect=2) as ingress,
        ):
            warm = ingress.warm
            assert warm is not None
            warm.idle_timeout = 0.3
            checks = target.accepted
            await greeted(ingress.address[1])
            await wait_until(lambda: target.accepted - checks == 3, 10, "two streams opened ahead")
            await wait_until(lambda: len(warm) == 0 and not target.live, 10, "expired and closed")
            await asyncio.sleep(0.5)
            assert target.accepted - checks == 3 and warm.dropped == 2  # none opened while idle
        server.close()

    with_testbed(main)

    async def no_replica() -> None:
        # Openings that fail (no replica) stop the opening ahead for RETRY_AFTER: five clients
        # cost at most one round of N doomed streams, not one each.
        async with (
            scaffold.Testbed(datacenters=1, hosts_per_datacenter=2) as net,
            Ingress(net.hosts[0], "nobody", (LOCAL, 0), preconnect=4) as ingress,
        ):
            warm = ingress.warm
            assert warm is not None
            for _ in range(5):
                reader, writer = await asyncio.open_connection(*ingress.address)
                writer.write(b"hello")
                assert await reader.read() == b""  # closed: no replica of "nobody"
                writer.close()
                await wait_until(lambda: len(warm) == 0, 5.0, "the openings failed")
            assert sum(warm.waiting_stats.errors.values()) == 4, warm.waiting_stats.errors
            assert warm.taken == 0

    run(no_replica())

    async def refused() -> None:
        async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=1) as net:
            with pytest.raises(UsageError, match="raw mode"):
                Ingress(net.hosts[0], "web", (LOCAL, 0), http=True, preconnect=1)
            with pytest.raises(UsageError, match="preconnect must be"):
                Ingress(net.hosts[0], "web", (LOCAL, 0), preconnect=65)

    run(refused())


@pytest.mark.parametrize("in_http", [False, True], ids=["raw", "http"])
def test_a_failure_in_the_accept_callback_cuts_that_client_only(
    monkeypatch: pytest.MonkeyPatch, in_http: bool
) -> None:
    """What the ingress does for a client in the callback that accepted it (its first bytes
    read, its stream begun) is guarded as its task is: an unexpected error there cuts that
    client, counted ``internal``, and the ingress goes on accepting the next ones."""
    name = "_session_early" if in_http else "_open_early"
    early = getattr(Ingress, name)
    calls: list[int] = []

    def failing(self: Ingress, *args: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the accept callback")
        return early(self, *args)

    monkeypatch.setattr(Ingress, name, failing)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    async def main(net: scaffold.Testbed) -> None:
        async def echo(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        await net.host("dc2-h1").start_server(echo, "web")
        async with Ingress(net.host("dc1-h1"), "web", (LOCAL, 0), http=in_http) as ingress:
            loop = asyncio.get_running_loop()

            async def answer(sock: socket.socket) -> bytes:
                got = b""
                try:
                    while chunk := await loop.sock_recv(sock, 65536):
                        got += chunk
                except ConnectionResetError:
                    return b""
                return got

            answers = []
            for _ in range(2):
                # Connected and its request sent before this loop runs again: the ingress
                # finds the bytes in the callback that accepts it.
                with socket.create_connection(ingress.address, timeout=5) as sock:
                    sock.sendall(request)
                    sock.setblocking(False)
                    answers.append(await asyncio.wait_for(answer(sock), 10))
            assert answers[0] == b"" and answers[1].startswith(b"HTTP/1.1 200 ")  # cut, then served
            assert ingress.stats.errors == {"internal": 1} and ingress.stats.connections == 2

    with_testbed(main)


def test_http_ingress_answers_a_malformed_request_from_the_socket() -> None:
    """The HTTP ingress parses a client's first bytes before it makes the client's transport:
    a malformed request is answered (400) and closed from the socket, with no transport made
    and no stream opened."""

    async def main(net: scaffold.Testbed) -> None:
        async with Ingress(net.host("dc1-h1"), "web", (LOCAL, 0), http=True) as ingress:
            reader, writer = await asyncio.open_connection(*ingress.address)
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
            writer.close()
            assert ingress.stats.errors == {"bad-request": 1} and ingress.stats.requests == 0
        # The same session on its own, to see what it made: a socket pair, the real network.
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        opened: list[bytes] = []

        async def open_upstream(
            data: bytes, opening: Connecting[StreamProtocol] | None
        ) -> tuple[scaffold.StreamReader, scaffold.StreamWriter]:
            assert opening is None  # nothing began it (HttpSession.begin)
            opened.append(data)
            return await net.host("dc1-h1").open_connection("web", data=data)

        session = HttpSession(
            ClientSide(ours), b"GET / HTTP/9\r\n\r\n", open_upstream, GatewayStats(), "web", HttpOptions()
        )
        await session.run()
        assert session.client.transport is None and session.client.closed and not opened
        with theirs:
            theirs.settimeout(5)
            assert theirs.recv(65536).startswith(b"HTTP/1.1 400 ") and theirs.recv(65536) == b""

    with_testbed(main)


def test_http_ingress_answers_a_closing_client_from_the_socket_with_no_transport() -> None:
    """A first response goes straight to the client's socket: a client that asked to close
    gets its whole answer and a FIN with no transport ever made (none was needed), even when
    it sent more bytes that nobody reads (they are read off before the close, so it is no
    reset); a keep-alive client gets its transport once the session reads on."""

    async def main(net: scaffold.Testbed) -> None:
        async def hello(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")

        await net.host("dc2-h1").start_server(hello, "web")

        async def open_upstream(
            data: bytes, opening: Connecting[StreamProtocol] | None
        ) -> tuple[scaffold.StreamReader, scaffold.StreamWriter]:
            if opening is not None:
                begun.append(data)
                return await opening.streams(5)
            return await net.host("dc1-h1").open_connection("web", data=data)

        begun: list[bytes] = []

        for pipelined, keep_alive in (
            (b"", False),
            (b"GET /more HTTP/1.1\r\nHost: x\r\n\r\n", False),
            (b"", True),
        ):
            ours, theirs = socket.socketpair()
            ours.setblocking(False)
            close = b"" if keep_alive else b"Connection: close\r\n"
            first = b"GET / HTTP/1.1\r\nHost: x\r\n" + close + b"\r\n"
            theirs.sendall(pipelined)  # waits in the socket, unread
            session = HttpSession(
                ClientSide(ours), first, open_upstream, GatewayStats(), "web", HttpOptions()
            )
            # Its stream begun before the session runs, as the ingress's accept callback does
            # (HttpSession.begin): the session takes it as its first attempt.
            session.begin(lambda data: net.host("dc1-h1").start_open_connection("web", data=data))
            running = asyncio.create_task(session.run())
            theirs.settimeout(5)
            answer = await asyncio.to_thread(theirs.recv, 65536)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"hello"), answer
            if keep_alive:

                def attached(session: HttpSession = session) -> bool:
                    return session.client.transport is not None

                await wait_until(attached, 5, "the client's transport")
                theirs.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(running, 5)
            if not keep_alive:
                assert session.client.transport is None and session.client.closed
            assert await asyncio.to_thread(theirs.recv, 65536) == b""  # a FIN, not a reset
            theirs.close()
        assert begun == [b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"] * 3  # each went in the begun SYN

    with_testbed(main)


def test_killed_replica_new_raw_connections_go_to_the_survivor(procs: Processes, tmp_path: Path) -> None:
    async def main(net: scaffold.Testbed) -> None:
        async with published_web(net, procs, tmp_path, http=False, check_interval=0.2) as (
            ingress,
            publishers,
            servers,
        ):
            port = ingress.address[1]

            def fetch() -> bytes:
                with socket.create_connection((LOCAL, port), timeout=5) as s:
                    s.sendall(b"GET /whoami.txt HTTP/1.0\r\n\r\n")
                    chunks = []
                    while data := s.recv(65536):
                        chunks.append(data)
                    return b"".join(chunks)

            procs.kill(servers[0])  # replica-a's TCP server dies; its publisher still stands
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            outcomes: list[tuple[float, bool]] = []
            for _ in range(60):
                try:
                    reply = await asyncio.to_thread(fetch)
                    ok = reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"replica-b\n")
                except OSError:
                    ok = False
                outcomes.append((loop.time() - killed_at, ok))
            failed = [t for t, ok in outcomes if not ok]
            assert len(failed) <= 3, outcomes  # only while the publisher's checks catch up
            assert all(ok for _, ok in outcomes[-40:])
            assert not publishers[0].healthy and publishers[0].withdrawals == 1
            # The target comes back on its port: after `rise` checks it is a replica again.
            target_port = publishers[0].target[1]
            procs.start(
                sys.executable, "-m", "http.server", str(target_port), "--bind", LOCAL,
                "--directory", str(tmp_path / "replica-a"),
            )  # fmt: skip
            await wait_until(lambda: publishers[0].healthy, 10, "replica-a to be registered again")

    with_testbed(main)


def test_ingress_close_is_clean(procs: Processes, tmp_path: Path) -> None:
    async def main(net: scaffold.Testbed) -> None:
        async def hold(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
            await reader.read(-1)  # never answers; holds the flow until the client goes
            writer.close()

        await net.host("dc2-h1").start_server(hold, "hold")
        raw = Ingress(net.host("dc1-h1"), "hold", (LOCAL, 0))
        web = Ingress(net.host("dc1-h1"), "hold", (LOCAL, 0), http=True)
        await raw.start()
        await web.start()
        busy_reader, busy_writer = await asyncio.open_connection(*raw.address)
        busy_writer.write(b"still talking")
        idle_reader, idle_writer = await asyncio.open_connection(*web.address)  # keep-alive, no request
        await wait_until(lambda: raw.stats.active == 1 and web.stats.active == 1, 10, "both connections")
        raw_port = raw.address[1]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(raw.close(grace=0.3), web.close(grace=0.3))
        assert loop.time() - started < 2.0
        assert await idle_reader.read() == b""  # the idle HTTP connection was closed at once
        with contextlib.suppress(ConnectionResetError):
            assert await busy_reader.read() == b""  # the raw one was cut after the grace period
        assert raw.stats.active == 0 and web.stats.active == 0
        with pytest.raises(OSError):
            await asyncio.open_connection(LOCAL, raw_port)  # no longer listening
        busy_writer.close()
        idle_writer.close()

    with_testbed(main)


# -- HTTP-aware ingress ------------------------------------------------------------------------


def keep_alive_gets(port: int, count: int, path: str = "/whoami.txt") -> tuple[Counter[str], list[str]]:
    """``count`` GETs on one keep-alive ``http.client`` connection; bodies seen and failures."""
    bodies: Counter[str] = Counter()
    failures: list[str] = []
    conn = http.client.HTTPConnection(LOCAL, port, timeout=10)
    try:
        for i in range(count):
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read().decode()
                if response.status != 200:
                    failures.append(f"#{i}: {response.status} {body.strip()}")
                else:
                    bodies[body.strip()] += 1
                if response.will_close:
                    failures.append(f"#{i}: the ingress closed the client connection")
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"#{i}: {exc!r}")
                conn.close()
    finally:
        conn.close()
    return bodies, failures


def test_http_ingress_keeps_client_connections_alive(procs: Processes, tmp_path: Path) -> None:
    async def main(net: scaffold.Testbed) -> None:
        async with published_web(net, procs, tmp_path, http=True) as (ingress, _, _):
            bodies, failures = await asyncio.to_thread(keep_alive_gets, ingress.address[1], 60)
            assert not failures
            assert set(bodies) == {"replica-a", "replica-b"}  # a new stream per request: both used
            assert ingress.stats.connections == 1 and ingress.stats.requests == 60
            # HEAD and a large body through the same machinery.

            def head_and_big() -> None:
                conn = http.client.HTTPConnection(LOCAL, ingress.address[1], timeout=10)
                conn.request("HEAD", "/big.bin")
                head = conn.getresponse()
                assert head.status == 200 and head.getheader("content-length") == str(1 << 20)
                assert head.read() == b""
                conn.request("GET", "/big.bin")
                assert conn.getresponse().read() == bytes(range(256)) * 4096
                conn.close()

            await asyncio.to_thread(head_and_big)
            assert not ingress.stats.errors

    with_testbed(main)


def test_http_ingress_answers_503_for_an_unknown_object() -> None:
    async def main(net: scaffold.Testbed) -> None:
        async with Ingress(net.hosts[0], "nobody-serves-this", (LOCAL, 0), http=True) as ingress:

            def get() -> tuple[int, str]:
                conn = http.client.HTTPConnection(LOCAL, ingress.address[1], timeout=10)
                conn.request("GET", "/")
                response = conn.getresponse()
                return response.status, response.read().decode()

            status, body = await asyncio.to_thread(get)
            assert status == 503
            assert "no replica of 'nobody-serves-this'" in body

    with_testbed(main)


def test_killing_a_replica_during_2000_keep_alive_gets_fails_none(procs: Processes, tmp_path: Path) -> None:
    async def main(net: scaffold.Testbed) -> None:
        async with published_web(net, procs, tmp_path, http=True) as (ingress, publishers, servers):
            port = ingress.address[1]
            client = asyncio.create_task(asyncio.to_thread(keep_alive_gets, port, 2000))
            await wait_until(lambda: ingress.stats.requests >= 400, 30, "400 requests")
            procs.kill(servers[0])
            bodies, failures = await client
            assert failures == []
            assert sum(bodies.values()) == 2000
            assert bodies["replica-a"] > 0 and bodies["replica-b"] > 0
            assert not publishers[0].healthy
            assert ingress.stats.retries > 0  # some requests met the dead replica, and were retried

    # No emulated backbone delay: each of the 2,000 requests, one after the other, opens a new
    # stream (http.server closes after each response), and the half that go to dc2 would each
    # wait ~10 ms on the 2 ms backbone -- two thirds of the test's time, checking nothing more.
    with_testbed(main, timeout=80, backbone_delay=0.0)


def test_killing_a_replica_host_during_keep_alive_gets_fails_none(procs: Processes, tmp_path: Path) -> None:
    async def main(net: scaffold.Testbed) -> None:
        async with published_web(net, procs, tmp_path, http=True) as (ingress, _, _):
            port = ingress.address[1]
            client = asyncio.create_task(asyncio.to_thread(keep_alive_gets, port, 600))
            await wait_until(lambda: ingress.stats.requests >= 150, 30, "150 requests")
            await net.host("dc1-h1").node.close()  # replica-a's whole SCAFFOLD host dies
            bodies, failures = await client
            assert failures == []
            assert sum(bodies.values()) == 600

    with_testbed(main)


# -- redis ---------------------------------------------------------------------------------


def test_redis_cli_and_benchmark_through_ingress_and_publishers(procs: Processes) -> None:
    redis_server = need("redis-server")
    redis_cli = need("redis-cli")
    redis_benchmark = need("redis-benchmark")

    async def main(net: scaffold.Testbed) -> None:
        ports = [free_port(), free_port()]
        for port in ports:
            procs.start(
                redis_server, "--port", str(port), "--bind", LOCAL, "--save", "", "--appendonly", "no"
            )
        for port in ports:

            def up(port: int = port) -> bool:
                return answers(port)

            await wait_until(up, 10, f"redis-server on {port}")
        publishers = [  # weighted: both replicas take connections (§3.5), as checked below
            Publisher(net.host(host), "redis", (LOCAL, port), policy="weighted")
            for host, port in zip(("dc1-h1", "dc2-h1"), ports, strict=True)
        ]
        for publisher in publishers:
            await publisher.start()
        ingress = Ingress(net.host("dc2-h3"), "redis", (LOCAL, 0))
        await ingress.start()
        try:
            address = str(ingress.address[1])

            def cli(*args: str, stdin: bytes | None = None) -> str:
                result = subprocess.run(
                    [redis_cli, "-h", LOCAL, "-p", address, *args],
                    input=stdin,
                    capture_output=True,
                    timeout=20,
                    check=False,
                )
                assert result.returncode == 0, result.stderr
                return result.stdout.decode()

            assert (await asyncio.to_thread(cli, "ping")).strip() == "PONG"
            # SET then GET on one connection: flow affinity keeps both on one replica, though
            # the two replicas share no data.
            for i in range(12):
                out = await asyncio.to_thread(cli, stdin=f"SET key{i} value{i}\nGET key{i}\n".encode())
                assert out.split() == ["OK", f"value{i}"]
            sizes = [
                int(
                    subprocess.run(
                        [redis_cli, "-p", str(p), "dbsize"], capture_output=True, check=True
                    ).stdout
                )
                for p in ports
            ]
            assert sum(sizes) == 12 and all(sizes), sizes  # both replicas were used

            def benchmark() -> subprocess.CompletedProcess[bytes]:
                load = ["-n", "2000", "-c", "10", "-t", "set,get", "-q"]
                return subprocess.run(
                    [redis_benchmark, "-h", LOCAL, "-p", address, *load],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )

            result = await asyncio.to_thread(benchmark)
            out = result.stdout.decode(errors="replace")
            assert result.returncode == 0, result.stderr
            assert "SET:" in out and "GET:" in out, out
            assert "error" not in out.lower() and not result.stderr.strip(), (out, result.stderr)
            assert not ingress.stats.errors
            assert all(not p.stats.errors for p in publishers)
        finally:
            await ingress.close(grace=1.0)
            for publisher in publishers:
                await publisher.close()

    with_testbed(main)


# -- the command line ----------------------------------------------------------------------

COMMAND = (
    "import argparse, sys, scaffold\n"
    "from scaffold.cli.gateway import add_commands\n"
    "parser = argparse.ArgumentParser(prog='scaffold')\n"
    "add_commands(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args()\n"
    "try:\n"
    "    sys.exit(args.func(args))\n"
    "except scaffold.ScaffoldError as exc:\n"
    "    sys.exit(f'error: {exc}')\n"
)  # what `scaffold ingress` does


def test_ingress_command_serves_curl_and_exits_cleanly(procs: Processes, tmp_path: Path) -> None:
    curl = need("curl")

    async def main() -> None:
        target, _ = await http_server(procs, tmp_path, "replica-a")
        port = free_port()
        command = procs.start(
            sys.executable, "-c", COMMAND, "ingress", "web", "--listen", f"{LOCAL}:{port}", "--http",
            "--testbed", "--publish", f"{LOCAL}:{target}",
        )  # fmt: skip
        await wait_until(lambda: answers(port), 20, "the ingress command to listen")
        result = await asyncio.to_thread(
            subprocess.run, [curl, "-sS", "--fail", f"http://{LOCAL}:{port}/whoami.txt"],
            capture_output=True, timeout=20, check=False,
        )  # fmt: skip
        assert result.stdout == b"replica-a\n", result.stderr
        command.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(command.wait, 20) == 0
        # The same port again, while something holds it: a one-line error, no traceback.
        with socket.socket() as taken:
            taken.bind((LOCAL, 0))
            taken.listen()
            busy = taken.getsockname()[1]
            failed = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", COMMAND, "ingress", "web", "--listen", f"{LOCAL}:{busy}", "--testbed"],
                capture_output=True, timeout=30, check=False,
            )  # fmt: skip
        assert failed.returncode == 1 and b"Traceback" not in failed.stderr
        assert (
            f"error: ingress for 'web' cannot listen on {LOCAL}:{busy}: address already in use"
            in failed.stderr.decode()
        )

    run(main())


def test_publisher_reaches_a_target_by_name_and_one_whose_connect_takes_a_while() -> None:
    """A target on this machine is connected in the stream's callback and gets the SYN's
    bytes at once (``End.sock``); one given by name goes through the loop's resolver; one
    whose connect is still on its way (here: its accept queue is full, so the kernel drops
    the SYN and retries it a second later) gets them once it connected."""

    async def main(net: scaffold.Testbed) -> None:
        async def echo_upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.read(100)).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo_upper, LOCAL, 0)
        port = server.sockets[0].getsockname()[1]
        client = net.host("dc1-h1")
        for name, target in (("by-address", (LOCAL, port)), ("by-name", ("localhost", port))):
            async with Publisher(net.host("dc2-h1"), name, target, check_interval=60):
                reader, writer = await client.open_connection(name, data=b"hello")
                assert await asyncio.wait_for(reader.read(), 10) == b"HELLO"
                writer.close()
        server.close()

        slow = socket.socket()
        slow.bind((LOCAL, 0))
        slow.listen(0)  # one connection waits to be accepted; SYNs beyond it are dropped
        slow.settimeout(10)
        address = slow.getsockname()[:2]
        publisher = Publisher(net.host("dc2-h1"), "slow", address, check_interval=60, connect_timeout=8)
        starting = asyncio.create_task(publisher.start())
        probe, _ = await asyncio.to_thread(slow.accept)  # its health check
        probe.close()
        await starting
        filler = socket.create_connection(address)  # the accept queue is full now
        try:
            reader, writer = await client.open_connection("slow", data=b"hello")
            # The stream arrived and its connect started (the kernel dropped that SYN)...
            await wait_until(lambda: publisher.stats.active == 1, 10, "the stream at the publisher")
            assert not any(task is not None and task.done() for task in publisher._streams.values())
            (await asyncio.to_thread(slow.accept))[0].close()  # the filler: room again
            conn, _ = await asyncio.to_thread(slow.accept)  # the publisher's, retried by the kernel
            with conn:
                conn.settimeout(10)
                assert await asyncio.to_thread(conn.recv, 100) == b"hello"
                conn.sendall(b"world")
            assert await asyncio.wait_for(reader.read(), 10) == b"world"
            writer.close()
            assert publisher.stats.errors == {}, publisher.stats.errors
        finally:
            filler.close()
            slow.close()
            await publisher.close()

    with_testbed(main)
