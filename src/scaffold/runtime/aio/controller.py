"""``ControllerRuntime``: the controller core behind a TCP server speaking framed control records
over mutual TLS (docs/protocol.md §6.6; docs/security.md).

Every connection presents a certificate under the network's CA (``runtime/tls.py``). A
``Hello`` is taken only for the name and role the certificate names, once per connection and
from one live connection per name; admin commands only from operators; ``NodeStats`` only
from the connection's own registered node. Each connection has a TLS handshake deadline, a
read deadline for a frame it has begun, an idle timeout and a bounded write buffer; their
number is capped. A record or connection that raises is counted and closed alone: the
controller's timer and other connections go on.

What the core declares durable is committed before the records that depend on it are sent
(§6.4). A store that waits for I/O (``Store.blocking``: SQLite, etcd) is committed from one
thread of its own: each flush queues its changes and its records as a batch; while a commit
runs, later batches wait and then go into the next commit together (a group commit); when a
commit returns, its batches' records are sent, in order. One replica of several
(``runtime/etcd``) serves only while it leads (``promote``, ``demote``); a standby answers
nodes with ``NotLeader`` and operators with the leader's address.

Besides the core's own metrics it counts the decisions it hands on (``controller_events_total``
by kind) and measures convergence (``runtime/convergence.py``) from the table records it sends
and the versions the switches report in ``NodeStats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ...core.controller import Command, Controller, ControllerEvent, StateChange
from ...core.controller.authorize import admin_refusal, hello_refusal
from ...core.controller.commands import Counters, Status
from ...core.metrics import MetricKind, Sample, define, total
from ...core.switch import TABLE_VERSION
from ...errors import MalformedPacket
from ...wire import control
from ..admin import NOT_LEADER
from ..convergence import ConvergenceTracker
from ..metrics import node_summary, runtime_metrics
from ..prometheus import Batch
from ..store import MemoryStore, Store, controller_outputs
from ..tls import Credentials, Identity, RevocationList, peer_identity, server_context
from .links import Address

__all__ = ["EVENTS", "ConnectionLimits", "ControllerRuntime"]

EVENTS = define(
    "controller_events_total",
    MetricKind.COUNTER,
    "Decisions the controller took, by kind: host-up, host-down (a failover starts), bind, drain, "
    "rebalance, object-migration, vm-migration, client-mobility, route-change, port, ...",
    labels=("kind",),
)
_TABLE_RECORDS = (control.TableSync, control.TableDelta)

#: how long a failed commit waits before it is tried again (seconds)
RETRY_COMMIT = 0.1
#: a record for a node (by name), or an admin reply for the connection that asked for it
Outgoing = tuple[str | asyncio.StreamWriter, control.ControlMessage]
CommitBatch = tuple[list[StateChange], list[Outgoing]]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds on the controller's connections (docs/protocol.md §6.6)."""

    #: open connections at most; more are closed at once (``connection-cap``)
    max_connections: int = 512
    #: the TLS handshake must end within this (seconds)
    handshake_timeout: float = 5.0
    #: a frame once begun must be complete within this (``read-timeout``)
    read_timeout: float = 5.0
    #: a connection with nothing read for this long is closed (``idle-timeout``); nodes
    #: send at least a keepalive (an empty frame) every ``KEEPALIVE`` seconds
    idle_timeout: float = 30.0
    #: the same for a host's connection once it said ``Hello``: told to the host in
    #: ``Welcome``, which keeps alive every third of it -- hosts are many, switches few
    host_idle_timeout: float = 120.0
    #: bytes queued towards a peer that does not read; beyond, it is closed (``write-buffer-full``)
    max_write_buffer: int = 32 * 1024 * 1024


class _Connection:
    __slots__ = ("decoder", "expired", "heard", "identity", "idle", "name", "peer_ip", "timer", "writer")

    def __init__(self, writer: asyncio.StreamWriter, identity: Identity | None, peer_ip: str | None) -> None:
        self.writer = writer
        self.identity = identity
        self.peer_ip = peer_ip
        #: the node this connection said Hello for
        self.name: str | None = None
        self.decoder = control.FrameDecoder()
        #: when its last chunk was read (a loop time): its deadlines count from there
        self.heard = 0.0
        #: its idle timeout (a host's is longer once it said ``Hello``)
        self.idle = 0.0
        #: the timer that checks its deadlines, and what cut it when one passed
        self.timer: asyncio.TimerHandle | None = None
        self.expired = ""


class ControllerRuntime:
    """The controller core behind a TCP server speaking framed control records; what the core
    declares durable goes to ``store`` before the records that depend on it go out."""

    def __init__(
        self,
        core: Controller,
        bind: Address = ("127.0.0.1", 0),
        store: Store | None = None,
        *,
        credentials: Credentials | None = None,
        crl: str | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        """Without ``credentials`` the controller speaks plain TCP and believes every
        ``Hello`` and admin command: for measurements of what TLS costs, never a network.
        ``crl``: a CRL file (``CertificateAuthority.crl_path``) whose serials are refused,
        re-read when it changes."""
        self.core = core
        self.credentials = credentials
        self.limits = limits or ConnectionLimits()
        core.host_idle_timeout = self.limits.host_idle_timeout
        self.revoked = RevocationList(crl)
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
        self._connections: set[_Connection] = set()
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
        self._waiting: list[CommitBatch] = []
        #: admin replies that go out with the records of the next flush: after the state
        #: their command changed is committed, like every record (§6.4)
        self._replies: list[Outgoing] = []
        self._committing = False
        self._committer: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Listen on ``bind_address``.

        Raises:
            OSError: it cannot be bound.
            ssl.SSLError: the credentials cannot be loaded.
        """
        self._loop = asyncio.get_running_loop()
        self.core.wall_offset = time.time() - self._loop.time()
        self.revoked.refresh()
        tls = server_context(self.credentials) if self.credentials is not None else None
        self._server = await asyncio.start_server(
            self._serve,
            *self.bind_address,
            ssl=tls,
            ssl_handshake_timeout=self.limits.handshake_timeout if tls is not None else None,
        )
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
        if self._loop is not None:
            core.wall_offset = time.time() - self._loop.time()
        core.host_idle_timeout = self.limits.host_idle_timeout
        self.core, self.store = core, store
        self._waiting.clear()
        self._replies.clear()
        self.leading = True
        self.leader_address = None
        if self._loop is not None:
            self._arm()

    def demote(self) -> None:
        """Stop leading: forget what waits to be sent and close every node's connection (the
        nodes go to the new leader; records not committed are never sent)."""
        self.leading = False
        self._waiting.clear()
        self._replies.clear()
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
        peer = writer.get_extra_info("peername")
        conn = _Connection(
            writer, peer_identity(writer.get_extra_info("ssl_object")), peer[0] if peer else None
        )
        try:
            if len(self._connections) >= self.limits.max_connections:
                self.stats["connection-cap"] += 1
                return
            if self.revoked.refresh():
                self._close_revoked()
            if self.credentials is not None and (
                conn.identity is None or conn.identity.serial in self.revoked.serials
            ):
                self.stats["revoked-certificate"] += 1
                return
            self._connections.add(conn)
            await self._read(reader, conn)
        except (ConnectionError, OSError):
            pass
        except Exception:
            self.stats["connection-error"] += 1
        finally:
            self._connections.discard(conn)
            if task is not None:
                self._tasks.discard(task)
            name = conn.name
            if name is not None and self._writers.get(name) is writer:
                del self._writers[name]
                self.convergence.disconnected(name)
                if self._loop is not None and not self._loop.is_closed() and self.leading:
                    self.core.node_disconnected(name, self.now())
                    self.flush()
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        """Read ``conn``'s records until it closes, breaks the protocol or passes a deadline:
        ``idle_timeout`` without a chunk, or ``read_timeout`` without one while a frame is
        begun (``_deadline``)."""
        loop = asyncio.get_running_loop()
        decoder = conn.decoder
        task = asyncio.current_task()
        assert task is not None
        conn.heard = loop.time()
        conn.idle = self.limits.idle_timeout
        conn.timer = loop.call_at(conn.heard + conn.idle, self._deadline, conn, task)
        try:
            while True:
                try:
                    chunk = await reader.read(65536)
                except asyncio.CancelledError:
                    if not conn.expired:
                        raise
                    task.uncancel()  # our own deadline, not a cancellation from outside
                    self.stats[conn.expired] += 1
                    return
                if not chunk:
                    return
                conn.heard = loop.time()  # all a keepalive does (its empty frame decodes to nothing)
                was_partial = decoder.partial
                try:
                    messages = decoder.feed(chunk)
                except MalformedPacket as exc:
                    self.stats[f"control-{exc.reason}"] += 1
                    return
                if decoder.partial and not was_partial:  # the shorter deadline starts
                    conn.timer.cancel()
                    due = conn.heard + self.limits.read_timeout
                    conn.timer = loop.call_at(due, self._deadline, conn, task)
                if messages and not self._handle(conn, messages):
                    return
        finally:
            conn.timer.cancel()

    def _deadline(self, conn: _Connection, task: asyncio.Task[None]) -> None:
        """``conn``'s timer: cut it if its deadline passed, else wait for the deadline as it
        stands now. Reads only note when they were (``heard``), so a connection that keeps
        talking costs one timer per deadline's length, not one per chunk."""
        assert self._loop is not None
        limits = self.limits
        partial = conn.decoder.partial
        due = conn.heard + (limits.read_timeout if partial else conn.idle)
        if self._loop.time() >= due:
            conn.expired = "read-timeout" if partial else "idle-timeout"
            task.cancel()
        else:
            conn.timer = self._loop.call_at(due, self._deadline, conn, task)

    def _handle(self, conn: _Connection, messages: list[control.ControlMessage]) -> bool:
        """Handle ``conn``'s records, then flush; False closes the connection."""
        for message in messages:
            try:
                if not self._receive(conn, message):
                    return False
            except Exception:
                self.stats["record-error"] += 1
        self.flush()
        return True

    def _receive(self, conn: _Connection, message: control.ControlMessage) -> bool:
        """Handle one record of ``conn``; False closes the connection."""
        if not self.leading:
            return self._not_leader(conn, message)
        identity = conn.identity
        if isinstance(message, control.AdminRequest):
            if identity is not None:
                refusal = admin_refusal(message.command, message.args, identity.name, identity.role)
                if refusal is not None:
                    self.stats[refusal] += 1
                    reply = control.AdminReply(
                        message.id, False, error=f"{message.command}: needs an operator certificate"
                    )
                    conn.writer.write(control.frame(reply))
                    return True
            # Answered once what the command changed is committed (``flush``): an operator
            # told "done" can count on it surviving a crash.
            self._replies.append((conn.writer, self._admin(message)))
            return True
        if isinstance(message, control.NodeStats):
            if conn.name is None or message.node != conn.name:
                self.stats["stats-from-unregistered"] += 1
            else:
                self._node_stats(message)
            return True
        if isinstance(message, control.Hello):
            return self._hello(conn, message)
        if conn.name is None:
            self.stats["before-hello"] += 1
            return True
        self.core.receive_message(conn.name, message, self.now())
        return True

    def _hello(self, conn: _Connection, hello: control.Hello) -> bool:
        if conn.name is not None:
            self.stats["hello-repeated"] += 1
            return True
        refusal = None
        if conn.identity is not None:
            identity = conn.identity
            refusal = hello_refusal(hello, identity.name, identity.role, identity.addresses, conn.peer_ip)
        if refusal is None:
            live = self._writers.get(hello.node)
            if live is not None and not live.is_closing():
                refusal = "hello-already-connected"
        if refusal is not None:
            self.stats[refusal] += 1
            conn.writer.write(control.frame(control.Refused(refusal)))
            return False
        conn.name = hello.node
        self._writers[hello.node] = conn.writer
        if hello.role == "host":
            # Its deadline moves later lazily: the armed timer re-arms when it fires.
            conn.idle = self.limits.host_idle_timeout
        self.core.receive_message(hello.node, hello, self.now())
        return True

    def _not_leader(self, conn: _Connection, message: control.ControlMessage) -> bool:
        """A standby answers nodes and operators with the leader's address (§6.8)."""
        leader = self.leader_address
        if isinstance(message, control.AdminRequest):
            result = {"leader": list(leader) if leader is not None else None}
            conn.writer.write(control.frame(control.AdminReply(message.id, False, result, NOT_LEADER)))
            return True
        if isinstance(message, control.Hello):
            conn.writer.write(control.frame(control.NotLeader(leader)))
            return False
        return True

    def _close_revoked(self) -> None:
        for conn in list(self._connections):
            if conn.identity is not None and conn.identity.serial in self.revoked.serials:
                self.stats["revoked-certificate"] += 1
                conn.writer.close()

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
            self.event_counts[event.kind] += 1
            if self.on_event is not None:
                self.on_event(event, now)
        if self.store.blocking:
            changes = self.core.state_changes()
            messages: list[Outgoing] = [*self.core.messages_to_send(), *self._replies]
            self._replies = []
            if changes or messages:
                self._waiting.append((changes, messages))
            self._commit_waiting()
        else:
            try:
                outputs: list[Outgoing] = [*controller_outputs(self.core, self.store), *self._replies]
                self._replies = []
            except OSError:
                self.stats["store-failed"] += 1
                outputs = []
            self._send(outputs)
        self._arm()

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

    def _committed(self, batches: list[CommitBatch], future: Future[None]) -> None:
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

    def _send(self, outputs: list[Outgoing]) -> None:
        versions: dict[str, int] = {}
        for node, message in outputs:
            if not isinstance(node, str):  # an admin reply, to the connection that asked
                if not node.is_closing():
                    node.write(control.frame(message))
                continue
            writer = self._writers.get(node)
            if writer is None or writer.is_closing():
                self.stats["to-disconnected"] += 1
                continue
            if writer.transport.get_write_buffer_size() > self.limits.max_write_buffer:
                self.stats["write-buffer-full"] += 1
                writer.close()  # a peer that does not read is cut, not buffered for
                continue
            writer.write(control.frame(message))
            if isinstance(message, _TABLE_RECORDS):
                versions[node] = message.version
        if versions:
            self.convergence.sent(versions, self.now())

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
        try:
            self.core.handle_timer(self.now())
            self.flush()
        except Exception:
            self.stats["timer-error"] += 1
            self._arm()
