"""SCAFFOLD stream goodput and connection setup vs Python and kernel peers, in one process.

Everything runs in ONE process on ONE uvloop event loop, so on ONE core: for SCAFFOLD that
is the embedded default (``scaffold.Testbed``: controller, object and flow switches and
hosts all in this process over loopback UDP), and every peer is given the same layout (both
of its ends, and its relay, on the same loop)::

    scaffold   dc2-h1 --> dc2-fs1 --> dc1-fs1 --> dc1-h1   reliable stream, 76 B SCAFFOLD
               (client)   (flow switches, loopback UDP)    (server)   + 44 B stream header
    udp_relay  sender --> relay (recvfrom, 1 dict lookup, sendto) --> sink   1320 B datagrams
    tcp        asyncio streams over kernel TCP on 127.0.0.1
    aioquic    aioquic client and server on 127.0.0.1 (self-signed cert made at run time)

Goodput: a sender task per stream does ``writer.write(64 KiB); await drain()`` for
``--warmup`` + ``--duration`` seconds; the server reads and counts; goodput is the bytes the
server read during the last ``--duration`` seconds divided by that time. aioquic's
``StreamWriter.drain()`` never waits (its stream transport has no write buffer limits), so
its sender waits instead until the stream's unacknowledged bytes fit in aioquic's own
per-stream flow-control window (``max_stream_data``, 1 MiB by default): never less than the
peer could have in flight anyway.

The UDP relay's sender keeps at most ``--window`` datagrams in flight (sent, not yet at the
sink) and tops up from the sink's reader, so no socket buffer overflows; the relay and sink
read up to ``BATCH`` datagrams per wake-up like ``NodeRuntime``. Its byte rate counts 1200
payload bytes per datagram (SCAFFOLD's floor MSS). ``udp_relay_2hop`` chains two relays, as
SCAFFOLD's data path crosses two flow switches; the headline ratios use the one-hop relay.

The relay with the techniques SCAFFOLD now uses, as the strongest Python peer for each:
``udp_relay_gso`` -- the same 1320-byte datagrams sent in GSO trains of up to 48 (one
``sendmsg``), read as GRO trains by the relay (one dict lookup per datagram, the train sent
on whole) and the sink; ``udp_relay_64k`` -- datagrams of 65,507 bytes (loopback's largest,
what SCAFFOLD's path-MTU discovery finds there), counting the same 1200/1320 share of each as
payload would be unfair to it, so it counts 65,507 - 120 bytes (SCAFFOLD's per-segment
overhead) per datagram. ``scaffold/1-mtu1500`` is one SCAFFOLD stream whose hosts are told
their gateway link is Ethernet (1500 bytes): 1320-byte segments, sent in GSO trains.

Setup: ``--setups`` sequential connections, each timed from the call until it returns
(SCAFFOLD: ``open_connection("sink")`` returns on SYN-ACK, after the first packet went
through both object switches; TCP: ``asyncio.open_connection`` on loopback; aioquic:
``connect()`` until the TLS 1.3 handshake completed), after a few unrecorded warm-up ones.

Each goodput measurement runs ``--runs`` times, in a rotated order each round so machine
noise hits every side; the report gives the median of the runs and every sample.

Run: ``.venv/bin/python bench/stream.py [--duration 3] [--runs 3] [--quick] [--profile [--mtu 1500]]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import gc
import io
import pstats
import socket
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import scaffold
from _common import emit, environment
from scaffold.runtime.aio import BATCH, SOCKET_BUFFER
from scaffold.runtime.aio import run as aio_run
from scaffold.wire.header import HEADER_LEN
from scaffold.wire.stream import FIXED_LEN as STREAM_HEADER_LEN

MSS = 1200
DATAGRAM = HEADER_LEN + STREAM_HEADER_LEN + MSS  # 1320: one full SCAFFOLD stream data packet
JUMBO = 65507  # the largest UDP datagram: loopback carries it
# Linux constants the socket module does not name (linux/udp.h)
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: GSO train length of the GSO relay's sender: as many 1320-byte datagrams as one send takes
TRAIN = (JUMBO // DATAGRAM) - 1
CHUNK = 64 * 1024
READ_SIZE = 64 * 1024
GOALS = {"scaffold1_vs_relay": 0.5, "scaffold1_vs_aioquic": 2.0, "setup_p50_ms": 1.0}
SERVICE = "sink"
CLIENT_HOST = "dc2-h1"
SERVER_HOST = "dc1-h1"
#: A relay window of datagrams written off after this long without one reaching the sink.
STALL_TIMEOUT = 0.05
RELAY_HOST_ID = 7
SETUP_WARMUP = 5
TEARDOWN_TIMEOUT = 2.0


# -- shared plumbing -----------------------------------------------------------------------


@dataclass
class Meter:
    """Bytes the receiving side read, and the handler tasks doing the reading."""

    bytes: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        """Let readers finish on EOF; cancel what is left after ``TEARDOWN_TIMEOUT``."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=TEARDOWN_TIMEOUT)
        for task in list(self.tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


@dataclass(frozen=True, slots=True)
class Rate:
    """One goodput sample: bytes/s at the receiver and the process's CPU share meanwhile."""

    bytes_per_s: float
    cpu: float


async def measure_window(read_bytes: Callable[[], int], warmup: float, duration: float) -> Rate:
    """Sleep ``warmup``, then count what ``read_bytes()`` grew by over ``duration``."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(warmup)
    b0, t0, c0 = read_bytes(), loop.time(), time.process_time()
    await asyncio.sleep(duration)
    b1, t1, c1 = read_bytes(), loop.time(), time.process_time()
    return Rate((b1 - b0) / (t1 - t0), (c1 - c0) / (t1 - t0))


async def count_until_eof(reader: Any, meter: Meter) -> None:
    """Server side of every stream peer: read and count until EOF."""
    while data := await reader.read(READ_SIZE):
        meter.bytes += len(data)


async def pump(
    write: Callable[[bytes], None], drain: Callable[[], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Client side of every stream peer: write 64 KiB chunks, respecting back pressure."""
    chunk = bytes(CHUNK)
    while not stop.is_set():
        write(chunk)
        await drain()


async def run_senders(
    senders: Sequence[Awaitable[None]], meter: Meter, warmup: float, duration: float
) -> Rate:
    tasks = [asyncio.ensure_future(s) for s in senders]
    try:
        return await measure_window(lambda: meter.bytes, warmup, duration)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "p50": round(percentile(ms, 50), 3),
        "p99": round(percentile(ms, 99), 3),
        "mean": round(statistics.fmean(ms), 3),
        "n": len(ms),
    }


# -- SCAFFOLD ------------------------------------------------------------------------------


def scaffold_testbed() -> scaffold.Testbed:
    return scaffold.Testbed(datacenters=2, hosts_per_datacenter=2, backbone_delay=0)


async def scaffold_goodput(streams: int, warmup: float, duration: float, *, mtu: int | None = None) -> Rate:
    """``streams`` parallel SCAFFOLD streams from a dc2 host to a dc1 host (``mtu``: what
    both hosts are told of their gateway link, instead of loopback's)."""
    meter = Meter()

    async def handler(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
        await count_until_eof(reader, meter)

    async with scaffold_testbed() as net:
        if mtu is not None:
            loop = asyncio.get_running_loop()
            for name in (SERVER_HOST, CLIENT_HOST):
                core = net.host(name).node.core
                core.set_path_limit(core.gateway, mtu - 28, loop.time())
        server = await net.host(SERVER_HOST).start_server(handler, SERVICE)
        client = net.host(CLIENT_HOST)
        writers = [(await client.open_connection(SERVICE))[1] for _ in range(streams)]
        stop = asyncio.Event()
        rate = await run_senders([pump(w.write, w.drain, stop) for w in writers], meter, warmup, duration)
        stop.set()
        for writer in writers:
            writer.close()
        meter.tasks |= set(server.tasks.values())
        await meter.settle()
        server.close()
    return rate


async def scaffold_setup(samples: int) -> list[float]:
    """Seconds from ``open_connection("sink")`` to its return, one connection at a time."""
    meter = Meter()

    async def handler(reader: scaffold.StreamReader, writer: scaffold.StreamWriter) -> None:
        await count_until_eof(reader, meter)

    times: list[float] = []
    async with scaffold_testbed() as net:
        server = await net.host(SERVER_HOST).start_server(handler, SERVICE)
        client = net.host(CLIENT_HOST)
        for i in range(SETUP_WARMUP + samples):
            t0 = time.perf_counter()
            _, writer = await client.open_connection(SERVICE)
            elapsed = time.perf_counter() - t0
            writer.close()
            if i >= SETUP_WARMUP:
                times.append(elapsed)
        meter.tasks |= set(server.tasks.values())
        await meter.settle()
        server.close()
    return times


# -- raw Python UDP relay ------------------------------------------------------------------


def udp_socket() -> socket.socket:
    """A non-blocking loopback UDP socket with the buffer sizes ``NodeRuntime`` asks for."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    return sock


def relay_reader(sock: socket.socket, table: dict[int, tuple[str, int]]) -> Callable[[], None]:
    """The peer: recvfrom, one dict lookup on the destination Host ID, sendto."""
    recvfrom, sendto = sock.recvfrom, sock.sendto

    def on_readable() -> None:
        for _ in range(BATCH):
            try:
                data, _ = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            with contextlib.suppress(BlockingIOError):
                sendto(data, table[int.from_bytes(data[48:56])])

    return on_readable


def gro_relay_reader(sock: socket.socket, table: dict[int, tuple[str, int]]) -> Callable[[], None]:
    """The peer with the kernel's batching: read a GRO train, one dict lookup per datagram in
    it, send it on whole with GSO when all go to one address (else one by one)."""
    sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    buffer = bytearray(65536)
    view = memoryview(buffer)
    buffers = [buffer]
    recvmsg_into, sendmsg, sendto = sock.recvmsg_into, sock.sendmsg, sock.sendto
    space = socket.CMSG_SPACE(4)

    def on_readable() -> None:
        for _ in range(BATCH):
            try:
                n, ancillary, _, _ = recvmsg_into(buffers, space)
            except (BlockingIOError, InterruptedError):
                return
            size = int.from_bytes(ancillary[0][2][:4], sys.byteorder) if ancillary else n
            hop = None
            for offset in range(48, n, size):
                next_hop = table[int.from_bytes(view[offset : offset + 8])]
                if hop is not None and next_hop != hop:
                    hop = None
                    break
                hop = next_hop
            with contextlib.suppress(BlockingIOError):
                if hop is None:
                    for offset in range(0, n, size):
                        data = view[offset : offset + size]
                        sendto(data, table[int.from_bytes(data[48:56])])
                elif size < n:
                    sendmsg([view[:n]], [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))], 0, hop)
                else:
                    sendto(view[:n], hop)

    return on_readable


@dataclass
class RelayResult:
    bytes_per_s: float
    datagrams_per_s: float
    cpu: float
    stalls: int
    lost: int


async def relay_rate(
    hops: int, window: int, warmup: float, duration: float, *, gso: bool = False, size: int = DATAGRAM
) -> RelayResult:
    """Datagrams/s from a windowed sender through ``hops`` relays to a sink, one loop
    (``gso``: sent, relayed and read in trains; ``size``: bytes per datagram, of which all
    but SCAFFOLD's 120 bytes of headers count as payload)."""
    loop = asyncio.get_running_loop()
    sink, sender = udp_socket(), udp_socket()
    relays = [udp_socket() for _ in range(hops)]
    packet = bytearray(size)
    packet[48:56] = RELAY_HOST_ID.to_bytes(8, "big")
    payload = bytes(packet)
    reader = gro_relay_reader if gso else relay_reader
    for i, relay in enumerate(relays):
        nxt = relays[i + 1] if i + 1 < hops else sink
        loop.add_reader(relay.fileno(), reader(relay, {RELAY_HOST_ID: nxt.getsockname()[:2]}))
    first_hop = relays[0].getsockname()[:2]
    sent = received = stalls = lost = 0
    sendto, sendmsg, recv = sender.sendto, sender.sendmsg, sink.recv
    train = TRAIN if gso else 1
    burst = [payload * train]
    cmsg = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
    if gso:
        sink.setsockopt(SOL_UDP, UDP_GRO, 1)

    def top_up() -> None:
        nonlocal sent
        while sent - received + train <= window:
            try:
                if gso:
                    sendmsg(burst, cmsg, 0, first_hop)
                else:
                    sendto(payload, first_hop)
            except BlockingIOError:
                return
            sent += train

    def on_sink() -> None:
        nonlocal received
        for _ in range(BATCH):
            try:
                n = len(recv(65536))
            except (BlockingIOError, InterruptedError):
                break
            received += (n + size - 1) // size
        top_up()

    last_seen = -1

    def watchdog() -> None:
        nonlocal last_seen, sent, stalls, lost
        if received == last_seen and sent > received:
            stalls += 1
            lost += sent - received
            sent = received
            top_up()
        last_seen = received
        handle[0] = loop.call_later(STALL_TIMEOUT, watchdog)

    loop.add_reader(sink.fileno(), on_sink)
    handle = [loop.call_later(STALL_TIMEOUT, watchdog)]
    top_up()
    counted = size - HEADER_LEN - STREAM_HEADER_LEN  # payload bytes per datagram
    try:
        rate = await measure_window(lambda: received * counted, warmup, duration)
    finally:
        handle[0].cancel()
        for sock in (*relays, sink):
            loop.remove_reader(sock.fileno())
        for sock in (*relays, sink, sender):
            sock.close()
    return RelayResult(rate.bytes_per_s, rate.bytes_per_s / counted, rate.cpu, stalls, lost)


# -- kernel TCP ----------------------------------------------------------------------------


async def tcp_goodput(streams: int, warmup: float, duration: float) -> Rate:
    meter = Meter()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await count_until_eof(reader, meter)
        writer.close()

    server = await asyncio.start_server(lambda r, w: meter.spawn(handler(r, w)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    writers = [(await asyncio.open_connection("127.0.0.1", port))[1] for _ in range(streams)]
    stop = asyncio.Event()
    rate = await run_senders([pump(w.write, w.drain, stop) for w in writers], meter, warmup, duration)
    for writer in writers:
        writer.close()
    await meter.settle()
    server.close()
    await server.wait_closed()
    return rate


async def tcp_setup(samples: int) -> list[float]:
    meter = Meter()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await count_until_eof(reader, meter)
        writer.close()

    server = await asyncio.start_server(lambda r, w: meter.spawn(handler(r, w)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    times: list[float] = []
    for i in range(SETUP_WARMUP + samples):
        t0 = time.perf_counter()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        elapsed = time.perf_counter() - t0
        writer.close()
        if i >= SETUP_WARMUP:
            times.append(elapsed)
    await meter.settle()
    server.close()
    await server.wait_closed()
    return times


# -- aioquic -------------------------------------------------------------------------------


class QuicCredentials:
    """A self-signed P-256 certificate for ``localhost``, made at run time."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def server(self) -> QuicConfiguration:
        config = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
        config.certificate = self.certificate
        config.private_key = self.key
        return config

    @staticmethod
    def client() -> QuicConfiguration:
        return QuicConfiguration(
            is_client=True, alpn_protocols=["bench"], verify_mode=ssl.CERT_NONE, server_name="localhost"
        )


class DrainingQuicProtocol(QuicConnectionProtocol):
    """aioquic's protocol plus the back pressure its stream writers lack (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = asyncio.Event()

    def transmit(self) -> None:
        super().transmit()
        self.progress.set()

    def drainer(self, stream_id: int) -> Callable[[], Awaitable[None]]:
        limit = self._quic._configuration.max_stream_data

        async def drain() -> None:
            sender = self._quic._streams[stream_id].sender
            while len(sender._buffer) > limit:
                self.progress.clear()
                await self.progress.wait()

        return drain


async def start_quic_server(credentials: QuicCredentials, meter: Meter) -> tuple[QuicServer, int]:
    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        meter.spawn(count_until_eof(reader, meter))

    server = await serve("127.0.0.1", 0, configuration=credentials.server(), stream_handler=on_stream)
    assert server._transport is not None
    port: int = server._transport.get_extra_info("sockname")[1]
    return server, port


async def quic_goodput(credentials: QuicCredentials, streams: int, warmup: float, duration: float) -> Rate:
    meter = Meter()
    server, port = await start_quic_server(credentials, meter)
    try:
        async with connect(
            "127.0.0.1", port, configuration=credentials.client(), create_protocol=DrainingQuicProtocol
        ) as client:
            assert isinstance(client, DrainingQuicProtocol)
            writers = []
            for _ in range(streams):
                # aioquic allocates the stream ID only when data is first sent on it.
                _, writer = await client.create_stream()
                writer.write(bytes(CHUNK))
                writers.append(writer)
            stop = asyncio.Event()
            senders = [pump(w.write, client.drainer(w.get_extra_info("stream_id")), stop) for w in writers]
            rate = await run_senders(senders, meter, warmup, duration)
            for writer in writers:
                writer.write_eof()
            await meter.settle()
    finally:
        server.close()
    return rate


async def quic_setup(credentials: QuicCredentials, samples: int) -> list[float]:
    meter = Meter()
    server, port = await start_quic_server(credentials, meter)
    times: list[float] = []
    try:
        for i in range(SETUP_WARMUP + samples):
            manager = connect("127.0.0.1", port, configuration=credentials.client())
            t0 = time.perf_counter()
            await manager.__aenter__()
            elapsed = time.perf_counter() - t0
            await manager.__aexit__(None, None, None)
            if i >= SETUP_WARMUP:
                times.append(elapsed)
        await meter.settle()
    finally:
        server.close()
    return times


# -- the run -------------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    warmup: float
    runs: int
    setups: int
    window: int


def median_rate(samples: Sequence[Rate]) -> float:
    return statistics.median(s.bytes_per_s for s in samples)


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


async def bench(options: Options) -> dict[str, Any]:
    credentials = QuicCredentials()
    d, w = options.duration, options.warmup
    goodput: dict[str, Callable[[], Awaitable[Rate | RelayResult]]] = {
        "scaffold/1": lambda: scaffold_goodput(1, w, d),
        "scaffold/1-mtu1500": lambda: scaffold_goodput(1, w, d, mtu=1500),
        "udp_relay": lambda: relay_rate(1, options.window, w, d),
        "udp_relay_gso": lambda: relay_rate(1, options.window, w, d, gso=True),
        "udp_relay_64k": lambda: relay_rate(1, options.window // 16, w, d, size=JUMBO),
        "tcp/1": lambda: tcp_goodput(1, w, d),
        "aioquic/1": lambda: quic_goodput(credentials, 1, w, d),
        "scaffold/8": lambda: scaffold_goodput(8, w, d),
        "udp_relay_2hop": lambda: relay_rate(2, options.window, w, d),
        "tcp/8": lambda: tcp_goodput(8, w, d),
        "aioquic/8": lambda: quic_goodput(credentials, 8, w, d),
    }
    names = list(goodput)
    samples: dict[str, list[Any]] = {name: [] for name in names}
    for run in range(options.runs):
        # Rotate the order each round, so no side always runs first or last.
        shift = run * 3 % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            samples[name].append(await goodput[name]())

    setups: dict[str, Callable[[], Awaitable[list[float]]]] = {
        "scaffold": lambda: scaffold_setup(options.setups),
        "tcp": lambda: tcp_setup(options.setups),
        "aioquic": lambda: quic_setup(credentials, options.setups),
    }
    setup: dict[str, list[float]] = {}
    for name, measure_setup in setups.items():
        gc.collect()
        setup[name] = await measure_setup()

    def rates(prefix: str) -> dict[str, float]:
        return {n: round(median_rate(samples[f"{prefix}/{n}"])) for n in ("1", "8")}

    relay = samples["udp_relay"]
    relay_bps = statistics.median(r.bytes_per_s for r in relay)
    relay2_bps = statistics.median(r.bytes_per_s for r in samples["udp_relay_2hop"])
    gso_bps = statistics.median(r.bytes_per_s for r in samples["udp_relay_gso"])
    jumbo_bps = statistics.median(r.bytes_per_s for r in samples["udp_relay_64k"])
    sc, tcp, quic = rates("scaffold"), rates("tcp"), rates("aioquic")
    sc1500 = round(median_rate(samples["scaffold/1-mtu1500"]))
    ratios = {
        "scaffold1_vs_relay": ratio(sc["1"], relay_bps),
        "scaffold1_vs_relay_gso": ratio(sc["1"], gso_bps),
        "scaffold1_vs_relay_64k": ratio(sc["1"], jumbo_bps),
        "scaffold1_mtu1500_vs_relay": ratio(sc1500, relay_bps),
        "scaffold1_mtu1500_vs_relay_gso": ratio(sc1500, gso_bps),
        "scaffold1_vs_relay_2hop": ratio(sc["1"], relay2_bps),
        "scaffold1_vs_aioquic": ratio(sc["1"], quic["1"]),
        "scaffold1_vs_tcp": ratio(sc["1"], tcp["1"]),
        "scaffold8_vs_relay": ratio(sc["8"], relay_bps),
        "scaffold8_vs_relay_2hop": ratio(sc["8"], relay2_bps),
        "scaffold8_vs_aioquic": ratio(sc["8"], quic["8"]),
        "scaffold8_vs_tcp": ratio(sc["8"], tcp["8"]),
    }
    setup_ms = {name: latency_summary(times) for name, times in setup.items()}
    setup_ms["scaffold_minus_tcp"] = {
        k: round(setup_ms["scaffold"][k] - setup_ms["tcp"][k], 3) for k in ("p50", "p99", "mean")
    }
    met = {
        "scaffold1_vs_relay": (ratios["scaffold1_vs_relay"] or 0) >= GOALS["scaffold1_vs_relay"],
        "scaffold1_vs_aioquic": (ratios["scaffold1_vs_aioquic"] or 0) >= GOALS["scaffold1_vs_aioquic"],
        "setup_p50_ms": setup_ms["scaffold"]["p50"] <= GOALS["setup_p50_ms"],
    }
    return {
        "bench": "stream",
        "duration_s": options.duration,
        "warmup_s": options.warmup,
        "runs": options.runs,
        "statistic": f"median of {options.runs} runs per measurement, rotated order each round",
        "layout": (
            "one process, one uvloop event loop, one core: the whole SCAFFOLD network (controller "
            "over TCP, 2 object switches, 2 flow switches, 4 hosts; scaffold.Testbed(datacenters=2, "
            "hosts_per_datacenter=2, backbone_delay=0), loopback UDP) and both ends (and the relay) "
            "of every peer share it"
        ),
        "paths": {
            "scaffold": f"{CLIENT_HOST} -> dc2-fs1 -> dc1-fs1 -> {SERVER_HOST} (2 flow-switch hops)",
            "udp_relay": "sender -> relay -> sink (1 relay hop)",
            "udp_relay_2hop": "sender -> relay -> relay -> sink (2 relay hops)",
            "udp_relay_gso": "sender -> relay -> sink, GSO trains out, GRO trains in, 1320 B datagrams",
            "udp_relay_64k": f"sender -> relay -> sink, {JUMBO} B datagrams",
            "scaffold_mtu1500": "as scaffold, hosts told their gateway link has MTU 1500 (1320 B segments)",
            "tcp": "kernel TCP, 127.0.0.1",
            "aioquic": "aioquic 1.x defaults (Reno, 1200 B datagrams, 1 MiB flow-control windows), 127.0.0.1",
        },
        "units": "goodput in bytes/s of application payload, counted at the receiver",
        "datagram_bytes": DATAGRAM,
        "write_chunk_bytes": CHUNK,
        "scaffold": sc,
        "udp_relay": {
            "bytes_per_s": round(relay_bps),
            "datagrams_per_s": round(relay_bps / MSS),
            "payload_bytes_per_datagram": MSS,
            "window": options.window,
            "stalls": sum(r.stalls for r in relay),
            "lost": sum(r.lost for r in relay),
        },
        "udp_relay_2hop": {"bytes_per_s": round(relay2_bps), "datagrams_per_s": round(relay2_bps / MSS)},
        "udp_relay_gso": {
            "bytes_per_s": round(gso_bps),
            "datagrams_per_s": round(gso_bps / MSS),
            "train": TRAIN,
        },
        "udp_relay_64k": {
            "bytes_per_s": round(jumbo_bps),
            "datagrams_per_s": round(jumbo_bps / (JUMBO - DATAGRAM + MSS)),
            "datagram_bytes": JUMBO,
        },
        "scaffold_mtu1500": {"1": sc1500},
        "tcp": tcp,
        "aioquic": quic,
        "ratios": ratios,
        "setup_ms": setup_ms,
        "goals": GOALS,
        "met": met,
        "samples_bytes_per_s": {name: [round(s.bytes_per_s) for s in runs] for name, runs in samples.items()},
        "cpu_utilisation": {
            name: round(statistics.median(s.cpu for s in runs), 2) for name, runs in samples.items()
        },
        "environment": environment(),
    }


async def profile_scaffold(options: Options, mtu: int | None) -> None:
    """cProfile the one-stream SCAFFOLD run (``mtu``: the hosts' link MTU, instead of
    loopback's); the top functions go to stderr."""
    profiler = cProfile.Profile()
    profiler.enable()
    rate = await scaffold_goodput(1, options.warmup, options.duration, mtu=mtu)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(30)
    sys.stderr.write(f"scaffold/1 under cProfile: {rate.bytes_per_s / 1e6:.1f} MB/s\n{out.getvalue()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds counted per measurement")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds run before counting")
    parser.add_argument("--runs", type=int, default=3, help="rounds of goodput measurements")
    parser.add_argument("--setups", type=int, default=200, help="connections timed per peer")
    parser.add_argument("--window", type=int, default=256, help="UDP relay datagrams in flight")
    parser.add_argument("--quick", action="store_true", help="1 s, 1 run, 50 setups")
    parser.add_argument("--profile", action="store_true", help="cProfile scaffold/1 to stderr instead")
    parser.add_argument("--mtu", type=int, default=None, help="with --profile: the hosts' link MTU (1500)")
    args = parser.parse_args(argv)
    options = Options(args.duration, args.warmup, args.runs, args.setups, args.window)
    if args.quick:
        options = Options(1.0, 0.25, 1, 50, args.window)
    if args.profile:
        aio_run(profile_scaffold(options, args.mtu))
        return
    emit(aio_run(bench(options)))


if __name__ == "__main__":
    main()
