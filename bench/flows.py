"""Many flows held open at once: open rate, failures, bytes per flow and idle CPU.

Two parts, each with its peer in the same run:

* ``streams``: N concurrent SCAFFOLD streams (``--counts``, default 1k, 10k, 50k). A server
  echoes each stream's first message and then holds the stream open; clients open the
  streams ``--batch`` at a time (each: open, send 5 bytes, read the echo, hold). Two ways:

  - ``one``: one process runs an embedded ``Testbed`` (two datacenters, one host each), the
    server on ``dc1-h1`` and the clients on ``dc2-h1``;
  - ``separate``: three processes -- the network (controller and switches, no hosts), the
    server host and the client host, each joined with ``scaffold.join``.

  Reported per N: streams opened per second and failures; memory growth (RSS) per stream
  (per process in ``separate``: each end alone, and the network, which keeps no per-flow
  state); CPU of every process over ``--idle`` seconds once the streams are idle (after
  ``--settle`` seconds), as a share of one core; and how the keepalives went out meanwhile
  (bundled or alone, docs/protocol.md §4.4). The ratio ``open_rate_ratio`` is the open rate at
  each N over the rate at the smallest N (goal at 50k: >= 0.8); ``cpu_us_per_open`` is each
  process's CPU per stream opened, and ``open_cpu_ratio`` the same comparison by work (CPU
  per open at the smallest N over CPU per open at N), which the machine's load distorts less;
  ``late_over_early`` the rate of 1,000 opens with nearly N held over that of 1,000 opens
  with a few hundred held, in the same run; ``keepalives_while_opening`` the client's
  keepalives and stall probes sent while it opened (each held stream, having had its echo and
  no FIN, stall-probes 0.25 s after it, then 0.5, 1, 2 ... s later, up to the 15-s
  keepalive: docs/protocol.md §5.1).

* ``ingress``: ``--clients`` (10k) concurrent TCP clients, each sending 5 bytes, reading the
  echo and holding its connection, through ``scaffold ingress`` (raw, one process: a
  ``Testbed`` with a ``Publisher`` in front of the echo server and an ``Ingress``) and
  through HAProxy (``mode tcp``, ``nbthread 1``) in front of the same echo server, with the
  same client program. Reported: connections per second, failures, RSS growth per
  connection of the proxy process, idle CPU.

Every child times its garbage collections (``gc``: the longest pause per generation, the
full collections); ``--collector calm,default`` runs each N with the collector as the
daemons set it (``runtime/aio/collector.py``) and as CPython has it, interleaved.

Prints ONE JSON document. ``--quick``: 1k and 10k streams, 2k clients, short idle windows.
Run: ``PYTHONPATH=src .venv/bin/python bench/flows.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import cpu_seconds, emit, environment

LOCAL = "127.0.0.1"
MESSAGE = b"hello"
PAGE = os.sysconf("SC_PAGE_SIZE")
#: opens per window of the early and late open rates (``open_echoes``)
WINDOW = 1000


# -- measuring a process ---------------------------------------------------------------------


def rss(pid: int | str = "self") -> int:
    """Resident bytes of a process."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def raise_file_limit(wanted: int) -> int:
    """Raise this process's open-file limit to ``wanted`` (children inherit it): the hard
    limit too when allowed (root), else up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, PermissionError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def udp_receive_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer (all sockets of
    this network namespace: other programs' too)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def say(record: dict[str, Any]) -> None:
    """A child's one line to its parent."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# -- the garbage collector --------------------------------------------------------------------

#: the longest collection pause so far per generation, and how many full collections ran
PAUSES = {"longest_s": [0.0, 0.0, 0.0], "full_collections": 0}
_started: list[float] = []


def _on_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
        return
    generation = info["generation"]
    took = time.perf_counter() - _started[0]
    longest = PAUSES["longest_s"]
    assert isinstance(longest, list)
    longest[generation] = max(longest[generation], round(took, 4))
    if generation == 2:
        PAUSES["full_collections"] = int(PAUSES["full_collections"]) + 1


#: the longest an event loop callback due every ``LAG_TICK`` seconds came late (a stalled loop)
LAG = {"longest_s": 0.0}
LAG_TICK = 0.05
#: (wall-clock time, seconds) of every lag above 0.3 s: when, against the hosts reported down
STALLS: list[tuple[float, float]] = []


def _watch_lag(loop: asyncio.AbstractEventLoop, due: float) -> None:
    now = loop.time()
    LAG["longest_s"] = max(LAG["longest_s"], round(now - due, 4))
    if now - due > 0.3 and len(STALLS) < 100:
        STALLS.append((round(time.time(), 2), round(now - due, 3)))
    loop.call_at(now + LAG_TICK, _watch_lag, loop, now + LAG_TICK)


def set_up_collector() -> None:
    """In a child: time every collection and the loop's lag, and calm the collector as the
    daemons do unless ``SCAFFOLD_BENCH_COLLECTOR=default`` (the before of ``--collector``)."""
    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + LAG_TICK, _watch_lag, loop, loop.time() + LAG_TICK)
    gc.callbacks.append(_on_collection)
    if os.environ.get("SCAFFOLD_BENCH_COLLECTOR", "calm") == "calm":
        from scaffold.runtime.aio import calm_collector

        calm_collector()


def pauses() -> dict[str, Any]:
    return {
        "gc": {**PAUSES, "frozen": gc.get_freeze_count(), "loop_lag_longest_s": LAG["longest_s"]},
        "stalls": STALLS,
    }


# -- SCAFFOLD streams -------------------------------------------------------------------------


async def echo_and_hold(reader: Any, writer: Any) -> None:
    """The server: echo the first message, then hold the stream until the client ends it."""
    data = await reader.read(100)
    writer.write(data)
    await writer.drain()
    await reader.read(100)


async def open_streams(host: Any, n: int, batch: int, held: list[Any]) -> dict[str, Any]:
    """Open ``n`` streams ``batch`` at a time, each echoing once; keep them in ``held``."""
    return await open_echoes(lambda: host.open_connection("echo", timeout=30), n, batch, held)


async def open_echoes(
    connect: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
    n: int,
    batch: int,
    held: list[Any],
) -> dict[str, Any]:
    """Open ``n`` connections with ``connect``, ``batch`` at a time, each echoing once; keep
    them in ``held`` as ``(reader, writer)``; the opened and failed counts and the rate.

    With enough streams, also the rate of ``WINDOW`` opens early (just after the first
    ``batch``) and late (just before the last ``batch``, when nearly ``n`` are held): the same
    processes at nearly the same moment, so the two compare the cost of an open with few and
    with many streams held open like for like (no start-up in either, nor the tail)."""
    failures: dict[str, int] = {}
    remaining = n
    done: list[float] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                reader, writer = await connect()
                writer.write(MESSAGE)
                await writer.drain()
                if await asyncio.wait_for(reader.readexactly(len(MESSAGE)), 30) != MESSAGE:
                    raise OSError("wrong echo")
                held.append((reader, writer))
                done.append(time.perf_counter())
            except Exception as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(batch, n))))
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "opened": len(held),
        "failed": sum(failures.values()),
        "failures": failures,
        "seconds": round(seconds, 2),
        "per_s": round(len(held) / seconds, 1) if seconds else None,
    }
    if len(done) >= 2 * (batch + WINDOW):
        early = done[batch + WINDOW] - done[batch]
        late = done[-batch - 1] - done[-batch - 1 - WINDOW]
        result.update(
            per_s_early=round(WINDOW / early, 1),
            per_s_late=round(WINDOW / late, 1),
            late_over_early=round(early / late, 3),
        )
    return result


def host_counters(host: Any) -> dict[str, int]:
    counters = host.stack.counters
    return {k: counters.get(k, 0) for k in ("keepalives-bundled", "keepalive-alone", "peer-watch-probes")}


async def streams_one(n: int, batch: int, settle: float, idle: float) -> None:
    """Child ``one``: the network, the server and the clients in this process."""
    import scaffold

    async with scaffold.Testbed(datacenters=2, hosts_per_datacenter=1) as net:
        server, client = net.hosts[0], net.hosts[-1]
        await server.start_server(echo_and_hold, "echo")
        set_up_collector()
        gc.collect()
        before = rss()
        held: list[Any] = []
        cpu = cpu_seconds()
        result = await open_streams(client, n, batch, held)
        result["cpu_us_per_open"] = {"one": round((cpu_seconds() - cpu) / max(1, len(held)) * 1e6, 1)}
        await asyncio.sleep(settle)
        gc.collect()
        grown = rss() - before
        counted = [host_counters(h) for h in (server, client)]
        cpu = cpu_seconds()
        await asyncio.sleep(idle)
        cpu = cpu_seconds() - cpu
        after = [host_counters(h) for h in (server, client)]
        result.update(
            bytes_per_stream=round(grown / max(1, len(held))),
            bytes_per_stream_per_end=round(grown / max(1, 2 * len(held))),
            idle_cpu_share=round(cpu / idle, 4),
            idle_keepalives={
                k: sum(a[k] - b[k] for a, b in zip(after, counted, strict=True)) for k in after[0]
            },
            **pauses(),
        )
        say(result)
        for _, writer in held:
            writer.close()


async def network_child() -> None:
    """Child ``network``: controller and switches of two datacenters, no hosts."""
    from scaffold.core.topology import make_topology
    from scaffold.runtime.aio import EmbeddedNetwork

    async with EmbeddedNetwork(make_topology(2, 0)) as net:
        set_up_collector()
        for node in net.nodes.values():  # as `scaffold up` does: joined hosts read these
            node.stats_interval = 1.0
            node._stats_task = asyncio.create_task(node._report_stats())
        # Control connections are mutual TLS: the hosts that join get certificates of the
        # network's CA, as `scaffold credentials issue` would give them.
        issued = {role: net.node_credentials(f"bench-{role}", "host") for role in ("server", "client")}
        say(
            {
                "controller": list(net.controller.address),
                "credentials": {r: str(c.directory) if c else "" for r, c in issued.items()},
            }
        )
        lines = await stdin_lines()
        while await lines.readline():  # until the parent closes our stdin
            # Hosts the gateways reported silent (each: its replicas withdrawn for a while).
            core = net.controller.core
            downs = [
                (e.target, round(core.wall_offset + e.at, 2)) for e in core.events if e.kind == "host-down"
            ]
            say({**pauses(), "hosts_reported_down": downs})


async def host_child(role: str, controller: str, credentials: str, n: int, batch: int) -> None:
    """Child ``server`` or ``client``: one joined host (``credentials``: its directory)."""
    import scaffold

    ip, port = controller.rsplit(":", 1)
    gateway = "dc1-fs1" if role == "server" else "dc2-fs1"
    host = await scaffold.join(
        f"bench-{role}", gateway=gateway, controller=(ip, int(port)), credentials=credentials or None
    )
    set_up_collector()
    lines = await stdin_lines()
    held: list[Any] = []
    if role == "server":
        await host.start_server(echo_and_hold, "echo")
    say({"ready": True})
    while line := (await lines.readline()).decode().strip():
        if line == "open":
            before = host_counters(host)
            result = await open_streams(host, n, batch, held)
            # The held streams' keepalives and stall probes sent meanwhile (docs/protocol.md
            # §4.4, §5.1): liveness work that grows with how long the streams were held.
            result["keepalives_while_opening"] = {k: v - before[k] for k, v in host_counters(host).items()}
            say(result)
        elif line == "report":
            gc.collect()
            say({"rss": rss(), **host_counters(host), **pauses()})
    await host.close()


class Child:
    """A child process of this script, spoken to by lines of JSON."""

    def __init__(self, *args: str, collector: str = "calm") -> None:
        env = dict(
            os.environ,
            PYTHONPATH=os.environ.get("PYTHONPATH", str(ROOT / "src")),
            SCAFFOLD_BENCH_COLLECTOR=collector,
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"bench/flows.py: child {self.proc.args} ended ({self.proc.wait()})")
        record: dict[str, Any] = json.loads(line)
        return record

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


ROOT = Path(__file__).resolve().parent.parent


def streams_separate(n: int, batch: int, settle: float, idle: float, collector: str) -> dict[str, Any]:
    network = Child("network", collector=collector)
    children = [network]
    try:
        started = network.read()
        ip, port = started["controller"]
        credentials = started["credentials"]
        server = Child(
            "server", f"{ip}:{port}", credentials["server"], str(n), str(batch), collector=collector
        )
        children.append(server)
        server.read()
        client = Child(
            "client", f"{ip}:{port}", credentials["client"], str(n), str(batch), collector=collector
        )
        children.append(client)
        client.read()
        before = {
            "network": rss(network.pid),
            **{
                c: server_or_client.ask("report")["rss"]
                for c, server_or_client in (("server", server), ("client", client))
            },
        }
        opening, drops = time.time(), udp_receive_errors()
        cpu = {c.pid: cpu_seconds(c.pid) for c in children}
        result = client.ask("open")
        # CPU per stream opened, per process: the work of an open, which the machine's load
        # does not stretch as it does the open rate.
        result["cpu_us_per_open"] = {
            name: round((cpu_seconds(c.pid) - cpu[c.pid]) / max(1, result["opened"]) * 1e6, 1)
            for name, c in (("network", network), ("server", server), ("client", client))
        }
        result["opened_between"] = [round(opening, 2), round(time.time(), 2)]
        result["udp_receive_buffer_drops_while_opening"] = udp_receive_errors() - drops
        time.sleep(settle)
        reports = {"server": server.ask("report"), "client": client.ask("report")}
        after = {"network": rss(network.pid), **{k: v["rss"] for k, v in reports.items()}}
        cpu = {c.pid: cpu_seconds(c.pid) for c in children}
        time.sleep(idle)
        cpu_share = {
            name: round((cpu_seconds(c.pid) - cpu[c.pid]) / idle, 4)
            for name, c in (("network", network), ("server", server), ("client", client))
        }
        final = {"server": server.ask("report"), "client": client.ask("report")}
        result["udp_receive_buffer_drops_in_all"] = udp_receive_errors() - drops
        opened = max(1, result["opened"])
        result.update(
            bytes_per_stream={k: round((after[k] - before[k]) / opened) for k in after},
            idle_cpu_share={**cpu_share, "total": round(sum(cpu_share.values()), 4)},
            idle_keepalives={
                k: sum(final[e][k] - reports[e][k] for e in final)
                for k in ("keepalives-bundled", "keepalive-alone")
            },
        )
        from_network = network.ask("report")
        result.update(
            gc={"network": from_network["gc"], **{e: final[e]["gc"] for e in final}},
            hosts_reported_down=from_network["hosts_reported_down"],
            stalls={"network": from_network["stalls"], **{e: final[e]["stalls"] for e in final}},
        )
        return result
    finally:
        for child in reversed(children):
            child.stop()


def streams_one_process(n: int, batch: int, settle: float, idle: float, collector: str) -> dict[str, Any]:
    child = Child("one", str(n), str(batch), str(settle), str(idle), collector=collector)
    try:
        return child.read()
    finally:
        child.stop()


# -- TCP clients through a proxy --------------------------------------------------------------


async def echo_server(port: int) -> None:
    """Child ``echo``: echoes every connection until it closes."""
    raise_file_limit(4 * 65536)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, LOCAL, port, backlog=4096)
    say({"ready": True})
    async with server:
        await (await stdin_lines()).read()


async def ingress_child(backend: int) -> None:
    """Child ``ingress``: a Testbed with a Publisher of the echo server and a raw Ingress."""
    import scaffold
    from scaffold.gateway import Ingress, Publisher

    raise_file_limit(4 * 65536)
    async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=3) as net:
        # HAProxy's `timeout connect 5s` (haproxy_config): a connect slower than the default
        # 1 s under a burst would count as a failed passive check and withdraw the replica.
        publisher = Publisher(net.hosts[0], "echo", (LOCAL, backend), connect_timeout=5.0)
        await publisher.start()
        # (A connection cap above the clients, where the ingress has one.)
        capped = "max_connections" in inspect.signature(Ingress).parameters
        options = {"max_connections": 50_000} if capped else {}
        ingress = Ingress(net.hosts[2], "echo", (LOCAL, 0), **options)
        await ingress.start()
        say({"port": ingress.address[1]})
        await (await stdin_lines()).read()
        await ingress.close(grace=1.0)
        await publisher.close()


async def tcp_clients(port: int, n: int, batch: int) -> None:
    """Child ``tcp-clients``: ``n`` connections, each echoing once and then held."""
    raise_file_limit(4 * 65536)
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    say(await open_echoes(lambda: asyncio.wait_for(asyncio.open_connection(LOCAL, port), 30), n, batch, held))
    await (await stdin_lines()).read()
    for _, writer in held:
        writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


def haproxy_config(directory: Path, port: int, backend: int, clients: int) -> Path:
    path = directory / "flows-haproxy.cfg"
    path.write_text(
        f"""global
    nbthread 1
    maxconn {clients + 100}
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
frontend fe
    bind {LOCAL}:{port}
    default_backend be
backend be
    server echo {LOCAL}:{backend}
"""
    )
    return path


def through_proxy(proxy_pid: int, port: int, clients: int, batch: int, idle: float) -> dict[str, Any]:
    before = rss(proxy_pid)
    tcp = Child("tcp-clients", str(port), str(clients), str(batch))
    try:
        result = tcp.read()
        time.sleep(2.0)
        grown = rss(proxy_pid) - before
        cpu = cpu_seconds(proxy_pid)
        time.sleep(idle)
        result.update(
            proxy_bytes_per_connection=round(grown / max(1, result["opened"])),
            proxy_idle_cpu_share=round((cpu_seconds(proxy_pid) - cpu) / idle, 4),
        )
        return result
    finally:
        tcp.stop()


def ingress_part(clients: int, batch: int, idle: float) -> dict[str, Any]:
    haproxy = shutil.which("haproxy")
    out: dict[str, Any] = {"clients": clients}
    backend_port = free_port()
    echo = Child("echo", str(backend_port))
    try:
        echo.read()
        scaffold_child = Child("ingress", str(backend_port))
        try:
            port = scaffold_child.read()["port"]
            out["scaffold_ingress"] = through_proxy(scaffold_child.pid, port, clients, batch, idle)
        finally:
            scaffold_child.stop()
        if haproxy is None:
            out["haproxy"] = "not installed (scripts/system-deps installs it)"
        else:
            with tempfile.TemporaryDirectory(prefix="scaffold-flows-") as tmp:
                port = free_port()
                config = haproxy_config(Path(tmp), port, backend_port, clients)
                proc = subprocess.Popen([haproxy, "-f", str(config)], stdout=subprocess.DEVNULL)
                try:
                    deadline = time.monotonic() + 10
                    while not _answers(port):
                        if time.monotonic() > deadline or proc.poll() is not None:
                            out["haproxy"] = "did not start"
                            break
                        time.sleep(0.05)
                    else:
                        out["haproxy"] = through_proxy(proc.pid, port, clients, batch, idle)
                finally:
                    proc.terminate()
                    proc.wait(10)
    finally:
        echo.stop()
    ours, theirs = out.get("scaffold_ingress"), out.get("haproxy")
    if isinstance(ours, dict) and isinstance(theirs, dict) and theirs.get("per_s"):
        out["open_rate_ratio_to_haproxy"] = round(ours["per_s"] / theirs["per_s"], 3)
        out["memory_ratio_to_haproxy"] = round(
            ours["proxy_bytes_per_connection"] / max(1, theirs["proxy_bytes_per_connection"]), 2
        )
    return out


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((LOCAL, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- the run ---------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(c) for c in args.counts.split(",")]
    modes = [m for m in args.modes.split(",") if m]  # "": only the ingress part
    load_before = os.getloadavg()
    streams: dict[str, dict[str, Any]] = {}
    collectors = [c for c in args.collector.split(",") if c]
    for mode in modes:
        run = streams_one_process if mode == "one" else streams_separate
        for n in counts:
            for collector in collectors:
                # Interleaved per N, so both settings see the same machine load.
                key = mode if collector == "calm" else f"{mode}-{collector}-gc"
                streams.setdefault(key, {})[str(n)] = run(n, args.batch, args.settle, args.idle, collector)
        for results in streams.values():
            base = results[str(counts[0])].get("per_s")
            base_cpu = sum(results[str(counts[0])]["cpu_us_per_open"].values())
            for result in results.values():
                result["open_rate_ratio"] = (
                    round(result["per_s"] / base, 3) if base and result.get("per_s") else None
                )
                # The same comparison by work: the CPU an open costs at the smallest N over
                # its cost at this N (all processes), which load stretches less than time.
                cpu = sum(result["cpu_us_per_open"].values())
                result["open_cpu_ratio"] = round(base_cpu / cpu, 3) if cpu else None
    report: dict[str, Any] = {
        "benchmark": "flows",
        "environment": environment(),
        "load_before": load_before,
        "options": vars(args),
        "streams": streams,
    }
    if args.clients:
        # Each proxy holds two sockets per client (HAProxy sizes itself from its limit, and
        # the scaffold process runs the ingress and the publisher). A hard limit this process
        # may not raise (a container's) caps the clients so both proxies fit under it.
        limit = raise_file_limit(4 * args.clients + 1000)
        clients = min(args.clients, (limit - 400) // 2)
        report["open_file_limit"] = limit
        if clients < args.clients:
            report["clients_capped_by_file_limit"] = clients
        report["ingress"] = ingress_part(clients, args.batch, args.idle)
    report["load_after"] = os.getloadavg()
    return report


def child_main(argv: list[str]) -> None:
    from scaffold.runtime.aio import run

    kind, rest = argv[0], argv[1:]
    if kind == "one":
        run(streams_one(int(rest[0]), int(rest[1]), float(rest[2]), float(rest[3])))
    elif kind == "network":
        run(network_child())
    elif kind in ("server", "client"):
        run(host_child(kind, rest[0], rest[1], int(rest[2]), int(rest[3])))
    elif kind == "echo":
        run(echo_server(int(rest[0])))
    elif kind == "ingress":
        run(ingress_child(int(rest[0])))
    elif kind == "tcp-clients":
        run(tcp_clients(int(rest[0]), int(rest[1]), int(rest[2])))
    else:
        raise SystemExit(f"unknown child {kind!r}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child_main(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1000,10000,50000", help="concurrent streams per run")
    parser.add_argument("--modes", default="one,separate", help="one (one process), separate (three)")
    parser.add_argument("--batch", type=int, default=200, help="streams / connections opened at once")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after opening before idle CPU")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measurement")
    parser.add_argument(
        "--clients", type=int, default=10_000, help="TCP clients through the proxies (0: skip)"
    )
    parser.add_argument(
        "--collector",
        default="calm",
        help="calm (as the daemons run: survivors frozen, runtime/aio/collector.py), default "
        "(CPython's as it comes), or both: calm,default",
    )
    parser.add_argument("--quick", action="store_true", help="1k and 10k streams, 2k clients, short waits")
    args = parser.parse_args(argv)
    if args.quick:
        args.counts, args.clients, args.settle, args.idle = "1000,10000", 2000, 5.0, 10.0
    emit(bench(args))


if __name__ == "__main__":
    main()
