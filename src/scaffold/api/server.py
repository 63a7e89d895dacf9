"""``Server``: a stream service bound on an object name, as an ``asyncio.AbstractServer``.

``Host.create_server(protocol_factory, name)`` returns one; ``Host.start_server(handler,
name)`` too, with a factory of ``StreamProtocol`` that runs the handler in a task per
stream (as ``asyncio.start_server`` does) and counts how the handlers ended. ``close()``
withdraws the replica: object switches stop choosing it for new flows, and established
flows go on, as asyncio's ``Server.close`` leaves accepted connections open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..ids import ObjectId
from .streams import StreamHandler, StreamWriter
from .transport import FlowSocket, StreamTransport

if TYPE_CHECKING:
    from .host import Host

__all__ = ["ProtocolFactory", "Server"]

log = logging.getLogger("scaffold.server")

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class Server(asyncio.AbstractServer):
    """A replica of object ``name`` on ``host``, serving each stream with a new protocol."""

    def __init__(
        self,
        host: Host,
        obj: ObjectId,
        name: str,
        protocol_factory: ProtocolFactory,
        *,
        resumable: bool = False,
        port: int = 0,
        handler: StreamHandler | None = None,
    ) -> None:
        self.host = host
        self.obj = obj
        self.name = name
        self.protocol_factory = protocol_factory
        #: ``start_server``'s stream handler (None for ``create_server``)
        self.handler = handler
        self.resumable = resumable
        #: the port it was served on through ``scaffold.names``, for ``sockname``
        self.port = port
        #: accepted connections not lost yet, by Socket ID
        self.connections: dict[int, StreamTransport] = {}
        #: running handler tasks (``start_server``), by Socket ID
        self.tasks: dict[int, asyncio.Future[None]] = {}
        self.serving = True
        #: set once a drain finished: the replica left and its last flow ended
        self.drained = asyncio.Event()
        self.handled = 0
        self.failed = 0
        #: the exceptions handlers or the protocol factory raised, newest last
        self.errors: list[str] = []
        self._changed = asyncio.Event()
        self._forever: asyncio.Future[None] | None = None
        #: every handler task's name: one string, not one per stream
        self._task_name = f"serve:{name}"
        #: every accepted stream's ``sockname``: one tuple, not one per stream
        self.sockname = (name, port)

    def __repr__(self) -> str:
        return (
            f"<scaffold.Server {self.name!r} on {self.host.name} {'serving' if self.serving else 'closed'}>"
        )

    # -- from the host -----------------------------------------------------------------------

    def _accept(self, transport: StreamTransport) -> None:
        """A stream to serve; its protocol is made outside the host's event dispatch (in the
        flush for the SYN, before its SYN-ACK leaves: ``NodeRuntime.soon``)."""
        self.host.node.soon(self._start, transport)

    def _start(self, transport: StreamTransport) -> None:
        if transport.is_closing() or transport.terminated:
            return
        try:
            protocol = self.protocol_factory()
        except Exception as exc:
            self._failed(exc, transport)
            transport.abort()
            return
        self.connections[transport.socket_id] = transport
        transport.on_lost = self._lost
        transport.start(protocol)

    def _lost(self, transport: StreamTransport) -> None:
        self.connections.pop(transport.socket_id, None)
        self._changed.set()

    def _migrated(self, socket_id: int) -> None:
        task = self.tasks.pop(socket_id, None)
        if task is not None:
            task.cancel()

    def _failed(self, exc: BaseException, transport: StreamTransport) -> None:
        self.failed += 1
        self.errors.append(f"{type(exc).__name__}: {exc}")
        log.error("%r failed on %s", self, transport.describe(), exc_info=exc)

    # -- start_server's handlers -------------------------------------------------------------

    def _spawn(self, reader: asyncio.StreamReader, writer: StreamWriter) -> None:
        """Run the handler on a new stream (``StreamProtocol.on_connect``).

        The handler's coroutine is the task itself, and its end is seen by one small
        callback: a wrapping coroutine and a closure would be kept by every stream held open
        (about half a kilobyte each, with tens of thousands of idle streams).
        """
        assert self.handler is not None
        transport = writer.transport
        assert isinstance(transport, StreamTransport)
        try:
            running = self.handler(reader, writer)
            task: asyncio.Future[None] = (
                self.host.loop.create_task(running, name=self._task_name)
                if asyncio.iscoroutine(running)
                else asyncio.ensure_future(running, loop=self.host.loop)
            )
        except Exception as exc:  # not a coroutine function, and it raised or returned no awaitable
            self._failed(exc, transport)
            transport.close()
            return
        self.tasks[transport.socket_id] = task
        task.add_done_callback(_HandlerEnded(self, transport))

    def _ended(self, socket_id: int, task: asyncio.Future[None]) -> None:
        if self.tasks.get(socket_id) is task:
            del self.tasks[socket_id]
        self._changed.set()

    # -- asyncio.AbstractServer --------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting: withdraw the replica. Established flows go on."""
        if self.serving:
            self.serving = False
            self.host._unbind(self.obj)
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()
        self._changed.set()

    def close_clients(self) -> None:
        """Close every accepted connection (FIN)."""
        for transport in list(self.connections.values()):
            transport.close()

    def abort_clients(self) -> None:
        """Reset every accepted connection (RST)."""
        for transport in list(self.connections.values()):
            transport.abort()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.host.loop

    def is_serving(self) -> bool:
        return self.serving

    async def start_serving(self) -> None:
        """Nothing to do: a server serves from the moment ``create_server`` returns."""

    async def serve_forever(self) -> None:
        """Wait until cancelled (then close and wait until closed) or closed.

        Raises:
            RuntimeError: the server is closed, or already waited on by another caller.
            asyncio.CancelledError: once cancelled or closed, as asyncio's.
        """
        if self._forever is not None:
            raise RuntimeError(f"{self!r} is already being awaited on serve_forever()")
        if not self.serving:
            raise RuntimeError(f"{self!r} is closed")
        self._forever = self.host.loop.create_future()
        try:
            await self._forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._forever = None

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every connection (and handler) ended."""
        while self.serving or self.connections or self.tasks:
            self._changed.clear()
            await self._changed.wait()

    @property
    def sockets(self) -> tuple[FlowSocket, ...]:
        """One stand-in listening socket: ``getsockname()`` is ``(name, port)``."""
        return (FlowSocket((self.name, self.port), None),)


class _HandlerEnded:
    """A ``start_server`` handler's task ended: count how, close its stream (unless the
    stream migrated away with its state), forget the task."""

    __slots__ = ("server", "transport")

    def __init__(self, server: Server, transport: StreamTransport) -> None:
        self.server = server
        self.transport = transport

    def __call__(self, task: asyncio.Future[None]) -> None:
        server, transport = self.server, self.transport
        if not task.cancelled():
            exc = task.exception()
            if exc is None:
                server.handled += 1
            elif isinstance(exc, ConnectionResetError):  # BrokenPathError, or "Connection lost"
                server.failed += 1  # the client went away; nothing to report to anyone
            elif isinstance(exc, Exception):
                server._failed(exc, transport)
        if not transport.migrated:
            transport.close()  # what the handler's writer.close() does
        server._ended(transport.socket_id, task)
