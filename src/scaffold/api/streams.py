"""asyncio-style streams over SCAFFOLD stream flows: ``StreamReader`` / ``StreamWriter``.

They mirror ``asyncio.StreamReader`` and ``asyncio.StreamWriter``. Received bytes stay in the
transport's receive buffer until the application reads them, so a slow reader closes the
peer's window (flow control end to end); ``drain()`` waits until what was written fits in the
transport's send buffer, which bounds the writer's memory.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors import BrokenPathError, ObjectNotFound, ScaffoldError, UsageError
from ..transport import (
    Connected,
    ConnectionTerminated,
    EndOfStream,
    Reset,
    Resumed,
    StreamConnection,
    StreamEvent,
    TerminationReason,
)

if TYPE_CHECKING:
    from .host import Host

__all__ = ["StreamReader", "StreamWriter"]

READ_CHUNK = 64 * 1024


class StreamChannel:
    """The shared state of one stream flow, between the host's events and the app.

    Slotted, and with no waiter until a task waits: a host may hold tens of thousands of
    idle streams (docs/architecture.md §7).
    """

    __slots__ = (
        "_waiter",
        "closing",
        "connected",
        "eof",
        "eof_requested",
        "error",
        "flow",
        "host",
        "migrated",
        "resume",
        "socket_id",
        "terminated",
    )

    def __init__(self, host: Host, socket_id: int, *, connected: bool) -> None:
        self.host = host
        self.socket_id = socket_id
        self.flow = host.stack.flows[socket_id]
        #: the future a task waiting for the next change awaits (``wait``)
        self._waiter: asyncio.Future[None] | None = None
        self.connected = connected
        self.eof = False
        self.terminated = False
        self.error: ScaffoldError | None = None
        self.closing = False  # close() called
        self.eof_requested = False  # write_eof() called
        #: (send offset, receive offset) when this replica took the flow over mid-stream
        self.resume: tuple[int, int] | None = None
        #: the flow left this host (object migration); its handler is cancelled
        self.migrated = False

    @property
    def transport(self) -> StreamConnection | None:
        return self.flow.transport

    def live(self) -> bool:
        """The host stack still runs this flow (not terminated, not migrated away)."""
        return not self.terminated and self.socket_id in self.host.stack.flows

    # -- from the host stack -------------------------------------------------------------

    def on_event(self, event: StreamEvent) -> None:
        if isinstance(event, Connected):
            self.connected = True
        elif isinstance(event, Resumed):
            self.connected = True
            self.resume = (event.send_offset, event.receive_offset)
        elif isinstance(event, EndOfStream):
            self.eof = True
        elif isinstance(event, Reset):
            self.error = BrokenPathError(f"{self.describe()}: reset by the peer")
        elif isinstance(event, ConnectionTerminated):
            self.terminated = True
            if (
                event.reason not in (TerminationReason.CLOSED, TerminationReason.ABORTED)
                and self.error is None
            ):
                # The transport's own error tells ObjectNotFound (nobody serves the object,
                # verified, docs/protocol.md §4.3) from a broken path.
                transport = self.flow.transport
                error = transport.error if transport is not None else None
                if isinstance(error, ObjectNotFound) and not self.connected:
                    self.error = ObjectNotFound(f"{self.describe()}: no replica of the object is registered")
                elif event.reason == TerminationReason.OBJECT_NOT_FOUND:
                    gone = "its server is gone and no replica is left"
                    self.error = BrokenPathError(f"{self.describe()}: {gone}")
                else:
                    self.error = BrokenPathError(f"{self.describe()}: {event.reason}")
        self._changed()

    def fail(self, error: ScaffoldError) -> None:
        self.error = error
        self.terminated = True
        self._changed()

    def detach(self) -> None:
        """The flow migrated to another host: this end stops, without closing the flow."""
        self.migrated = True
        self.terminated = True
        self._changed()

    def describe(self) -> str:
        return f"stream {self.flow.flow:016x} on {self.host.name}"

    # -- towards the host stack ----------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Hand ``data`` to the transport (all of it: ``drain`` bounds the memory)."""
        if self.live():
            self.host.stack.stream_send(self.socket_id, data, self.host.now(), force=True)
            self.host.kick()

    def over_high_water(self) -> bool:
        transport = self.transport
        if transport is None or not self.live():
            return False
        return transport.buffered > transport.options.send_buffer

    def end(self, *, full: bool) -> None:
        """FIN after the written data; ``full`` also stops reading (``close``)."""
        if not self.live():
            return
        now = self.host.now()
        if full:
            self.host.stack.stream_close(self.socket_id, now)
        else:
            self.host.stack.stream_shutdown(self.socket_id, now)
        self.host.kick()

    def _changed(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Wait for the next change (data, space, EOF, error)."""
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter


class StreamReader:
    """Reads from a SCAFFOLD stream; the API of ``asyncio.StreamReader``."""

    __slots__ = ("_buffer", "_ch")

    def __init__(self, channel: StreamChannel) -> None:
        self._ch = channel
        #: bytes taken from the transport by readline/readuntil and not returned yet (None
        #: until a read needs it: most streams never do)
        self._buffer: bytearray | None = None

    def _take(self, n: int) -> bytes:
        transport = self._ch.flow.transport
        if transport is None or transport.readable == 0:
            return b""
        stack = self._ch.host.stack
        if self._ch.socket_id not in stack.flows:
            # The flow terminated (both sides closed) with bytes still unread: they are ours.
            return transport.read(n)
        data = stack.stream_read(self._ch.socket_id, n, self._ch.host.now())
        self._ch.host.kick()
        return data

    def _raise_if_failed(self) -> None:
        if self._ch.error is not None:
            raise self._ch.error

    def at_eof(self) -> bool:
        """True when the peer ended the stream and every byte was read."""
        return (self._ch.eof or self._ch.terminated) and not self._buffer and not self._readable()

    def _readable(self) -> int:
        transport = self._ch.flow.transport
        return transport.readable if transport is not None else 0

    def _unbuffer(self, n: int) -> bytes:
        """Up to ``n`` bytes (all if negative) of what readuntil took and did not return."""
        buffer = self._buffer
        if not buffer:
            return b""
        if n < 0 or n >= len(buffer):
            self._buffer = None
            return bytes(buffer)
        data = bytes(buffer[:n])
        del buffer[:n]
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (at least one unless at EOF); ``n < 0``: everything until EOF.

        Raises:
            BrokenPathError: the peer reset the stream or the path broke.
        """
        if n == 0:
            return b""
        if n < 0:
            chunks = [self._unbuffer(-1)]
            while True:
                data = await self.read(READ_CHUNK)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)
        if self._buffer:
            return self._unbuffer(n)
        return await self._receive(n)

    async def _receive(self, n: int) -> bytes:
        """Up to ``n`` bytes from the transport (at least one unless at EOF)."""
        while True:
            data = self._take(n)
            if data:
                return data
            self._raise_if_failed()
            if self._ch.eof or self._ch.terminated:
                return b""
            await self._ch.wait()

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes.

        Raises:
            asyncio.IncompleteReadError: EOF came first.
            BrokenPathError: the peer reset the stream or the path broke.
        """
        out = bytearray()
        while len(out) < n:
            data = await self.read(n - len(out))
            if not data:
                raise asyncio.IncompleteReadError(bytes(out), n)
            out += data
        return bytes(out)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Bytes up to and including ``separator``.

        Raises:
            asyncio.IncompleteReadError: EOF came first.
        """
        if not separator:
            raise UsageError("separator must not be empty")
        while True:
            buffer = self._buffer
            index = buffer.find(separator) if buffer else -1
            if index >= 0:
                return self._unbuffer(index + len(separator))
            data = await self._receive(READ_CHUNK)  # not read(): that would return the buffer
            if not data:
                raise asyncio.IncompleteReadError(self._unbuffer(-1), None)
            if self._buffer is None:
                self._buffer = bytearray()
            self._buffer += data

    async def readline(self) -> bytes:
        """One line including ``\\n``, or what is left at EOF."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line


class StreamWriter:
    """Writes to a SCAFFOLD stream; the API of ``asyncio.StreamWriter``."""

    __slots__ = ("_ch",)

    def __init__(self, channel: StreamChannel) -> None:
        self._ch = channel

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; call ``drain()`` to wait until the transport has room again.

        Raises:
            UsageError: after ``close()`` or ``write_eof()``.
            BrokenPathError: the stream already failed.
        """
        if self._ch.error is not None:
            raise self._ch.error
        if self._ch.closing or self._ch.eof_requested:
            raise UsageError(f"{self._ch.describe()}: write() after close() or write_eof()")
        if data:
            self._ch.send(bytes(data))

    def writelines(self, data: list[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    async def drain(self) -> None:
        """Wait until the transport's send buffer is back under its size.

        Raises:
            BrokenPathError: the peer reset the stream or the path broke.
        """
        while self._ch.over_high_water() or (not self._ch.connected and not self._ch.terminated):
            if self._ch.error is not None:
                raise self._ch.error
            await self._ch.wait()
        if self._ch.error is not None:
            raise self._ch.error

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: the peer reads EOF after the data written so far; reading goes on."""
        if not self._ch.eof_requested and not self._ch.closing:
            self._ch.eof_requested = True
            self._ch.end(full=False)

    def close(self) -> None:
        """Close: FIN after the data written so far, and stop reading."""
        if not self._ch.closing:
            self._ch.closing = True
            self._ch.end(full=True)

    def abort(self) -> None:
        """Reset the stream (RST): the peer reads ``BrokenPathError``, not a clean EOF.

        Unsent data is dropped. Like ``asyncio.WriteTransport.abort``.
        """
        stack = self._ch.host.stack
        if not self._ch.terminated and self._ch.socket_id in stack.flows:
            stack.stream_abort(self._ch.socket_id, self._ch.host.now())
            self._ch.host.kick()
        self._ch.closing = True

    def is_closing(self) -> bool:
        return self._ch.closing or self._ch.terminated

    async def wait_closed(self) -> None:
        """Wait until the flow terminated (both directions closed, or it failed)."""
        while not self._ch.terminated:
            await self._ch.wait()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"flow"`` (the Flow ID as hex), ``"host"`` (this host's name), ``"peer_host"``
        (the serving or client host's name), ``"object"`` (Object ID text), ``"socket"``
        (the local Socket ID), ``"dc"`` (this host's datacenter), ``"served_by"`` (every
        replica that answered this flow), ``"resume"`` (``(send_offset, receive_offset)``
        when this replica took the flow over mid-stream, else None)."""
        flow = self._ch.flow
        info = {
            "flow": f"{flow.flow:016x}",
            "host": self._ch.host.name,
            "dc": self._ch.host.dc,
            "peer_host": self._ch.host.host_name(flow.peer_host),
            "object": self._ch.host.object_text(flow.obj),
            "socket": flow.socket_id,
            "served_by": [self._ch.host.host_name(h) for h in flow.served_by],
            "resume": self._ch.resume,
        }
        return info.get(name, default)

    @property
    def transport(self) -> StreamWriter:
        return self
