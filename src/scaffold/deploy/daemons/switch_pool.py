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

__all__ = ["ControlHub", "SupervisorRuntime", "reserve_port", "start_pool", "worker_command"]

#: how long the supervisor waits for every worker's first ``Hello``
WORKERS_READY = 30.0
Trace = tuple[int, str, str, int, int, int, int, float]
SwitchCore = FlowSwitch | ObjectSwitch


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
        for writer in list(self._workers):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        shutil.rmtree(self._directory, ignore_errors=True)

    def relay(self, message: control.ControlMessage) -> None:
        """A record from the controller: every worker gets it (the mirror takes it next)."""
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
        except ConnectionError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            if writer in self._demand_sent:  # its counts go with it
                self._demand(writer, control.Demand(node=self.mirror.name, interval=1.0))
            self._numbers.pop(writer, None)
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
        hub.upstream = self.send_control

    def send_control(self, message: control.ControlMessage) -> None:
        """Send a record of the workers' to the controller, if connected (else it is lost:
        a report is superseded by the next one anyway)."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(control.frame(message))

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
