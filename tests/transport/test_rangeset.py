"""RangeSet (scaffold.transport.rangeset): examples, and properties against a set of ints."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaffold.transport.rangeset import RangeSet


def test_add_merges_overlapping_and_touching_ranges() -> None:
    ranges = RangeSet()
    ranges.add(10, 20)
    ranges.add(30, 40)
    assert list(ranges) == [(10, 20), (30, 40)]
    ranges.add(20, 25)  # touches [10, 20): one range
    assert list(ranges) == [(10, 25), (30, 40)]
    ranges.add(5, 35)  # overlaps both
    assert list(ranges) == [(5, 40)]
    ranges.add(0, 1)
    ranges.add(50, 60)
    assert list(ranges) == [(0, 1), (5, 40), (50, 60)]
    ranges.add(7, 9)  # inside: nothing changes
    ranges.add(3, 3)  # empty: ignored
    assert list(ranges) == [(0, 1), (5, 40), (50, 60)]
    assert len(ranges) == 3


def test_subtract_trims_and_splits() -> None:
    ranges = RangeSet([(0, 10), (20, 30)])
    ranges.subtract(5, 25)
    assert list(ranges) == [(0, 5), (25, 30)]
    ranges.subtract(26, 28)
    assert list(ranges) == [(0, 5), (25, 26), (28, 30)]
    ranges.subtract(-10, 100)
    assert not ranges and list(ranges) == []
    ranges.subtract(1, 2)  # from nothing


def test_contains_find_gaps_first_shift() -> None:
    ranges = RangeSet([(10, 20), (30, 40)])
    assert 10 in ranges and 19 in ranges and 20 not in ranges and 9 not in ranges
    assert ranges.find(35) == (30, 40)
    assert ranges.find(25) is None
    assert ranges.gaps(0, 50) == [(0, 10), (20, 30), (40, 50)]
    assert ranges.gaps(12, 18) == []
    assert ranges.gaps(15, 35) == [(20, 30)]
    assert ranges.first() == (10, 20)
    assert list(reversed(ranges)) == [(30, 40), (10, 20)]
    assert ranges.shift() == (10, 20)
    assert list(ranges) == [(30, 40)]
    assert ranges == RangeSet([(30, 35), (35, 40)])
    assert repr(ranges) == "RangeSet([(30, 40)])"
    ranges.clear()
    with pytest.raises(IndexError):
        ranges.first()


def members(ranges: RangeSet) -> set[int]:
    return {value for start, stop in ranges for value in range(start, stop)}


spans = st.tuples(st.integers(0, 60), st.integers(0, 12)).map(lambda t: (t[0], t[0] + t[1]))
operations = st.lists(st.tuples(st.booleans(), spans), max_size=40)


@settings(deadline=None)
@given(operations)
def test_behaves_like_a_set_of_integers(ops: list[tuple[bool, tuple[int, int]]]) -> None:
    ranges = RangeSet()
    model: set[int] = set()
    for adding, (start, stop) in ops:
        if adding:
            ranges.add(start, stop)
            model |= set(range(start, stop))
        else:
            ranges.subtract(start, stop)
            model -= set(range(start, stop))
        assert members(ranges) == model
        # canonical: sorted, non-empty, neither overlapping nor touching
        flat = [bound for block in ranges for bound in block]
        assert flat == sorted(flat) and len(set(flat)) == len(flat)
        assert all(start < stop for start, stop in ranges)
    for value in range(-2, 80):
        assert (value in ranges) == (value in model)
    gap_members = {value for start, stop in ranges.gaps(0, 75) for value in range(start, stop)}
    assert gap_members == set(range(75)) - model
