"""Durations learned, not declared: an engine with a store orders a run of a workflow by what its
earlier runs measured (critical-path priorities and Dask's estimates), whatever its nodes are named."""
from __future__ import annotations

import time

import pytest

import cleo_dask as cd
from cleo_dask.core.compile import compile_workflow
from cleo_dask.core.durations import learned_durations, priority_estimates


def nap(agent, **inputs):
    time.sleep(0.01)


def slow(agent, **inputs):
    time.sleep(0.3)


def work(agent, **inputs):
    time.sleep(0.01)


def anonymous() -> cd.Workflow:
    """``t_0`` fans out to a chain ``t_1 -> t_2`` and three leaves, one task function for all."""
    wf = cd.Workflow("anonymous")
    wf.add(work, name="t_0")
    wf.add(work, name="t_1", after=["t_0"])
    wf.add(work, name="t_2", after=["t_1"])
    for i in range(3, 6):
        wf.add(work, name=f"t_{i}", after=["t_0"])
    return wf


def node_priorities(compiled) -> dict[str, float]:
    return {n: compiled.priority.get(key, 0.0) for key, names in compiled.units.items() for n in names}


def test_learned_per_node_then_per_task_and_never_over_a_declared_duration():
    wf = cd.Workflow("w")
    wf.add(work, name="a")
    wf.add(work, name="b", after=["a"])
    wf.add(nap, name="c", after=["a"], duration=5.0)
    wf.add(work, name="new", after=["a"])   # not in the earlier runs: its task's mean
    past = {"a": 1.0, "b": 3.0, "c": 0.5, "gone": 9.0}
    assert learned_durations(wf, past) == {"a": 1.0, "b": 3.0, "new": 2.0}
    assert learned_durations(wf, None) == {} == learned_durations(wf, {})


def test_priorities_come_from_the_learned_durations_unless_the_caller_decides():
    wf = anonymous()
    assert priority_estimates(wf, None, {}) is None                 # nothing known: Dask's order (fair share)
    assert priority_estimates(wf, None, {"t_1": 2.0}) == {"t_1": 2.0}
    assert priority_estimates(wf, False, {"t_1": 2.0}) is None      # turned off
    assert priority_estimates(wf, {"t_3": 1.0}, {"t_1": 2.0}) == {"t_3": 1.0}   # the caller's estimates win


def test_second_run_priorities_follow_the_first_runs_measurements():
    wf = anonymous()
    before = node_priorities(compile_workflow(wf, "r1", cd.Agent("a"), fuse=False))
    assert before["t_1"] == before["t_3"]          # nothing known: no critical path
    measured = {"t_0": 0.01, "t_1": 0.3, "t_2": 0.3, "t_3": 0.01, "t_4": 0.01, "t_5": 0.01}
    compiled = compile_workflow(wf, "r2", cd.Agent("a"), fuse=False, learned=learned_durations(wf, measured))
    prio = node_priorities(compiled)
    assert prio["t_0"] > prio["t_1"] > prio["t_2"] > prio["t_3"] == prio["t_4"]
    # and Dask's estimates: every unit's known seconds (the scheduler is seeded with them)
    assert sorted(compiled.durations.values()) == pytest.approx(sorted(measured.values()))


def _priorities(keys, dask_scheduler=None):
    return {k: -dask_scheduler.tasks[k].priority[0] for k in keys}


def test_a_store_orders_the_second_run_by_the_first_runs_durations(client, tmp_path):
    wf = cd.Workflow("learned")
    wf.add(nap, name="t_0")
    wf.add(slow, name="t_1", after=["t_0"])
    for i in range(2, 5):
        wf.add(nap, name=f"t_{i}", after=["t_0"])
    with cd.Engine(client=client, store=str(tmp_path / "runs.db")) as engine:
        seen = []
        for _ in range(2):
            run = engine.submit(wf, cd.Agent("a"))
            outcome = run.result(timeout=60)
            assert outcome.ok and outcome.durable     # (durable: the first run's rows are journaled)
            futures = run.futures
            prio = client.run_on_scheduler(_priorities, [futures[n].key for n in ("t_1", "t_2")])
            seen.append((prio[futures["t_1"].key], prio[futures["t_2"].key]))
            run.release()
    (first_long, first_short), (second_long, second_short) = seen
    assert first_long == first_short                 # the first run knew nothing
    assert second_long > second_short                # the second: t_1 measured long, so it goes first


def test_nodes_learned_short_are_batched_like_nodes_declared_short():
    # one task function for all: its mean says nothing; each node's own past does
    wf = cd.Workflow("mixed")
    wf.add(work, name="root")
    for i in range(8):
        wf.add(work, name=f"quick{i}", after=["root"])
    wf.add(work, name="long", after=["root"])
    wf.add(work, name="declared", after=["root"], duration=2.0)   # a declared duration wins
    learned = {"root": 0.5, "long": 0.4, "declared": 0.001, **{f"quick{i}": 0.001 for i in range(8)}}
    before = compile_workflow(wf, "r1", cd.Agent("a"))
    assert all(len(names) == 1 for names in before.units.values())   # nothing known: nothing batched
    after = compile_workflow(wf, "r2", cd.Agent("a"), learned=learned)
    unit_of = {n: tuple(names) for names in after.units.values() for n in names}
    assert all(len(unit_of[f"quick{i}"]) > 1 for i in range(8))       # batched
    assert len(unit_of["long"]) == 1 and len(unit_of["declared"]) == 1 and len(unit_of["root"]) == 1
