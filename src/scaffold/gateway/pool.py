"""Idle connections to a publisher's target, opened before the streams that will use them.

A stream that takes one is spliced to the target in the callback that made the stream (its
first bytes, data on SYN, docs/protocol.md §4.2.7, go to the target at once): no connect on
a setup's path. Off by default (``Publisher(pool=N)``, ``scaffold publish --pool N``),
since the target sees connections before it has anything to serve on them. Each is used by
one stream only (never shared between clients: no HTTP keep-alive mixing), and bounded:

* at most ``size`` idle at once, refilled as streams take them;
* none older than ``max_age`` seconds (``MAX_AGE``, well below the idle timeouts servers
  apply to a connection that sent nothing): older ones are closed, not handed out;
* one the target closed, or wrote to, is dropped at once -- never handed out (a server that
  speaks first is served by a fresh connection, with its greeting);
* a connection attempt that fails stops the refilling until the publisher's next passed
  health check (``enable``), so a dead target costs no connect loop; a withdrawn replica
  keeps none.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from typing import cast

from .splice import End

__all__ = ["MAX_AGE", "TargetPool"]

#: seconds an idle connection is kept before it is replaced
MAX_AGE = 5.0


class _Idle(asyncio.Protocol):
    """A pooled connection's protocol until a stream takes it."""

    __slots__ = ("born", "gone", "pool", "transport")

    def __init__(self, pool: TargetPool, born: float) -> None:
        self.pool = pool
        self.born = born
        self.transport: asyncio.Transport | None = None
        self.gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._drop()  # the target spoke first: this connection's greeting is nobody's

    def eof_received(self) -> bool:
        self._drop()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop()

    def _drop(self) -> None:
        if not self.gone:
            self.gone = True
            if self.transport is not None:
                self.transport.close()
            self.pool.dropped(self)


def _same(idle: _Idle) -> _Idle:
    return idle


class TargetPool:
    """Up to ``size`` idle connections to ``target``, refilled while enabled."""

    def __init__(
        self, target: tuple[str, int], size: int, connect_timeout: float, max_age: float = MAX_AGE
    ) -> None:
        self.target = target
        self.size = size
        self.connect_timeout = connect_timeout
        self.max_age = max_age
        self.idle: deque[_Idle] = deque()
        self.enabled = False
        #: connections handed to streams / dropped (closed by the target, too old, failed)
        self.taken = 0
        self.dropped_count = 0
        self._connecting: set[asyncio.Task[object]] = set()

    def enable(self) -> None:
        """Fill the pool (again): the target answers."""
        self.enabled = True
        self.fill()

    def disable(self) -> None:
        """Close every idle connection and stop refilling (withdrawn, or closing)."""
        self.enabled = False
        for task in self._connecting:
            task.cancel()
        while self.idle:
            self.idle.popleft()._drop()

    def fill(self) -> None:
        """Start connections up to ``size`` (idle plus being made)."""
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        while len(self.idle) + len(self._connecting) < self.size:
            idle = _Idle(self, loop.time())
            connect = loop.create_connection(functools.partial(_same, idle), *self.target)
            task: asyncio.Task[object] = loop.create_task(asyncio.wait_for(connect, self.connect_timeout))
            self._connecting.add(task)
            task.add_done_callback(self._made)

    def _made(self, task: asyncio.Task[object]) -> None:
        self._connecting.discard(task)
        if task.cancelled() or task.exception() is not None:
            self.enabled = False  # until the publisher's next passed check: no connect loop
            return
        _, idle = cast(tuple[asyncio.Transport, _Idle], task.result())
        if not self.enabled:
            idle._drop()
        elif not idle.gone:
            self.idle.append(idle)

    def dropped(self, idle: _Idle) -> None:
        self.dropped_count += 1
        if idle in self.idle:
            self.idle.remove(idle)

    def expire(self, now: float) -> None:
        """Close the connections older than ``max_age`` and refill."""
        while self.idle and now - self.idle[0].born > self.max_age:
            self.idle.popleft()._drop()
        self.fill()

    def take(self, end: End, now: float) -> bool:
        """Give an idle connection to ``end`` (its ``connection_made`` runs now) and start a
        replacement; False if none is ready."""
        self.expire(now)
        if not self.idle:
            return False
        idle = self.idle.popleft()
        transport = idle.transport
        assert transport is not None
        transport.set_protocol(end)
        end.connection_made(transport)
        self.taken += 1
        self.fill()
        return True
