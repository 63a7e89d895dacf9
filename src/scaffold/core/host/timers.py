"""Deadlines by key in a heap, so a host's next timer is found without looking at every flow.

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
"""

from __future__ import annotations

import heapq

__all__ = ["DeadlineHeap"]

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
