"""``RangeSet``: a set of integers kept as sorted, disjoint half-open ranges ``[start, stop)``.

Used for out-of-order reassembly bookkeeping and the SACK blocks built from it
(docs/protocol.md §4.2.4). Ranges that touch are merged, so the set has one canonical form.
Every operation is a binary search plus one slice assignment.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

__all__ = ["RangeSet"]


class RangeSet:
    """Sorted disjoint ranges; ``starts[i] < stops[i] < starts[i + 1]``."""

    __slots__ = ("_starts", "_stops")

    def __init__(self, ranges: tuple[tuple[int, int], ...] | list[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        for start, stop in ranges:
            self.add(start, stop)

    def add(self, start: int, stop: int) -> None:
        """Add ``[start, stop)`` (empty ranges are ignored)."""
        if start >= stop:
            return
        starts, stops = self._starts, self._stops
        first = bisect_left(stops, start)  # first range ending at or after start: touches
        last = bisect_right(starts, stop, first)  # ranges starting at or before stop touch
        if first < last:
            start = min(start, starts[first])
            stop = max(stop, stops[last - 1])
        starts[first:last] = (start,)
        stops[first:last] = (stop,)

    def subtract(self, start: int, stop: int) -> None:
        """Remove ``[start, stop)``."""
        if start >= stop:
            return
        starts, stops = self._starts, self._stops
        first = bisect_right(stops, start)  # first range ending after start: overlaps
        last = bisect_left(starts, stop, first)  # ranges starting before stop overlap
        if first == last:
            return
        kept_starts: list[int] = []
        kept_stops: list[int] = []
        if starts[first] < start:
            kept_starts.append(starts[first])
            kept_stops.append(start)
        if stops[last - 1] > stop:
            kept_starts.append(stop)
            kept_stops.append(stops[last - 1])
        starts[first:last] = kept_starts
        stops[first:last] = kept_stops

    def gaps(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The parts of ``[start, stop)`` not in the set, in order."""
        starts, stops = self._starts, self._stops
        out: list[tuple[int, int]] = []
        position = start
        index = bisect_right(stops, start)
        while index < len(starts) and starts[index] < stop:
            if starts[index] > position:
                out.append((position, starts[index]))
            position = stops[index]
            index += 1
        if position < stop:
            out.append((position, stop))
        return out

    def find(self, value: int) -> tuple[int, int] | None:
        """The range holding ``value``, or None."""
        index = bisect_right(self._starts, value) - 1
        if index >= 0 and value < self._stops[index]:
            return self._starts[index], self._stops[index]
        return None

    def first(self) -> tuple[int, int]:
        """The lowest range. Raises IndexError when empty."""
        return self._starts[0], self._stops[0]

    def shift(self) -> tuple[int, int]:
        """Remove and return the lowest range. Raises IndexError when empty."""
        return self._starts.pop(0), self._stops.pop(0)

    def clear(self) -> None:
        self._starts.clear()
        self._stops.clear()

    def __contains__(self, value: int) -> bool:
        return self.find(value) is not None

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        """The number of ranges (not of integers)."""
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._stops, strict=True)

    def __reversed__(self) -> Iterator[tuple[int, int]]:
        return zip(reversed(self._starts), reversed(self._stops), strict=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._starts == other._starts and self._stops == other._stops

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"
