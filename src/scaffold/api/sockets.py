"""A blocking API that mimics the ``socket`` module, for plain threads.

``scaffold.socket(scaffold.SOCK_STREAM, host=h)`` gives an object with ``connect``,
``sendall``, ``send``, ``recv``, ``recv_into``, ``makefile``, ``shutdown``, ``close``,
``bind``/``listen``/``accept``, ``settimeout``, ``setsockopt``, and for ``SOCK_DGRAM``
``sendto``/``recvfrom``; addresses are object names. It is what ``socket.create_connection``
returns for ``NAME.scaffold`` under ``scaffold.names``, so ``http.client``, ``urllib`` and
``smtplib`` use it as they use a kernel socket: ``makefile`` keeps it open until the file is
closed too, as ``socket.socket`` does, and failures are the ``OSError`` kinds they expect
(``ObjectNotFound`` is a ``ConnectionRefusedError``, ``BrokenPathError`` a
``ConnectionResetError``, an expired timeout a ``TimeoutError``).

Every call runs the asyncio API on the host's event loop and waits for it, so it must be
called from another thread than that loop's (``Testbed.threaded`` runs a network on a
background loop).
"""

from __future__ import annotations

import asyncio
import io
import socket as _socket
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import UsageError
from ..runtime.aio import call_from_thread
from .datagram import DatagramEndpoint, DatagramPeer
from .host import STREAM_LIMIT, Host
from .server import Server
from .streams import StreamProtocol

__all__ = ["SHUT_RD", "SHUT_RDWR", "SHUT_WR", "SOCK_DGRAM", "SOCK_STREAM", "socket"]

SOCK_STREAM = _socket.SOCK_STREAM
SOCK_DGRAM = _socket.SOCK_DGRAM
SHUT_RD = _socket.SHUT_RD
SHUT_WR = _socket.SHUT_WR
SHUT_RDWR = _socket.SHUT_RDWR
T = TypeVar("T")
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class socket:
    """A blocking SCAFFOLD socket bound to ``host``; addresses are object names."""

    family = _socket.AF_INET

    def __init__(self, type: int = SOCK_STREAM, *, host: Host) -> None:
        if type not in (SOCK_STREAM, SOCK_DGRAM):
            raise UsageError(f"socket type must be SOCK_STREAM or SOCK_DGRAM, not {type!r}")
        self.type = type
        self.proto = _socket.IPPROTO_TCP if type == SOCK_STREAM else _socket.IPPROTO_UDP
        self.host = host
        self._timeout: float | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._endpoint: DatagramEndpoint | None = None
        self._bound: str | None = None
        self._accepted: asyncio.Queue[Stream] | None = None
        self._server: Server | None = None
        self._options: dict[tuple[int, int], int | bytes] = {}
        self._closed = False  # close() was called
        self._released = False  # ... and no file from makefile() holds it open any more
        self._io_refs = 0
        self._read_shut = False

    # -- plumbing ------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        loop = self.host.node._loop
        if loop is None:
            coro.close()
            raise UsageError(f"host {self.host.name} is not running")
        return call_from_thread(loop, coro, self._timeout if timeout is None else timeout)

    def _check_open(self) -> None:
        if self._released:
            raise UsageError("operation on a closed socket")

    def _stream(self) -> Stream:
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

    def setsockopt(
        self, level: int, option: int, value: int | bytes | None, optlen: int | None = None
    ) -> None:
        """Accepted and recorded for ``getsockopt``; no option changes a SCAFFOLD stream
        (it never delays small writes, and keeps itself alive)."""
        self._options[(level, option)] = value if value is not None else bytes(optlen or 0)

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> int | bytes:
        value = self._options.get((level, option), 0)
        if buflen is None:
            return value if isinstance(value, int) else int.from_bytes(value[:4] or b"\0", "little")
        return value if isinstance(value, bytes) else value.to_bytes(4, "little")[:buflen]

    def fileno(self) -> int:
        """-1: a SCAFFOLD socket has no file descriptor."""
        return -1

    # -- streams -------------------------------------------------------------------------

    def connect(self, name: str) -> None:
        """Open a stream to a replica of object ``name``.

        Raises:
            ObjectNotFound: nobody serves ``name``.
            BrokenPathError: the handshake failed.
            TimeoutError: the socket's timeout expired.
        """
        self._connect(name, None)

    def _connect(self, name: str, peername: tuple[str, int] | None) -> None:
        self._check_open()
        if self.type != SOCK_STREAM:
            raise UsageError("connect() is for SOCK_STREAM sockets; use sendto()")
        if self._reader is not None:
            raise UsageError("the socket is already connected")

        async def connect() -> Stream:
            _, protocol = await self.host.create_connection(
                lambda: StreamProtocol(STREAM_LIMIT), name, timeout=None, peername=peername
            )
            assert protocol.writer is not None
            return protocol.reader, protocol.writer

        self._reader, self._writer = self._call(connect())

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        """Send every byte (blocks while the peer's window is full).

        Raises:
            BrokenPathError: the peer reset the stream or the path broke.
            TimeoutError: the socket's timeout expired.
        """
        _, writer = self._stream()
        chunk = bytes(data)

        async def send() -> None:
            writer.write(chunk)
            await writer.drain()

        self._call(send())

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        self.sendall(data)
        return len(data)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes; b"" at end of stream.

        Raises:
            BrokenPathError: the peer reset the stream or the path broke.
            TimeoutError: the socket's timeout expired.
        """
        reader, _ = self._stream()
        if self._read_shut:
            return b""
        return self._call(reader.read(bufsize))

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, flags: int = 0) -> int:
        """``recv`` into ``buffer``; the number of bytes (0 at end of stream).

        Raises:
            BrokenPathError: the peer reset the stream or the path broke.
            TimeoutError: the socket's timeout expired.
        """
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view))
        view[: len(data)] = data
        return len(data)

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """A file over the socket, exactly as ``socket.socket.makefile`` makes it (modes
        ``r``, ``w``, ``b``); the socket stays open until the file is closed as well.

        Raises:
            ValueError: an unsupported mode, or an unbuffered text file.
        """
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = _socket.SocketIO(self, rawmode)  # type: ignore[arg-type]  # duck-typed, as a socket
        self._io_refs += 1
        if buffering is None or buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: io.BufferedIOBase
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if "b" in mode:
            return buffer
        text = io.TextIOWrapper(buffer, io.text_encoding(encoding), errors, newline)  # type: ignore[type-var]
        text.mode = mode  # type: ignore[misc]  # as socket.makefile does
        return text

    def _decref_socketios(self) -> None:
        """A file from ``makefile`` closed (``socket.SocketIO`` calls this)."""
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._release()

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
        bound = self._bound

        async def start() -> None:
            queue: asyncio.Queue[Stream] = asyncio.Queue(backlog)
            self._accepted = queue

            async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await queue.put((reader, writer))
                await writer.wait_closed()

            self._server = await self.host.start_server(handler, bound)

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

    def getpeername(self) -> Any:
        """A stream's peer: ``(name, port)`` as dialled, or a server's ``(client host,
        client Socket ID)``; None when not connected."""
        return None if self._writer is None else self._writer.get_extra_info("peername")

    def getsockname(self) -> Any:
        """A connected stream's ``(host, Socket ID)``; otherwise ``(host, bound name)``."""
        if self._writer is not None:
            return self._writer.get_extra_info("sockname")
        return self.host.name, self._bound

    def close(self) -> None:
        """Close the stream, the server or the datagram endpoint, once no file from
        ``makefile`` uses the socket any more. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._io_refs <= 0:
            self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
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
