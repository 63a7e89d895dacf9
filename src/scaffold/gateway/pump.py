"""Carrying bytes between a kernel TCP connection and a SCAFFOLD stream, both ways.

Both sides have the asyncio stream shape (``read``, ``write``, ``drain``, ``write_eof``), so
one ``pump`` serves the ingress (TCP client -> SCAFFOLD) and the publisher (SCAFFOLD -> TCP
target). Each direction reads a chunk, writes it and waits on ``drain()`` before reading more,
so a slow receiver slows the sender down (backpressure end to end). EOF on one side becomes a
half-close (``write_eof``) on the other; a reset or a broken path on either side cuts both.
With an idle timeout, a connection that carried no byte either way for that long is closed:
one timer per connection, re-armed only when it fires (``IdleWatch``), not a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from ..errors import PathError
from .stats import GatewayStats

__all__ = ["CHUNK", "ByteReader", "ByteWriter", "IdleWatch", "abort", "pump_both", "reason_of"]

CHUNK = 64 * 1024


class ByteReader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def write_eof(self) -> None: ...

    def close(self) -> None: ...


class IdleWatch:
    """Calls ``on_idle`` once nothing happened for ``timeout`` seconds.

    ``touch()`` only records the time; the one timer, when it fires, either calls
    ``on_idle`` or re-arms itself at the last activity plus ``timeout``.
    """

    __slots__ = ("_handle", "_loop", "_on_idle", "last", "timeout")

    def __init__(self, timeout: float, on_idle: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self.timeout = timeout
        self._on_idle = on_idle
        self.last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self.last + timeout, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def _check(self) -> None:
        due = self.last + self.timeout
        if self._loop.time() >= due:
            self._handle = None
            self._on_idle()
        else:
            self._handle = self._loop.call_at(due, self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def _pump(reader: ByteReader, writer: ByteWriter, count: Callable[[int], None]) -> None:
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
        count(len(data))
    with contextlib.suppress(RuntimeError):  # uvloop: the other side already closed the transport
        writer.write_eof()


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


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
    *,
    idle_timeout: float | None = None,
) -> None:
    """Pump client -> service and service -> client until both directions ended, counting
    the bytes (``bytes_in`` towards the service, ``bytes_out`` back) and the first error, if
    any, by reason in ``stats``.

    On an error in either direction both connections are cut (``abort``), so neither peer
    mistakes a failure for a clean end of stream. With ``idle_timeout``, a connection idle
    that long both ways is closed (``errors["idle-timeout"]``). Both writers are closed on
    return.
    """
    idle: IdleWatch | None = None
    idled = False

    def count_in(n: int) -> None:
        stats.bytes_in += n
        if idle is not None:
            idle.touch()

    def count_out(n: int) -> None:
        stats.bytes_out += n
        if idle is not None:
            idle.touch()

    forward = asyncio.ensure_future(_pump(client_reader, service_writer, count_in))
    backward = asyncio.ensure_future(_pump(service_reader, client_writer, count_out))

    def expire() -> None:
        nonlocal idled
        idled = True
        forward.cancel()
        backward.cancel()

    if idle_timeout is not None:
        idle = IdleWatch(idle_timeout, expire)
    error: BaseException | None = None
    try:
        pending: set[asyncio.Future[None]] = {forward, backward}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = None if task.cancelled() else task.exception()
                if exc is not None and error is None:
                    error = exc
            if idled:
                stats.error("idle-timeout")
                return
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
        if idle is not None:
            idle.cancel()
        for task in (forward, backward):
            if not task.done():
                task.cancel()
            # Cancelled from outside (a publisher or ingress closing), a direction may still
            # end in an error (the peer's reset): taken here, not logged as "never retrieved".
            task.add_done_callback(_retrieve)
        client_writer.close()
        service_writer.close()
