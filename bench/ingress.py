"""The ingress and publisher vs HAProxy (TCP mode, health checks) and direct connections.

One run, the same two replicas for every setup: tiny asyncio HTTP/1.1 keep-alive servers
(``--replica PORT`` mode of this script), each in its own process. The setups:

* ``direct``: the client talks to replica 0 itself (no balancing, no failover: the floor);
* ``haproxy-default``: ``mode tcp``, ``balance roundrobin``, ``server ... check`` (HAProxy's
  defaults: ``inter 2s fall 3 rise 2``), ``retries 3``, no ``redispatch``; ``nbthread 1``,
  as scaffold runs on one core;
* ``haproxy-tuned``: the same with ``check inter 200ms fall 2``;
* ``haproxy-tuned-2t``: ``haproxy-tuned`` with ``nbthread 2`` (throughput and setup only);
* ``haproxy-http``: ``haproxy-tuned`` in ``mode http`` (throughput and setup only): HAProxy
  parsing every request and response, keep-alive on both sides, idle server connections
  shared across clients (``http-reuse safe``, its default) -- the like-for-like peer of
  ``scaffold-http``;
* ``scaffold-raw`` and ``scaffold-http``: one child process (``--scaffold`` mode) runs an
  embedded ``Testbed`` (one datacenter, three hosts), a ``Publisher`` per replica on two
  hosts (``check_interval 0.5 fall 2 rise 2``) and two ``Ingress`` on the third: raw TCP and
  ``http=True`` -- the whole balancer on one core, like ``nbthread 1``;
* ``scaffold-raw-pool`` and ``scaffold-http-pool`` (throughput and setup only): the same
  process, the same replicas published again as object ``webpool`` with ``pool=POOL`` (4)
  idle connections per publisher (``gateway/pool.py``: no connect on a setup's path);
* ``scaffold-raw-warm`` (throughput and setup only): the same process, a raw ``Ingress`` for
  ``web`` with ``preconnect=WARM`` (4) streams opened ahead of its clients
  (``gateway/warm.py``: no stream opened on a setup's path);
* ``scaffold-raw-wN`` and ``scaffold-http-wN`` (``--workers``, default 1 and 2; throughput
  and setup only): the deployment's shape, every piece a process of its own -- ``scaffold
  up`` (controller, switches), ``scaffold publish --workers N`` per replica and ``scaffold
  ingress [--http] --workers N``, joined through the state file (object ``webN``);
* ``floor-1p`` and ``floor-3p`` (throughput and setup only): ``bench/floor.py``, the floor
  under them -- a client's bytes carried ingress -> switch -> publisher -> replica and back,
  TCP and UDP on uvloop, with no transport, names or failover at all: what any Python
  program of that shape spends, in one process and as three.

Measured, per setup:

* ``throughput``: ``wrk -t2 -c20 -d{--duration}s --latency`` (keep-alive connections):
  requests/s, p50/p99 latency, socket errors, non-2xx responses, and the CPU spent per
  request (``cpu_us_per_request``, user + system from ``/proc``) by the balancer (every
  process of the setup: HAProxy's, the one-process child, or ``up`` + the publishers + the
  ingress with their ``--workers``, each of those three parts also on its own), the two
  replicas, wrk itself and the whole machine;
* ``cpu_budget``: for each of issue #12's throughput goals (``GOALS``: 0.25x HAProxy with one
  worker, 0.45x with two), whether this machine has the CPU for it -- at the goal's rate, what
  wrk and the replicas take leaves the balancer a budget per request (at most its cores),
  against what it spent (``cost``): a goal over budget is out of reach here however quiet
  the machine;
* ``setup``: ``--setups`` sequential fresh connections to each setup, 5 ms apart, the setups
  taken in turn (one connection to each, then the next round, so a drift of the machine's
  speed hits them alike), each timed from ``connect()`` until the first byte of the response
  to a tiny GET (p50/p99, and the overhead over ``direct``);
* ``kill``: ``--kill-duration`` seconds of ``--kill-clients`` client loops, each doing one GET
  per fresh connection (2 s timeout); replica 0 is SIGKILLed ``--kill-at`` seconds in.
  Failed requests (refused, reset, timed out, not 200), the time from the kill to the
  last failure, the requests that failed or took over 0.5 s (each with the time it took to
  connect and to the response's first byte) and how many of those over 1 s were away from
  the kill (``stalled_away_from_kill``), and the kernel's TCP/UDP drop and retransmission
  counters over the run. Replica 0 is restarted, and every balancer sees it up again, before
  the next setup.

``--kill-only`` runs only the kill runs (of ``--kill-setups``; ``--no-kill`` keeps the
replica alive); ``--trace DIR`` also writes every request, the kernel's counters each 0.25 s
(and which UDP socket dropped datagrams), and the scaffold process's event-loop lags over
20 ms and garbage collections over 5 ms, as JSON lines with wall-clock times, to lay side by
side (docs/gateway.md, "Fifth round").

Counted instead of timed (``--profile-setups N`` or ``--profile-requests SECONDS``, with
``--profile-mode raw|http``): Python calls per setup (N sequential setups, 5 ms apart) or per
keep-alive request (wrk for SECONDS) in the one-process ``--scaffold`` child, by cProfile,
switched on and off over its control port: the calls of that window minus an idle window's
(heartbeats, health checks) scaled to its length, by module and by function. Deterministic
to a few calls where wall time on a shared machine is not; ``--profile-dump DIR`` keeps the
two dumps for ``pstats``.

Prints ONE JSON document. Run: ``PYTHONPATH=src .venv/bin/python bench/ingress.py [--quick]``,
``... bench/ingress.py --profile-setups 1000``, ``... --profile-requests 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import csv
import gc
import io
import json
import os
import pstats
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import emit, environment, process_cpu_seconds

LOCAL = "127.0.0.1"
#: idle connections each publisher of the ``-pool`` setups keeps to its replica
POOL = 4
#: streams the ``scaffold-raw-warm`` ingress keeps open ahead of its clients
WARM = 4
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


# -- child modes ----------------------------------------------------------------------------


async def replica_main(port: int) -> None:
    """A tiny HTTP/1.1 keep-alive server: every request gets a short 200."""
    body = f"hello from {port}\n".encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                close = b"connection: close" in request.lower()
                writer.write(head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, LOCAL, port, reuse_address=True, backlog=1024)
    async with server:
        await server.serve_forever()


def watch_loop(path: Path) -> None:
    """Log (JSON lines, wall-clock times) each event-loop turn of this process that ran over
    20 ms late, and each garbage collection over 5 ms: what a shared stall of the scaffold
    process would look like from inside it (``--trace``)."""
    out = open(path, "a", buffering=1)  # noqa: SIM115 - for the life of the process
    loop = asyncio.get_running_loop()
    period = 0.01
    gc_started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[:] = [time.perf_counter()]
        elif gc_started:
            took = time.perf_counter() - gc_started[0]
            if took > 0.005:
                record = {"gc": info["generation"], "at": time.time(), "ms": round(took * 1000, 1)}
                out.write(json.dumps(record) + "\n")

    gc.callbacks.append(on_gc)

    def tick(due: float) -> None:
        late = loop.time() - due
        if late > 0.02:
            out.write(json.dumps({"lag_ms": round(late * 1000, 1), "at": time.time()}) + "\n")
        loop.call_at(loop.time() + period, tick, loop.time() + period)

    loop.call_at(loop.time() + period, tick, loop.time() + period)


def node_counters(nodes: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every node's non-zero metrics, ``name{label=value}`` to value."""
    out: dict[str, dict[str, float]] = {}
    for node_name, node in nodes.items():
        values: dict[str, float] = {}
        for sample in node.metrics():
            if sample.value:
                labels = ",".join(f"{k}={v}" for k, v in sorted(dict(sample.labels).items()))
                values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        out[node_name] = values
    return out


async def scaffold_main(targets: list[int], control_port: int, trace: Path | None = None) -> None:
    """Testbed + publishers + ingresses; a control port answers with their state as JSON."""
    import scaffold
    from scaffold.gateway import Ingress, Publisher

    if trace is not None:
        watch_loop(trace / "scaffold-loop.jsonl")
    async with scaffold.Testbed(datacenters=1, hosts_per_datacenter=3) as net:
        publishers = [
            Publisher(net.hosts[i], "web", (LOCAL, port), check_interval=0.5, fall=2, rise=2)
            for i, port in enumerate(targets)
        ]
        for publisher in publishers:
            await publisher.start()
        raw = Ingress(net.hosts[2], "web", (LOCAL, 0))
        web = Ingress(net.hosts[2], "web", (LOCAL, 0), http=True)
        # The same replicas as object "webpool", published with POOL idle connections each.
        pooled = [
            Publisher(net.hosts[i], "webpool", (LOCAL, port), check_interval=0.5, fall=2, rise=2, pool=POOL)
            for i, port in enumerate(targets)
        ]
        for publisher in pooled:
            await publisher.start()
        raw_pool = Ingress(net.hosts[2], "webpool", (LOCAL, 0))
        web_pool = Ingress(net.hosts[2], "webpool", (LOCAL, 0), http=True)
        raw_warm = Ingress(net.hosts[2], "web", (LOCAL, 0), preconnect=WARM)
        ingresses = (raw, web, raw_pool, web_pool, raw_warm)
        for ingress in ingresses:
            await ingress.start()

        profiler: cProfile.Profile | None = None

        async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal profiler
            # One command a connection: "state", "profile-start" or "profile-stop PATH"
            # (--profile-setups/--profile-requests count the calls between the last two).
            command, _, argument = (await reader.readline()).decode().strip().partition(" ")
            if command == "profile-start":
                profiler = cProfile.Profile()
                profiler.enable()
            elif command == "profile-stop" and profiler is not None:
                profiler.disable()
                profiler.dump_stats(argument)
                profiler = None
            state = {
                "raw_port": raw.address[1],
                "http_port": web.address[1],
                "raw_pool_port": raw_pool.address[1],
                "http_pool_port": web_pool.address[1],
                "raw_warm_port": raw_warm.address[1],
                "publishers": [{"healthy": p.healthy, **p.stats.as_json()} for p in publishers + pooled],
                "raw": raw.stats.as_json(),
                "http": web.stats.as_json(),
            }
            if trace is not None:
                state["nodes"] = node_counters(net.network.nodes)
                state["udp_ports"] = {name: node.address[1] for name, node in net.network.nodes.items()}
            writer.write(json.dumps(state).encode())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(control, LOCAL, control_port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()
        for ingress in ingresses:
            await ingress.close(grace=0.5)
        for publisher in publishers + pooled:
            await publisher.close()


# -- harness helpers ------------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port of ``kind`` (TCP by default) free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/ingress.py: timed out waiting for {what}")
        time.sleep(0.05)


def answers(port: int) -> bool:
    try:
        with socket.create_connection((LOCAL, port), timeout=0.5):
            return True
    except OSError:
        return False


def scaffold_state(control_port: int, command: str = "state") -> dict[str, Any]:
    with socket.create_connection((LOCAL, control_port), timeout=5) as s:
        s.sendall(command.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    state: dict[str, Any] = json.loads(data)
    return state


def haproxy_config(
    directory: Path,
    name: str,
    port: int,
    replicas: list[int],
    check: str,
    threads: int = 1,
    mode: str = "tcp",
) -> Path:
    """``mode http`` keeps HAProxy's HTTP defaults: keep-alive both sides, ``http-reuse safe``
    (idle server connections shared across clients), ``retries`` of failed connections."""
    servers = "\n".join(f"    server r{i} {LOCAL}:{p} {check}" for i, p in enumerate(replicas))
    http_request = "    timeout http-request 10s\n" if mode == "http" else ""
    path = directory / f"{name}.cfg"
    path.write_text(
        f"""global
    nbthread {threads}
    maxconn 4096
    stats socket {directory}/{name}.sock mode 600 level admin
defaults
    mode {mode}
    timeout connect 2s
    timeout client 30s
    timeout server 30s
{http_request}    retries 3
frontend fe
    bind {LOCAL}:{port}
    default_backend be
backend be
    balance roundrobin
{servers}
"""
    )
    return path


def haproxy_all_up(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(sock))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return False
    rows = list(csv.reader(io.StringIO(data.decode().lstrip("# "))))
    header = rows[0]
    status = header.index("status")
    servers = [r for r in rows[1:] if len(r) > status and r[1] not in ("FRONTEND", "BACKEND", "")]
    return bool(servers) and all(r[status].startswith("UP") for r in servers)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> dict[str, Any]:
    def latency(pct: str) -> float | None:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return round(float(m.group(1)) * UNITS[m.group(2)], 3) if m else None

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests_per_s": float(rps.group(1)) if rps else None,
        "requests": int(total.group(1)) if total else None,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


TICK = os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle so far (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / TICK


def run_wrk(
    wrk: str, port: int, duration: float, watch: dict[str, list[int]] | None = None
) -> dict[str, Any]:
    """wrk's figures; with ``watch`` (a role -> its pids), also the CPU each role spent per
    request over the run (``cpu_us_per_request``: those, wrk's own and the machine's)."""
    before = {role: sum(map(process_cpu_seconds, pids)) for role, pids in (watch or {}).items()}
    busy = machine_busy()
    proc = subprocess.Popen(
        [wrk, "-t2", "-c20", f"-d{duration:g}s", "--latency", f"http://{LOCAL}:{port}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    stop = threading.Timer(duration + 30, proc.kill)  # (a wrk that hangs is cut)
    stop.start()
    try:
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, with its CPU time
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        stop.cancel()
        proc.stdout.close()
    result = parse_wrk(out)
    if watch is None:
        return result
    spent = {role: sum(map(process_cpu_seconds, pids)) - before[role] for role, pids in watch.items()}
    spent["wrk"] = usage.ru_utime + usage.ru_stime
    spent["machine"] = machine_busy() - busy
    requests = result["requests"] or 0
    if requests:
        result["cpu_us_per_request"] = {role: round(cpu / requests * 1e6, 1) for role, cpu in spent.items()}
    return result


def one_setup(port: int) -> float:
    """Seconds from connect() to the first byte of the response."""
    start, first = timed_setup(port)
    return (first - start) / 1e9


def timed_setup(port: int) -> tuple[int, int]:
    """One fresh connection and a tiny GET: when ``connect()`` began and when the response's
    first byte came (``time.perf_counter_ns``, the monotonic clock other processes read too);
    the rest of the response is read to its end.

    Raises:
        OSError: the connection failed or closed before answering.
    """
    start = time.perf_counter_ns()
    with socket.create_connection((LOCAL, port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(REQUEST)
        got = s.recv(1)
        first = time.perf_counter_ns()
        if not got:
            raise OSError("closed before answering")
        while s.recv(65536):
            pass
    return start, first


def setup_times(ports: dict[str, int], count: int, spacing: float = 0.005) -> dict[str, Any]:
    """``count`` connections to each setup, ``spacing`` s apart, taken in turn (one to each
    setup, then the next round): a drift of the machine's speed over the run -- a shared
    machine's other work, CPU states -- hits every setup alike, so each one's overhead over
    ``direct`` compares samples of the same moments. Spaced, each sample is one connection's
    setup, not also the teardown of the one before (the whole scaffold network shares one
    core).

    Raises:
        OSError: a connection failed or closed before answering (naming the setup).
    """
    samples: dict[str, list[float]] = {name: [] for name in ports}
    for round_ in range(-10, count):  # ten rounds of warm-up first
        for name, port in ports.items():
            time.sleep(spacing)
            try:
                elapsed = one_setup(port) * 1000
            except OSError as exc:
                raise OSError(f"{name}: connection {round_ + 11} of {count + 10}: {exc}") from exc
            if round_ >= 0:
                samples[name].append(elapsed)
    results = {}
    for name, times in samples.items():
        times.sort()
        results[name] = {
            "samples": count,
            "p50_ms": round(statistics.median(times), 3),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
        }
    return results


#: kernel counters (``/proc/net/netstat``, ``/proc/net/snmp``) a kill run records, whose
#: changes would show the kernel dropping or retransmitting a connection's packets
KERNEL_COUNTERS = (
    "TcpExt:ListenOverflows",
    "TcpExt:ListenDrops",
    "TcpExt:TCPTimeouts",
    "TcpExt:TCPSynRetrans",
    "TcpExt:TW",
    "TcpExt:TWRecycled",
    "TcpExt:TCPTimeWaitOverflow",
    "TcpExt:TCPReqQFullDrop",
    "TcpExt:TCPReqQFullDoCookies",
    "TcpExt:SyncookiesSent",
    "TcpExt:PAWSEstab",
    "TcpExt:TCPChallengeACK",
    "TcpExt:TCPAbortOnData",
    "Tcp:RetransSegs",
    "Tcp:AttemptFails",
    "Tcp:EstabResets",
    "Tcp:OutRsts",
    "Udp:RcvbufErrors",
    "Udp:SndbufErrors",
    "Udp:InErrors",
)


def kernel_counters() -> dict[str, int]:
    """The ``KERNEL_COUNTERS`` of this network namespace, now."""
    values: dict[str, int] = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        with contextlib.suppress(OSError), open(path) as f:
            lines = f.read().splitlines()
        for names, numbers in zip(lines[::2], lines[1::2], strict=False):
            prefix, _, keys = names.partition(" ")
            for key, value in zip(keys.split(), numbers.split()[1:], strict=False):
                name = f"{prefix.rstrip(':')}:{key}"
                if name in KERNEL_COUNTERS:
                    values[name] = int(value)
    return values


def udp_drops() -> dict[int, int]:
    """Datagrams each UDP socket of this network namespace dropped (full receive buffer), by
    local port: which process lost them (``/proc/net/udp``'s ``drops`` column)."""
    drops: dict[int, int] = {}
    with contextlib.suppress(OSError), open("/proc/net/udp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 12 and fields[12] != "0":
                drops[int(fields[1].rpartition(":")[2], 16)] = int(fields[12])
    return drops


async def kill_run(
    port: int,
    duration: float,
    kill_at: float,
    clients: int,
    kill: Callable[[], None],
    trace: Path | None = None,
) -> dict[str, Any]:
    """Client loops of one GET per fresh connection; ``kill`` runs ``kill_at`` s in.

    With ``trace``, every request (start, stage times, outcome) and the kernel's counters each
    0.25 s go there as JSON lines, wall-clock times, to be laid beside the scaffold process's
    loop log."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    outcomes: list[tuple[float, bool, str]] = []
    slow: list[dict[str, Any]] = []
    out = open(trace, "w", buffering=1) if trace is not None else None  # noqa: SIM115
    wall = time.time() - start  # loop time + wall = wall-clock time

    async def get(stages: dict[str, float]) -> None:
        reader, writer = await asyncio.open_connection(LOCAL, port)
        stages["connected"] = loop.time()
        try:
            writer.write(REQUEST)
            await writer.drain()
            reply = await reader.read(1)
            stages["first_byte"] = loop.time()
            reply += await reader.read()
            stages["eof"] = loop.time()
            if not reply.startswith(b"HTTP/1.1 200") or not reply.endswith(b"\n"):
                raise OSError(f"bad reply {reply[:40]!r}")
        finally:
            writer.close()

    async def client(index: int) -> None:
        while (now := loop.time() - start) < duration:
            started = loop.time()
            stages: dict[str, float] = {}
            try:
                await asyncio.wait_for(get(stages), 2.0)
                ok, why = True, ""
            except (OSError, TimeoutError) as exc:
                ok, why = False, type(exc).__name__
            outcomes.append((now, ok, why))
            took = loop.time() - started
            if took > 0.5 or not ok or out is not None:
                # The stage that took the time: the last one reached before it ended.
                record = {
                    "client": index,
                    "at": round(started + wall, 4),
                    "t": round(now, 4),
                    "ms": round(took * 1000, 1),
                    "ok": ok,
                    "why": why,
                    **{f"{k}_ms": round((v - started) * 1000, 1) for k, v in stages.items()},
                }
                if took > 0.5 or not ok:
                    slow.append(record)
                if out is not None:
                    out.write(json.dumps(record) + "\n")

    async def killer() -> None:
        await asyncio.sleep(kill_at)
        kill()

    async def counters() -> None:
        before, dropped = kernel_counters(), udp_drops()
        while loop.time() - start < duration + 2.5:
            await asyncio.sleep(0.25)
            now, dropping = kernel_counters(), udp_drops()
            changed = {k: v - before.get(k, 0) for k, v in now.items() if v != before.get(k, 0)}
            by_port = {str(p): n - dropped.get(p, 0) for p, n in dropping.items() if n != dropped.get(p, 0)}
            if by_port:
                changed["udp_drops_by_port"] = by_port  # type: ignore[assignment]
            if changed and out is not None and not out.closed:
                out.write(json.dumps({"kernel": changed, "at": round(time.time(), 3)}) + "\n")
            before, dropped = now, dropping

    before = kernel_counters()
    watcher = asyncio.create_task(counters()) if out is not None else None
    await asyncio.gather(killer(), *(client(i) for i in range(clients)))
    if watcher is not None:
        watcher.cancel()
    after = kernel_counters()
    if out is not None:
        out.close()
    failures = [(t, why) for t, ok, why in outcomes if not ok]
    last = max((t for t, _ in failures), default=None)
    kinds: dict[str, int] = {}
    for _, why in failures:
        kinds[why] = kinds.get(why, 0) + 1
    return {
        "requests": len(outcomes),
        "failed": len(failures),
        "failure_kinds": kinds,
        "first_failure_after_kill_s": round(min(t for t, _ in failures) - kill_at, 3) if failures else None,
        "last_failure_after_kill_s": round(last - kill_at, 3) if last is not None else None,
        # A stall that is not the kill's: a request that failed or took over a second, begun
        # before the kill or more than 3 s after it (the withdrawal window). Each used to be
        # a host cut by the controller's idle timeout (docs/gateway.md, "Fifth round").
        "stalled_away_from_kill": sum(
            1 for r in slow if (r["ms"] > 1000 or not r["ok"]) and not kill_at - 0.1 <= r["t"] <= kill_at + 3
        ),
        "slow_or_failed": slow[:50],
        "kernel": {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)},
    }


# -- the run -------------------------------------------------------------------------------


class Fleet:
    """The child processes of one run, each killed by its pid at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
        out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(args, stdout=out, stderr=out, env=env)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


NETWORK_TOPOLOGY = """\
name = "bench"

[[datacenter]]
name = "dc1"
hosts = ["dc1-h1"]
"""
#: the operator's policy for each object: any host may serve it (the publishers join under
#: names of their own)
OBJECT_POLICY = """
[[object]]
name = "{name}"
allow = ["*"]
"""


def start_floors(fleet: Fleet, replicas: list[int]) -> dict[str, tuple[int, dict[str, list[int]]]]:
    """``bench/floor.py``, the least a Python pipeline of the deployment's shape does, in one
    process (``floor-1p``) and as three (``floor-3p``: ingress, switch, publisher): each
    setup's port and processes by part."""
    floor = [sys.executable, str(Path(__file__).resolve().parent / "floor.py")]
    targets = ["--replicas", ",".join(map(str, replicas))]
    one = free_port()
    out = {"floor-1p": (one, {"balancer": [fleet.start(*floor, "--listen", str(one), *targets).pid]})}
    port, udp = (
        free_port(),
        {role: free_port(socket.SOCK_DGRAM) for role in ("switch", "ingress", "publisher")},
    )
    hops = [arg for role, p in udp.items() for arg in (f"--{role}", str(p))]
    parts = {
        "ingress": [fleet.start(*floor, "--role", "ingress", "--listen", str(port), *hops).pid],
        "switch": [fleet.start(*floor, "--role", "switch", *hops).pid],
        "publisher": [fleet.start(*floor, "--role", "publisher", *targets, *hops).pid],
    }
    out["floor-3p"] = (port, parts)
    return out


class Deployment:
    """The scaffold side as a deployment runs it: ``scaffold up``, then ``scaffold publish``
    per replica and ``scaffold ingress`` (raw and ``--http``) per worker count, each a
    process of its own, joined through the network's state file."""

    def __init__(self, fleet: Fleet, directory: Path, replicas: list[int], workers: list[int]) -> None:
        self.fleet = fleet
        self.directory = directory
        self.replicas = replicas
        self.workers = workers
        self.state = directory / "state.json"
        self.ports: dict[str, int] = {}
        self.logs: list[Path] = []
        #: every process it started, by name (``up``, ``publish-webN-i``, ``ingress-webN-MODE``)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        scaffold = [sys.executable, "-m", "scaffold"]
        topology = self.directory / "bench.toml"
        topology.write_text(
            NETWORK_TOPOLOGY + "".join(OBJECT_POLICY.format(name=f"web{n}") for n in self.workers)
        )
        up_log = self.directory / "up.log"
        self.procs["up"] = self.fleet.start(
            *scaffold, "up", str(topology), "--state", str(self.state), log=up_log
        )
        wait_for(lambda: "is up" in up_log.read_text(), "scaffold up")
        network = ["--network", str(self.state)]
        for n in self.workers:
            obj, workers = f"web{n}", ["--workers", str(n)] if n > 1 else []
            for i, port in enumerate(self.replicas):
                target = [
                    "--target",
                    f"{LOCAL}:{port}",
                    "--check-interval",
                    "0.5",
                    "--fall",
                    "2",
                    "--rise",
                    "2",
                ]
                self._start(f"publish-{obj}-{i}", *scaffold, "publish", obj, *target, *network, *workers)
            for mode in ("raw", "http"):
                port = free_port()
                self.ports[f"scaffold-{mode}-w{n}"] = port
                http = ["--http"] if mode == "http" else []
                listen = ["--listen", f"{LOCAL}:{port}"]
                self._start(
                    f"ingress-{obj}-{mode}", *scaffold, "ingress", obj, *listen, *http, *network, *workers
                )
        wait_for(self.all_up, "the deployment's replicas", timeout=60)
        # Every worker listening, not just one: wrk's 20 keep-alive connections are spread by
        # the kernel over the workers listening when it connects, and stay there, so a worker
        # still joining would get none of them (the others all of them).
        for n in self.workers:
            for mode in ("raw", "http"):
                log = self.directory / f"ingress-web{n}-{mode}.log"
                said = f"ingress {'http' if mode == 'http' else 'tcp'} "
                listening = lambda log=log, said=said, n=n: log.read_text().count(said) >= n  # noqa: E731
                wait_for(listening, f"every worker of {log.stem}")
        for port in self.ports.values():
            wait_for(lambda port=port: answers(port), f"ingress on port {port}")

    def _start(self, name: str, *argv: str) -> None:
        log = self.directory / f"{name}.log"
        self.logs.append(log)
        self.procs[name] = self.fleet.start(*argv, log=log)

    def parts(self, setup: str) -> dict[str, list[int]]:
        """The processes serving ``scaffold-MODE-wN`` by part: the network's (``up``), that
        ingress and webN's publishers (a ``--workers`` supervisor's workers are its
        children, counted with it)."""
        mode, n = setup.removeprefix("scaffold-").split("-w")
        names = {
            "up": ["up"],
            "ingress": [f"ingress-web{n}-{mode}"],
            "publishers": [f"publish-web{n}-{i}" for i in range(len(self.replicas))],
        }
        return {
            part: [self.procs[name].pid for name in group if name in self.procs]
            for part, group in names.items()
        }

    def all_up(self) -> bool:
        from scaffold.core.controller.commands import Status
        from scaffold.deploy.state_file import load_state
        from scaffold.runtime.admin import call_sync

        if not self.workers:
            return True
        try:
            state = load_state(self.state)
            status = call_sync(tuple(state.controller), Status(), timeout=2, credentials=state.operator())
        except Exception:
            return False
        alive = {o["name"]: sum(r["alive"] for r in o["replicas"]) for o in status["objects"]}
        return all(alive.get(f"web{n}", 0) == n * len(self.replicas) for n in self.workers)

    def counters(self) -> list[dict[str, Any]]:
        """The JSON lines the gateway processes printed at exit. A ``--workers`` pool's
        processes share one log and exit together, so two may share a line: each object on
        it is taken; one cut by another's output is counted as ``unreadable``."""
        out: list[dict[str, Any]] = []
        decoder = json.JSONDecoder()
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                text = line.strip()
                while text.startswith(('{"ingress"', '{"publisher"')):
                    try:
                        record, end = decoder.raw_decode(text)
                    except ValueError:
                        out.append({"process": log.stem, "unreadable": text[:200]})
                        break
                    out.append({"process": log.stem, **record})
                    text = text[end:].lstrip()
        return out


#: the issue's throughput goals (#12): a setup at ``ratio`` x its peer's requests/s, its
#: balancer on at most ``cores`` cores (the one-process child: one event loop; None: the
#: deployment's processes, which may use every CPU)
GOALS: tuple[tuple[str, str, float, int | None], ...] = (
    ("scaffold-raw", "haproxy-tuned", 0.25, 1),
    ("scaffold-http", "haproxy-tuned", 0.25, 1),
    ("scaffold-http", "haproxy-http", 0.25, 1),
    ("scaffold-raw-w1", "haproxy-tuned", 0.25, None),
    ("scaffold-http-w1", "haproxy-tuned", 0.25, None),
    ("scaffold-raw-w2", "haproxy-tuned-2t", 0.45, None),
    ("scaffold-http-w2", "haproxy-tuned-2t", 0.45, None),
    # the floor under the same budgets (bench/floor.py): what no Python program of the
    # deployment's shape spends less than
    ("floor-1p", "haproxy-tuned", 0.25, 1),
    ("floor-3p", "haproxy-tuned-2t", 0.45, None),
)


def cpu_budget(throughput: dict[str, Any], cpus: int) -> dict[str, Any]:
    """For each goal, whether this machine has the CPU for it: at the goal's rate R, the
    client (wrk) and the replicas take R x their CPU per request (as measured in the setup's
    own run), and the balancer may spend what is left -- at most its cores -- so its budget
    per request is ``min(cores, cpus - R x others) / R``; ``cost`` is what it spent per
    request (every process of it, from ``/proc``). A goal whose cost is over budget cannot
    be met on this machine by making the run longer or the machine quieter; one within it
    and still missed is bound by something else (the deployment's five processes taking
    turns on two CPUs, say)."""
    out: dict[str, Any] = {}
    for setup, peer, ratio, cores in GOALS:
        mine, theirs = throughput.get(setup), throughput.get(peer)
        if not mine or not theirs or "cpu_us_per_request" not in mine or not theirs.get("requests_per_s"):
            continue
        cpu = mine["cpu_us_per_request"]
        rate = ratio * theirs["requests_per_s"]
        others = cpu["wrk"] + cpu["replicas"]
        budget = max(0.0, min(cores or cpus, cpus - rate * others / 1e6)) / rate * 1e6
        out[f"{setup}/{peer}"] = {
            "goal_ratio": ratio,
            "target_requests_per_s": round(rate),
            "others_us_per_request": round(others, 1),
            "budget_us_per_request": round(budget, 1),
            "cost_us_per_request": cpu["balancer"],
            "fits": cpu["balancer"] <= budget,
        }
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    haproxy = shutil.which("haproxy")
    if wrk is None or haproxy is None:
        raise SystemExit("bench/ingress.py needs wrk and haproxy (scripts/system-deps installs them)")
    fleet = Fleet()
    me = str(Path(__file__).resolve())
    replicas = [free_port(), free_port()]
    replica_procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="scaffold-bench-") as tmp:
        directory = Path(tmp)
        try:

            def start_replica(i: int) -> None:
                proc = fleet.start(sys.executable, me, "--replica", str(replicas[i]))
                if i < len(replica_procs):
                    replica_procs[i] = proc
                else:
                    replica_procs.append(proc)
                wait_for(lambda: answers(replicas[i]), f"replica {i}")

            for i in range(2):
                start_replica(i)
            haproxies: dict[str, tuple[int, Path]] = {}
            balancers: dict[str, list[int]] = {"direct": []}  # each setup's processes, for CPU
            tuned = "check inter 200ms fall 2"
            for name, check, threads, mode in (
                ("haproxy-default", "check", 1, "tcp"),
                ("haproxy-tuned", tuned, 1, "tcp"),
                ("haproxy-tuned-2t", tuned, 2, "tcp"),
                ("haproxy-http", tuned, 1, "http"),
            ):
                port = free_port()
                config = haproxy_config(directory, name, port, replicas, check, threads, mode)
                balancers[name] = [fleet.start(haproxy, "-f", str(config)).pid]
                haproxies[name] = (port, directory / f"{name}.sock")
            control = free_port()
            trace = ["--trace", str(args.trace)] if args.trace else []
            scaffold = fleet.start(
                sys.executable,
                me,
                "--scaffold",
                ",".join(map(str, replicas)),
                "--control",
                str(control),
                *trace,
            )
            wait_for(lambda: answers(control), "the scaffold network")
            state = scaffold_state(control)
            deployment = Deployment(fleet, directory, replicas, [] if args.kill_only else args.workers)
            if deployment.workers:
                deployment.start()
            floors = {} if args.kill_only else start_floors(fleet, replicas)
            ports = {
                "direct": replicas[0],
                **{name: port for name, (port, _) in haproxies.items()},
                "scaffold-raw": state["raw_port"],
                "scaffold-http": state["http_port"],
                "scaffold-raw-pool": state["raw_pool_port"],
                "scaffold-http-pool": state["http_pool_port"],
                "scaffold-raw-warm": state["raw_warm_port"],
                **deployment.ports,
                **{name: port for name, (port, _) in floors.items()},
            }
            for name, (_, sock) in haproxies.items():
                wait_for(lambda sock=sock: haproxy_all_up(sock), f"{name} to see both replicas")
            for name, (port, _) in floors.items():
                wait_for(lambda port=port: answers(port), f"{name} on port {port}")

            def all_up() -> bool:
                published = all(p["healthy"] for p in scaffold_state(control)["publishers"])
                balancers = all(haproxy_all_up(sock) for _, sock in haproxies.values())
                return published and balancers and deployment.all_up()

            throughput: dict[str, Any] = {}
            setup: dict[str, Any] = {}
            if not args.kill_only:
                parts: dict[str, dict[str, list[int]]] = {}  # a deployment's, by process
                for name in ports:
                    if re.fullmatch(r"scaffold-\w+-w\d+", name):
                        parts[name] = deployment.parts(name)
                        balancers[name] = [pid for group in parts[name].values() for pid in group]
                    elif name.startswith("scaffold-"):
                        balancers[name] = [scaffold.pid]
                    elif name in floors:
                        parts[name] = floors[name][1]
                        balancers[name] = [pid for group in parts[name].values() for pid in group]

                def watch(name: str) -> dict[str, list[int]]:
                    replicas = [proc.pid for proc in replica_procs]
                    return {"balancer": balancers[name], **parts.get(name, {}), "replicas": replicas}

                throughput = {
                    name: run_wrk(wrk, port, args.duration, watch(name)) for name, port in ports.items()
                }
                setup = setup_times(ports, args.setups)
                for result in setup.values():
                    result["overhead_p50_ms"] = round(result["p50_ms"] - setup["direct"]["p50_ms"], 3)
                    result["overhead_p99_ms"] = round(result["p99_ms"] - setup["direct"]["p99_ms"], 3)

            kill: dict[str, Any] = {}
            for name in args.kill_setups:
                wait_for(all_up, "every balancer to see both replicas", timeout=60)

                def kill_replica() -> None:
                    if not args.no_kill:
                        replica_procs[0].kill()

                trace_file = args.trace / f"kill-{name}.jsonl" if args.trace else None
                kill[name] = asyncio.run(
                    kill_run(
                        ports[name],
                        args.kill_duration,
                        args.kill_at,
                        args.kill_clients,
                        kill_replica,
                        trace_file,
                    )
                )
                if not args.no_kill:
                    replica_procs[0].wait(5)
                    start_replica(0)
            final = scaffold_state(control)
        finally:
            fleet.stop_all()
        deployment_counters = deployment.counters()

    def ratio(a: str, b: str) -> float | None:
        if a not in throughput or b not in throughput:
            return None
        x, y = throughput[a]["requests_per_s"], throughput[b]["requests_per_s"]
        return round(x / y, 3) if x and y else None

    return {
        "benchmark": "ingress",
        "environment": environment(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "replicas": "2 x tiny asyncio HTTP/1.1 keep-alive server (bench/ingress.py --replica)",
        "scaffold": "Testbed(datacenters=1, hosts_per_datacenter=3); Publisher check 0.5 s fall 2 rise 2",
        "throughput": throughput,
        "throughput_ratio": {
            "scaffold_raw_to_haproxy": ratio("scaffold-raw", "haproxy-tuned"),
            "scaffold_http_to_haproxy": ratio("scaffold-http", "haproxy-tuned"),
            "scaffold_http_to_haproxy_http": ratio("scaffold-http", "haproxy-http"),
            "scaffold_raw_pool_to_haproxy": ratio("scaffold-raw-pool", "haproxy-tuned"),
            "scaffold_http_pool_to_haproxy": ratio("scaffold-http-pool", "haproxy-tuned"),
            "scaffold_raw_warm_to_haproxy": ratio("scaffold-raw-warm", "haproxy-tuned"),
            **{
                f"scaffold_{mode}_w{n}_to_haproxy_{min(n, 2)}t": ratio(
                    f"scaffold-{mode}-w{n}", "haproxy-tuned" if n == 1 else "haproxy-tuned-2t"
                )
                for n in args.workers
                for mode in ("raw", "http")
            },
            "floor_1p_to_haproxy": ratio("floor-1p", "haproxy-tuned"),
            "floor_3p_to_haproxy_2t": ratio("floor-3p", "haproxy-tuned-2t"),
            "scaffold_raw_to_floor_1p": ratio("scaffold-raw", "floor-1p"),
            "scaffold_raw_w1_to_floor_3p": ratio("scaffold-raw-w1", "floor-3p"),
            "haproxy_to_direct": ratio("haproxy-tuned", "direct"),
            "haproxy_http_to_tcp": ratio("haproxy-http", "haproxy-tuned"),
            "haproxy_2t_to_1t": ratio("haproxy-tuned-2t", "haproxy-tuned"),
        },
        "cpu_budget": cpu_budget(throughput, os.cpu_count() or 1),
        "setup": setup,
        "kill": kill,
        "scaffold_counters": {
            k: final[k] for k in ("raw", "http", "publishers", "nodes", "udp_ports") if k in final
        },
        "deployment_counters": deployment_counters,
    }


def _calls(path: Path) -> dict[tuple[str, int, str], int]:
    """Calls by function (builtins included) in one cProfile dump."""
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    return {function: row[1] for function, row in stats.items()}


def _module(filename: str) -> str:
    """``core/host/stack.py``, ``stdlib/selectors.py``, ``uvloop`` or ``builtin``."""
    if filename == "~":
        return "builtin"
    if "/src/scaffold/" in filename:
        return filename.split("/src/scaffold/", 1)[1]
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    return "stdlib/" + filename.rsplit("/", 1)[-1]


def profile_calls(args: argparse.Namespace) -> dict[str, Any]:
    """Python calls per setup (``--profile-setups N``) or per keep-alive request under wrk
    (``--profile-requests SECONDS``) in the one-process ``--scaffold`` child, by cProfile:
    the calls of the measured window minus those of an idle window of the child (heartbeats,
    health checks) scaled to the same length, divided by setups or requests. Deterministic to
    a few calls, where wall time on a shared machine is not."""
    fleet = Fleet()
    me = str(Path(__file__).resolve())
    replicas = [free_port(), free_port()]
    control = free_port()
    with tempfile.TemporaryDirectory(prefix="scaffold-profile-") as tmp:
        directory = Path(args.profile_dump or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        try:
            for port in replicas:
                fleet.start(sys.executable, me, "--replica", str(port))
                wait_for(lambda port=port: answers(port), f"replica on port {port}")
            fleet.start(
                sys.executable, me, "--scaffold", ",".join(map(str, replicas)), "--control", str(control)
            )
            wait_for(lambda: answers(control), "the scaffold network")
            wait_for(lambda: all(p["healthy"] for p in scaffold_state(control)["publishers"]), "publishers")
            port = scaffold_state(control)[f"{args.profile_mode}_port"]
            for _ in range(20):  # warm: first-use imports and caches out of the window
                one_setup(port)

            def window(
                name: str, work: Callable[[], int]
            ) -> tuple[dict[tuple[str, int, str], int], float, int]:
                scaffold_state(control, "profile-start")
                start = time.perf_counter()
                units = work()
                elapsed = time.perf_counter() - start
                scaffold_state(control, f"profile-stop {directory / name}")
                return _calls(directory / name), elapsed, units

            def idle() -> int:
                time.sleep(args.profile_idle)
                return 0

            def setups() -> int:
                for _ in range(args.profile_setups):
                    time.sleep(0.005)
                    one_setup(port)
                return int(args.profile_setups)

            def requests() -> int:
                result = run_wrk(shutil.which("wrk") or "wrk", port, args.profile_requests)
                return int(result["requests"] or 0)

            quiet, quiet_seconds, _ = window("idle.prof", idle)
            busy, seconds, units = window("busy.prof", setups if args.profile_setups else requests)
        finally:
            fleet.stop_all()
    if not units:
        raise SystemExit("bench/ingress.py: nothing measured (wrk missing or no request served)")
    scale = seconds / quiet_seconds
    per_function = {f: (n - quiet.get(f, 0) * scale) / units for f, n in busy.items()}
    by_module: dict[str, float] = {}
    for (filename, _, _), n in per_function.items():
        by_module[_module(filename)] = by_module.get(_module(filename), 0.0) + n
    top = sorted(per_function.items(), key=lambda item: -item[1])[: args.profile_top]
    return {
        "benchmark": "ingress-calls",
        "environment": environment(),
        "mode": args.profile_mode,
        "unit": "setup" if args.profile_setups else "keep-alive request under wrk -t2 -c20",
        "units": units,
        "seconds": round(seconds, 2),
        "background_calls_per_s": round(sum(quiet.values()) / quiet_seconds),
        "calls_per_unit": round(sum(per_function.values()), 1),
        "by_module": {m: round(n, 1) for m, n in sorted(by_module.items(), key=lambda item: -item[1])[:30]},
        "by_function": [
            [round(n, 2), f"{_module(filename)}:{line} {name}"] for (filename, line, name), n in top
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each wrk run (default 5)")
    parser.add_argument("--setups", type=int, default=300, help="timed connections per setup (default 300)")
    parser.add_argument("--kill-duration", type=float, default=20.0, help="seconds of each kill run")
    parser.add_argument("--kill-at", type=float, default=5.0, help="seconds into the kill run (default 5)")
    parser.add_argument("--kill-clients", type=int, default=4, help="concurrent client loops (default 4)")
    parser.add_argument(
        "--kill-only", action="store_true", help="only the kill runs (no wrk, no setups, no deployment)"
    )
    parser.add_argument(
        "--kill-setups",
        type=lambda text: text.split(","),
        default=["haproxy-default", "haproxy-tuned", "scaffold-raw", "scaffold-raw-warm", "scaffold-http"],
        help="setups of the kill runs (default haproxy-default,haproxy-tuned,scaffold-raw,"
        "scaffold-raw-warm,scaffold-http)",
    )
    parser.add_argument("--no-kill", action="store_true", help="kill runs without killing the replica")
    parser.add_argument(
        "--trace",
        type=Path,
        help="directory for per-request logs of the kill runs, kernel counters and the scaffold "
        "process's loop lag and GC pauses (JSON lines)",
    )
    parser.add_argument("--quick", action="store_true", help="short runs: 2 s wrk, 100 setups, 8 s kill runs")
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="worker counts of the deployment's ingress and publishers (default 1,2)",
    )
    parser.add_argument(
        "--profile-setups",
        type=int,
        metavar="N",
        help="instead: Python calls per setup, N setups",
    )
    parser.add_argument(
        "--profile-requests",
        type=float,
        metavar="SECONDS",
        help="instead: Python calls per keep-alive request, SECONDS of wrk",
    )
    parser.add_argument(
        "--profile-mode", choices=("raw", "http"), default="raw", help="which ingress to profile"
    )
    parser.add_argument(
        "--profile-idle", type=float, default=5.0, help="seconds of the idle window (default 5)"
    )
    parser.add_argument("--profile-top", type=int, default=40, help="functions listed (default 40)")
    parser.add_argument(
        "--profile-dump", metavar="DIR", help="keep the cProfile dumps (idle.prof, busy.prof) in DIR"
    )
    parser.add_argument("--replica", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scaffold", help=argparse.SUPPRESS)
    parser.add_argument("--control", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trace is not None:
        args.trace.mkdir(parents=True, exist_ok=True)
    if args.replica is not None:
        with contextlib.suppress(KeyboardInterrupt):
            from scaffold.runtime.aio import run

            run(replica_main(args.replica))
        return
    if args.scaffold is not None:
        from scaffold.runtime.aio import run

        run(scaffold_main([int(p) for p in args.scaffold.split(",")], args.control, args.trace))
        return
    if args.profile_setups or args.profile_requests:
        emit(profile_calls(args))
        return
    if args.quick:
        args.duration, args.setups, args.kill_duration, args.kill_at = 2.0, 100, 8.0, 2.0
    del args.replica, args.scaffold, args.control
    emit(bench(args))


if __name__ == "__main__":
    main()
