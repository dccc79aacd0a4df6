"""Building big workflows: ``from_networkx``, ``validate`` and ``compile_workflow`` of 100,000 nodes in
seconds (issue 17, item 1), a cycle deep inside still named, and the compact single-node units.

No cluster here.  The timeouts are hang guards (the old cycle check took minutes), not speed tests.
"""
from __future__ import annotations

import pickle
import random

import networkx as nx
import pytest

import cleo_dask as cd
from cleo_dask.core.compile import compile_workflow
from cleo_dask.core.nodeoutput import NodeOutput
from cleo_dask.core.plainunit import PlainUnit
from cleo_dask.core.worker import NodeCall, UnitCall, run_unit


def noop(agent, **parents):
    return None


def layered(n: int, layers: int = 100, seed: int = 0) -> nx.DiGraph:
    """``n`` nodes in ``layers`` layers, each with 1-3 parents from the layer before."""
    rng = random.Random(seed)
    width = n // layers
    g = nx.DiGraph()
    prev: list[str] = []
    for layer in range(layers):
        cur = [f"l{layer}-{i}" for i in range(width)]
        g.add_nodes_from(cur)
        for c in cur:
            if prev:
                g.add_edges_from((p, c) for p in rng.sample(prev, rng.randint(1, 3)))
        prev = cur
    return g


@pytest.mark.timeout(120)
def test_from_networkx_of_100000_nodes_builds_validates_and_compiles():
    g = layered(100_000)
    wf = cd.Workflow.from_networkx(g, dict.fromkeys(g, noop))
    wf.validate()
    compiled = compile_workflow(wf, "run1", cd.Agent("bench"))
    assert len(wf) == 100_000 and len(compiled.location) == 100_000
    assert sum(len(node.parents) for node in wf.nodes.values()) == g.number_of_edges()
    assert sum(len(names) for names in compiled.units.values()) == 100_000
    sample = random.Random(1).sample(list(compiled.units.items()), 500)
    for key, names in sample:   # each Dask task depends on its nodes' parents' tasks
        outside = {compiled.location[p][0] for n in names for p in wf.nodes[n].parents} - {key}
        assert compiled.dsk[key].dependencies == outside


@pytest.mark.timeout(120)
def test_a_cycle_deep_inside_100000_nodes_is_named():
    g = layered(100_000)
    g.add_edges_from([("l97-7", "deep-a"), ("deep-a", "deep-b"), ("deep-b", "deep-c"), ("deep-c", "deep-a"),
                      ("deep-c", "l99-3")])
    with pytest.raises(cd.WorkflowError) as err:
        cd.Workflow.from_networkx(g, dict.fromkeys(g, noop))
    assert str(err.value) == "the graph has a cycle: deep-a -> deep-b -> deep-c -> deep-a"


def top(agent):
    return 1


def side(agent, top):
    return top + 1


def join(agent, left, right):
    return left * 10 + right


def diamond() -> cd.Workflow:
    wf = cd.Workflow("diamond")
    wf.add(top)
    wf.add(side, name="left", after="top")
    wf.add(side, name="right", after="top")
    wf.add(join, after=["left", "right"])
    return wf


def test_single_node_units_are_held_compactly_and_pickle_as_unit_calls():
    wf = diamond()
    compiled = compile_workflow(wf, "r1", cd.Agent("a"))
    key = compiled.location["join"][0]
    unit = compiled.dsk[key].args[0]
    assert isinstance(unit, PlainUnit) and unit.node is wf.nodes["join"]
    shipped = pickle.loads(pickle.dumps(unit))       # what a worker receives
    assert type(shipped) is UnitCall and (shipped.run_id, shipped.key) == ("r1", key)
    (call,) = shipped.nodes
    assert type(call) is NodeCall and call.name == "join"
    assert call.inputs == (("left", 0, -1), ("right", 1, -1))   # dependency i is parent i
    deps = [compiled.dsk[key].args[2 + i].key for i in range(2)]
    assert deps == [compiled.location["left"][0], compiled.location["right"][0]]


def test_a_compact_unit_runs_like_its_unit_call():
    wf = diamond()
    compiled = compile_workflow(wf, "r1", cd.Agent("a"))
    unit = compiled.dsk[compiled.location["join"][0]].args[0]
    left, right = NodeOutput(2, "succeeded"), NodeOutput(3, "succeeded")
    here = run_unit(unit, cd.Agent("a"), left, right)
    there = run_unit(pickle.loads(pickle.dumps(unit)), cd.Agent("a"), left, right)
    assert here.value == there.value == 23 and here.status == there.status == "succeeded"


def test_nodes_taking_inputs_or_in_chains_keep_full_unit_calls():
    def start(agent, city):
        return city

    def step(agent, start):
        return start

    def last(agent, step):
        return step

    wf = cd.Workflow()
    wf.add(start)
    wf.add(step, after="start")
    wf.add(last, after="step")
    compiled = compile_workflow(wf, "r1", cd.Agent("a"), inputs={"city": "Oslo"})
    units = [t.args[0] for t in compiled.dsk.values() if hasattr(t, "args") and t.args]
    assert units and all(type(u) is UnitCall for u in units)   # a fused chain, handed the inputs


def test_validate_after_building_still_reports_workflow_level_problems():
    wf = cd.Workflow()
    with pytest.raises(cd.WorkflowError, match="the workflow has no nodes"):
        wf.validate()

    def needs(agent, city):
        return city

    wf.add(needs)
    with pytest.raises(cd.WorkflowError, match="missing input 'city'"):
        wf.validate(inputs={})


def test_a_node_after_a_fused_run_is_compact_and_reads_the_runs_last_output():
    wf = cd.Workflow()
    wf.add(top)
    wf.add(side, name="left", after="top")    # top -> left: one fused run (left is top's only child)
    wf.add(top, name="right")
    wf.add(join, after=["left", "right"])
    compiled = compile_workflow(wf, "r1", cd.Agent("a"))
    assert compiled.location["left"][1] == 1
    unit = compiled.dsk[compiled.location["join"][0]].args[0]
    assert isinstance(unit, PlainUnit)
    (call,) = pickle.loads(pickle.dumps(unit)).nodes
    assert call.inputs == (("left", 0, 1), ("right", 1, -1))
    run = (NodeOutput(1, "succeeded"), NodeOutput(2, "succeeded"))   # the fused run's outputs
    out = run_unit(unit, cd.Agent("a"), run, NodeOutput(5, "succeeded"))
    assert out.value == 25
