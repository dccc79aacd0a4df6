"""A graph's topological order in linear time, or one of its cycles (named node by node).

``networkx.find_cycle`` restarts a depth-first search from every root and re-walks what earlier
searches reached, which is quadratic on DAGs with many roots (100,000 nodes took minutes).  Kahn's
algorithm orders the graph in one pass; only when it cannot finish is a cycle looked for, among the
nodes it left (each of them has a predecessor among them, so walking predecessors finds one).
"""
from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Any

import networkx as nx


class CycleFound(Exception):
    """The graph is not a DAG; ``cycle`` lists one cycle's nodes in edge order (first not repeated)."""

    def __init__(self, cycle: list[Hashable]):
        super().__init__(cycle)
        self.cycle = cycle


def topological_order(graph: nx.DiGraph, lexicographic: bool) -> list[Any]:
    """``graph``'s nodes in a topological order, or :class:`CycleFound`.

    ``lexicographic`` (nodes must be mutually comparable, e.g. strings): the order of
    ``nx.lexicographical_topological_sort(graph)``, the smallest ready node first; otherwise the
    order of ``nx.topological_sort(graph)`` (generation by generation).
    """
    succ = dict(graph.adjacency())        # node -> its successors (networkx's own dicts, not copied)
    # distinct predecessors: a multigraph's parallel edges count once
    indeg = {n: len(preds) for n, preds in nx.reverse_view(graph).adjacency()}
    ready = [n for n, d in indeg.items() if d == 0]
    order: list[Any] = []
    if lexicographic:
        heapq.heapify(ready)
        pop, push = heapq.heappop, heapq.heappush
        while ready:
            n = pop(ready)
            order.append(n)
            for c in succ[n]:
                d = indeg[c] = indeg[c] - 1
                if not d:
                    push(ready, c)
    else:
        while ready:
            generation, ready = ready, []
            order.extend(generation)
            for n in generation:
                for c in succ[n]:
                    d = indeg[c] = indeg[c] - 1
                    if not d:
                        ready.append(c)
    if len(order) < len(indeg):
        raise CycleFound(_cycle_among(graph, [n for n, d in indeg.items() if d]))
    return order


def _cycle_among(graph: nx.DiGraph, left: list[Any]) -> list[Any]:
    """A cycle among ``left``: the nodes Kahn's algorithm could not order (each has a predecessor
    among them), found by walking predecessors from the first; it starts at its node that comes
    first in the graph's node order."""
    inside = set(left)
    step: dict[Any, int] = {}
    path: list[Any] = []
    n = left[0]
    while n not in step:
        step[n] = len(path)
        path.append(n)
        n = next(p for p in graph.predecessors(n) if p in inside)
    cycle = path[step[n]:][::-1]          # walked backwards: reversed, it follows the edges
    rank = {m: i for i, m in enumerate(left)}
    first = min(range(len(cycle)), key=lambda i: rank[cycle[i]])
    return cycle[first:] + cycle[:first]
