"""``ControllerRuntime``: the controller core behind a TCP server speaking framed control records.

What the core declares durable is committed before the records that depend on it are sent
(docs/protocol.md §6.4). A store that waits for I/O (``Store.blocking``: SQLite, etcd) is
committed from one thread of its own: each flush queues its changes and its records as a
batch; while a commit runs, later batches wait and then go into the next commit together (a
group commit); when a commit returns, its batches' records are sent, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ...core.controller import Command, Controller, ControllerEvent, StateChange
from ...core.controller.commands import Counters, Status
from ...core.metrics import Sample
from ...errors import MalformedPacket
from ...wire import control
from ..admin import NOT_LEADER
from ..metrics import node_summary, runtime_metrics
from ..store import MemoryStore, Store, controller_outputs
from .links import Address

__all__ = ["NOT_LEADER", "ControllerRuntime"]

#: how long a failed commit waits before it is tried again (seconds)
RETRY_COMMIT = 0.1
Batch = tuple[list[StateChange], list[tuple[str, control.ControlMessage]]]


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
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: a replica of several (``runtime/etcd``) serves nodes only while it leads; else it
        #: sends them to ``leader_address`` (``NotLeader``)
        self.leading = True
        self.leader_address: Address | None = None
        #: more for the ``status`` reply (a replica's view of the replicas and etcd)
        self.extra_status: Callable[[], dict[str, Any]] | None = None
        #: group commits: batches waiting for a commit, and the one thread that commits
        self._waiting: list[Batch] = []
        self._committing = False
        self._committer: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, *self.bind_address)
        self.address = self._server.sockets[0].getsockname()[:2]
        self._arm()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._committer is not None:
            self._committer.shutdown(wait=True)
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

    def promote(self, core: Controller, store: Store) -> None:
        """Lead from now on, with ``core`` (built from the replicated rows) and ``store``."""
        self.core, self.store = core, store
        self._waiting.clear()
        self.leading = True
        self.leader_address = None
        if self._loop is not None:
            self._arm()

    def demote(self) -> None:
        """Stop leading: forget what waits to be sent and close every node's connection (the
        nodes go to the new leader; records not committed are never sent)."""
        self.leading = False
        self._waiting.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for writer in list(self._writers.values()):
            writer.close()
        self._writers.clear()

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
                    if not self.leading:
                        self._not_leader(message, writer)
                        continue
                    if isinstance(message, control.AdminRequest):
                        writer.write(control.frame(self._admin(message)))
                        continue
                    if isinstance(message, control.NodeStats):
                        self.node_stats[message.node] = message
                        continue
                    if isinstance(message, control.Hello):
                        name = message.node
                        self._writers[name] = writer
                    if name is None:
                        self.stats["before-hello"] += 1
                        continue
                    self.core.receive_message(name, message, self.now())
                if self.leading:
                    self.flush()
        except ConnectionError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            if name is not None and self._writers.get(name) is writer:
                del self._writers[name]
                if self._loop is not None and not self._loop.is_closed() and self.leading:
                    self.core.node_disconnected(name, self.now())
                    self.flush()
            writer.close()

    def metrics(self) -> list[Sample]:
        """The controller's metrics: its core's and this runtime's (``stats``)."""
        return [*self.core.metrics(), *runtime_metrics(self.stats)]

    def _not_leader(self, message: control.ControlMessage, writer: asyncio.StreamWriter) -> None:
        """A standby answers nodes and operators with the leader's address."""
        leader = self.leader_address
        if isinstance(message, control.AdminRequest):
            result = {"leader": list(leader) if leader is not None else None}
            writer.write(control.frame(control.AdminReply(message.id, False, result, NOT_LEADER)))
        elif isinstance(message, control.Hello):
            writer.write(control.frame(control.NotLeader(leader)))
            writer.close()

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
        reply = self.core.admin(request, self.now())
        if request.command == Status.name and reply.ok and self.extra_status is not None:
            reply = control.AdminReply(reply.id, True, {**reply.result, **self.extra_status()})
        return reply

    def flush(self) -> None:
        """Hand the controller's events to ``on_event``, commit its state changes, then send
        its records (docs/protocol.md §6.4), and re-arm its timer. A store that cannot write
        holds the records back; the timer retries."""
        if not self.leading:
            return
        now = self.now()
        while (event := self.core.next_event()) is not None:
            if self.on_event is not None:
                self.on_event(event, now)
        if self.store.blocking:
            changes = self.core.state_changes()
            messages = self.core.messages_to_send()
            if changes or messages:
                self._waiting.append((changes, messages))
            self._commit_waiting()
        else:
            try:
                outputs = controller_outputs(self.core, self.store)
            except OSError:
                self.stats["store-failed"] += 1
                outputs = []
            self._send(outputs)
        self._arm()

    def _send(self, outputs: list[tuple[str, control.ControlMessage]]) -> None:
        for node, message in outputs:
            writer = self._writers.get(node)
            if writer is None or writer.is_closing():
                self.stats["to-disconnected"] += 1
                continue
            writer.write(control.frame(message))

    def _commit_waiting(self) -> None:
        """Start a group commit of every waiting batch, unless one runs; a batch without
        changes is sent at once if nothing waits ahead of it."""
        if self._committing or not self._waiting:
            return
        if not any(changes for changes, _ in self._waiting):
            batches, self._waiting = self._waiting, []
            for _, messages in batches:
                self._send(messages)
            return
        assert self._loop is not None
        if self._committer is None:
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="controller-store")
        batches, self._waiting = self._waiting, []
        changes = [c for batch_changes, _ in batches for c in batch_changes]
        self._committing = True
        future = self._committer.submit(self.store.commit, changes)
        loop = self._loop
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._committed, batches, f))

    def _committed(self, batches: list[Batch], future: Future[None]) -> None:
        self._committing = False
        if not self.leading:
            return  # stepped down meanwhile: a new leader answers these nodes
        if future.exception() is not None:
            # Nothing was sent: the batches wait ahead of any newer ones and are tried again.
            self.stats["store-failed"] += 1
            self._waiting[:0] = batches
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_later(RETRY_COMMIT, self._commit_waiting)
            return
        for _, messages in batches:
            self._send(messages)
        self._commit_waiting()

    def _arm(self) -> None:
        assert self._loop is not None
        if not self.leading:
            return
        at = self.core.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer = self._loop.call_at(at if at is not None else self._loop.time() + 0.1, self._on_timer)

    def _on_timer(self) -> None:
        if not self.leading:
            return
        self.core.handle_timer(self.now())
        self.flush()
