"""Worker processes: one node's work spread over the machine's cores (docs/deployment.md §8).

A flow switch keeps no per-flow state, the ingress and the publisher keep only the
connections they carry: each can run as ``--workers N`` processes sharing one address, the
kernel spreading the traffic (``SO_REUSEPORT``: UDP datagrams and TCP connections by
4-tuple, so one underlay flow, or one client connection, always meets the same worker).

:class:`WorkerPool` starts the worker processes, restarts any that dies while the pool runs
(after a back-off that grows while they keep dying) and stops them by pid. Nothing is lost
at the stream level when a worker dies: a switch worker's in-flight datagrams are
retransmitted end to end by the transport, and the kernel hands the dead worker's share of
the traffic to the others at once.

:func:`pool_metrics` adds up the workers' metrics for the supervisor's own report.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ...core.metrics import CATALOGUE, MetricKind, Sample, define
from .jsonlog import JsonLog

__all__ = [
    "RESTARTS",
    "SUPERVISOR_ENV",
    "WORKERS",
    "WorkerPool",
    "follow_supervisor",
    "pool_metrics",
    "until_orphaned",
]

WORKERS = define("workers", MetricKind.GAUGE, "Worker processes of a node running now.")
RESTARTS = define("worker_restarts_total", MetricKind.COUNTER, "Worker processes restarted after they died.")
#: the first restart waits this long; each quick death doubles it up to ``MAX_BACKOFF``
BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: a worker that ran this long before dying restarts after ``BACKOFF`` again
STABLE = 10.0
#: how often a worker looks whether its supervisor is still there
PARENT_POLL = 0.5
#: the environment variable in which a pool tells its workers the supervisor's pid
SUPERVISOR_ENV = "SCAFFOLD_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(slots=True)
class _Worker:
    index: int
    argv: Sequence[str]
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    backoff: float = BACKOFF


class WorkerPool:
    """Runs one process per command and keeps them running until :meth:`stop`."""

    def __init__(self, commands: Sequence[Sequence[str]], log: JsonLog) -> None:
        self.log = log
        self.restarts = 0
        self._workers = [_Worker(i, list(argv)) for i, argv in enumerate(commands)]
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        """The pids of the workers running now, by worker index."""
        return [
            w.process.pid for w in self._workers if w.process is not None and w.process.returncode is None
        ]

    def stopping(self) -> bool:
        """Whether :meth:`stop` began (a worker that exits then is not restarted)."""
        return self._stopping

    @property
    def size(self) -> int:
        """How many workers the pool keeps running."""
        return len(self._workers)

    @property
    def alive(self) -> int:
        return len(self.pids)

    async def start(self) -> None:
        """Start every worker; each is watched and restarted if it dies.

        Raises:
            OSError: a worker could not be started.
        """
        for worker in self._workers:
            await self._spawn(worker)
            self._watchers.append(asyncio.create_task(self._watch(worker), name=f"worker-{worker.index}"))

    async def _spawn(self, worker: _Worker) -> None:
        env = dict(os.environ, **{SUPERVISOR_ENV: str(os.getpid())})
        worker.process = await asyncio.create_subprocess_exec(
            *worker.argv, stdin=asyncio.subprocess.DEVNULL, env=env
        )
        worker.started = asyncio.get_running_loop().time()
        self.log.info("worker started", worker=worker.index, pid=worker.process.pid)

    async def _watch(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping():
                return
            lived = loop.time() - worker.started
            worker.backoff = BACKOFF if lived >= STABLE else min(worker.backoff * 2, MAX_BACKOFF)
            self.log.warning("worker died", worker=worker.index, pid=worker.process.pid, code=code)
            await asyncio.sleep(worker.backoff)
            if self.stopping():
                return
            try:
                await self._spawn(worker)
            except OSError as exc:
                self.log.error("worker restart failed", worker=worker.index, error=str(exc))
                continue
            self.restarts += 1

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every worker, SIGKILL those still running after ``grace`` seconds."""
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running = [w.process for w in self._workers if w.process is not None and _running(w.process)]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        if running:
            _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running], timeout=grace)
            for process in running:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            for future in late:
                with contextlib.suppress(Exception):
                    await future


def follow_supervisor() -> None:
    """In a pool's worker (``SUPERVISOR_ENV`` set): have the kernel send this process SIGTERM
    when its supervisor dies (Linux ``PR_SET_PDEATHSIG``), and exit if it is gone already.

    :func:`until_orphaned` only watches once a worker serves; a supervisor killed while its
    worker was still joining the network or waiting for its target left that worker running
    (seen after a ``bench/ingress.py`` run). Outside a pool: nothing.

    Raises:
        SystemExit: the supervisor died before this worker started.
    """
    supervisor = os.environ.pop(SUPERVISOR_ENV, None)
    if supervisor is None:
        return
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if str(os.getppid()) != supervisor:
        raise SystemExit(f"worker {os.getpid()}: its supervisor {supervisor} is gone")


async def until_orphaned(stop: asyncio.Event) -> None:
    """Set ``stop`` when this worker's supervisor is gone (a worker never outlives it, so
    the address it shares is free again), or return when ``stop`` is set otherwise."""
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PARENT_POLL)


def _running(process: asyncio.subprocess.Process | None) -> bool:
    return process is not None and process.returncode is None


def pool_metrics(reports: Iterable[Sequence[Sample]], alive: int, restarts: int) -> list[Sample]:
    """The metrics of a node made of workers: each counter summed over the ``reports`` (one
    per worker, the departed ones' last included), each gauge's largest value, and the
    pool's own ``workers`` and ``worker_restarts_total``."""
    sums: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for samples in reports:
        for sample in samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            metric = CATALOGUE.get(sample.name)
            if metric is not None and metric.kind is MetricKind.GAUGE:
                sums[key] = max(sums.get(key, sample.value), sample.value)
            else:
                sums[key] = sums.get(key, 0) + sample.value
    out = [Sample(name, value, dict(labels)) for (name, labels), value in sorted(sums.items())]
    return [*out, WORKERS.sample(alive), RESTARTS.sample(restarts)]
