"""Backbone shortest paths (scaffold.core.routing, docs/protocol.md §6.2)."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scaffold.core.routing import next_hops

Edge = tuple[str, str, float]


def test_triangle_takes_the_cheaper_two_hop_path() -> None:
    # a-c directly costs 5, a-b-c costs 2
    routes = next_hops(["a", "b", "c"], [("a", "b", 1.0), ("b", "c", 1.0), ("a", "c", 5.0)])
    assert routes["a"] == {"b": "b", "c": "b"}
    assert routes["c"] == {"a": "b", "b": "b"}
    assert routes["b"] == {"a": "a", "c": "c"}


def test_triangle_takes_the_direct_link_when_cheaper() -> None:
    routes = next_hops(["a", "b", "c"], [("a", "b", 3.0), ("b", "c", 3.0), ("a", "c", 5.0)])
    assert routes["a"] == {"b": "b", "c": "c"}
    assert routes["b"] == {"a": "a", "c": "c"}


def test_triangle_reroutes_when_an_edge_is_absent() -> None:
    full = [("a", "b", 1.0), ("b", "c", 1.0), ("a", "c", 5.0)]
    without_ab = [e for e in full if e[:2] != ("a", "b")]
    routes = next_hops(["a", "b", "c"], without_ab)
    assert routes["a"] == {"c": "c", "b": "c"}
    assert routes["b"] == {"c": "c", "a": "c"}


def test_line_routes_through_the_middle() -> None:
    routes = next_hops(["a", "b", "c", "d"], [("a", "b", 1.0), ("b", "c", 1.0), ("c", "d", 1.0)])
    assert routes["a"] == {"b": "b", "c": "b", "d": "b"}
    assert routes["d"] == {"c": "c", "b": "c", "a": "c"}
    assert routes["b"] == {"a": "a", "c": "c", "d": "c"}


def test_line_with_a_cut_omits_the_far_side() -> None:
    routes = next_hops(["a", "b", "c", "d"], [("a", "b", 1.0), ("c", "d", 1.0)])
    assert routes["a"] == {"b": "b"}
    assert routes["b"] == {"a": "a"}
    assert routes["c"] == {"d": "d"}
    assert routes["d"] == {"c": "c"}


def test_isolated_node_has_no_routes_and_is_no_destination() -> None:
    routes = next_hops(["a", "b", "lonely"], [("a", "b", 1.0)])
    assert routes["lonely"] == {}
    assert "lonely" not in routes["a"]
    assert "a" not in routes["a"]  # no route to oneself
    assert set(routes) == {"a", "b", "lonely"}


def test_nodes_named_only_by_edges_are_included() -> None:
    routes = next_hops([], [("a", "b", 1.0)])
    assert routes == {"a": {"b": "b"}, "b": {"a": "a"}}


def test_empty_graph() -> None:
    assert next_hops([], []) == {}


def test_parallel_edges_use_the_cheapest() -> None:
    routes = next_hops(["a", "b", "c"], [("a", "c", 9.0), ("a", "c", 1.0), ("a", "b", 2.0)])
    assert routes["b"] == {"a": "a", "c": "a"}
    assert routes["a"] == {"b": "b", "c": "c"}


def test_equal_cost_tie_is_broken_by_name() -> None:
    # a square: s-x-t and s-y-t cost the same; the alphabetically first neighbour wins,
    # whatever the order of the inputs
    edges = [("s", "x", 1.0), ("x", "t", 1.0), ("s", "y", 1.0), ("y", "t", 1.0)]
    for perm in itertools.permutations(edges):
        assert next_hops(["t", "y", "x", "s"], perm)["s"]["t"] == "x"
    renamed = [("s", "b", 1.0), ("b", "t", 1.0), ("s", "a", 1.0), ("a", "t", 1.0)]
    assert next_hops(["s", "a", "b", "t"], renamed)["s"]["t"] == "a"


def test_routes_do_not_depend_on_input_order() -> None:
    rng = random.Random(5)
    names = [f"dc{i}" for i in range(8)]
    edges: list[Edge] = [
        (a, b, float(rng.choice([1, 2]))) for a, b in itertools.combinations(names, 2) if rng.random() < 0.5
    ]
    reference = next_hops(names, edges)
    for _ in range(20):
        shuffled_names = names[:]
        rng.shuffle(shuffled_names)
        shuffled_edges = [(b, a, c) if rng.random() < 0.5 else (a, b, c) for a, b, c in edges]
        rng.shuffle(shuffled_edges)
        assert next_hops(shuffled_names, shuffled_edges) == reference


def _all_pairs(names: list[str], edges: list[Edge]) -> dict[tuple[str, str], float]:
    """Floyd-Warshall: the reference shortest distances."""
    inf = float("inf")
    dist = {(a, b): (0.0 if a == b else inf) for a in names for b in names}
    for a, b, cost in edges:
        dist[a, b] = min(dist[a, b], cost)
        dist[b, a] = min(dist[b, a], cost)
    for k in names:
        for i in names:
            for j in names:
                dist[i, j] = min(dist[i, j], dist[i, k] + dist[k, j])
    return dist


NAMES = [f"n{i}" for i in range(7)]


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[str], list[Edge]]:
    names = NAMES[: draw(st.integers(1, len(NAMES)))]
    pairs = list(itertools.combinations(names, 2))
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    # integer costs keep float sums exact, so "shortest" has one meaning
    edges = [(a, b, float(draw(st.integers(1, 5)))) for a, b in chosen]
    return names, edges


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_next_hop_lies_on_a_shortest_path(graph: tuple[list[str], list[Edge]]) -> None:
    names, edges = graph
    dist = _all_pairs(names, edges)
    cost = {}
    for a, b, c in edges:
        cost[a, b] = cost[b, a] = c
    routes = next_hops(names, edges)
    assert set(routes) == set(names)
    for src in names:
        reachable = {d for d in names if d != src and dist[src, d] < float("inf")}
        assert set(routes[src]) == reachable
        for dst, hop in routes[src].items():
            assert (src, hop) in cost, f"{hop} is not a neighbour of {src}"
            assert cost[src, hop] + dist[hop, dst] == dist[src, dst], (src, dst, hop)
