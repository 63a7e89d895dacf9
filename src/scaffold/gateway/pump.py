"""Carrying bytes between a kernel TCP connection and a SCAFFOLD stream, both ways.

Both sides have the asyncio stream shape (``read``, ``write``, ``drain``, ``write_eof``), so
one ``pump`` serves the ingress (TCP client -> SCAFFOLD) and the publisher (SCAFFOLD -> TCP
target). Each direction reads a chunk, writes it and waits on ``drain()`` before reading more,
so a slow receiver slows the sender down (backpressure end to end). EOF on one side becomes a
half-close (``write_eof``) on the other; a reset or a broken path on either side cuts both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from ..api.streams import StreamWriter
from ..errors import PathError

__all__ = ["CHUNK", "ByteReader", "ByteWriter", "abort", "pump_both", "reason_of"]

CHUNK = 64 * 1024


class ByteReader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def write_eof(self) -> None: ...

    def close(self) -> None: ...


async def _pump(reader: ByteReader, writer: ByteWriter, count: Callable[[int], None]) -> None:
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
        count(len(data))
    with contextlib.suppress(RuntimeError):  # uvloop: the other side already closed the transport
        writer.write_eof()


def abort(writer: ByteWriter) -> None:
    """Cut a connection: RST for TCP, a stream reset for SCAFFOLD (not a clean EOF)."""
    if isinstance(writer, asyncio.StreamWriter):
        writer.transport.abort()
    elif isinstance(writer, StreamWriter):
        stream_abort = getattr(writer, "abort", None)
        if stream_abort is not None:
            stream_abort()
            return
        # StreamWriter has no abort() yet (docs/gateway-integration.patch adds one); until
        # then reset the flow through its channel, as Host does when a flow fails.
        channel = writer._ch
        stack = channel.host.stack
        if not channel.terminated and channel.socket_id in stack.flows:
            stack.stream_abort(channel.socket_id, channel.host.now())
            channel.host.kick()
        writer.close()
    else:  # pragma: no cover - only the two kinds exist
        writer.close()


def reason_of(exc: BaseException) -> str:
    """A short stable token for the error counters."""
    if isinstance(exc, PathError):
        return "path-broken"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return "os-error"
    return type(exc).__name__


async def pump_both(
    a_reader: ByteReader,
    a_writer: ByteWriter,
    b_reader: ByteReader,
    b_writer: ByteWriter,
    count_ab: Callable[[int], None],
    count_ba: Callable[[int], None],
) -> BaseException | None:
    """Pump a -> b and b -> a until both directions ended; the first error, if any.

    On an error in either direction both connections are cut (``abort``), so neither peer
    mistakes a failure for a clean end of stream. Both writers are closed on return.
    """
    forward = asyncio.ensure_future(_pump(a_reader, b_writer, count_ab))
    backward = asyncio.ensure_future(_pump(b_reader, a_writer, count_ba))
    error: BaseException | None = None
    try:
        pending: set[asyncio.Future[None]] = {forward, backward}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and error is None:
                    error = exc
            if error is not None:
                for task in pending:
                    task.cancel()
                for task in pending:
                    with contextlib.suppress(BaseException):
                        await task
                abort(a_writer)
                abort(b_writer)
                return error
    finally:
        for task in (forward, backward):
            if not task.done():
                task.cancel()
        a_writer.close()
        b_writer.close()
    return None
