"""A blocking API that mimics the ``socket`` module, for plain threads.

``scaffold.socket(scaffold.SOCK_STREAM, host=h)`` gives an object with ``connect``,
``sendall``, ``recv``, ``shutdown``, ``close``, ``bind``/``listen``/``accept``, ``settimeout``,
and for ``SOCK_DGRAM`` ``sendto``/``recvfrom``; addresses are object names. Every call runs
the asyncio API on the host's event loop and waits for it, so it must be called from another
thread than that loop's (``Testbed.threaded`` runs a network on a background loop).
"""

from __future__ import annotations

import asyncio
import socket as _socket
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import UsageError
from ..runtime.aio import call_from_thread
from .datagram import DatagramEndpoint, DatagramPeer
from .host import Host
from .streams import StreamReader, StreamWriter

__all__ = ["SHUT_RD", "SHUT_RDWR", "SHUT_WR", "SOCK_DGRAM", "SOCK_STREAM", "socket"]

SOCK_STREAM = _socket.SOCK_STREAM
SOCK_DGRAM = _socket.SOCK_DGRAM
SHUT_RD = _socket.SHUT_RD
SHUT_WR = _socket.SHUT_WR
SHUT_RDWR = _socket.SHUT_RDWR
T = TypeVar("T")


class socket:
    """A blocking SCAFFOLD socket bound to ``host``; addresses are object names."""

    def __init__(self, type: int = SOCK_STREAM, *, host: Host) -> None:
        if type not in (SOCK_STREAM, SOCK_DGRAM):
            raise UsageError(f"socket type must be SOCK_STREAM or SOCK_DGRAM, not {type!r}")
        self.type = type
        self.host = host
        self._timeout: float | None = None
        self._reader: StreamReader | None = None
        self._writer: StreamWriter | None = None
        self._endpoint: DatagramEndpoint | None = None
        self._bound: str | None = None
        self._accepted: asyncio.Queue[tuple[StreamReader, StreamWriter]] | None = None
        self._server: Any = None
        self._closed = False
        self._read_shut = False

    # -- plumbing ------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        loop = self.host.node._loop
        if loop is None:
            coro.close()
            raise UsageError(f"host {self.host.name} is not running")
        return call_from_thread(loop, coro, self._timeout if timeout is None else timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("operation on a closed socket")

    def _stream(self) -> tuple[StreamReader, StreamWriter]:
        self._check_open()
        if self._reader is None or self._writer is None:
            raise UsageError("the socket is not connected")
        return self._reader, self._writer

    # -- options -------------------------------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        """Seconds a blocking call may wait (None: forever). Expiry raises ``TimeoutError``."""
        if timeout is not None and timeout < 0:
            raise UsageError("timeout must be >= 0 or None")
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    # -- streams -------------------------------------------------------------------------

    def connect(self, name: str) -> None:
        """Open a stream to a replica of object ``name``.

        Raises:
            ObjectNotFound: nobody serves ``name``.
            BrokenPathError: the handshake failed.
            TimeoutError: the socket's timeout expired.
        """
        self._check_open()
        if self.type != SOCK_STREAM:
            raise UsageError("connect() is for SOCK_STREAM sockets; use sendto()")
        if self._reader is not None:
            raise UsageError("the socket is already connected")
        self._reader, self._writer = self._call(self.host.open_connection(name, timeout=None))

    def sendall(self, data: bytes) -> None:
        """Send every byte (blocks while the peer's window is full)."""
        _, writer = self._stream()

        async def send() -> None:
            writer.write(data)
            await writer.drain()

        self._call(send())

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes; b"" at end of stream.

        Raises:
            BrokenPathError: the peer reset the stream or the path broke.
            TimeoutError: the socket's timeout expired.
        """
        reader, _ = self._stream()
        if self._read_shut:
            return b""
        return self._call(reader.read(bufsize))

    def shutdown(self, how: int = SHUT_RDWR) -> None:
        """Stop sending (``SHUT_WR``: the peer reads EOF), receiving, or both."""
        _, writer = self._stream()
        if how in (SHUT_WR, SHUT_RDWR):

            async def eof() -> None:
                writer.write_eof()

            self._call(eof())
        if how in (SHUT_RD, SHUT_RDWR):
            self._read_shut = True

    def bind(self, name: str) -> None:
        """Bind on object ``name``; datagram sockets start receiving, stream ones ``listen()``."""
        self._check_open()
        if self._bound is not None:
            raise UsageError(f"already bound on {self._bound!r}")
        self._bound = name
        if self.type == SOCK_DGRAM:
            self._endpoint = self._call(self.host.datagram_endpoint(bind=name), timeout=30)

    def listen(self, backlog: int = 128) -> None:
        """Register this host as a replica of the bound object and accept streams."""
        self._check_open()
        if self.type != SOCK_STREAM or self._bound is None:
            raise UsageError("listen() needs a SOCK_STREAM socket bound with bind()")

        async def start() -> None:
            queue: asyncio.Queue[tuple[StreamReader, StreamWriter]] = asyncio.Queue(backlog)
            self._accepted = queue

            async def handler(reader: StreamReader, writer: StreamWriter) -> None:
                await queue.put((reader, writer))
                await writer.wait_closed()

            assert self._bound is not None
            self._server = await self.host.start_server(handler, self._bound)

        self._call(start(), timeout=30)

    def accept(self) -> tuple[socket, tuple[str, str]]:
        """The next stream: a connected socket and (peer host, Flow ID as hex)."""
        self._check_open()
        if self._accepted is None:
            raise UsageError("accept() before listen()")
        reader, writer = self._call(self._accepted.get())
        conn = socket(SOCK_STREAM, host=self.host)
        conn._reader, conn._writer = reader, writer
        conn._timeout = self._timeout
        return conn, (str(writer.get_extra_info("peer_host")), str(writer.get_extra_info("flow")))

    # -- datagrams -----------------------------------------------------------------------

    def sendto(self, data: bytes, address: str | DatagramPeer) -> int:
        """Send one datagram to an object name, or back to the peer ``recvfrom`` gave."""
        self._check_open()
        if self.type != SOCK_DGRAM:
            raise UsageError("sendto() is for SOCK_DGRAM sockets")
        if self._endpoint is None:
            self._endpoint = self._call(self.host.datagram_endpoint())
        self._call(self._endpoint.sendto(data, address))
        return len(data)

    def recvfrom(self, bufsize: int) -> tuple[bytes, DatagramPeer]:
        """The next datagram (cut to ``bufsize``) and its peer."""
        self._check_open()
        if self.type != SOCK_DGRAM or self._endpoint is None:
            raise UsageError("recvfrom() needs a SOCK_DGRAM socket that was bound or has sent")
        data, peer = self._call(self._endpoint.recvfrom())
        return data[:bufsize], peer

    # -- lifetime ------------------------------------------------------------------------

    def getpeername(self) -> str | None:
        return None if self._writer is None else self._writer.get_extra_info("peer_host")

    def getsockname(self) -> tuple[str, str | None]:
        return self.host.name, self._bound

    def close(self) -> None:
        """Close the stream, the server or the datagram endpoint. Idempotent."""
        if self._closed:
            return
        self._closed = True
        writer, endpoint, server = self._writer, self._endpoint, self._server

        async def close() -> None:
            if writer is not None:
                writer.close()
            if endpoint is not None:
                endpoint.close()
            if server is not None:
                server.close()

        loop = self.host.node._loop
        if loop is not None and not loop.is_closed():
            self._call(close(), timeout=10)

    def __enter__(self) -> socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "SOCK_STREAM" if self.type == SOCK_STREAM else "SOCK_DGRAM"
        return f"<scaffold.socket {kind} host={self.host.name} bound={self._bound!r}>"
