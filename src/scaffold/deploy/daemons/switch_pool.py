"""``scaffold switch --workers N``: one switch as N worker processes on one UDP address
(docs/deployment.md §8).

The daemon process becomes the **supervisor**. It binds no data-plane socket: each worker
binds the switch's address with ``SO_REUSEPORT`` and the kernel spreads the underlay flows
over them. The supervisor holds the one control connection the controller knows this switch
by (a ``NodeRuntime`` with ``data_plane=False``, a mirror of the switch's tables in its
core) and is the controller of its workers: a :class:`ControlHub` on a Unix socket in a
directory only this user may enter, speaking the same framed records. The hub

* answers a worker's ``Hello`` (and ``SyncRequest``) with a ``TableSync`` of the mirror, and
  relays every record of the real controller (``TableSync``, ``TableDelta``,
  ``LinkSettings``) to every worker, in order;
* keeps each worker's latest ``NodeStats``; the supervisor reports their sum
  (``workers.pool_metrics``) as the switch's own, and a dead worker's last counters stay in it;
* merges the workers' ``HostLiveness`` reports (each worker watches the hosts whose packets
  the kernel hands it) into one per host for the controller (:class:`LivenessMerge`,
  docs/protocol.md §6.2);
* passes an object switch worker's ``Demand`` on to the controller, numbered by worker (the
  controller sums them, docs/protocol.md §3.5), and an empty one when that worker goes.

The ``WorkerPool`` restarts a worker that dies; the new one binds the same address, says
``Hello`` to the hub and forwards on the current tables at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence

import msgspec

from ...core.flow_switch import FlowSwitch
from ...core.metrics import CATALOGUE, MetricKind, Sample
from ...core.object_switch import ObjectSwitch
from ...core.switch import TABLE_ENTRIES, TABLE_VERSION
from ...errors import MalformedPacket, ScaffoldError
from ...runtime.aio import Address, AddressBook, NodeRuntime
from ...runtime.tls import Credentials
from ...wire import control
from .jsonlog import JsonLog
from .workers import WorkerPool, pool_metrics

__all__ = [
    "ControlHub",
    "LivenessMerge",
    "SupervisorRuntime",
    "reserve_port",
    "start_pool",
    "worker_command",
]

#: how long the supervisor waits for every worker's first ``Hello``
WORKERS_READY = 30.0
Trace = tuple[int, str, str, int, int, int, int, float]
SwitchCore = FlowSwitch | ObjectSwitch


class LivenessMerge:
    """The hosts' liveness as the workers of one flow switch see it, merged (§6.2).

    The kernel hands each host's packets to one worker (``SO_REUSEPORT`` hashes the 4-tuple),
    which reports it up; a worker that never heard a host says nothing of it. So a host is
    up if any worker reports it up, and down once a worker reports it down and none up. The
    controller hears only changes. A worker that goes away takes its view with it; a host it
    alone had up is given ``presence_timeout`` (the kernel hands its packets to another
    worker, which reports it up) before it is reported down. A full sync from the controller
    (maybe a new one) starts over: the workers, synced too, report again.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        #: each worker's view: host -> up
        self._views: dict[object, dict[str, bool]] = {}
        #: what the controller was told: host -> up
        self._told: dict[str, bool] = {}
        #: hosts whose only "up" left with a worker: when they are reported down unless heard
        self._grace: dict[str, float] = {}

    def report(self, worker: object, message: control.HostLiveness) -> control.HostLiveness | None:
        """A worker's report; returns what the controller must be told (None: nothing)."""
        view = self._views.setdefault(worker, {})
        for name in message.up:
            view[name] = True
        for name in message.down:
            view[name] = False
        return self._changes([*message.up, *message.down])

    def forget(self, worker: object, now: float, timeout: float) -> None:
        """A worker is gone: the hosts it alone had up wait ``timeout`` before they count down."""
        for name, up in self._views.pop(worker, {}).items():
            if up and self._state(name) is not True:
                self._grace[name] = now + timeout

    def expire(self, now: float) -> control.HostLiveness | None:
        """Hosts whose grace ran out with no worker hearing them: reported down."""
        due = [name for name, at in self._grace.items() if at <= now]
        for name in due:
            del self._grace[name]
        down = [name for name in due if self._state(name) is not True and self._told.get(name) is True]
        for name in down:
            self._told[name] = False
        return control.HostLiveness(node=self.node, down=down) if down else None

    def next_expiry(self) -> float | None:
        return min(self._grace.values(), default=None)

    def reset(self) -> None:
        """A full sync: everything is reported again as the workers report it."""
        self._views.clear()
        self._told.clear()
        self._grace.clear()

    def _state(self, name: str) -> bool | None:
        seen = [view[name] for view in self._views.values() if name in view]
        if not seen:
            return None
        return any(seen)

    def _changes(self, names: Sequence[str]) -> control.HostLiveness | None:
        up: list[str] = []
        down: list[str] = []
        for name in dict.fromkeys(names):
            state = self._state(name)
            if state is True:
                self._grace.pop(name, None)
            elif name in self._grace:
                continue  # its worker left: the grace decides
            if state is None or self._told.get(name) is state:
                continue
            self._told[name] = state
            (up if state else down).append(name)
        return control.HostLiveness(node=self.node, up=up, down=down) if up or down else None


class ControlHub:
    """The workers' controller: the supervisor's tables to each worker, their reports back."""

    def __init__(self, mirror: SwitchCore, log: JsonLog) -> None:
        self.mirror = mirror
        self.log = log
        #: the Unix socket the workers connect to, in a private directory (mode 0700)
        self._directory = tempfile.mkdtemp(prefix="scaffold-hub-")
        self.address = os.path.join(self._directory, "hub")
        self._server: asyncio.Server | None = None
        self._workers: dict[asyncio.StreamWriter, control.NodeStats | None] = {}
        #: where a worker's ``Demand`` goes (the supervisor's control connection), and the
        #: number each worker's reports carry (from 1, never reused: a restarted worker is new)
        self.upstream: Callable[[control.ControlMessage], None] | None = None
        self._numbers: dict[asyncio.StreamWriter, int] = {}
        self._last_number = 0
        self._demand_sent: set[asyncio.StreamWriter] = set()
        #: the counters of workers that are gone, summed (they stay in the switch's totals)
        self._retired: list[Sample] = []
        self._hello = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.liveness = LivenessMerge(mirror.name)
        #: sends a merged ``HostLiveness`` to the controller (the supervisor's connection)
        self.on_liveness: Callable[[control.HostLiveness], None] | None = None
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> int:
        return len(self._workers)

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, self.address)

    async def wait_for_workers(self, pool: WorkerPool, timeout: float, stop: asyncio.Event) -> None:
        """Until every worker of ``pool`` said ``Hello`` (their sockets are bound), or ``stop``.

        Raises:
            ScaffoldError: they did not within ``timeout`` seconds, or they keep dying.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        count = pool.size
        while self.connected < count and not stop.is_set():
            self._hello.clear()
            left = deadline - loop.time()
            if left <= 0 or pool.restarts >= 2 * count:
                raise ScaffoldError(f"only {self.connected} of {count} workers started (see their log)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hello.wait(), min(left, 0.1))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._expiry is not None:
            self._expiry.cancel()
        for writer in list(self._workers):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        shutil.rmtree(self._directory, ignore_errors=True)

    def relay(self, message: control.ControlMessage) -> None:
        """A record from the controller: every worker gets it (the mirror takes it next)."""
        if isinstance(message, control.TableSync) and not message.more:
            self.liveness.reset()  # the workers report every host again after this sync
        if isinstance(message, control.TableSync | control.TableDelta | control.LinkSettings):
            frame = control.frame(message)
            for writer in self._workers:
                if not writer.is_closing():
                    writer.write(frame)

    def _sync(self) -> control.TableSync:
        mirror = self.mirror
        return control.TableSync(version=mirror.version, dc_id=mirror.dc_id, tables=mirror.snapshot())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        decoder = control.FrameDecoder()
        try:
            while chunk := await reader.read(65536):
                try:
                    messages = decoder.feed(chunk)
                except MalformedPacket:
                    break
                for message in messages:
                    if isinstance(message, control.Hello | control.SyncRequest):
                        if writer not in self._workers:
                            self._workers[writer] = None
                            self._hello.set()
                        if self.mirror.synced:
                            writer.write(control.frame(self._sync()))
                    elif isinstance(message, control.NodeStats) and writer in self._workers:
                        self._workers[writer] = message
                    elif isinstance(message, control.Demand) and writer in self._workers:
                        self._demand(writer, message)
                    elif isinstance(message, control.HostLiveness) and writer in self._workers:
                        self._tell(self.liveness.report(writer, message))
        except ConnectionError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            if writer in self._demand_sent:  # its counts go with it
                self._demand(writer, control.Demand(node=self.mirror.name, interval=1.0))
            self._numbers.pop(writer, None)
            loop = asyncio.get_running_loop()
            self.liveness.forget(writer, loop.time(), self.mirror.presence_timeout)
            self._arm_expiry()
            last = self._workers.pop(writer, None)
            if last is not None:
                self._retired = _counters(pool_metrics([self._retired, last.metrics], 0, 0))
            writer.close()

    def _demand(self, writer: asyncio.StreamWriter, report: control.Demand) -> None:
        number = self._numbers.get(writer)
        if number is None:
            self._last_number += 1
            number = self._numbers[writer] = self._last_number
        if report.flows:
            self._demand_sent.add(writer)
        else:
            self._demand_sent.discard(writer)
        if self.upstream is not None:
            self.upstream(msgspec.structs.replace(report, node=self.mirror.name, worker=number))

    def _tell(self, report: control.HostLiveness | None) -> None:
        if report is not None and self.on_liveness is not None:
            self.on_liveness(report)

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        at = self.liveness.next_expiry()
        if at is not None:
            self._expiry = asyncio.get_running_loop().call_at(at, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self._tell(self.liveness.expire(asyncio.get_running_loop().time()))
        self._arm_expiry()

    def reports(self) -> list[Sequence[Sample]]:
        """The latest metrics of each worker, and the summed counters of departed ones."""
        return [self._retired, *(s.metrics for s in self._workers.values() if s is not None)]

    def trace(self) -> list[Trace]:
        """The workers' latest trace hops, newest last (at most 32)."""
        hops = [hop for s in self._workers.values() if s is not None for hop in s.trace]
        return sorted(hops, key=lambda hop: hop[7])[-32:]


def _counters(samples: Sequence[Sample]) -> list[Sample]:
    """The counters among ``samples`` (gauges of a departed worker mean nothing any more)."""
    out = []
    for sample in samples:
        metric = CATALOGUE.get(sample.name)
        if (
            metric is not None
            and metric.kind is MetricKind.COUNTER
            and metric.name != "worker_restarts_total"
        ):
            out.append(sample)
    return out


class SupervisorRuntime(NodeRuntime[SwitchCore]):
    """The supervisor's control connection: the mirror core, and the workers' metrics and
    traces reported as the switch's own."""

    def __init__(
        self,
        core: SwitchCore,
        controllers: Sequence[Address],
        bind: Address,
        advertise: str | None,
        hub: ControlHub,
        pool: WorkerPool,
        credentials: Credentials | None,
    ) -> None:
        super().__init__(
            core,
            AddressBook(),
            {},
            controllers,
            bind=bind,
            advertise=advertise,
            data_plane=False,
            credentials=credentials,
        )
        self.hub = hub
        self.pool = pool
        self.on_control = hub.relay
        hub.on_liveness = self.send_control
        hub.upstream = self.send_control

    def metrics(self) -> list[Sample]:
        # The tables' gauges are the mirror's: it holds what every worker holds, always.
        tables = [s for s in self.core.metrics() if s.name in (TABLE_ENTRIES.name, TABLE_VERSION.name)]
        return pool_metrics([*self.hub.reports(), tables], self.pool.alive, self.pool.restarts)

    def trace(self) -> list[Trace]:
        return self.hub.trace()

    async def close(self) -> None:
        """Stop the workers, the hub and the control connection."""
        await self.pool.stop()
        await self.hub.close()
        await super().close()


def reserve_port(listen: Address) -> tuple[Address, socket.socket | None]:
    """``listen`` with a port the workers can share: as given, or, for port 0, one picked now
    and held by a ``SO_REUSEPORT`` socket (that reads nothing) until the workers bound it.

    Raises:
        OSError: the address cannot be bound.
    """
    if listen[1]:
        return listen, None
    hold = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    hold.bind(listen)
    return (listen[0], hold.getsockname()[1]), hold


def worker_command(args: argparse.Namespace, hub: str, listen: Address, index: int) -> list[str]:
    """The command line of worker ``index``: this switch's flags; it talks to the hub, not to
    ``--controller``."""
    argv = [
        sys.executable,
        "-m",
        "scaffold",
        "switch",
        "--worker-of",
        hub,
        "--worker-index",
        str(index),
        "--name",
        args.name,
        "--role",
        args.role,
        "--dc",
        args.dc,
        "--listen",
        f"{listen[0]}:{listen[1]}",
        "--controller",
        args.controller,
        "--stats-interval",
        str(args.stats_interval),
    ]
    if args.advertise:
        argv += ["--advertise", args.advertise]
    for link in args.link:
        argv += ["--link", link]
    if getattr(args, "no_offload", False):
        argv.append("--no-offload")
    if getattr(args, "debug", False):
        argv.append("--debug")
    return argv


async def start_pool(
    args: argparse.Namespace,
    core: SwitchCore,
    controllers: Sequence[Address],
    listen: Address,
    log: JsonLog,
    stop: asyncio.Event,
    credentials: Credentials | None,
) -> SupervisorRuntime:
    """Start the hub and ``args.workers`` workers on one address; returns the supervisor's
    runtime, to be connected to the controller (``start`` or ``switch.connect``) with the
    switch's ``credentials`` (None: plain TCP, for a controller without them), and closed
    (which stops the workers).

    Raises:
        ScaffoldError: the workers did not all start.
        OSError: the address cannot be bound, or a worker cannot be run.
    """
    hub = ControlHub(core, log)
    await hub.start()
    address, hold = reserve_port(listen)
    pool = WorkerPool([worker_command(args, hub.address, address, i) for i in range(args.workers)], log)
    node = SupervisorRuntime(core, controllers, address, args.advertise, hub, pool, credentials)
    try:
        await pool.start()
        await hub.wait_for_workers(pool, WORKERS_READY, stop)
    except BaseException:
        await node.close()
        raise
    finally:
        if hold is not None:
            hold.close()  # the workers hold the port now
    return node
