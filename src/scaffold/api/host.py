"""``Host``: the application's handle on one SCAFFOLD host.

A ``Host`` is the ``NodeRuntime`` driving its ``HostStack`` plus the network it belongs to
(``HostNetwork``: an embedded one, or one joined from outside). It owns the host's event
routing: each ``HostStack`` event goes to the stream transport (``StreamTransport``),
datagram endpoint, server or pending connect it belongs to. Application calls come from
asyncio tasks on the host's loop; after each call the host is *kicked* so the runtime sends
what the stack queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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
from .server import ProtocolFactory, Server
from .streams import StreamHandler, StreamProtocol, StreamWriter
from .transport import StreamTransport

__all__ = ["Connecting", "Host", "Server", "StreamHandler", "create_connection"]

#: asyncio's default ``limit`` of a ``StreamReader``
STREAM_LIMIT = 2**16
P = TypeVar("P", bound=asyncio.BaseProtocol)

_RUNNING = frozenset(
    {StreamState.ESTABLISHED, StreamState.FIN_WAIT, StreamState.CLOSE_WAIT, StreamState.CLOSING}
)


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
        #: let the runtime send what the stack queued (once the loop's current turn is over,
        #: with whatever else the application queued in it): the runtime's own method, so a
        #: stream's every write and read pays no wrapper call
        self.kick: Callable[[], None] = node.flush_soon
        self.name = node.name
        self.dc = network.dc_of(node.name)
        self._servers: dict[bytes, Server] = {}
        self._endpoints: dict[bytes, DatagramEndpoint] = {}
        self._transports: dict[int, StreamTransport] = {}
        self._datagram_flows: dict[int, DatagramEndpoint] = {}
        #: streams being opened by ``create_connection``: the future it awaits (the protocol
        #: once made), the protocol factory and the transport, by Socket ID
        self._connecting: dict[int, tuple[asyncio.Future[Any], ProtocolFactory, StreamTransport]] = {}
        self._resuming: dict[int, Server] = {}
        self._migration_handlers: dict[bytes, StreamHandler] = {}
        node.on_event = self._on_event

    def __repr__(self) -> str:
        return f"<Host {self.name} dc={self.dc}>"

    # -- plumbing ------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this host runs on (every call of its API belongs there).

        Raises:
            UsageError: the host is not running.
        """
        loop = self.node._loop
        if loop is None:
            raise UsageError(f"host {self.name} is not running")
        return loop

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def host_name(self, host_id: int) -> str | None:
        return self.network.host_name(host_id) if host_id else None

    def object_text(self, raw: bytes) -> str:
        return str(ObjectId(raw))

    def _on_event(self, stack: HostStack, event: HostEvent, now: float) -> None:
        if isinstance(event, StreamEventFor):
            transport = self._transports.get(event.socket_id)
            if transport is not None:
                was_connected = transport.connected
                transport.on_event(event.event)
                if transport.terminated:
                    self._transports.pop(event.socket_id, None)
                    self._settle_connect(event.socket_id, transport.error)
                elif transport.connected and not was_connected:
                    # Only the event that connected it settles a connect or a resume (both
                    # wait on a transport created unconnected): not every event after it.
                    self._settle_connect(event.socket_id, None)
                    waiting = self._resuming.pop(event.socket_id, None)
                    if waiting is not None and not was_connected:
                        waiting._accept(transport)
        elif isinstance(event, FlowsMigrated):
            server = self._servers.pop(event.obj, None)
            for socket_id in event.socket_ids:
                if server is not None:
                    server._migrated(socket_id)
                transport = self._transports.pop(socket_id, None)
                if transport is not None:
                    transport.detach()
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
            transport = self._transports.get(event.socket_id)
            error: ObjectNotFound | BrokenPathError
            if transport is not None and transport.connected:
                # The flow was established: its server is gone and no replica is left.
                error = BrokenPathError(f"{transport.describe()}: its server is gone and no replica is left")
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
            stream = flow.transport
            established = stream is not None and stream.state in _RUNNING
            transport = StreamTransport(
                self,
                event.socket_id,
                connected=not event.resumed or established,
                sockname=server.sockname,
                peername=(self.host_name(flow.peer_host) or "", flow.peer_socket),
            )
            self._transports[event.socket_id] = transport
            if event.resumed and stream is not None:
                if established:  # migrated here with its whole state: offsets known now
                    transport.resume = (stream.send_offset, stream.receive_offset)
                else:  # taken over: the protocol starts once RESUME told us the offsets
                    self._resuming[event.socket_id] = server
                    return
            server._accept(transport)
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
        server = self._stream_server(oid, label, handler, resumable=True, limit=STREAM_LIMIT)
        self._servers[obj] = server
        return server

    def _fail_flow(self, socket_id: int, error: ObjectNotFound | BrokenPathError) -> None:
        transport = self._transports.pop(socket_id, None)
        if transport is not None:
            transport.fail(error)
            with contextlib.suppress(UsageError):
                self.stack.stream_abort(socket_id, self.now())
        endpoint = self._datagram_flows.get(socket_id)
        if endpoint is not None:
            endpoint._fail(socket_id, error)
        self._settle_connect(socket_id, error)

    def _settle_connect(self, socket_id: int, error: BaseException | None) -> None:
        pending = self._connecting.pop(socket_id, None)
        if pending is None or pending[0].done():
            return
        if error is not None:
            pending[0].set_exception(error)
        else:  # the protocol is made once the events are dispatched (outside the flush)
            self.node.soon(self._connected, *pending)

    def _connected(
        self, future: asyncio.Future[Any], factory: ProtocolFactory, transport: StreamTransport
    ) -> None:
        """A stream ``create_connection`` opens is connected: its protocol is made now, so
        what came with the handshake's answer (a response to data on SYN) reaches it in this
        callback, not once the awaiting task runs -- a turn of the loop later, behind whatever
        else the loop queued."""
        if future.done():  # cancelled meanwhile: the awaiting call aborts the flow
            return
        try:
            protocol = factory()
        except Exception as exc:  # the awaiting call raises it and aborts the flow
            future.set_exception(exc)
            return
        transport.start_now(protocol)
        future.set_result(protocol)

    # -- binding -------------------------------------------------------------------------

    async def _bind(
        self,
        obj: ObjectId,
        name: str,
        weight: int,
        *,
        resumable: bool = False,
        grant: bytes = b"",
        policy: str = "",
        capacity: float = 0.0,
    ) -> None:
        self.stack.bind(obj, weight, name, resumable=resumable, grant=grant, policy=policy, capacity=capacity)
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
        controller then marks it dead and withdraws its replicas). Its open streams end
        with ``BrokenPathError``."""
        for transport in list(self._transports.values()):
            # Only this end learns it: peers see the host vanish, as in a failure, so a
            # resumable flow is taken over by another replica rather than reset.
            transport.fail(BrokenPathError(f"host {self.name} left the network"))
        self._transports.clear()
        await self.network.leave(self.name)

    async def __aenter__(self) -> Host:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def create_server(
        self,
        protocol_factory: ProtocolFactory,
        name: str | ObjectId,
        *,
        weight: int = 1,
        resumable: bool = False,
        port: int = 0,
        grant: bytes | None = None,
        policy: str = "",
        capacity: float = 0.0,
    ) -> Server:
        """Bind object ``name`` on this host and serve each stream with a new protocol from
        ``protocol_factory`` (``loop.create_server``'s shape; any asyncio protocol).
        ``policy`` and ``capacity`` as for :meth:`start_server`.

        With ``resumable`` any replica can continue a stream given its offsets: when a
        replica dies, its streams are taken over by another one, whose protocol is made
        once the offsets are known (``transport.get_extra_info("resume") == (send_offset,
        receive_offset)``); the service must be able to continue from there (content served
        by offset, say). ``port`` is only reported (``sockname``). An owned object
        (``ObjectId.from_owner``, or ``owner:KEY/NAME``) needs ``grant``: its owner's signed
        grant naming this host or its datacenter (``scaffold grant``); the controller checks
        it and withdraws the replica when it expires. Returns once the object switches know
        the replica.

        Raises:
            UsageError: the object is already bound on this host, ``weight`` is not in
                1..65535, ``policy`` or ``capacity`` is not valid (see :meth:`start_server`),
                or ``grant`` does not let this host serve the object (now).
        """
        obj = ObjectId.of(name)
        label = name if isinstance(name, str) else str(name)
        server = Server(self, obj, label, protocol_factory, resumable=resumable, port=port)
        await self._serve(server, weight, grant, policy, capacity)
        return server

    async def start_server(
        self,
        handler: StreamHandler,
        name: str | ObjectId,
        *,
        weight: int = 1,
        resumable: bool = False,
        limit: int = STREAM_LIMIT,
        port: int = 0,
        grant: bytes | None = None,
        policy: str = "",
        capacity: float = 0.0,
    ) -> Server:
        """``asyncio.start_server`` on an object: bind ``name`` and run
        ``handler(reader, writer)`` in a task for each stream (see :meth:`create_server`,
        also for ``grant``; a resumable server's handler for a taken-over flow starts with
        ``writer.get_extra_info("resume")`` set). ``policy`` sets how the network picks
        among the object's replicas: ``"nearest"`` (the default for a new object) or
        ``"weighted"`` (docs/protocol.md §3.5); "" leaves it as it is. ``capacity``: the new
        flows per second this replica takes before its datacenter spills new flows over to
        the next nearest (0: no limit).

        Raises:
            UsageError: the object is already bound on this host, ``weight`` is not in
                1..65535, ``policy`` is not one of those, ``capacity`` is negative, or
                ``grant`` does not let this host serve the object (now).
        """
        obj = ObjectId.of(name)
        label = name if isinstance(name, str) else str(name)
        server = self._stream_server(obj, label, handler, resumable=resumable, limit=limit, port=port)
        await self._serve(server, weight, grant, policy, capacity)
        if resumable:
            self._migration_handlers[obj.raw] = handler
        return server

    def _stream_server(
        self, obj: ObjectId, label: str, handler: StreamHandler, *, resumable: bool, limit: int, port: int = 0
    ) -> Server:
        def factory() -> StreamProtocol:
            return StreamProtocol(limit, spawn)

        server = Server(self, obj, label, factory, resumable=resumable, port=port, handler=handler)
        spawn = server._spawn  # one bound method for every stream's protocol, not one each
        return server

    async def _serve(
        self, server: Server, weight: int, grant: bytes | None, policy: str = "", capacity: float = 0.0
    ) -> None:
        raw = server.obj.raw
        if grant is not None:
            self._check_grant(grant, server.obj)
        if raw in self._servers or raw in self.stack.listeners:
            raise UsageError(f"{server.name} is already bound on host {self.name}")
        self._servers[raw] = server
        try:
            await self._bind(
                server.obj,
                server.name,
                weight,
                resumable=server.resumable,
                grant=grant or b"",
                policy=policy,
                capacity=capacity,
            )
        except BaseException:
            self._servers.pop(raw, None)
            raise

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

    async def create_connection(
        self,
        protocol_factory: Callable[[], P],
        name: str | ObjectId,
        *,
        timeout: float | None = 10.0,
        trace: bool = False,
        peername: tuple[str, int] | None = None,
        data: bytes = b"",
    ) -> tuple[StreamTransport, P]:
        """Open a reliable stream to a replica of object ``name`` and run a protocol from
        ``protocol_factory`` on it (``loop.create_connection``'s shape): its
        ``connection_made`` has run when this returns -- in the runtime's callback that
        completed the handshake, so what came with the answer reaches the protocol at once.
        Cancelled after that, the transport is aborted and the protocol hears
        ``connection_lost``, as with asyncio. ``peername`` is what the transport reports as
        its peer (default ``(name, 0)``).

        ``data`` is written first; up to one segment of it rides in the SYN (data on SYN,
        docs/protocol.md §4.2.7), so the replica's handler reads it a round trip earlier. A
        SYN may reach a replica twice (a retransmission re-resolved after a replica died, or a
        replay): put there only what the service may safely see twice, as with TCP Fast Open.

        Raises:
            ObjectNotFound: no replica is registered (an object switch answered).
            BrokenPathError: the handshake timed out or the path broke.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        return await self.start_connection(
            protocol_factory, name, trace=trace, peername=peername, data=data
        ).result(timeout)

    def start_connection(
        self,
        protocol_factory: Callable[[], P],
        name: str | ObjectId,
        *,
        trace: bool = False,
        peername: tuple[str, int] | None = None,
        data: bytes = b"",
    ) -> Connecting[P]:
        """:meth:`create_connection`'s first half, from a plain callback: the SYN (with
        ``data``) leaves before this returns; ``await connecting.result(timeout)`` for the
        rest. For a caller that has no task yet -- the ingress opens a client's stream in the
        callback that accepted it, not a turn of the loop later in the task it starts for it.
        A ``Connecting`` never awaited must be ``cancel()``-ed.
        """
        obj = ObjectId.of(name)
        future: asyncio.Future[P] = self.loop.create_future()
        flow = self.stack.open_stream(obj, self.now(), trace=trace, data=bytes(data))
        socket_id = flow.socket_id
        label = name if isinstance(name, str) else str(name)
        transport = StreamTransport(
            self, socket_id, connected=False, sockname=(self.name, socket_id), peername=peername or (label, 0)
        )
        self._connecting[socket_id] = (future, protocol_factory, transport)
        self._transports[socket_id] = transport
        # The SYN leaves now, not after this turn of the loop: a connect is latency, not
        # bulk (each turn of a busy loop runs every other node's work too).
        self.node.flush()
        return Connecting(self, socket_id, future, transport)

    async def open_connection(
        self,
        name: str | ObjectId,
        *,
        timeout: float | None = 10.0,
        trace: bool = False,
        limit: int = STREAM_LIMIT,
        data: bytes = b"",
        peername: tuple[str, int] | None = None,
    ) -> tuple[asyncio.StreamReader, StreamWriter]:
        """``asyncio.open_connection`` to a replica of object ``name``: asyncio's
        ``StreamReader`` and a ``StreamWriter`` over a :class:`StreamTransport`; ``data`` and
        ``peername`` as in :meth:`create_connection` (data on SYN).

        Raises:
            ObjectNotFound: no replica is registered (an object switch answered).
            BrokenPathError: the handshake timed out or the path broke.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        return await self.start_open_connection(
            name, trace=trace, limit=limit, data=data, peername=peername
        ).streams(timeout)

    def start_open_connection(
        self,
        name: str | ObjectId,
        *,
        trace: bool = False,
        limit: int = STREAM_LIMIT,
        data: bytes = b"",
        peername: tuple[str, int] | None = None,
    ) -> Connecting[StreamProtocol]:
        """:meth:`open_connection`'s first half (as :meth:`start_connection`): the SYN has
        left when this returns; ``await connecting.streams(timeout)`` for the reader and
        writer."""
        protocol = StreamProtocol(limit)
        return self.start_connection(lambda: protocol, name, trace=trace, data=data, peername=peername)

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


class Connecting(Generic[P]):
    """A stream :meth:`Host.start_connection` is opening: its SYN has left."""

    __slots__ = ("_future", "_host", "_socket_id", "transport")

    def __init__(
        self, host: Host, socket_id: int, future: asyncio.Future[P], transport: StreamTransport
    ) -> None:
        self._host = host
        self._socket_id = socket_id
        self._future = future
        self.transport = transport

    async def result(self, timeout: float | None = 10.0) -> tuple[StreamTransport, P]:
        """The transport and its protocol once the handshake completes (``connection_made``
        has run). Cancelled or timed out, the stream is aborted, as :meth:`cancel` does.

        Raises:
            ObjectNotFound: no replica is registered (an object switch answered).
            BrokenPathError: the handshake timed out or the path broke.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        future = self._future
        try:
            # Awaited directly, not through wait_for (whose inner future wakes this task a
            # turn later than the handshake completed).
            async with asyncio.timeout(timeout):
                protocol = await future
        except TimeoutError:
            if self._made():
                # Made in the very turn the timeout fired: a working stream is not thrown away
                # (a caller that retries would make its protocol a second time).
                return self.transport, future.result()
            self.cancel()
            raise
        except BaseException:
            self.cancel()
            raise
        return self.transport, protocol

    async def streams(
        self: Connecting[StreamProtocol], timeout: float | None = 10.0
    ) -> tuple[asyncio.StreamReader, StreamWriter]:
        """:meth:`result` as asyncio's reader and writer (:meth:`Host.start_open_connection`).

        Raises:
            ObjectNotFound, BrokenPathError, TimeoutError: as :meth:`result`.
        """
        transport, protocol = await self.result(timeout)
        writer = protocol.writer
        if writer is None:  # lost already (reset right after its handshake): the protocol let go
            writer = StreamWriter(transport, protocol, protocol.reader, asyncio.get_running_loop())
        return protocol.reader, writer

    def _made(self) -> bool:
        """The protocol was made (the handshake completed and ``connection_made`` ran)."""
        future = self._future
        return future.done() and not future.cancelled() and future.exception() is None

    def cancel(self) -> None:
        """Give the stream up: aborted if it is still opening; if its protocol was made
        already, its transport is aborted and the protocol hears ``connection_lost``."""
        host, socket_id, future = self._host, self._socket_id, self._future
        host._connecting.pop(socket_id, None)
        host._transports.pop(socket_id, None)
        if self._made():
            self.transport.abort()  # connection_lost follows
            return
        future.cancel()  # not made yet: Host._connected will not make it
        if socket_id in host.stack.flows:
            host.stack.stream_abort(socket_id, host.now())
            host.kick()


async def create_connection(
    protocol_factory: Callable[[], P],
    name: str | ObjectId,
    *,
    host: Host,
    timeout: float | None = 10.0,
    trace: bool = False,
) -> tuple[StreamTransport, P]:
    """``loop.create_connection`` to object ``name`` through ``host``
    (:meth:`Host.create_connection`).

    Raises:
        ObjectNotFound: no replica is registered (an object switch answered).
        BrokenPathError: the handshake timed out or the path broke.
        TimeoutError: no answer within ``timeout`` seconds.
    """
    return await host.create_connection(protocol_factory, name, timeout=timeout, trace=trace)
