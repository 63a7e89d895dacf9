"""What the gateway's connections share: the timers, cutting a connection, error tokens.

``splice.Splice`` carries the raw ingress's and the publisher's bytes and closes a connection
that carried no byte either way for its idle timeout: one timer per connection, re-armed only
when it fires (``IdleWatch``), not a poll. ``http.HttpSession`` carries the HTTP ingress's and
reads ``CHUNK`` at a time under one ``Deadline`` per session (the head, idle and response
timeouts), armed by recording a time, not by scheduling a timer per read. Both cut a
failed connection (``abort``: TCP RST, stream reset) and count errors by ``reason_of``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol

from ..errors import PathError

__all__ = ["CHUNK", "ByteWriter", "Deadline", "IdleWatch", "abort", "reason_of", "send_some"]

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


class Deadline:
    """One task's deadline, moved on every wait at the price of recording a time.

    ``asyncio.timeout`` schedules and cancels a timer at every use: on the HTTP ingress's
    keep-alive path two a request, about 7 µs each under uvloop, a tenth of the request's
    CPU (issue 12). Here one timer serves all of a task's waits: ``arm(due)`` records
    ``due`` and moves the timer only to make it earlier; a timer that fires before the due
    re-arms itself at it, and one that fires when nothing is armed stops. A due that passes
    while the task waits cancels the task, as ``asyncio.timeout`` does; the waiter catches
    ``CancelledError`` and asks ``expired()`` whether it was this deadline alone (then it
    raises its own error) or somebody else's cancellation too (then it re-raises)::

        deadline.arm(loop.time() + 5)
        try:
            data = await reader.read(n)
        except asyncio.CancelledError:
            if deadline.expired():
                raise TimeoutError from None
            raise
        finally:
            deadline.disarm()

    Made inside the task it guards; ``cancel()`` when the task ends.
    """

    __slots__ = ("_at", "_fired", "_handle", "_loop", "_task", "due")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - a programming error
            raise RuntimeError("Deadline() must be made inside the task it guards")
        self._task = task
        self.due: float | None = None  # loop time the current wait must end by, if any
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0  # when the timer fires, if there is one
        self._fired = False  # the task was cancelled by this deadline, not yet answered

    def arm(self, due: float | None) -> None:
        """The coming wait must end by ``due`` (loop time; None: no bound)."""
        self.due = due
        if due is not None and (self._handle is None or due < self._at):
            if self._handle is not None:
                self._handle.cancel()
            self._at = due
            self._handle = self._loop.call_at(due, self._fire)

    def disarm(self) -> None:
        """The wait ended; the timer stays, to be re-armed or to stop when it fires."""
        self.due = None

    def expired(self) -> bool:
        """Whether the ``CancelledError`` being handled came from this deadline alone."""
        if not self._fired:
            return False
        self._fired = False
        return self._task.uncancel() == 0

    def cancel(self) -> None:
        self.due = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        due = self.due
        if due is None:
            return
        if due > self._at:  # moved later since the timer was set (arm keeps _at <= due)
            self._at = due
            self._handle = self._loop.call_at(due, self._fire)
            return
        self.due = None
        self._fired = True
        self._task.cancel()


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
