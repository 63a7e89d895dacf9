"""The HTTP ingress's streams to the object: one stream's record (``Upstream``) and the idle
streams its client connections share (``IdleUpstreams``).

Connection reuse, as an HTTP proxy keeps its connections to the servers (HAProxy's
``http-reuse safe``, its default in HTTP mode): a stream whose last response ended with the
replica keeping it open outlives the client connection that opened it, and a later client's
idempotent request goes on it -- no SYN, no resolution at an object switch, no connection for
the replica's publisher to open to its target. The network's choice of replica for that stream
(anycast on its Flow ID) stands for the requests that reuse it, as it does for a keep-alive
client's.

What keeps it safe (docs/gateway.md, "Streams reused across clients"):

* only an idempotent request takes an idle stream (RFC 9110 §9.2.2): the replica may close it
  at the very moment the request goes, and such a request is then sent again on a new stream,
  at once (``HttpSession``);
* a stream that said anything, ended or broke while idle is closed, never reused: bytes that
  came while no request was outstanding cannot be the next client's response;
* bounded: at most ``limit`` idle streams, each idle at most ``idle_timeout`` seconds (below
  the usual servers' keep-alive timeouts) and reused only within ``max_age`` seconds of its
  opening, so a replica that is drained or reweighted stops getting reused streams' requests
  within that time -- and clients that come one at a time are balanced over the replicas
  ``max_age`` by ``max_age``, not one by one (the network balances streams; a reused stream
  carries the requests of clients in turn, as a keep-alive client's carries all of its own).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from ..api.streams import StreamReader, StreamWriter
from ..errors import UsageError
from .http1 import ResponseParser
from .pump import abort

__all__ = ["IdleUpstreams", "Upstream"]


@dataclass(slots=True)
class Upstream:
    """One SCAFFOLD stream to a replica and the parser of its responses."""

    reader: StreamReader
    writer: StreamWriter
    responses: ResponseParser = field(default_factory=ResponseParser)
    idle: bool = True  # no request outstanding: closing it loses nothing (else it is reset)
    opened: float = 0.0  # loop time it opened (``max_age`` counts from it)
    reused: bool = False  # taken from the idle streams: an earlier client's connection opened it

    def close(self) -> None:
        """Close it: after what was written if idle, else a reset."""
        if self.idle:
            self.writer.close()
        else:
            abort(self.writer)

    def quiet(self) -> bool:
        """Nothing came on it since its last response ended: no byte, no EOF, no error, and
        neither side is closing it. (asyncio's reader has no public way to look at what it
        holds without reading it; its ``_buffer``, ``_eof`` and ``_exception`` are read, and
        a reader without them counts as not quiet, which only stops reuse.)"""
        state = vars(self.reader)
        return (
            self.idle
            and self.responses.reusable
            and not state.get("_buffer", b"?")
            and state.get("_eof", True) is False
            and state.get("_exception", True) is None
            and not self.writer.is_closing()
        )


class IdleUpstreams:
    """The idle streams of one ingress, newest first out (the warmest, and the fewest kept
    busy), each closed once idle ``idle_timeout`` seconds."""

    def __init__(self, limit: int, idle_timeout: float, max_age: float) -> None:
        """Raises:
        UsageError: a negative ``limit``, or a time that is not positive."""
        if limit < 0:
            raise UsageError(f"reuse must be >= 0 (idle streams kept; 0: none), got {limit}")
        if idle_timeout <= 0 or max_age <= 0:
            raise UsageError(f"reuse_idle_timeout, reuse_max_age must be positive: {idle_timeout}, {max_age}")
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        #: (loop time it went idle, stream), oldest first
        self._idle: deque[tuple[float, Upstream]] = deque()
        self._sweeping: asyncio.TimerHandle | None = None
        self.closed = False

    def __len__(self) -> int:
        return len(self._idle)

    def ready(self, now: float) -> int:
        """How many a request could take at ``now`` (quiet, not expired)."""
        return sum(1 for since, upstream in self._idle if self._fresh(since, upstream, now))

    def _fresh(self, since: float, upstream: Upstream, now: float) -> bool:
        return now - since < self.idle_timeout and upstream.quiet()

    def take(self, now: float) -> Upstream | None:
        """An idle stream to send a request on (marked ``reused``), or None; the ones found
        expired or not quiet on the way are closed."""
        idle = self._idle
        while idle:
            since, upstream = idle.pop()
            if self._fresh(since, upstream, now):
                upstream.reused = True
                return upstream
            upstream.close()
        return None

    def give(self, upstream: Upstream, now: float) -> bool:
        """Keep ``upstream`` for a later client's request if it may be reused; whether it was
        kept (if not, the caller closes it). At the limit the oldest idle one is closed."""
        if self.closed or not self.limit or now - upstream.opened >= self.max_age or not upstream.quiet():
            return False
        idle = self._idle
        if len(idle) >= self.limit:
            idle.popleft()[1].close()
        idle.append((now, upstream))
        if self._sweeping is None:
            self._sweeping = asyncio.get_running_loop().call_at(now + self.idle_timeout, self._sweep)
        return True

    def _sweep(self) -> None:
        """Close the streams idle too long and those that ended or spoke while idle."""
        self._sweeping = None
        now = asyncio.get_running_loop().time()
        kept: deque[tuple[float, Upstream]] = deque()
        for since, upstream in self._idle:
            if self._fresh(since, upstream, now):
                kept.append((since, upstream))
            else:
                upstream.close()
        self._idle = kept
        if kept:
            self._sweeping = asyncio.get_running_loop().call_at(kept[0][0] + self.idle_timeout, self._sweep)

    def close(self) -> None:
        """Close every idle stream and keep none from now on."""
        self.closed = True
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        while self._idle:
            self._idle.popleft()[1].close()
