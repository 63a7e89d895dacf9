"""The churn scenario: every kind of churn while client flows stream verified data.

Flows are downloads of the verifiable pattern stream (``apps.pattern``) from two services:
``web``, a resumable content service, and ``session``, which is not resumable. The scenario
applies seven events on a schedule -- route failure, rebalance, drain, object migration, VM
migration, client mobility, server failure -- and measures, for each, which flows it
affected, how long they took to make progress again, and whether any byte was lost,
duplicated or corrupted (docs/architecture.md §6).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..api.host import Host
from ..api.streams import StreamWriter
from ..api.testbed import Testbed
from ..apps.content import content_service
from ..apps.pattern import PatternChecker
from ..core.controller import Command
from ..core.controller.commands import Drain, Link, MigrateHost, MigrateObject, MoveHost, SetWeight
from ..core.topology import Topology
from ..errors import PathError

__all__ = ["ChurnEvent", "TestbedNetwork", "FlowRun", "Scenario", "ScenarioNetwork"]


class ScenarioNetwork(Protocol):
    """What the scenario needs from a running network (embedded ``Testbed`` or namespaces)."""

    @property
    def topology(self) -> Topology: ...

    def host(self, name: str) -> Host:
        """A client host (flows are opened from it)."""
        ...

    async def command(self, command: Command) -> Any:
        """Run an operator command of the controller (``core.controller.commands``)."""
        ...

    async def cut_link(self, dc_a: str, dc_b: str) -> None:
        """The backbone link between two datacenters fails."""
        ...

    async def kill_host(self, name: str) -> None:
        """Host ``name`` crashes."""
        ...

    async def controller_hosts(self) -> dict[str, str]:
        """Every host's datacenter, as the controller sees it now."""
        ...


class TestbedNetwork:
    """``ScenarioNetwork`` over a ``Testbed`` (one process, the ``aio`` runtime)."""

    def __init__(self, net: Testbed) -> None:
        self.net = net

    @property
    def topology(self) -> Topology:
        return self.net.topology

    def host(self, name: str) -> Host:
        return self.net.host(name)

    async def command(self, command: Command) -> Any:
        return self.net.controller.command(command)

    async def cut_link(self, dc_a: str, dc_b: str) -> None:
        a, b = self.topology.datacenter(dc_a).border, self.topology.datacenter(dc_b).border
        self.net.network.set_link(a, b, up=False)  # the cable is cut...
        self.net.controller.command(Link(dc_a, dc_b, False))  # ...and the link monitor tells the controller

    async def kill_host(self, name: str) -> None:
        # The process dies: its socket and its control connection close at once.
        asyncio.get_running_loop().create_task(self.net.host(name).close())

    async def controller_hosts(self) -> dict[str, str]:
        return {name: record.dc for name, record in self.net.controller.hosts.items()}


#: a churn event's action
Act = Callable[[], Awaitable[Any]]

#: the scenario ticks this often (seconds)...
WAIT_STEP = 0.05
#: ...and a tick this much late means the process was not run meanwhile
STALL = 0.2


@dataclass
class FlowRun:
    """One client flow of the scenario and what happened to it."""

    index: int
    client: str
    obj: str
    resumable: bool
    size: int
    trace: bool = False
    checker: PatternChecker = field(default_factory=PatternChecker)
    progress: list[tuple[float, int]] = field(default_factory=list)
    flow: str = ""
    served_by: list[str] = field(default_factory=list)
    error: str = ""
    error_at: float = 0.0
    done: bool = False
    writer: StreamWriter | None = None

    def serving(self) -> str | None:
        return None if self.writer is None else self.writer.get_extra_info("peer_host")

    def describe(self, now: float) -> str:
        """Where the flow stands: what a stuck flow's failure message says about it."""
        text = f"flow {self.index} {self.obj} from {self.client}"
        if self.writer is None:
            return f"{text}: not open"
        info = self.writer.get_extra_info
        last = self.progress[-1][0] if self.progress else 0.0
        text += (
            f" [{self.flow}]: {self.checker.offset}/{self.size} bytes, last at t={last:.2f}s"
            f" (now {now:.2f}s), serving {info('peer_host')}, served by {info('served_by')},"
            f" transport {info('state')}"
        )
        stats = info("stats")
        if stats is not None:
            text += (
                f" (received {stats.bytes_received} bytes in {stats.segments_received} segments,"
                f" sent {stats.segments_sent} segments, rto {stats.rto:.2f}s,"
                f" {stats.retransmit_timeouts} timeouts)"
            )
        return text

    @property
    def complete(self) -> bool:
        return self.done and self.checker.ok and self.checker.offset == self.size

    def longest_pause(self, start: float, until: float) -> float | None:
        """The longest time without new verified bytes from ``start`` on, until the flow
        made progress that ended it (None: no progress at all before ``until``). The
        server's own pace (a chunk every ``pace`` s) is part of every pause."""
        times = [start] + [at for at, _ in self.progress if start < at < until]
        if len(times) == 1:
            return None
        return max(b - a for a, b in itertools.pairwise(times))


@dataclass
class ChurnEvent:
    """One scheduled event: what it did, whom it touched, how they fared."""

    at: float  # seconds since the flows started
    kind: str
    target: str
    affected: list[FlowRun]
    detail: str = ""

    def report(self, until: float) -> dict[str, Any]:
        """The event's outcome for each affected flow, judged before ``until`` (the next
        event), so that a flow hit twice is not charged twice."""
        recovered = failed = 0
        delays = []
        for run in self.affected:
            if run.error and run.error_at < until:
                failed += 1 if run.checker.ok else 0
                continue
            pause = run.longest_pause(self.at, until)
            if run.checker.ok and pause is not None:
                recovered += 1
                delays.append(pause * 1000)
        return {
            "t": round(self.at, 3),
            "kind": self.kind,
            "target": self.target,
            "flows_affected": len(self.affected),
            "flows_recovered": recovered,
            "flows_failed_cleanly": failed,
            "recovery_ms": {
                "p50": round(statistics.median(delays), 1) if delays else 0.0,
                "max": round(max(delays), 1) if delays else 0.0,
            },
            "bytes_lost": sum(r.checker.lost + r.checker.corrupted for r in self.affected),
            "bytes_duplicated": sum(r.checker.duplicated for r in self.affected),
        }


class Scenario:
    """Runs the flows and the schedule on a running ``Testbed`` (default topology)."""

    def __init__(
        self,
        net: Testbed | ScenarioNetwork,
        *,
        flows: int = 24,
        session_flows: int = 4,
        size: int = 2 << 20,
        pace: float = 0.025,
        spacing: float = 1.4,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.net: ScenarioNetwork = TestbedNetwork(net) if isinstance(net, Testbed) else net
        self.size = size
        self.pace = pace
        self.spacing = spacing
        self.say = say or (lambda _: None)
        self.loop = asyncio.get_running_loop()
        self.t0 = 0.0
        self.runs: list[FlowRun] = []
        self.events: list[ChurnEvent] = []
        #: (t, seconds): the process was not run (``watch_stalls``)
        self.stalls: list[tuple[float, float]] = []
        self._last_tick = 0.0
        clients = ["north-h1", "east-h3", "west-h2", "north-h2", "east-h4", "west-h3"]
        for i in range(flows):
            self.runs.append(FlowRun(i, clients[i % len(clients)], "web", True, size, trace=(i == 0)))
        for i in range(session_flows):
            self.runs.append(FlowRun(flows + i, clients[i % len(clients)], "session", False, size))

    def now(self) -> float:
        return self.loop.time() - self.t0

    # -- setup -----------------------------------------------------------------------------

    async def serve(self) -> None:
        """Bind the services on their replicas; the spare host can receive ``web``."""
        for obj in self.net.topology.objects:
            handler = content_service(self.size, self.pace)
            for host, weight in obj.replicas:
                await self.net.host(host).start_server(
                    handler,
                    obj.name,
                    weight=weight,
                    resumable=obj.resumable,
                    policy=obj.policy,
                    capacity=obj.capacity_of(host),
                )
        self.net.host("west-h4").serve_migrations(content_service(self.size, self.pace), "web")

    async def _download(self, run: FlowRun) -> None:
        host: Host = self.net.host(run.client)
        try:
            reader, writer = await host.open_connection(run.obj, trace=run.trace)
        except PathError as exc:
            run.error, run.error_at, run.done = str(exc), self.now(), True
            return
        run.writer = writer
        run.flow = writer.get_extra_info("flow")
        try:
            while data := await reader.read(65536):
                run.checker.feed(data)
                run.progress.append((self.now(), run.checker.offset))
        except PathError as exc:
            run.error, run.error_at = str(exc), self.now()
        finally:
            run.served_by = [h for h in writer.get_extra_info("served_by") if h]
            run.done = True
            writer.close()

    # -- the schedule -------------------------------------------------------------------------

    async def run(self, timeout: float = 45.0, before_churn: Callable[[], None] | None = None) -> None:
        """Start the flows, apply the schedule, wait for every flow to end.

        ``before_churn`` runs once the flows are established, just before the first event.

        Raises:
            TimeoutError: some flow had not ended ``timeout`` s after the last event; the
                message describes each such flow (bytes, replicas, transport state).
        """
        self.t0 = self.loop.time()
        tasks = [asyncio.create_task(self._download(r)) for r in self.runs]
        # Each event is judged until the next one, so the next one comes a full spacing of
        # running time after it: on a loaded machine choosing an event's flows (an admin
        # call) can take seconds, or the process may not be run for seconds, and a schedule
        # fixed in advance would then leave the flows no time at all to show they recovered.
        watch = asyncio.create_task(self.watch_stalls())
        last = 0.0
        for i, step in enumerate(self._schedule()):
            await self.wait_running(last, last + self.spacing)
            if i == 0 and before_churn is not None:
                before_churn()
            kind, target, affected, act = await step()
            at = last = self.now()
            await act()
            self.events.append(ChurnEvent(at, kind, target, affected))
            self.say(f"t={at:5.2f}s  {kind:<17} {target:<24} {len(affected)} flows affected")
        watch.cancel()
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            # Say which flows are stuck, and how, before cancelling them.
            stuck = [r.describe(self.now()) for r in self.runs if not r.done]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise TimeoutError(f"{len(stuck)} flows unfinished after {timeout} s: " + "; ".join(stuck))
        for task in done:
            task.result()

    async def watch_stalls(self) -> None:
        """Tick every ``WAIT_STEP`` s until cancelled; a tick more than ``STALL`` s late means
        the process was not run meanwhile (``stalls``)."""
        self._last_tick = self.now()
        while True:
            await asyncio.sleep(WAIT_STEP)
            self._tick()

    def _tick(self) -> None:
        now = self.now()
        if (late := now - self._last_tick - WAIT_STEP) > STALL:
            self.stalls.append((round(self._last_tick, 3), round(late, 3)))
            self.say(
                f"t={self._last_tick:5.2f}s  process not run for {late:.2f} s: the schedule waits as long"
            )
        self._last_tick = now

    async def wait_running(self, since: float, until: float) -> None:
        """Wait until ``until`` (seconds since the flows started), and longer by the stalls
        ``watch_stalls`` saw since ``since``: the flows were not run then either."""
        while True:
            self._tick()  # a stall that has just ended (in an event's action, say) counts too
            if (left := until + self.stalled(since) - self.now()) <= 0:
                return
            await asyncio.sleep(left)

    def stalled(self, since: float) -> float:
        """Seconds of the stalls seen after ``since``."""
        return sum(max(0.0, min(late, at + late - since)) for at, late in self.stalls)

    Step = Callable[[], Awaitable[tuple[str, str, list[FlowRun], "Act"]]]

    def _schedule(self) -> list[Step]:
        """The seven kinds of churn, in order; each step says whom it affects, then acts."""
        net = self.net

        def command(command: Command) -> Act:
            # Run a command for its effect (its result is in the controller's events).
            return lambda: net.command(command)

        async def route_failure() -> tuple[str, str, list[FlowRun], Act]:
            hosts = await net.controller_hosts()  # one admin call, not one per flow
            # Under nearest (§3.5) east's and west's clients are served at home: the flows on
            # the backbone are north's, shared by weight between east and west (both 3 ms
            # away). Cut the one of north's two links that carries more of them (by the draw
            # of Flow IDs, either may carry none).
            crossing: dict[str, list[FlowRun]] = {
                far: [r for r in self.runs if self._dcs(r, hosts) == {"north", far}]
                for far in ("east", "west")
            }
            far = max(crossing, key=lambda dc: len(crossing[dc]))
            return "route-failure", f"north-{far}", crossing[far], lambda: net.cut_link("north", far)

        async def rebalance() -> tuple[str, str, list[FlowRun], Act]:
            # Established flows are not affected: only new flows follow the new weight.
            return (
                "rebalance",
                "web@east-h1 weight 4",
                [],
                command(SetWeight(object="web", host="east-h1", weight=4)),
            )

        async def drain() -> tuple[str, str, list[FlowRun], Act]:
            return (
                "drain",
                "east-h1 (web)",
                self._served_by("east-h1", "web"),
                command(Drain(host="east-h1", object="web")),
            )

        async def object_migration() -> tuple[str, str, list[FlowRun], Act]:
            return (
                "object-migration",
                "web: west-h1 -> west-h4",
                self._served_by("west-h1", "web"),
                command(MigrateObject(object="web", from_host="west-h1", to_host="west-h4")),
            )

        async def vm_migration() -> tuple[str, str, list[FlowRun], Act]:
            return (
                "vm-migration",
                "east-h2 -> north",
                self._served_by("east-h2"),
                command(MigrateHost(host="east-h2", dc="north")),
            )

        async def client_mobility() -> tuple[str, str, list[FlowRun], Act]:
            mine = [r for r in self.runs if r.client == "north-h1" and not r.done]
            return (
                "client-mobility",
                "north-h1 -> west-fs2",
                mine,
                command(MoveHost(host="north-h1", gateway="west-fs2")),
            )

        async def server_failure() -> tuple[str, str, list[FlowRun], Act]:
            return (
                "server-failure",
                "east-h2",
                self._served_by("east-h2"),
                lambda: net.kill_host("east-h2"),
            )

        return [
            route_failure,
            rebalance,
            drain,
            object_migration,
            vm_migration,
            client_mobility,
            server_failure,
        ]

    def _served_by(self, host: str, obj: str | None = None) -> list[FlowRun]:
        return [r for r in self.runs if not r.done and r.serving() == host and (obj is None or r.obj == obj)]

    def _dcs(self, run: FlowRun, hosts: dict[str, str]) -> set[str]:
        server = run.serving()
        if run.done or server is None:
            return set()
        return {hosts[run.client], hosts[server]}

    def event_reports(self) -> list[dict[str, Any]]:
        ends = [e.at for e in self.events[1:]] + [float("inf")]
        return [e.report(until) for e, until in zip(self.events, ends, strict=True)]
