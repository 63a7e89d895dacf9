"""asyncio streams over SCAFFOLD stream flows: asyncio's own classes on a ``StreamTransport``.

``StreamReader`` *is* ``asyncio.StreamReader``; ``StreamWriter`` is ``asyncio.StreamWriter``
with one method changed: ``start_tls`` is refused with a ``UsageError`` that says why
(a SCAFFOLD stream is not a TLS-capable kernel socket). ``StreamProtocol`` is asyncio's
``StreamReaderProtocol`` that makes such a writer when the connection is made.
``Host.open_connection`` and ``Host.start_server`` are ``asyncio.open_connection`` and
``asyncio.start_server`` written over them, so ``readuntil``, ``readexactly``, ``at_eof``,
``drain``, ``wait_closed``... behave exactly as asyncio's (docs/architecture.md §7).
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import UsageError

__all__ = ["NO_TLS", "StreamHandler", "StreamProtocol", "StreamReader", "StreamWriter", "Tap"]

#: why ``start_tls`` (and ``ssl=`` on a name) is refused
NO_TLS = "SCAFFOLD streams do not carry TLS: start_tls() and ssl= need a kernel TCP socket"

StreamReader = asyncio.StreamReader


#: one finished future per event loop, which every writer on it shares (``StreamWriter``)
_FINISHED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[None]] = (
    weakref.WeakKeyDictionary()
)


class StreamWriter(asyncio.StreamWriter):
    """``asyncio.StreamWriter`` on a SCAFFOLD stream."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: asyncio.BaseProtocol,
        reader: asyncio.StreamReader | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        # asyncio (3.11 to 3.13) gives every writer a finished future of its own, which it
        # never awaits: about 150 bytes kept by each of tens of thousands of idle streams.
        # One per loop does whatever a later asyncio might do with it.
        finished = _FINISHED.get(loop)
        if finished is None:
            finished = _FINISHED[loop] = loop.create_future()
            finished.set_result(None)
        self._complete_fut = finished

    async def start_tls(
        self,
        sslcontext: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> None:
        """Refused.

        Raises:
            UsageError: always; SCAFFOLD streams carry no TLS.
        """
        raise UsageError(NO_TLS)


#: what ``start_server`` runs for each stream (``asyncio.start_server``'s callback)
StreamHandler = Callable[[asyncio.StreamReader, StreamWriter], Awaitable[None]]


#: sees a stream's bytes before its reader (``StreamProtocol.tap``): a chunk, or None once the
#: stream ended or broke (the reader has the EOF or the error by then); True: it took the chunk
Tap = Callable[[bytes | None], bool]


class StreamProtocol(asyncio.StreamReaderProtocol):
    """asyncio's ``StreamReaderProtocol`` with a :class:`StreamWriter`: ``reader`` and
    ``writer`` are set once the connection is made, then ``on_connect(reader, writer)``
    runs (a server's handler starts there).

    ``tap``, if set, sees each chunk before the reader and keeps the ones it takes from it,
    and is told when the stream ends or breaks: a consumer that parses in the callback that
    has the bytes (the HTTP ingress's keep-alive exchanges) instead of in a task woken for
    each chunk. Unset, the reader gets everything, as asyncio's does.
    """

    tap: Tap | None = None

    def __init__(
        self, limit: int, on_connect: Callable[[asyncio.StreamReader, StreamWriter], None] | None = None
    ) -> None:
        self.reader = asyncio.StreamReader(limit=limit)
        super().__init__(self.reader)
        # asyncio keeps drain() waiters in a deque (about 700 bytes even empty); a list does
        # the same here (append, remove, iterate) for a few dozen bytes, which counts with
        # tens of thousands of idle streams.
        self._drain_waiters: Any = []
        self.writer: StreamWriter | None = None
        self._on_connect = on_connect

    # asyncio makes each protocol the future ``wait_closed`` awaits at once, about 150 bytes
    # kept by every idle stream end; here it is made when first asked for (``wait_closed``,
    # or the connection lost), and the one asyncio's ``__init__`` assigns is dropped.
    _closed_future: asyncio.Future[None] | None = None

    @property
    def _closed(self) -> asyncio.Future[None]:
        if self._closed_future is None:
            loop: asyncio.AbstractEventLoop = self._loop  # type: ignore[attr-defined]  # asyncio's own
            self._closed_future = loop.create_future()
        return self._closed_future

    @_closed.setter
    def _closed(self, _made_by_asyncio: asyncio.Future[None]) -> None:
        pass

    def __del__(self) -> None:
        # asyncio's reads the future (marks its exception retrieved): not one to make now.
        closed = self._closed_future
        if closed is not None and closed.done() and not closed.cancelled():
            closed.exception()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.Transport)
        self.writer = StreamWriter(transport, self, self.reader, asyncio.get_running_loop())
        if self._on_connect is not None:
            self._on_connect(self.reader, self.writer)

    def data_received(self, data: bytes) -> None:
        tap = self.tap
        if tap is None or not tap(data):
            super().data_received(data)

    def eof_received(self) -> bool | None:
        keep_open = super().eof_received()
        # Told once: no byte follows an EOF, and connection_lost finds the tap gone.
        tap, self.tap = self.tap, None
        if tap is not None:
            tap(None)
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        tap, self.tap = self.tap, None
        if tap is not None:
            tap(None)
        # The writer refers back to this protocol: without this the pair would be a reference
        # cycle, freed only by a full collection -- never, among frozen objects
        # (runtime/aio/collector.py). The application still holds its own reader and writer.
        self.writer = None
