"""``ControllerRuntime``: the controller core behind a TCP server speaking framed control records.

Besides the core's own metrics it counts the decisions it hands on (``controller_events_total``
by kind) and measures convergence (``runtime/convergence.py``) from the table records it sends
and the versions the switches report in ``NodeStats``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any

from ...core.controller import Command, Controller, ControllerEvent
from ...core.controller.commands import Counters
from ...core.metrics import MetricKind, Sample, define, total
from ...core.switch import TABLE_VERSION
from ...errors import MalformedPacket
from ...wire import control
from ..convergence import ConvergenceTracker
from ..metrics import node_summary, runtime_metrics
from ..prometheus import Batch
from ..store import MemoryStore, Store, controller_outputs
from .links import Address

__all__ = ["EVENTS", "ControllerRuntime"]

EVENTS = define(
    "controller_events_total",
    MetricKind.COUNTER,
    "Decisions the controller took, by kind: host-up, host-down (a failover starts), bind, drain, "
    "rebalance, object-migration, vm-migration, client-mobility, route-change, port, ...",
    labels=("kind",),
)
_TABLE_RECORDS = (control.TableSync, control.TableDelta)


class ControllerRuntime:
    """The controller core behind a TCP server speaking framed control records; what the core
    declares durable goes to ``store`` before the records that depend on it go out."""

    def __init__(
        self, core: Controller, bind: Address = ("127.0.0.1", 0), store: Store | None = None
    ) -> None:
        self.core = core
        self.store: Store = store if store is not None else MemoryStore()
        self.bind_address = bind
        self.address: Address = bind
        self.stats: Counter[str] = Counter()
        #: the last ``NodeStats`` of each node (``scaffold status`` counters)
        self.node_stats: dict[str, control.NodeStats] = {}
        #: called with each decision the controller takes (a daemon logs them)
        self.on_event: Callable[[ControllerEvent, float], None] | None = None
        #: the decisions handed on so far, by kind
        self.event_counts: Counter[str] = Counter()
        self.convergence = ConvergenceTracker()
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, *self.bind_address)
        self.address = self._server.sockets[0].getsockname()[:2]
        self._arm()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            writer.close()
        # Closing the writers ends each connection's reader with EOF; cancelling the
        # handler tasks instead would make asyncio's stream protocol log the cancellation.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def command(self, command: Command) -> dict[str, Any]:
        """Run an operator command (``core.controller.commands``) now and send what it queued.

        Raises:
            UsageError: an unknown host, object, datacenter or link.
        """
        result = self.core.command(command, self.now())
        self.flush()
        return result

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        decoder = control.FrameDecoder()
        name: str | None = None
        try:
            while chunk := await reader.read(65536):
                try:
                    messages = decoder.feed(chunk)
                except MalformedPacket as exc:
                    self.stats[f"control-{exc.reason}"] += 1
                    break
                for message in messages:
                    if isinstance(message, control.AdminRequest):
                        writer.write(control.frame(self._admin(message)))
                        continue
                    if isinstance(message, control.NodeStats):
                        self._node_stats(message)
                        continue
                    if isinstance(message, control.Hello):
                        name = message.node
                        self._writers[name] = writer
                    if name is None:
                        self.stats["before-hello"] += 1
                        continue
                    self.core.receive_message(name, message, self.now())
                self.flush()
        except ConnectionError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            if name is not None and self._writers.get(name) is writer:
                del self._writers[name]
                self.convergence.disconnected(name)
                if self._loop is not None and not self._loop.is_closed():
                    self.core.node_disconnected(name, self.now())
                    self.flush()
            writer.close()

    def _node_stats(self, stats: control.NodeStats) -> None:
        self.node_stats[stats.node] = stats
        if stats.role in ("flow-switch", "object-switch"):
            self.convergence.applied(stats.node, int(total(stats.metrics, TABLE_VERSION.name)), self.now())

    def metrics(self) -> list[Sample]:
        """The controller's metrics: its core's and this runtime's (``stats``, events by kind,
        convergence)."""
        return [
            *self.core.metrics(),
            *runtime_metrics(self.stats),
            *EVENTS.by(self.event_counts),
            *self.convergence.metrics(),
        ]

    def metric_batches(self, *, nodes: bool = False) -> list[Batch]:
        """The controller's metrics for an exporter, and with ``nodes`` every node's last
        report (``NodeStats``) too, each labelled with its node and role."""
        out = [Batch({"node": self.core.name, "role": self.core.role}, self.metrics())]
        if nodes:
            out += [Batch({"node": s.node, "role": s.role}, s.metrics) for s in self.node_stats.values()]
        return out

    def _admin(self, request: control.AdminRequest) -> control.AdminReply:
        """``counters`` is answered here (the runtime holds the nodes' reports): each node's
        ``node_summary`` and its trace, and the controller's own; every other command by the
        controller core."""
        if request.command == Counters.name:
            result = {
                name: {**node_summary(s.role, s.metrics), "trace": [list(t) for t in s.trace]}
                for name, s in self.node_stats.items()
            }
            result[self.core.name] = node_summary(self.core.role, self.metrics())
            return control.AdminReply(request.id, True, result=result)
        return self.core.admin(request, self.now())

    def flush(self) -> None:
        """Hand the controller's events to ``on_event``, commit its state changes, then send
        its records (docs/protocol.md §6.4), and re-arm its timer. A store that cannot write
        holds the records back; the timer retries."""
        now = self.now()
        while (event := self.core.next_event()) is not None:
            self.event_counts[event.kind] += 1
            if self.on_event is not None:
                self.on_event(event, now)
        try:
            outputs = controller_outputs(self.core, self.store)
        except OSError:
            self.stats["store-failed"] += 1
            outputs = []
        versions: dict[str, int] = {}
        for node, message in outputs:
            writer = self._writers.get(node)
            if writer is None or writer.is_closing():
                self.stats["to-disconnected"] += 1
                continue
            writer.write(control.frame(message))
            if isinstance(message, _TABLE_RECORDS):
                versions[node] = message.version
        self.convergence.sent(versions, now)
        self._arm()

    def _arm(self) -> None:
        assert self._loop is not None
        at = self.core.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer = self._loop.call_at(at if at is not None else self._loop.time() + 0.1, self._on_timer)

    def _on_timer(self) -> None:
        self.core.handle_timer(self.now())
        self.flush()
