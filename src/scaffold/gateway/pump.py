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

from ..errors import PathError
from .stats import GatewayStats

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
    """Cut a connection: RST for TCP, a stream reset for SCAFFOLD (not a clean EOF); both
    are asyncio stream writers."""
    if isinstance(writer, asyncio.StreamWriter):
        writer.transport.abort()
    else:  # pragma: no cover - only asyncio writers are pumped
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
    client_reader: ByteReader,
    client_writer: ByteWriter,
    service_reader: ByteReader,
    service_writer: ByteWriter,
    stats: GatewayStats,
) -> None:
    """Pump client -> service and service -> client until both directions ended, counting
    the bytes (``bytes_in`` towards the service, ``bytes_out`` back) and the first error, if
    any, by reason in ``stats``.

    On an error in either direction both connections are cut (``abort``), so neither peer
    mistakes a failure for a clean end of stream. Both writers are closed on return.
    """

    def count_in(n: int) -> None:
        stats.bytes_in += n

    def count_out(n: int) -> None:
        stats.bytes_out += n

    forward = asyncio.ensure_future(_pump(client_reader, service_writer, count_in))
    backward = asyncio.ensure_future(_pump(service_reader, client_writer, count_out))
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
                abort(client_writer)
                abort(service_writer)
                stats.error(reason_of(error))
                return
    finally:
        for task in (forward, backward):
            if not task.done():
                task.cancel()
        client_writer.close()
        service_writer.close()
