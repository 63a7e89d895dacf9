"""Worker processes (docs/deployment.md §8): a flow switch run as ``--workers 2`` carries
streams while each of its workers is SIGKILLed in turn -- every byte arrives, the pool
restarts them -- and the ingress spreads over workers that share its port, each worker
serving its own metrics."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import scaffold
from cli_processes import Daemons, free_port
from scaffold.apps.pattern import PatternChecker
from scaffold.core.controller.commands import Counters, Events, Status
from scaffold.core.controller.demand import DemandBook
from scaffold.core.object_switch import ObjectSwitch
from scaffold.deploy.daemons.jsonlog import JsonLog
from scaffold.deploy.daemons.switch_pool import ControlHub
from scaffold.deploy.daemons.workers import WorkerPool, pool_metrics
from scaffold.runtime import admin
from scaffold.runtime.aio import run, wait_until
from scaffold.runtime.tls import Credentials
from scaffold.wire import control
from scaffold.wire.control import MetricSample

TOPOLOGY = """\
name = "one"

[[datacenter]]
name = "dc1"
hosts = ["dc1-h1", "dc1-h2"]

[[object]]
name = "echo"
replicas = ["dc1-h1"]
"""


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path)
    try:
        yield d
    finally:
        d.stop_all()


def worker_pids(daemons: Daemons, name: str) -> dict[int, int]:
    """The pid of each worker of ``name``, from its supervisor's log (the latest start)."""
    pids: dict[int, int] = {}
    for record in daemons.log(name, only_json=False):
        if record["msg"] == "worker started":
            worker, pid = record["worker"], record["pid"]
            assert isinstance(worker, int) and isinstance(pid, int), record
            pids[worker] = pid
    return pids


@pytest.mark.slow
def test_a_flow_switch_worker_killed_under_load_loses_no_byte(daemons: Daemons, tmp_path: Path) -> None:
    (tmp_path / "one.toml").write_text(TOPOLOGY)
    controller = ("127.0.0.1", free_port())
    ctl = f"{controller[0]}:{controller[1]}"
    daemons.start(
        "controller",
        "controller",
        "--topology",
        str(tmp_path / "one.toml"),
        "--listen",
        ctl,
        "--credentials",
        daemons.creds("controller", "controller"),
    )
    node = ["--controller", ctl, "--listen", "127.0.0.1:0", "--stats-interval", "0.2"]
    fs = ["--name", "dc1-fs1", "--dc", "dc1", "--workers", "2"]
    fs += ["--credentials", daemons.creds("dc1-fs1", "flow-switch")]
    daemons.start("dc1-fs1", "switch", "--role", "flow", *fs, *node)
    os_ = ["--name", "dc1-os", "--dc", "dc1", "--credentials", daemons.creds("dc1-os", "object-switch")]
    daemons.start("dc1-os", "switch", "--role", "object", *os_, *node)
    h1 = ["--name", "dc1-h1", "--gateway", "dc1-fs1", "--serve", "echo"]
    h1 += ["--credentials", daemons.creds("dc1-h1", "host")]
    daemons.start("dc1-h1", "host", *h1, *node)
    operator = daemons.operator

    async def scenario() -> tuple[list[bool], dict[str, Any]]:
        async def ready() -> bool:
            try:
                status = await admin.call(controller, Status(), timeout=1.0, credentials=operator)
            except Exception:
                return False
            return any(o["name"] == "echo" and o["replicas"][0]["alive"] for o in status["objects"]) and all(
                sw["connected"] for sw in status["switches"]
            )

        await wait_until(ready, 60, "the daemons to come up", interval=0.1)
        h2 = daemons.credentials.node("dc1-h2", "host")
        async with await scaffold.join(
            "dc1-h2", gateway="dc1-fs1", controller=controller, credentials=h2, operator=operator
        ) as host:

            async def echo(size: int) -> bool:
                reader, writer = await host.open_connection("echo")
                payload = os.urandom(size)
                got = bytearray()

                async def read() -> None:
                    while len(got) < size and (data := await reader.read(1 << 20)):
                        got.extend(data)

                reading = asyncio.ensure_future(read())
                for offset in range(0, size, 32 * 1024):  # paced: the load lasts through the kills
                    writer.write(payload[offset : offset + 32 * 1024])
                    await writer.drain()
                    await asyncio.sleep(0.004)
                await asyncio.wait_for(reading, 60)
                writer.close()
                return bytes(got) == payload

            streams = [asyncio.ensure_future(echo(3 << 20)) for _ in range(3)]
            for worker in (0, 1):  # each worker in turn, while the streams run
                await asyncio.sleep(0.4)
                pids = worker_pids(daemons, "dc1-fs1")
                os.kill(pids[worker], signal.SIGKILL)

                def replaced(w: int = worker, p: int = pids[worker]) -> bool:
                    return worker_pids(daemons, "dc1-fs1")[w] != p

                await wait_until(replaced, 10, "restart")
            exact = await asyncio.gather(*streams)

            summary: dict[str, Any] = {}

            async def restarted() -> bool:  # the supervisor reports its workers' sums every 0.2 s
                counters = await admin.call(controller, Counters(), credentials=operator)
                summary.update(counters["dc1-fs1"])
                metrics = {m[0]: m[1] for m in summary["metrics"] if not m[2]}
                return metrics.get("worker_restarts_total") == 2 and metrics.get("workers") == 2

            await wait_until(restarted, 10, "the switch to report 2 restarts of 2 workers", interval=0.1)
        return exact, summary

    exact, summary = run(scenario())
    assert exact == [True, True, True]
    assert summary["forwarded"] > 0 and summary["version"] >= 1
    died = [r for r in daemons.log("dc1-fs1") if r["msg"] == "worker died"]
    assert [r["worker"] for r in died] == [0, 1] and all(r["code"] == -signal.SIGKILL for r in died)
    codes = daemons.stop_all()
    assert codes == dict.fromkeys(codes, 0), codes


def test_pool_metrics_sum_counters_and_keep_the_largest_gauge() -> None:
    a = [MetricSample("forwarded_packets_total", 5), MetricSample("table_version", 3)]
    b = [MetricSample("forwarded_packets_total", 7), MetricSample("table_version", 4)]
    samples = {(s.name, tuple(s.labels.items())): s.value for s in pool_metrics([a, b], 2, 1)}
    assert samples[("forwarded_packets_total", ())] == 12
    assert samples[("table_version", ())] == 4
    assert samples[("workers", ())] == 2 and samples[("worker_restarts_total", ())] == 1


def test_a_worker_pool_restarts_the_dead_and_stops_the_rest_by_pid(tmp_path: Path) -> None:
    from scaffold.deploy.daemons.jsonlog import JsonLog

    async def scenario() -> tuple[int, int]:
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        with open(tmp_path / "pool.log", "w") as out:
            pool = WorkerPool([sleeper, sleeper], JsonLog("pool", out))
            await pool.start()
            first = pool.pids
            os.kill(first[0], signal.SIGKILL)
            await wait_until(lambda: pool.restarts == 1 and pool.alive == 2, 10, "a restart")
            assert pool.pids[1] == first[1] and pool.pids[0] != first[0]
            await pool.stop(grace=5)
            return pool.alive, pool.restarts

    assert run(scenario()) == (0, 1)


def test_a_pools_workers_die_with_their_supervisor_even_before_they_serve(tmp_path: Path) -> None:
    """A supervisor SIGKILLed while its workers are still starting (they never reach the
    serving loop that watches for it): the kernel stops them (``follow_supervisor``)."""
    worker = (
        "import os, time; from scaffold.deploy.daemons import workers; "
        "workers.follow_supervisor(); os.write(1, b'following\\n'); time.sleep(60)"
    )
    # One write(2) per line: both workers share the pipe, and a write of less than PIPE_BUF
    # is atomic, where print() may write the text and its newline apart (an unbuffered
    # stdout does), and two workers' lines then interleave ("followingfollowing\n").
    supervisor = f"""
import asyncio, sys
from scaffold.deploy.daemons.jsonlog import JsonLog
from scaffold.deploy.daemons.workers import WorkerPool

async def main():
    pool = WorkerPool([[sys.executable, "-c", {worker!r}]] * 2, JsonLog("pool", sys.stderr))
    await pool.start()
    print(*pool.pids, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""
    process = subprocess.Popen([sys.executable, "-c", supervisor], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        # The supervisor's line of pids and each worker's once it follows (a dead worker says
        # nothing; the supervisor's end, at most 60 s on, ends the reads).
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines.count("following\n") == 2, lines
        pids = [int(pid) for line in lines if line != "following\n" for pid in line.split()]
        assert len(pids) == 2
        assert all(running(pid) for pid in pids)
        process.kill()
        process.wait(10)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(running(pid) for pid in pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


GATEWAY_TOPOLOGY = """\
name = "gateway"

[[datacenter]]
name = "dc1"
hosts = ["dc1-h1"]

# The operator's policy: any host may serve `web` (each publisher worker is a host of its own).
[[object]]
name = "web"
allow = ["*"]
"""


def get(port: int) -> bytes:
    """One HTTP GET on a fresh connection; the body."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/hello.txt")
        return conn.getresponse().read()
    finally:
        conn.close()


def two_free_ports() -> int:
    """A port that is free, and the next one too."""
    import socket

    for _ in range(100):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.1", port + 1))
            return port
    raise AssertionError("no two free ports in a row")


def connections(url: str, role: str) -> float:
    """``scaffold_gateway_connections_total`` of the gateway with ``role`` at ``url``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "scaffold_gateway_connections_total" and sample.labels.get("role") == role
    )


@pytest.mark.slow
def test_ingress_and_publisher_workers_share_the_load_and_survive_a_killed_worker(
    daemons: Daemons, tmp_path: Path
) -> None:
    (tmp_path / "gateway.toml").write_text(GATEWAY_TOPOLOGY)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "hello.txt").write_text("hello\n")
    web = free_port()
    http_server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(web), "--bind", "127.0.0.1", "--directory", "site"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = str(tmp_path / "state.json")
    try:
        daemons.start("up", "up", str(tmp_path / "gateway.toml"), "--state", state)
        wait_for_log(daemons, "up", "is up")
        base = two_free_ports()  # the publisher's workers serve metrics on base and base + 1
        daemons.start(
            "publish",
            *("publish", "web", "--target", f"127.0.0.1:{web}", "--network", state, "--workers", "2"),
            *("--metrics", f"127.0.0.1:{base}"),
        )
        daemons.start(  # the ingress's workers each pick a port for their metrics
            "ingress",
            *("ingress", "web", "--listen", "127.0.0.1:0", "--network", state, "--workers", "2"),
            *("--metrics", "127.0.0.1:0"),
        )
        wait_for_log(daemons, "ingress", "ingress tcp", count=2)
        wait_for_log(daemons, "publish", "metrics http", count=2)
        port = int((tmp_path / "ingress.log").read_text().split("2 workers on 127.0.0.1:")[1].split()[0])
        assert all(get(port) == b"hello\n" for _ in range(6))
        # Every connection is counted by the one worker that carried it, on its own endpoint.
        ingress_urls = re.findall(r"^metrics (http://\S+)$", (tmp_path / "ingress.log").read_text(), re.M)
        assert len(set(ingress_urls)) == 2, ingress_urls
        publish_urls = [f"http://127.0.0.1:{base + i}/metrics" for i in (0, 1)]
        said = re.findall(r"^metrics (http://\S+)$", (tmp_path / "publish.log").read_text(), re.M)
        assert set(said) == set(publish_urls)
        assert sum(connections(url, "ingress") for url in ingress_urls) == 6
        assert sum(connections(url, "publisher") for url in publish_urls) == 6
        pids = worker_pids(daemons, "ingress")
        os.kill(pids[0], signal.SIGKILL)
        # Once it is gone the kernel hands its share of new connections to worker 1 (those
        # it had queued died with it, as with any dead server).
        wait_for_log(daemons, "ingress", "worker died")
        assert all(get(port) == b"hello\n" for _ in range(6))
        wait_for_log(daemons, "ingress", "ingress tcp", count=3)  # worker 0 is back
        assert all(get(port) == b"hello\n" for _ in range(6))
        hosts = run(admin.call(load_controller(state), Status(), credentials=operator(state)))["hosts"]
        names = {h["name"] for h in hosts if h["alive"]}
        assert {n for n in names if n.startswith(("ingress-", "publish-"))} >= {
            f"{kind}-{daemons.procs[kind].pid}-w{i}" for kind in ("ingress", "publish") for i in (0, 1)
        }
    finally:
        http_server.terminate()
        http_server.wait(10)
    codes = daemons.stop_all()
    assert codes == dict.fromkeys(codes, 0), codes


def wait_for_log(daemons: Daemons, name: str, text: str, *, count: int = 1, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    path = daemons.tmp / f"{name}.log"
    while path.read_text().count(text) < count:
        assert daemons.procs[name].poll() is None, path.read_text()
        assert time.monotonic() < deadline, f"no {count} x {text!r} in:\n{path.read_text()}"
        time.sleep(0.05)


def operator(state: str) -> Credentials:
    """The operator credentials of the ``scaffold up`` network whose state file is ``state``."""
    from scaffold.deploy.state_file import load_state

    return load_state(Path(state)).operator()


def load_controller(state: str) -> tuple[str, int]:
    from scaffold.deploy.state_file import load_state

    address = load_state(Path(state)).controller
    return (str(address[0]), int(address[1]))


LIVENESS_TOPOLOGY = """\
name = "liveness"

[[datacenter]]
name = "dc1"
hosts = ["dc1-h1", "dc1-h2", "dc1-h3"]

[[object]]
name = "content"
replicas = ["dc1-h1", "dc1-h3"]
"""
#: bytes per download: about 4 s at the pace below, so the two stalls fall inside them
DOWNLOAD = 4 << 20


@pytest.mark.slow
def test_liveness_behind_worker_processes_survives_a_stalled_watcher_and_finds_a_stalled_host(
    daemons: Daemons, tmp_path: Path
) -> None:
    """A flow switch of two workers watches its hosts (docs/protocol.md §6.2): both workers
    SIGSTOPped for 1 s declare nobody dead; a replica SIGSTOPped for 2 s (its control
    connection still open) is declared dead through the workers' reports, its downloads move
    to the other replica without losing a byte, and nobody else is ever declared dead."""
    (tmp_path / "liveness.toml").write_text(LIVENESS_TOPOLOGY)
    controller = ("127.0.0.1", free_port())
    ctl = f"{controller[0]}:{controller[1]}"
    daemons.start(
        "controller", "controller", "--topology", str(tmp_path / "liveness.toml"), "--listen", ctl,
        "--credentials", daemons.creds("controller", "controller"),
    )  # fmt: skip
    node = ["--controller", ctl, "--listen", "127.0.0.1:0", "--stats-interval", "0.2"]
    fs = ["--name", "dc1-fs1", "--dc", "dc1", "--workers", "2"]
    fs += ["--credentials", daemons.creds("dc1-fs1", "flow-switch")]
    daemons.start("dc1-fs1", "switch", "--role", "flow", *fs, *node)
    os_ = ["--name", "dc1-os", "--dc", "dc1", "--credentials", daemons.creds("dc1-os", "object-switch")]
    daemons.start("dc1-os", "switch", "--role", "object", *os_, *node)
    for name in ("dc1-h1", "dc1-h3"):
        serve = ["--serve", "content:1:resume", "--service", "pattern", "--pattern-size", str(DOWNLOAD)]
        pace = ["--pattern-pace", "0.004"]
        daemons.start(name, "host", "--name", name, "--gateway", "dc1-fs1", *serve, *pace,
                      "--credentials", daemons.creds(name, "host"), *node)  # fmt: skip
    operator = daemons.operator

    since = 0  # events up to this one belong to the start (hosts that join before their gateway)

    async def deaths() -> list[str]:
        nonlocal since
        events = await admin.call(controller, Events(since=since, limit=1000), credentials=operator)
        if not since:
            since = events["last"]
            return []
        return [e["target"] for e in events["events"] if e["kind"] == "host-down"]

    async def scenario() -> tuple[list[PatternChecker], dict[str, str], str, list[str], dict[str, float]]:
        async def ready() -> bool:
            try:
                status = await admin.call(controller, Status(), timeout=1.0, credentials=operator)
            except Exception:
                return False
            replicas = [r for o in status["objects"] if o["name"] == "content" for r in o["replicas"]]
            switches = all(sw["connected"] for sw in status["switches"])
            return len(replicas) == 2 and all(r["alive"] for r in replicas) and switches

        await wait_until(ready, 60, "the daemons to come up", interval=0.1)
        h2 = daemons.credentials.node("dc1-h2", "host")
        async with await scaffold.join(
            "dc1-h2", gateway="dc1-fs1", controller=controller, credentials=h2, operator=operator
        ) as host:
            checkers = [PatternChecker() for _ in range(6)]
            writers = []
            readers = []
            for _ in checkers:
                reader, writer = await host.open_connection("content")
                readers.append(reader)
                writers.append(writer)

            async def download(k: int) -> None:
                try:
                    while data := await asyncio.wait_for(readers[k].read(65536), 20):
                        checkers[k].feed(data)
                except TimeoutError:
                    info = {n: writers[k].get_extra_info(n) for n in ("served_by", "state", "stats")}
                    raise AssertionError(f"download {k} stalled at {checkers[k].offset}: {info}") from None
                writers[k].close()

            downloading = asyncio.gather(*(download(k) for k in range(len(checkers))))
            await wait_until(lambda: all(c.offset for c in checkers), 20, "every download to start")
            assert await deaths() == []  # from here on
            first = {str(k): str(w.get_extra_info("peer_host")) for k, w in enumerate(writers)}
            # The watcher stalls: both workers paused for 1 s, the hosts all alive.
            workers = list(worker_pids(daemons, "dc1-fs1").values())
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(1.0)  # the stall itself, not a wait for state
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
            # A replica stalls past the window: declared dead, its downloads move.
            victim = first["0"]
            loop = asyncio.get_running_loop()
            stopped = loop.time()
            os.kill(daemons.procs[victim].pid, signal.SIGSTOP)
            try:
                await wait_until(lambda: _has(deaths, victim), 10, f"{victim} declared dead", interval=0.1)
                # Paused 2 s in all: its downloads' stall probes find the other replica meanwhile.
                await asyncio.sleep(max(0.0, stopped + 2.0 - loop.time()))
            finally:
                os.kill(daemons.procs[victim].pid, signal.SIGCONT)
            await asyncio.wait_for(downloading, 60)
            moved = [k for k, name in first.items() if name == victim]
            after = {k: "/".join(writers[int(k)].get_extra_info("served_by")) for k in moved}
            summary: dict[str, float] = {}

            async def forgiven() -> bool:
                counters = await admin.call(controller, Counters(), credentials=operator)
                summary.update({m[0]: m[1] for m in counters["dc1-fs1"]["metrics"] if not m[2]})
                return summary.get("liveness_stalls_forgiven_total", 0) >= 1

            await wait_until(forgiven, 10, "the workers to report the forgiven stall", interval=0.2)
            died = await deaths()  # (before this client leaves, which is a death of its own)
        return checkers, after, victim, died, summary

    checkers, after, victim, died, summary = run(scenario())
    assert all(c.ok and c.offset == DOWNLOAD for c in checkers), [c.__dict__ for c in checkers]
    survivor = "dc1-h3" if victim == "dc1-h1" else "dc1-h1"
    # Taken over by the survivor, for good: the victim, running again, still holds copies of
    # those flows, which their clients reset (and its gateway keeps those resets from the
    # survivor while the tables still have the victim dead: orphan-rst, protocol.md §3.3).
    assert after and set(after.values()) == {f"{victim}/{survivor}"}, after
    assert died == [victim]  # nobody else, not during the watcher's stall either
    assert summary["hosts_reported_down_total"] >= 1
    codes = daemons.stop_all()
    assert codes == dict.fromkeys(codes, 0), codes


async def _has(deaths: Callable[[], Awaitable[list[str]]], name: str) -> bool:
    return name in await deaths()


def test_the_workers_liveness_is_merged_per_host() -> None:
    from scaffold.deploy.daemons.switch_pool import LivenessMerge
    from scaffold.wire.control import HostLiveness

    merge = LivenessMerge("fs")
    a, b = object(), object()

    def said(worker: object, up: list[str] = [], down: list[str] = []) -> HostLiveness | None:  # noqa: B006
        return merge.report(worker, HostLiveness(node="fs", up=up, down=down))

    assert said(a, up=["h1", "h2"]) == HostLiveness(node="fs", up=["h1", "h2"])
    assert said(b, up=["h1"]) is None  # already up: the controller hears changes only
    assert said(a, down=["h1"]) is None  # b still hears it
    assert said(b, down=["h1"]) == HostLiveness(node="fs", down=["h1"])  # lost by all
    # A worker that goes away: the hosts only it heard wait the timeout for another worker.
    merge.forget(a, now=10.0, timeout=0.6)
    assert merge.next_expiry() == 10.6 and merge.expire(10.5) is None
    assert merge.expire(10.6) == HostLiveness(node="fs", down=["h2"])
    assert said(b, up=["h2"]) == HostLiveness(node="fs", up=["h2"])
    merge.forget(b, now=20.0, timeout=0.6)
    assert said(a, up=["h2"]) is None and merge.expire(21.0) is None  # heard again in time
    merge.reset()  # a full sync: every host is reported again
    assert said(a, up=["h2"]) == HostLiveness(node="fs", up=["h2"])


def test_the_hub_passes_object_switch_workers_demand_on_numbered_and_withdraws_a_gone_ones() -> None:
    key = "ab" * 32
    sent: list[control.ControlMessage] = []

    async def main() -> None:
        hub = ControlHub(ObjectSwitch("dc1-os", "dc1"), JsonLog("dc1-os", io.StringIO()))
        hub.upstream = sent.append
        await hub.start()
        try:
            workers = [await asyncio.open_unix_connection(hub.address) for _ in range(2)]
            for k, (_, writer) in enumerate(workers):
                report = control.Demand(node="dc1-os", interval=1.0, flows={key: {1: 10 * (k + 1)}})
                writer.write(control.frame(control.Hello(node="dc1-os", role="object-switch")))
                writer.write(control.frame(report))
            await wait_until(lambda: len(sent) == 2, 10, "both workers' reports")
            workers[0][1].close()  # the first worker dies: its counts go with it
            await wait_until(lambda: len(sent) == 3, 10, "the dead worker's empty report")
            workers[1][1].close()
            await wait_until(lambda: len(sent) == 4, 10, "the other one's")
        finally:
            await hub.close()

    run(main())
    assert [(m.worker, m.flows) for m in sent if isinstance(m, control.Demand)] == [
        (1, {key: {1: 10}}),
        (2, {key: {1: 20}}),
        (1, {}),
        (2, {}),
    ]
    # the controller sums a switch's workers, and forgets them all with the switch
    book = DemandBook(lambda k: k == key, {1})
    changes = [book.report("dc1-os", m) for m in sent[:3] if isinstance(m, control.Demand)]
    assert changes == [{key: {1: 10.0}}, {key: {1: 30.0}}, {key: {1: 20.0}}]
    assert book.forget("dc1-os") == {key: {}}  # every worker's share goes with the switch
