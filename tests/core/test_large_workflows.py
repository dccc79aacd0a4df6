"""Big workflows before the cluster: building, validating and compiling are linear in nodes + edges.

No cluster here: ``compile_workflow`` only builds the Dask graph.  The time bounds are hang guards
(the old cycle check took more than 10 minutes on 100,000 nodes), not speed benchmarks.
"""
from __future__ import annotations

import random
import time

import networkx as nx
import pytest

import cleo_dask as cd
from cleo_dask.core.compile import compile_workflow


def noop(agent, **parents):
    return None


def layered(n: int, layers: int = 100, seed: int = 0, name=str) -> nx.DiGraph:
    """``n`` nodes in ``layers`` layers, each node with 1-3 parents from the layer before (the first
    layer: ``n / layers`` roots)."""
    rng = random.Random(seed)
    width = n // layers
    g = nx.DiGraph()
    prev: list = []
    for layer in range(layers):
        cur = [name(f"l{layer}-{i}") if name is str else layer * width + i for i in range(width)]
        g.add_nodes_from(cur)
        for c in cur:
            if prev:
                g.add_edges_from((p, c) for p in rng.sample(prev, rng.randint(1, 3)))
        prev = cur
    return g


@pytest.mark.slow
def test_from_networkx_of_100000_nodes_with_many_roots_finishes():
    g = layered(100_000)
    t0 = time.perf_counter()
    wf = cd.Workflow.from_networkx(g, dict.fromkeys(g, noop))
    wf.validate()
    assert time.perf_counter() - t0 < 30   # a hang guard: minutes before
    assert len(wf) == 100_000
    assert sum(len(node.parents) for node in wf.nodes.values()) == g.number_of_edges()
    assert sum(1 for node in wf.nodes.values() if not node.parents) == 1000


@pytest.mark.parametrize("name", [str, int])
def test_nodes_come_in_networkx_order(name):
    """String names: the lexicographic topological order (smallest ready name first); other names:
    networkx's topological order, as before."""
    g = layered(5_000, layers=50, seed=1, name=name)
    wf = cd.Workflow.from_networkx(g, dict.fromkeys(g, noop))
    expected = nx.lexicographical_topological_sort(g, key=str) if name is str else nx.topological_sort(g)
    assert list(wf.nodes) == [str(n) for n in expected]


@pytest.mark.slow
def test_a_cycle_deep_inside_a_big_graph_is_named_exactly():
    g = layered(100_000)
    g.add_edges_from([("l98-7", "deep-a"), ("deep-a", "deep-b"), ("deep-b", "deep-c"), ("deep-c", "deep-a"),
                      ("deep-c", "after-the-cycle")])
    t0 = time.perf_counter()
    with pytest.raises(cd.WorkflowError) as err:
        cd.Workflow.from_networkx(g, dict.fromkeys(g, noop))
    assert time.perf_counter() - t0 < 30   # a hang guard
    assert str(err.value) == "the graph has a cycle: deep-a -> deep-b -> deep-c -> deep-a"


def test_a_back_edge_across_layers_names_a_cycle_through_it():
    g = layered(20_000)
    sink = "l99-5"
    grandparent = next(iter(g.predecessors(next(iter(g.predecessors(sink))))))
    g.add_edge(sink, grandparent)
    with pytest.raises(cd.WorkflowError, match="the graph has a cycle: ") as err:
        cd.Workflow.from_networkx(g, dict.fromkeys(g, noop))
    cycle = str(err.value).split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1] and len(set(cycle[:-1])) == len(cycle) - 1
    assert all(g.has_edge(u, v) for u, v in zip(cycle, cycle[1:]))
    assert (sink, grandparent) in set(zip(cycle, cycle[1:]))


def test_a_cycle_of_integer_nodes_is_named():
    g = nx.DiGraph([(1, 2), (2, 3), (3, 4), (4, 2), (0, 1)])
    with pytest.raises(cd.WorkflowError, match=r"^the graph has a cycle: 2 -> 3 -> 4 -> 2$"):
        cd.Workflow.from_networkx(g, dict.fromkeys(g, noop))


@pytest.mark.slow
def test_compile_of_100000_nodes_without_a_cluster():
    g = layered(100_000)
    wf = cd.Workflow.from_networkx(g, dict.fromkeys(g, noop))
    compiled = compile_workflow(wf, "run1", cd.Agent("bench"))
    assert set(compiled.location) == set(wf.nodes)
    assert sum(len(names) for names in compiled.units.values()) == 100_000
    for key, names in compiled.units.items():   # each Dask task depends on its nodes' parents' tasks
        outside = {compiled.location[p][0] for n in names for p in wf.nodes[n].parents} - {key}
        assert compiled.dsk[key].dependencies == outside


def test_descendants_in_topological_order_few_or_many():
    g = layered(20_000)
    wf = cd.Workflow.from_networkx(g, dict.fromkeys(g, noop))
    position = {n: i for i, n in enumerate(wf.nodes)}
    for start in (["l97-3"], ["l0-1", "l0-2"]):   # a few nodes below; most of the graph below
        expected = sorted(set().union(*(nx.descendants(g, s) for s in start)), key=position.__getitem__)
        assert wf.descendants(start) == expected
    assert wf.descendants(["l99-0"]) == []
    wf.add(noop, name="late", after=["l99-0"])   # a node added later is seen
    assert wf.descendants(["l99-0"]) == ["late"]


def test_descendants_can_stop_at_settled_nodes():
    # a -> b -> d, a -> c -> d -> e: with b settled, d is still reached through c; with b and c, nothing
    wf = cd.Workflow()
    wf.add(noop, name="a")
    wf.add(noop, name="b", after=["a"])
    wf.add(noop, name="c", after=["a"])
    wf.add(noop, name="d", after=["b", "c"])
    wf.add(noop, name="e", after=["d"])
    assert wf.descendants(["a"], avoid={"b"}) == ["c", "d", "e"]
    assert wf.descendants(["a"], avoid={"b", "c"}) == []
    assert wf.descendants(["a"]) == ["b", "c", "d", "e"]
