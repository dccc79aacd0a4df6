"""How a workflow's nodes fuse into units (one Dask task per unit) and how compiled runs merge into
one graph: pure compilation, no cluster."""
from __future__ import annotations

import random

import pytest

import cleo_dask as cd
from cleo_dask.core.compile import Compiled, Defaults, child_counts, compile_workflow, fusable, plan_units


@cd.task
def step(agent, **parents):
    return 1


@cd.task
async def step_async(agent, **parents):
    return 1


def build(edges: dict[str, list[str]], **options: dict) -> cd.Workflow:
    """A workflow of ``step`` nodes: ``{node: [parents]}`` in a topological order; ``options[node]``
    overrides that node's task options (``retries=``, ``io_bound=``...)."""
    wf = cd.Workflow()
    for name, parents in edges.items():
        wf.add(options.get(name, {}).pop("task", step), name=name, after=parents, **options.get(name, {}))
    return wf


def units(wf: cd.Workflow, names=None, defaults: Defaults = Defaults(), fuse: bool = True) -> list[list[str]]:
    return plan_units(wf, list(wf.nodes) if names is None else names, defaults, fuse)


def test_a_chain_is_one_unit():
    wf = build({"a": [], "b": ["a"], "c": ["b"]})
    assert units(wf) == [["a", "b", "c"]]


def test_fan_out_and_fan_in_break_units_and_a_chain_after_them_fuses_again():
    #  a -> b -> d -> e -> f
    #  a -> c -> d
    wf = build({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"], "f": ["e"]})
    assert units(wf) == [["a"], ["b"], ["c"], ["d", "e", "f"]]


def test_fuse_false_gives_every_node_its_own_unit():
    wf = build({"a": [], "b": ["a"], "c": ["b"]})
    assert units(wf, fuse=False) == [["a"], ["b"], ["c"]]


def test_nodes_with_retries_are_not_fused():
    # any retry reruns the whole Dask task, so a retried node is a unit of its own
    wf = build({"a": [], "b": ["a"], "c": ["b"], "d": ["c"]}, b={"retries": 1})
    assert units(wf) == [["a"], ["b"], ["c", "d"]]
    # the engine's default retries count too, unless a task sets retries=0 itself
    wf = build({"a": [], "b": ["a"], "c": ["b"]}, b={"retries": 0}, c={"retries": 0})
    assert units(wf, defaults=Defaults(retries=2)) == [["a"], ["b", "c"]]


@pytest.mark.parametrize("options, why", [
    ({"task": step_async}, "async after sync"),
    ({"io_bound": True}, "io_bound after not"),
    ({"rate_limit": "5/s"}, "rate limited"),
])
def test_tasks_that_run_differently_are_not_fused(options, why):
    wf = build({"a": [], "b": ["a"]}, b=options)
    assert units(wf) == [["a"], ["b"]], why
    assert not fusable(wf.nodes["a"], wf.nodes["b"], {"a": ["b"], "b": []}, Defaults())


def test_two_io_bound_tasks_fuse():
    wf = build({"a": [], "b": ["a"]}, a={"io_bound": True}, b={"io_bound": True})
    assert units(wf) == [["a", "b"]]


def test_a_subset_fuses_only_among_its_own_nodes():
    # resubmitting part of a run: a parent outside the subset starts a new unit
    wf = build({"a": [], "b": ["a"], "c": ["b"], "d": ["c"]})
    assert units(wf, ["b", "c", "d"]) == [["b", "c", "d"]]
    assert units(wf, ["a", "c", "d"]) == [["a"], ["c", "d"]]


def random_dag(seed: int, size: int = 40) -> dict[str, list[str]]:
    rng = random.Random(seed)
    edges: dict[str, list[str]] = {}
    for i in range(size):
        earlier = list(edges)
        k = rng.choice([0, 1, 1, 1, 2]) if earlier else 0
        edges[f"n{i}"] = rng.sample(earlier, min(k, len(earlier)))
    return edges


@pytest.mark.parametrize("seed", range(8))
def test_units_are_maximal_linear_runs_of_a_random_dag(seed):
    rng = random.Random(seed)
    edges = random_dag(seed)
    wf = build(edges, **{n: {"retries": 1} for n in edges if rng.random() < 0.2})
    names = [n for n in edges if rng.random() < 0.8]        # a topologically ordered subset
    planned = units(wf, names)
    assert sorted(n for unit in planned for n in unit) == sorted(names)   # every node once
    heads = [unit[0] for unit in planned]
    assert heads == [n for n in names if n in heads]        # units in the order of their first node
    counts, defaults = child_counts(wf), Defaults()
    last_of = {unit[-1] for unit in planned}
    for unit in planned:
        for before, after in zip(unit, unit[1:]):           # each link: only child of an only parent
            assert wf.nodes[after].parents == (before,) and counts[before] == 1
            assert fusable(wf.nodes[before], wf.nodes[after], {before: [after]}, defaults)
        head = wf.nodes[unit[0]]                            # ...and no unit could have grown
        if len(head.parents) == 1 and head.parents[0] in last_of and counts[head.parents[0]] == 1:
            assert not fusable(wf.nodes[head.parents[0]], head, {head.parents[0]: [unit[0]]}, defaults)


def test_a_compiled_chain_is_one_task_and_each_node_keeps_its_place():
    wf = build({"a": [], "b": ["a"], "c": ["b"], "d": ["a"]})
    compiled = compile_workflow(wf, "r1", cd.Agent("x"))
    # keys: the task's name (Dask's group), the run id, the unit's first node
    assert compiled.units == {"step-r1-a": ("a",), "step-r1-b": ("b", "c"), "step-r1-d": ("d",)}
    assert compiled.location == {"a": ("step-r1-a", -1), "b": ("step-r1-b", 0), "c": ("step-r1-b", 1),
                                 "d": ("step-r1-d", -1)}
    assert set(compiled.dsk) == set(compiled.units) == set(compiled.keys)


def test_merge_is_one_graph_of_several_runs():
    wf = build({"a": [], "b": ["a"]}, b={"retries": 2, "rate_limit": "5/s"})
    one = compile_workflow(wf, "r1", cd.Agent("x"), priority=3)
    two = compile_workflow(wf, "r2", cd.Agent("y"), critical_path={"a": 1.0, "b": 2.0})
    merged = Compiled.merge([one, two])
    assert merged.keys == one.keys + two.keys
    assert merged.dsk == {**one.dsk, **two.dsk} and merged.units == {**one.units, **two.units}
    assert merged.retries == {"step-r1-b": 2, "step-r2-b": 2}
    assert merged.priority == {**one.priority, **two.priority} and set(merged.priority) == set(merged.keys)
    assert merged.admission == {**one.admission, **two.admission} and set(merged.admission) == {"step-r1-b", "step-r2-b"}
    assert merged.durations == two.durations == {"step-r2-a": 1.0, "step-r2-b": 2.0}
    assert merged.location == {} and merged.agent_key is None   # node locations stay per run
    # the HighLevelGraph carries each run's annotations per key
    layer = merged.graph().layers["cleo"]
    assert set(layer) == set(merged.keys)
    assert layer.annotations["retries"]("step-r2-b") == 2 and layer.annotations["retries"]("step-r1-a") == 0
    assert layer.annotations["priority"]("step-r1-a") == 3


def test_merge_of_one_part_is_that_part():
    wf = build({"a": [], "b": ["a"]})
    only = compile_workflow(wf, "r1", cd.Agent("x"))
    assert Compiled.merge([only]) is only
