"""Streams the raw ingress opens ahead of the clients that will take them (``preconnect``).

A raw setup pays for a whole stream on its path: the SYN through an object switch, the replica
host's accept, its publisher's connect to the target. With ``preconnect=N`` the ingress keeps
up to N streams open and idle, each half of a :class:`~.splice.Splice` whose client end is not
there yet; an accepted client takes one in the accept callback, its first bytes go on it at
once, and one more stream is opened for the next client (``REFILL_DELAY`` later). Envoy calls
this preconnecting.

What it changes, and why it is off by default (docs/gateway.md, "Streams opened ahead"):

* the replica's target sees a TCP connection before any client exists, idle until one comes
  (as with the publisher's ``pool``). What a target says first (a banner) waits in the splice
  and reaches the client that takes the stream, in order; a stream that ended or broke while
  waiting is closed and never taken;
* a taken stream is an open one, so what a client sends on it is kept (:class:`Replay`, up
  to ``REPLAY_LIMIT``) until the service's first byte: if the stream ends or breaks before
  then and the replica's host acknowledged none of it, it goes again in a new stream's SYN,
  as a SYN's first bytes do after a failed handshake (at least once, as with TCP Fast Open);
  once the replica's host acknowledged a byte, or the service answered, a break cuts the
  client, as any broken stream cuts it once bytes flowed;
* traffic keeps them: a stream waits at most ``idle_timeout`` seconds, and only a take (or a
  client that found none) opens more, so an idle ingress holds none; after an opening failed
  (no replica registered, say) none is opened ahead for ``RETRY_AFTER``, so clients cannot
  make the ingress open ``count`` doomed streams each.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import UsageError
from .pump import reason_of
from .splice import End, Splice
from .stats import GatewayStats

if TYPE_CHECKING:
    from ..api.host import Host
    from ..ids import ObjectId

__all__ = ["REPLAY_LIMIT", "Replay", "WarmStreams"]

#: most streams kept open ahead
MAX_PRECONNECT = 64
#: a take opens its replacement this long after (s), not in the same turn of the loop: the
#: new stream's opening -- its SYN, the replica's accept, its publisher's connect -- would run
#: between the taken stream's request and its response otherwise (one loop; two CPUs)
REFILL_DELAY = 0.002
#: after an opening failed (no replica, none answered), none is opened ahead for this long (s):
#: clients arriving meanwhile open their own streams, and none makes the ingress open ``count``
#: more that would fail alike
RETRY_AFTER = 1.0
#: most bytes of a client's kept for a replay (more before the service's first byte: none)
REPLAY_LIMIT = 64 * 1024


class WarmStreams:
    """Up to ``count`` streams to ``obj`` opened ahead, through ``host``; their splices count
    into ``stats`` and close after ``splice_idle_timeout`` idle once a client has them."""

    def __init__(
        self,
        host: Host,
        obj: ObjectId,
        stats: GatewayStats,
        count: int,
        *,
        idle_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        splice_idle_timeout: float | None = None,
        peername: tuple[str, int] | None = None,
    ) -> None:
        """Raises:
        UsageError: ``count`` outside [0, MAX_PRECONNECT], or a time that is not positive."""
        if not 0 <= count <= MAX_PRECONNECT:
            raise UsageError(f"preconnect must be in [0, {MAX_PRECONNECT}], got {count}")
        if idle_timeout <= 0 or connect_timeout <= 0:
            raise UsageError("preconnect's idle and connect timeouts must be positive")
        self.host = host
        self.obj = obj
        self.stats = stats
        self.count = count
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.splice_idle_timeout = splice_idle_timeout
        self.peername = peername
        #: (loop time it began opening, splice, its opening), oldest first; none taken yet
        self._waiting: deque[tuple[float, Splice, asyncio.Task[object]]] = deque()
        self._sweeping: asyncio.TimerHandle | None = None
        self.closed = False
        self._refilling: asyncio.TimerHandle | None = None
        #: loop time before which nothing is opened ahead (RETRY_AFTER a failed opening)
        self._failed_until = 0.0
        self.taken = 0  # given to clients
        self.dropped = 0  # closed unused: ended, broke or expired while waiting
        #: what the waiting streams did (a banner's bytes, a reset): they count in ``stats``
        #: only once a client has them (then their held bytes too)
        self.waiting_stats = GatewayStats()

    def __len__(self) -> int:
        return len(self._waiting)

    def ready(self) -> int:
        """How many are open now (handshake done, nothing ended)."""
        return sum(1 for _, splice, _ in self._waiting if _usable(splice))

    def _fresh(self, began: float, splice: Splice, opening: asyncio.Task[object], now: float) -> bool:
        """Still worth keeping: opening, or open and usable, within ``idle_timeout``."""
        return now - began < self.idle_timeout and (not opening.done() or _usable(splice))

    def take(self) -> Splice | None:
        """An open stream's splice for a client (whose socket the caller attaches), or None;
        either way more are opened for the next clients (after a take, ``REFILL_DELAY``
        later). Ones found ended or expired on the way are closed."""
        if self.closed or not self.count:
            return None
        loop = asyncio.get_running_loop()
        now = loop.time()
        taken = None
        waiting = self._waiting
        for _ in range(len(waiting)):
            entry = waiting.popleft()
            began, splice, opening = entry
            if not opening.done():
                waiting.append(entry)  # still opening: it keeps its place among the waiting
                continue
            if self._fresh(began, splice, opening, now):
                taken = splice
                self.taken += 1
                self.stats.preconnected += 1
                splice.stats = self.stats
                self.stats.bytes_out += sum(map(len, splice.service.held))
                break
            self._drop(splice)
        if taken is None:
            self.fill()  # a client found none: open them now
        elif self._refilling is None:
            self._refilling = loop.call_later(REFILL_DELAY, self._refill)
        return taken

    def _refill(self) -> None:
        self._refilling = None
        self.fill()

    def fill(self) -> None:
        """Open streams until ``count`` are open or opening."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.closed or now < self._failed_until:
            return
        while len(self._waiting) < self.count and self._open_one(loop, now):
            pass
        if self._sweeping is None and self._waiting:
            self._sweeping = loop.call_at(now + self.idle_timeout, self._sweep)

    def _open_one(self, loop: asyncio.AbstractEventLoop, now: float) -> bool:
        splice = Splice(self.waiting_stats, idle_timeout=self.splice_idle_timeout)
        try:
            connecting = self.host.start_connection(lambda: splice.service, self.obj, peername=self.peername)
        except Exception as exc:  # the host closing, say: the next take tries again
            self.waiting_stats.error(reason_of(exc))
            return False
        opening: asyncio.Task[object] = loop.create_task(connecting.result(self.connect_timeout))
        opening.add_done_callback(functools.partial(self._opened, splice))
        self._waiting.append((now, splice, opening))
        return True

    def _opened(self, splice: Splice, opening: asyncio.Task[object]) -> None:
        if opening.cancelled():
            return
        error = opening.exception()
        if error is not None:
            # No replica, or none answered: the waiting slot goes; the next client opens its
            # own stream (and retries as every client does) and a take tries again.
            self.waiting_stats.error(reason_of(error))
            self._failed_until = asyncio.get_running_loop().time() + RETRY_AFTER
            self._discard(splice)

    def _discard(self, splice: Splice) -> None:
        for index, (_, waiting, _) in enumerate(self._waiting):
            if waiting is splice:
                del self._waiting[index]
                break
        splice.abort()

    def _drop(self, splice: Splice) -> None:
        """Close an unused stream (FIN: the target sees its connection end cleanly)."""
        self.dropped += 1
        splice.close()

    def _sweep(self) -> None:
        """Close the streams that waited too long or ended while waiting."""
        self._sweeping = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        kept: deque[tuple[float, Splice, asyncio.Task[object]]] = deque()
        for entry in self._waiting:
            if self._fresh(*entry, now):
                kept.append(entry)
            else:
                entry[2].cancel()  # (still opening: the stream is given up)
                self._drop(entry[1])
        self._waiting = kept
        if kept:
            self._sweeping = loop.call_at(kept[0][0] + self.idle_timeout, self._sweep)

    def close(self) -> None:
        """Close every waiting stream and open none from now on."""
        self.closed = True
        if self._refilling is not None:
            self._refilling.cancel()
            self._refilling = None
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        while self._waiting:
            _, splice, opening = self._waiting.popleft()
            opening.cancel()
            splice.close()


def _usable(splice: Splice) -> bool:
    """Open and nothing ended: the stream's end is made and has seen no EOF or loss."""
    service = splice.service
    return service.transport is not None and not service.eof and not service.lost and not splice.done.done()


class Replay:
    """A taken stream's client bytes, kept until the service's first byte (the splice's
    :attr:`~.splice.Splice.replay`). If the stream ends (EOF) or breaks before that byte and
    the replica's host had acknowledged none of them -- an EOF then means the target closed
    its idle connection before they came -- ``reopen(splice, data)`` sends them again, in a
    new stream's SYN, as the splice's new service end. Once only: the new stream's failures
    are a SYN's. (A target that half-closes before it reads, and reads on, may read them
    twice: docs/gateway.md, "Streams opened ahead".)"""

    __slots__ = ("kept", "reopen", "size", "splice")

    def __init__(self, splice: Splice, first: bytes, reopen: Callable[[Splice, bytes], None]) -> None:
        self.splice = splice
        self.reopen = reopen
        self.kept = [first] if first else []
        self.size = len(first)

    def sent(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > REPLAY_LIMIT:  # too much to keep: a break from here cuts the client
            self.splice.replay = None
            self.kept = []
        else:
            self.kept.append(data)

    def failed(self, end: End, exc: Exception | None) -> bool:
        splice = self.splice
        splice.replay = None
        if splice.closing or splice.client.lost or end.transport is None:
            return False
        stats = end.transport.get_extra_info("stats")
        # A stream opened ahead sends nothing before its take: any byte acknowledged is the
        # client's, and may have reached the target.
        if stats is None or stats.bytes_acked:
            return False
        data = b"".join(self.kept)
        self.kept = []
        # What the client sent is all in ``data`` (kept as it came): none is held twice.
        splice.client.held.clear()
        splice.replace_service()
        self.reopen(splice, data)
        return True
