"""What the gateway's connections share: the idle timer, cutting a connection, error tokens.

``splice.Splice`` carries the raw ingress's and the publisher's bytes and closes a connection
that carried no byte either way for its idle timeout: one timer per connection, re-armed only
when it fires (``IdleWatch``), not a poll. ``http.HttpSession`` carries the HTTP ingress's and
reads ``CHUNK`` at a time. Both cut a failed connection (``abort``: TCP RST, stream reset)
and count errors by ``reason_of``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol

from ..errors import PathError

__all__ = ["CHUNK", "ByteWriter", "IdleWatch", "abort", "reason_of", "send_some"]

CHUNK = 64 * 1024


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


def abort(writer: ByteWriter) -> None:
    """Cut a connection: RST for TCP, a stream reset for SCAFFOLD (not a clean EOF); both
    are asyncio stream writers."""
    if isinstance(writer, asyncio.StreamWriter):
        writer.transport.abort()
    else:  # pragma: no cover - only asyncio writers are pumped
        writer.close()


def send_some(sock: socket.socket, data: bytes) -> bytes:
    """Send what a non-blocking socket takes of ``data`` at once; the rest (all of it if it
    would block).

    Raises:
        OSError: the socket failed (a reset, say), not just full.
    """
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        return data
    return data[sent:]


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
