"""Deadlines by key, so a host's next timer is found without looking at every flow.

Two structures, one per kind of deadline (docs/architecture.md §2):

* ``DeadlineHeap`` -- exact deadlines (retransmission, delayed ACK, persist, TIME_WAIT, the
  host's heartbeat): a binary heap with lazy invalidation;
* ``TimerWheel`` -- coarse deadlines (keepalives, stall probes, idle timeouts): rounded up
  to a tick, so every stream due in the same tick fires in one wake-up and its probes can
  share packets (``keepalive.py``, docs/protocol.md §4.4).

A host may hold tens of thousands of streams, each with a deadline that moves on almost
every packet (acknowledgement, retransmission and keepalive timers). ``DeadlineHeap`` keeps
one current deadline per key in a dict and entries ``(deadline, key)`` in a binary heap, and
invalidates lazily:

* a deadline that moves *earlier* pushes a new entry; the old one is stale and dropped when
  it reaches the top;
* a deadline that moves *later* pushes nothing: the key's earlier entry stays in the heap
  and, when it reaches the top, is filed again at the current deadline. Most moves are
  later (every acknowledgement pushes the retransmission timer out), so most cost one
  dict store;
* a disarmed key's entries are dropped when they reach the top.

Invariant: every armed key has an entry at or before its current deadline, so the top of the
heap, once stale entries are cleared, is the earliest deadline. Stale entries are bounded:
when they outnumber the armed keys the heap is rebuilt. Costs: ``arm`` O(1) or O(log n),
``next`` and ``pop_due`` O(log n) amortized per entry -- none depends on how many keys are
armed but not due (an idle stream costs nothing).

``TimerWheel`` keeps each key in the set of its tick (``ceil(deadline / tick)``) and the
ticks that hold keys in a small heap (there are at most as many as the longest deadline
spans ticks). Arming is O(1): a key moved to an earlier tick changes sets at once; one moved
later only records the new tick and is refiled when its old tick fires (most moves are later:
every packet received pushes the keepalive out). ``pop_due`` returns whole ticks.
"""

from __future__ import annotations

import heapq
import math

from ...errors import UsageError

__all__ = ["DeadlineHeap", "TimerWheel"]

#: below this many entries the heap is never rebuilt (rebuilding tiny heaps gains nothing)
_COMPACT_MIN = 64


class DeadlineHeap:
    """Keys (ints) with one deadline each; the earliest is found in O(log n)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._deadline: dict[int, float] = {}

    def __len__(self) -> int:
        """How many keys are armed."""
        return len(self._deadline)

    @property
    def entries(self) -> int:
        """Entries in the heap, stale ones included (at most about twice the armed keys)."""
        return len(self._heap)

    def get(self, key: int) -> float | None:
        """The key's current deadline, or None if it is not armed."""
        return self._deadline.get(key)

    def arm(self, key: int, at: float | None) -> None:
        """Set the key's deadline to ``at`` (None: disarm it)."""
        if at is None:
            self._deadline.pop(key, None)
            return
        old = self._deadline.get(key)
        if old == at:
            return
        self._deadline[key] = at
        if old is None or at < old:
            heapq.heappush(self._heap, (at, key))
            if len(self._heap) > _COMPACT_MIN and len(self._heap) > 2 * len(self._deadline):
                self._compact()
        # Moved later: the entry at (or before) ``old`` is refiled when it reaches the top.

    def next(self) -> float | None:
        """The earliest deadline of any armed key, or None."""
        heap, deadline = self._heap, self._deadline
        while heap:
            at, key = heap[0]
            current = deadline.get(key)
            if current == at:
                return at
            heapq.heappop(heap)
            if current is not None and current > at:
                heapq.heappush(heap, (current, key))  # it moved later: file it again
        return None

    def pop_due(self, now: float) -> list[int]:
        """Disarm and return, earliest first, every key whose deadline is ``<= now``."""
        due: list[int] = []
        while (at := self.next()) is not None and at <= now:
            _, key = heapq.heappop(self._heap)
            del self._deadline[key]
            due.append(key)
        return due

    def _compact(self) -> None:
        self._heap = [(at, key) for key, at in self._deadline.items()]
        heapq.heapify(self._heap)


class TimerWheel:
    """Keys (ints) with one coarse deadline each, rounded up to ``tick`` seconds.

    Raises:
        UsageError: ``tick`` is not positive (constructor).
    """

    __slots__ = ("_at", "_slots", "_tick", "_ticks")

    def __init__(self, tick: float) -> None:
        if not tick > 0:
            raise UsageError(f"timer wheel tick must be positive, got {tick}")
        self._tick = tick
        #: tick number -> keys filed there
        self._slots: dict[int, set[int]] = {}
        #: tick numbers with a set in ``_slots`` (no duplicates)
        self._ticks: list[int] = []
        #: key -> (tick it wants, tick whose set holds it)
        self._at: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        """How many keys are armed."""
        return len(self._at)

    @property
    def tick(self) -> float:
        return self._tick

    def get(self, key: int) -> float | None:
        """When the key fires (its deadline rounded up to the tick), or None."""
        at = self._at.get(key)
        return at[0] * self._tick if at is not None else None

    def arm(self, key: int, at: float | None) -> None:
        """Fire ``key`` at the first tick at or after ``at`` (None: disarm it)."""
        filed = self._at.get(key)
        if at is None:
            if filed is not None:
                del self._at[key]
                self._discard(key, filed[1])
            return
        wanted = math.ceil(at / self._tick)
        if filed is None:
            self._file(key, wanted)
        elif wanted < filed[1]:
            self._discard(key, filed[1])
            self._file(key, wanted)
        elif wanted != filed[0]:
            self._at[key] = (wanted, filed[1])  # later: refiled when the old tick fires

    def next(self) -> float | None:
        """The earliest tick that holds a key, as a time, or None."""
        ticks, slots = self._ticks, self._slots
        while ticks:
            tick = ticks[0]
            if slots.get(tick):
                return tick * self._tick
            heapq.heappop(ticks)
            slots.pop(tick, None)
        return None

    def pop_due(self, now: float, limit: int | None = None) -> list[int]:
        """Disarm and return the keys whose tick is at or before ``now``: all of them, or at
        most ``limit`` (the rest stay due, and ``next`` still reports their tick)."""
        due: list[int] = []
        ticks, slots, filed, size = self._ticks, self._slots, self._at, self._tick
        # Compared as times, exactly as ``next`` reports them, so a runtime woken at that
        # time always finds the tick due (no float round-trip through ``now / tick``).
        while ticks and ticks[0] * size <= now:
            keys = slots[ticks[0]]
            while keys:
                if limit is not None and len(due) >= limit:
                    return due
                key = keys.pop()
                wanted = filed[key][0]
                if wanted * size <= now:
                    del filed[key]
                    due.append(key)
                else:
                    self._file(key, wanted)  # it moved later since it was filed
            del slots[heapq.heappop(ticks)]
        return due

    def _file(self, key: int, tick: int) -> None:
        self._at[key] = (tick, tick)
        keys = self._slots.get(tick)
        if keys is None:
            self._slots[tick] = {key}
            heapq.heappush(self._ticks, tick)
        else:
            keys.add(key)

    def _discard(self, key: int, tick: int) -> None:
        keys = self._slots.get(tick)
        if keys is not None:
            keys.discard(key)
