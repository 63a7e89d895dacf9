"""asyncio-style streams over SCAFFOLD stream flows: ``StreamReader`` / ``StreamWriter``.

They mirror ``asyncio.StreamReader`` and ``asyncio.StreamWriter``. Received bytes stay in the
transport's receive buffer until the application reads them, so a slow reader closes the
peer's window (flow control end to end); ``drain()`` waits until what was written fits in the
transport's send buffer, which bounds the writer's memory.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors import BrokenPathError, ScaffoldError, UsageError
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
    """The shared state of one stream flow, between the host's events and the app."""

    def __init__(self, host: Host, socket_id: int, *, connected: bool) -> None:
        self.host = host
        self.socket_id = socket_id
        self.flow = host.stack.flows[socket_id]
        self.changed = asyncio.Event()
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
                self.error = BrokenPathError(f"{self.describe()}: {event.reason}")
        self.changed.set()

    def fail(self, error: ScaffoldError) -> None:
        self.error = error
        self.terminated = True
        self.changed.set()

    def detach(self) -> None:
        """The flow migrated to another host: this end stops, without closing the flow."""
        self.migrated = True
        self.terminated = True
        self.changed.set()

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

    async def wait(self) -> None:
        """Wait for the next change (data, space, EOF, error)."""
        self.changed.clear()
        await self.changed.wait()


class StreamReader:
    """Reads from a SCAFFOLD stream; the API of ``asyncio.StreamReader``."""

    def __init__(self, channel: StreamChannel) -> None:
        self._ch = channel
        self._buffer = bytearray()  # bytes taken from the transport by readline/readuntil

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

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (at least one unless at EOF); ``n < 0``: everything until EOF.

        Raises:
            BrokenPathError: the peer reset the stream or the path broke.
        """
        if n == 0:
            return b""
        if n < 0:
            chunks = [bytes(self._buffer)]
            self._buffer.clear()
            while True:
                data = await self.read(READ_CHUNK)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)
        while True:
            if self._buffer:
                data = bytes(self._buffer[:n])
                del self._buffer[:n]
                return data
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
            index = self._buffer.find(separator)
            if index >= 0:
                end = index + len(separator)
                data = bytes(self._buffer[:end])
                del self._buffer[:end]
                return data
            data = await self.read(READ_CHUNK)
            if not data:
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(partial, None)
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
        when this replica took the flow over mid-stream, else None), ``"state"`` (the
        transport's ``StreamState`` value, or None before it exists),
        ``"stats"`` (the transport's ``StreamStats``, or None)."""
        flow = self._ch.flow
        transport = self._ch.transport
        info = {
            "flow": f"{flow.flow:016x}",
            "host": self._ch.host.name,
            "dc": self._ch.host.dc,
            "peer_host": self._ch.host.host_name(flow.peer_host),
            "object": self._ch.host.object_text(flow.obj),
            "socket": flow.socket_id,
            "served_by": [self._ch.host.host_name(h) for h in flow.served_by],
            "resume": self._ch.resume,
            "state": None if transport is None else transport.state.value,
            "stats": None if transport is None else transport.stats,
        }
        return info.get(name, default)

    @property
    def transport(self) -> StreamWriter:
        return self
