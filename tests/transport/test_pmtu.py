"""``PathMtu``: the search for the largest segment the path carries (docs/protocol.md §4.2.6)."""

from __future__ import annotations

from scaffold.transport.pmtu import MAX_PROBES, SEARCH_GRANULARITY, PathMtu

FLOOR = 1200


def searching(ceiling: int) -> PathMtu:
    pmtu = PathMtu(FLOOR, raise_interval=60.0)
    assert pmtu.set_ceiling(ceiling, 0.0) == FLOOR
    return pmtu


def lose(pmtu: PathMtu, now: float, *, heard: bool = True) -> float:
    """The outstanding probe goes out and is lost (while the peer is heard from)."""
    assert pmtu.next_probe(now, timeout=0.2)
    if heard:
        pmtu.on_heard()
    now += 0.2
    assert pmtu.on_timer(now) is not heard  # no evidence: ask for some (KEEPALIVE)
    return now


def test_the_ceiling_is_probed_first_and_confirmed_in_one_round_trip() -> None:
    pmtu = searching(65355)
    assert pmtu.next_probe(0.0, 0.2) == 65355
    assert pmtu.on_probe_ack(65355, 0.001) == 65355
    assert not pmtu.searching and pmtu.deadline is None  # at the ceiling: nothing to raise later


def test_a_refused_size_is_bisected_down_to_what_the_path_carries() -> None:
    path = 8000  # what the path really carries
    pmtu = searching(65355)
    now = 0.0
    for _ in range(40):
        candidate = pmtu.probe
        if not candidate:
            break
        if candidate <= path:
            assert pmtu.next_probe(now, 0.2) == candidate
            pmtu.on_probe_ack(candidate, now + 0.001)
        else:
            now = lose(pmtu, now)
    assert path - SEARCH_GRANULARITY < pmtu.mss <= path
    assert pmtu.deadline is not None  # the ceiling is tried again later


def test_a_candidate_is_refused_after_max_probes_lost_while_the_path_worked() -> None:
    pmtu = searching(9000)
    now = 0.0
    for _ in range(MAX_PROBES - 1):
        now = lose(pmtu, now)
        assert pmtu.probe == 9000
    now = lose(pmtu, now)
    assert pmtu.probe < 9000 and pmtu.mss == FLOOR


def test_probes_lost_in_an_outage_prove_nothing() -> None:
    pmtu = searching(9000)
    now = 0.0
    for _ in range(10):  # nothing at all gets through: the peer is not heard from
        now = lose(pmtu, now, heard=False)
    assert pmtu.probe == 9000 and pmtu.pending


def test_a_black_hole_drops_to_the_floor_and_tries_the_old_size_again() -> None:
    pmtu = searching(9000)
    pmtu.next_probe(0.0, 0.2)
    pmtu.on_probe_ack(9000, 0.01)
    assert pmtu.mss == 9000
    assert pmtu.on_black_hole(1.0) == FLOOR
    assert pmtu.probe == 9000 and pmtu.pending
    assert pmtu.on_black_hole(1.1) is None  # already at the floor


def test_a_lower_ceiling_lowers_the_mss_at_once() -> None:
    pmtu = searching(9000)
    pmtu.next_probe(0.0, 0.2)
    pmtu.on_probe_ack(9000, 0.01)
    assert pmtu.set_ceiling(4000, 1.0) == 4000
    assert pmtu.set_ceiling(100, 2.0) == FLOOR  # never below the floor


def test_no_search_when_the_ceiling_is_the_floor() -> None:
    pmtu = searching(FLOOR)
    assert not pmtu.pending and pmtu.next_probe(0.0, 0.2) == 0


def test_the_raise_timer_searches_again_from_the_ceiling() -> None:
    pmtu = searching(9000)
    now = 0.0
    while pmtu.probe:
        now = lose(pmtu, now)  # the path carries only the floor
    assert pmtu.mss == FLOOR and pmtu.deadline is not None
    pmtu.on_timer(pmtu.deadline)
    assert (pmtu.probe, pmtu.pending) == (9000, True)
