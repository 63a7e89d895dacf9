"""Shortest paths over the backbone graph of datacenters (docs/protocol.md §6.2)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

__all__ = ["costs", "next_hops", "shortest_paths"]


def next_hops(nodes: Iterable[str], edges: Iterable[tuple[str, str, float]]) -> dict[str, dict[str, str]]:
    """For every source, the neighbour on a shortest path to every reachable destination.

    ``edges`` are undirected (a, b, cost). The result depends only on the graph, not on
    the order of ``nodes`` or ``edges`` (neighbours are explored in name order and the first
    shortest path found is kept), so every controller replica computes the same routes.
    """
    return {source: first for source, (first, _) in _shortest(nodes, edges).items()}


def costs(nodes: Iterable[str], edges: Iterable[tuple[str, str, float]]) -> dict[str, dict[str, float]]:
    """For every source, the cost of a shortest path to every reachable destination (0 to
    itself): the distances the ``nearest`` policy compares (docs/protocol.md §3.5)."""
    return {source: dist for source, (_, dist) in _shortest(nodes, edges).items()}


def shortest_paths(
    nodes: Iterable[str], edges: Iterable[tuple[str, str, float]]
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, float]]]:
    """``next_hops`` and ``costs`` at once, from one Dijkstra per source (a thousand
    datacenters: a million pairs, computed once)."""
    both = _shortest(nodes, edges)
    return (
        {source: first for source, (first, _) in both.items()},
        {source: dist for source, (_, dist) in both.items()},
    )


def _shortest(
    nodes: Iterable[str], edges: Iterable[tuple[str, str, float]]
) -> dict[str, tuple[dict[str, str], dict[str, float]]]:
    """Dijkstra from every node: (first hop, distance) to every reachable destination."""
    graph: dict[str, list[tuple[float, str]]] = {n: [] for n in nodes}
    for a, b, cost in edges:
        graph.setdefault(a, []).append((cost, b))
        graph.setdefault(b, []).append((cost, a))
    for neighbours in graph.values():
        neighbours.sort()  # explored by cost, then name: once, not at every visit
    result: dict[str, tuple[dict[str, str], dict[str, float]]] = {}
    for source in graph:
        first: dict[str, str] = {}
        dist = {source: 0.0}
        final: dict[str, float] = {}
        heap: list[tuple[float, str, str]] = [(0.0, "", source)]
        while heap:
            d, via, node = heapq.heappop(heap)
            if node in final:
                continue
            final[node] = d
            if node != source:
                first[node] = via
            for cost, neighbour in graph[node]:
                nd = d + cost
                hop = via or neighbour
                if neighbour not in dist or nd < dist[neighbour]:
                    dist[neighbour] = nd
                    heapq.heappush(heap, (nd, hop, neighbour))
        result[source] = (first, final)
    return result
