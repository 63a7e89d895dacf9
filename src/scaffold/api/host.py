"""``Host``: the application's handle on one SCAFFOLD host.

A ``Host`` is the ``NodeRuntime`` driving its ``HostStack`` plus the network it belongs to
(``HostNetwork``: an embedded one, or one joined from outside). It owns the host's event
routing: each ``HostStack`` event goes to the stream channel, datagram endpoint, server or
pending connect it belongs to. Application calls come from asyncio tasks on the host's loop;
after each call the host is *kicked* so the runtime sends what the stack queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.host import (
    DatagramReceived,
    DrainCompleted,
    FlowAccepted,
    FlowClosed,
    FlowsMigrated,
    FlowUnreachable,
    HostEvent,
    HostStack,
    ObjectNotFoundEvent,
    StreamEventFor,
)
from ..core.ownership import GrantRefused, verify_grant
from ..errors import BrokenPathError, ObjectNotFound, UsageError
from ..ids import ObjectId
from ..runtime.aio import NodeRuntime
from ..transport import StreamState
from ..wire.header import Proto
from .datagram import DatagramEndpoint
from .network import HostNetwork
from .streams import StreamChannel, StreamReader, StreamWriter

__all__ = ["Host", "Server", "StreamHandler"]

log = logging.getLogger("scaffold.server")

_RUNNING = frozenset(
    {StreamState.ESTABLISHED, StreamState.FIN_WAIT, StreamState.CLOSE_WAIT, StreamState.CLOSING}
)

StreamHandler = Callable[[StreamReader, StreamWriter], Awaitable[None]]


class Server:
    """A stream service bound on an object name (what ``Host.start_server`` returns)."""

    def __init__(
        self, host: Host, obj: ObjectId, name: str, handler: StreamHandler, *, resumable: bool = False
    ) -> None:
        self.host = host
        self.obj = obj
        self.name = name
        self.handler = handler
        self.resumable = resumable
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.serving = True
        #: set once a drain finished: the replica left and its last flow ended
        self.drained = asyncio.Event()
        self.handled = 0
        self.failed = 0
        #: the exceptions handlers raised (other than a broken path), newest last
        self.errors: list[str] = []

    def _accept(self, channel: StreamChannel) -> None:
        task = asyncio.get_running_loop().create_task(self._run(channel), name=f"serve:{self.name}")
        self.tasks[channel.socket_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(channel.socket_id, None))

    async def _run(self, channel: StreamChannel) -> None:
        reader, writer = StreamReader(channel), StreamWriter(channel)
        try:
            await self.handler(reader, writer)
            self.handled += 1
        except BrokenPathError:
            self.failed += 1  # the client went away; nothing to report to anyone
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            self.errors.append(f"{type(exc).__name__}: {exc}")
            log.exception("handler of %s failed on flow %s", self.name, channel.describe())
            writer.close()
        finally:
            if not channel.migrated:
                writer.close()

    def _migrated(self, socket_id: int) -> None:
        task = self.tasks.pop(socket_id, None)
        if task is not None:
            task.cancel()

    def close(self) -> None:
        """Stop accepting: withdraw the replica. Established flows go on."""
        if self.serving:
            self.serving = False
            self.host._unbind(self.obj)

    async def wait_closed(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()))

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Host:
    """One host of a running network: bind, serve and connect on object names.

    Leave the network with ``await host.close()`` (or ``async with host``).
    """

    def __init__(self, network: HostNetwork, node: NodeRuntime[HostStack]) -> None:
        """The host ``node`` runs, in ``network``.

        Raises:
            UsageError: ``node`` does not run a host stack.
            ConfigError: ``network`` does not know the node.
        """
        if not isinstance(node.core, HostStack):  # for callers without type checks
            raise UsageError(f"{node.name} is not a host")
        self.network = network
        self.node = node
        self.stack: HostStack = node.core
        self.name = node.name
        self.dc = network.dc_of(node.name)
        self._servers: dict[bytes, Server] = {}
        self._endpoints: dict[bytes, DatagramEndpoint] = {}
        self._channels: dict[int, StreamChannel] = {}
        self._datagram_flows: dict[int, DatagramEndpoint] = {}
        self._connecting: dict[int, asyncio.Future[None]] = {}
        self._resuming: dict[int, Server] = {}
        self._migration_handlers: dict[bytes, StreamHandler] = {}
        node.on_event = self._on_event

    def __repr__(self) -> str:
        return f"<Host {self.name} dc={self.dc}>"

    # -- plumbing ------------------------------------------------------------------------

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def kick(self) -> None:
        """Let the runtime send what the stack queued."""
        self.node.flush()

    def host_name(self, host_id: int) -> str | None:
        return self.network.host_name(host_id) if host_id else None

    def object_text(self, raw: bytes) -> str:
        return str(ObjectId(raw))

    def _on_event(self, stack: HostStack, event: HostEvent, now: float) -> None:
        if isinstance(event, StreamEventFor):
            channel = self._channels.get(event.socket_id)
            if channel is not None:
                was_connected = channel.connected
                channel.on_event(event.event)
                if channel.terminated:
                    self._channels.pop(event.socket_id, None)
                    self._settle_connect(event.socket_id, channel.error)
                elif channel.connected:
                    self._settle_connect(event.socket_id, None)
                    waiting = self._resuming.pop(event.socket_id, None)
                    if waiting is not None and not was_connected:
                        waiting._accept(channel)
        elif isinstance(event, FlowsMigrated):
            server = self._servers.pop(event.obj, None)
            for socket_id in event.socket_ids:
                channel = self._channels.pop(socket_id, None)
                if channel is not None:
                    channel.detach()
                if server is not None:
                    server._migrated(socket_id)
            if server is not None:
                server.serving = False
        elif isinstance(event, DrainCompleted):
            server = self._servers.pop(event.obj, None)
            if server is not None:
                server.serving = False
                server.drained.set()
        elif isinstance(event, DatagramReceived):
            endpoint = self._datagram_flows.get(event.socket_id)
            if endpoint is not None:
                endpoint._deliver(event.socket_id, event.data)
        elif isinstance(event, FlowAccepted):
            self._accepted(event)
        elif isinstance(event, ObjectNotFoundEvent):
            channel = self._channels.get(event.socket_id)
            error: ObjectNotFound | BrokenPathError
            if channel is not None and channel.connected:
                # The flow was established: its server is gone and no replica is left.
                error = BrokenPathError(f"{channel.describe()}: its server is gone and no replica is left")
            else:
                error = ObjectNotFound(f"no replica of {self.object_text(event.obj)} is registered")
            self._fail_flow(event.socket_id, error)
        elif isinstance(event, FlowUnreachable):
            self._fail_flow(event.socket_id, BrokenPathError("no route to the flow's datacenter"))
        elif isinstance(event, FlowClosed):
            endpoint = self._datagram_flows.pop(event.socket_id, None)
            if endpoint is not None:
                endpoint._forget(event.socket_id)

    def _accepted(self, event: FlowAccepted) -> None:
        flow = self.stack.flows.get(event.socket_id)
        if flow is None:
            return
        if flow.proto == Proto.STREAM:
            server = self._servers.get(event.obj)
            if server is None and event.resumed:
                server = self._adopt(event.obj)
            if server is None or not server.serving:
                self.stack.stream_abort(event.socket_id, self.now())
                return
            transport = flow.transport
            established = transport is not None and transport.state in _RUNNING
            channel = StreamChannel(self, event.socket_id, connected=not event.resumed or established)
            self._channels[event.socket_id] = channel
            if event.resumed and transport is not None:
                if established:  # migrated here with its whole state: offsets known now
                    channel.resume = (transport.send_offset, transport.receive_offset)
                else:  # taken over: the handler starts once RESUME told us the offsets
                    self._resuming[event.socket_id] = server
                    return
            server._accept(channel)
        else:
            endpoint = self._endpoints.get(event.obj)
            if endpoint is None:
                return
            self._datagram_flows[event.socket_id] = endpoint
            endpoint._accepted(event.socket_id)

    def _adopt(self, obj: bytes) -> Server | None:
        """A replica migrated here: serve it with the handler this process registered for
        the object (``Host.serve_migrations``), if any."""
        handler = self._migration_handlers.get(obj)
        if handler is None:
            return None
        oid = ObjectId(obj)
        listener = self.stack.listeners.get(obj)
        label = listener.name if listener is not None and listener.name else str(oid)
        server = Server(self, oid, label, handler, resumable=True)
        self._servers[obj] = server
        return server

    def _fail_flow(self, socket_id: int, error: Exception) -> None:
        channel = self._channels.pop(socket_id, None)
        if channel is not None:
            assert isinstance(error, ObjectNotFound | BrokenPathError)
            channel.fail(error)
            with contextlib.suppress(UsageError):
                self.stack.stream_abort(socket_id, self.now())
        endpoint = self._datagram_flows.get(socket_id)
        if endpoint is not None:
            endpoint._fail(socket_id, error)
        self._settle_connect(socket_id, error)

    def _settle_connect(self, socket_id: int, error: BaseException | None) -> None:
        future = self._connecting.pop(socket_id, None)
        if future is not None and not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    # -- binding -------------------------------------------------------------------------

    async def _bind(
        self, obj: ObjectId, name: str, weight: int, *, resumable: bool = False, grant: bytes = b""
    ) -> None:
        self.stack.bind(obj, weight, name, resumable=resumable, grant=grant)
        self.kick()
        await self.network.wait_for_object(obj, self.name)

    def _unbind(self, obj: ObjectId) -> None:
        self._servers.pop(obj.raw, None)
        self._endpoints.pop(obj.raw, None)
        if obj.raw in self.stack.listeners:
            self.stack.unbind(obj)
            self.kick()

    # -- public API ----------------------------------------------------------------------

    async def close(self) -> None:
        """Leave the network: close this host's socket and control connection (the
        controller then marks it dead and withdraws its replicas)."""
        await self.network.leave(self.name)

    async def __aenter__(self) -> Host:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start_server(
        self,
        handler: StreamHandler,
        name: str | ObjectId,
        *,
        weight: int = 1,
        resumable: bool = False,
        grant: bytes | None = None,
    ) -> Server:
        """Bind object ``name`` on this host and serve each stream with ``handler``.

        With ``resumable`` any replica can continue a stream given its offsets: when a
        replica dies, its streams are taken over by another one, whose ``handler`` starts
        with ``writer.get_extra_info("resume") == (send_offset, receive_offset)``; the
        service must be able to continue from there (content served by offset, say).
        An owned object (``ObjectId.from_owner``, or ``owner:KEY/NAME``) needs ``grant``: its
        owner's signed grant naming this host or its datacenter (``scaffold grant``); the
        controller checks it and withdraws the replica when it expires. Returns once the
        object switches know the replica.

        Raises:
            UsageError: the object is already bound on this host, ``weight`` is not in
                1..65535, or ``grant`` does not let this host serve the object (now).
        """
        obj = ObjectId.of(name)
        label = name if isinstance(name, str) else str(name)
        if grant is not None:
            self._check_grant(grant, obj)
        if obj.raw in self._servers or obj.raw in self.stack.listeners:
            raise UsageError(f"{label} is already bound on host {self.name}")
        server = Server(self, obj, label, handler, resumable=resumable)
        self._servers[obj.raw] = server
        if resumable:
            self._migration_handlers[obj.raw] = handler
        try:
            await self._bind(obj, label, weight, resumable=resumable, grant=grant or b"")
        except BaseException:
            self._servers.pop(obj.raw, None)
            raise
        return server

    def _check_grant(self, grant: bytes, obj: ObjectId) -> None:
        """What the controller will check, said here first with a clear error."""
        try:
            verify_grant(grant, obj, self.name, self.dc, time.time())
        except GrantRefused as exc:
            raise UsageError(f"the grant does not let {self.name} serve {obj.short()}: {exc}") from None

    def serve_migrations(self, handler: StreamHandler, name: str | ObjectId) -> None:
        """Run ``handler`` for flows of ``name`` that migrate to this host (without binding
        it here now: the controller's ``migrate_object`` brings the replica)."""
        self._migration_handlers[ObjectId.of(name).raw] = handler

    async def open_connection(
        self, name: str | ObjectId, *, timeout: float | None = 10.0, trace: bool = False
    ) -> tuple[StreamReader, StreamWriter]:
        """Open a reliable stream to a replica of object ``name``.

        Raises:
            ObjectNotFound: no replica is registered (an object switch answered).
            BrokenPathError: the handshake timed out or the path broke.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        obj = ObjectId.of(name)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        flow = self.stack.open_stream(obj, self.now(), trace=trace)
        self._connecting[flow.socket_id] = future
        channel = StreamChannel(self, flow.socket_id, connected=False)
        self._channels[flow.socket_id] = channel
        self.kick()
        try:
            await asyncio.wait_for(future, timeout)
        except BaseException:
            self._connecting.pop(flow.socket_id, None)
            self._channels.pop(flow.socket_id, None)
            if flow.socket_id in self.stack.flows:
                self.stack.stream_abort(flow.socket_id, self.now())
                self.kick()
            raise
        return StreamReader(channel), StreamWriter(channel)

    async def datagram_endpoint(
        self, bind: str | ObjectId | None = None, *, weight: int = 1
    ) -> DatagramEndpoint:
        """A datagram endpoint; with ``bind``, a replica of that object receiving its flows.

        Raises:
            UsageError: the object is already bound on this host.
        """
        if bind is None:
            return DatagramEndpoint(self, None, None)
        obj = ObjectId.of(bind)
        label = bind if isinstance(bind, str) else str(bind)
        endpoint = DatagramEndpoint(self, obj, label)
        await self._bind(obj, label, weight)
        self._endpoints[obj.raw] = endpoint
        return endpoint

    # used by DatagramEndpoint
    def _open_datagram_flow(self, endpoint: DatagramEndpoint, obj: ObjectId) -> int:
        flow = self.stack.open_flow(obj, self.now())
        self._datagram_flows[flow.socket_id] = endpoint
        return flow.socket_id

    def _close_datagram_flow(self, socket_id: int) -> None:
        self._datagram_flows.pop(socket_id, None)
        if socket_id in self.stack.flows:
            self.stack.close_flow(socket_id, self.now())
            self.kick()

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "dc": self.dc, "host_id": self.stack.host_id}
