"""Critical-path priorities: known (``duration=``) or estimated (a mapping) durations become
bottom-level ``priority`` annotations that the Dask scheduler really uses."""
from __future__ import annotations

import time

import pytest
from distributed import Client, LocalCluster

import cleo_dask as cd
from cleo_dask.core.compile import compile_workflow
from cleo_dask.core.critical import bottom_levels


def nap(agent, **inputs):
    time.sleep(0.05)


def fan(durations: dict[str, float] | None = None) -> cd.Workflow:
    """root -> (long -> long2) and five short leaves."""
    d = durations or {}
    wf = cd.Workflow("fan")
    wf.add(nap, name="root", duration=d.get("root"))
    wf.add(nap, name="long", after=["root"], duration=d.get("long"))
    wf.add(nap, name="long2", after=["long"], duration=d.get("long2"))
    for i in range(5):
        wf.add(nap, name=f"short{i}", after=["root"], duration=d.get(f"short{i}"))
    return wf


def test_bottom_levels_use_estimates_then_declared_durations_then_their_mean():
    wf = fan({"root": 1.0, "long": 5.0, "short0": 3.0})
    levels = bottom_levels(wf, durations={"long2": 2.0})
    assert levels["long2"] == 2.0 and levels["long"] == 7.0 and levels["root"] == 8.0
    assert levels["short1"] == pytest.approx((1 + 5 + 3 + 2) / 4)   # unknown: the mean of the known ones
    assert levels["short0"] == 3.0


def test_estimated_durations_mapping_sets_priorities_and_is_checked():
    wf = fan()
    compiled = compile_workflow(wf, "r1", cd.Agent("a"), critical_path={"long": 10.0, "short0": 1.0}, fuse=False)
    prio = {compiled.units[k][0]: p for k, p in compiled.priority.items()}
    assert prio["root"] > prio["long"] > prio["short0"]
    with pytest.raises(cd.WorkflowError, match="unknown nodes"):
        compile_workflow(wf, "r2", cd.Agent("a"), critical_path={"nope": 1.0})
    with pytest.raises(cd.WorkflowError, match=">= 0"):
        compile_workflow(wf, "r3", cd.Agent("a"), critical_path={"long": -1})


def test_scheduler_runs_the_longest_path_first_on_one_slot():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as lc, \
            Client(lc, set_as_default=False) as client, cd.Engine(client=client) as engine:
        wf = fan()
        estimates = {"long": 5.0, "long2": 5.0, **{f"short{i}": 0.1 for i in range(5)}}
        outcome = engine.submit(wf, cd.Agent("a"), critical_path=estimates).result(timeout=60)
        order = sorted(outcome, key=lambda n: outcome[n].start)
        assert order[:3] == ["root", "long", "long2"], order
        # declared durations do the same, without passing anything at submission
        declared = fan({"root": 0.1, "long": 5.0, "long2": 5.0, **{f"short{i}": 0.1 for i in range(5)}})
        outcome = engine.submit(declared, cd.Agent("a")).result(timeout=60)
        assert sorted(outcome, key=lambda n: outcome[n].start)[:3] == ["root", "long", "long2"]


def test_declared_durations_become_the_schedulers_first_estimates(engine, client, agent):
    from cleo_dask.admission.estimates import prefix_durations

    assert prefix_durations({"fetch-0123456789abcdef-a": 1.0, "fetch-0123456789abcdef-b": 3.0,
                             "parse-0123456789abcdef-c": 0.5}) == {"fetch": 2.0, "parse": 0.5}

    def slow_step(agent):
        time.sleep(0.01)

    def quick_step(agent):
        return "done"

    wf = cd.Workflow("estimates")
    wf.add(slow_step, duration=7.0)
    wf.add(quick_step, duration=0.25)

    def estimates(dask_scheduler=None):
        return {n: p.duration_average for n, p in dask_scheduler.task_prefixes.items()
                if n in ("slow_step", "quick_step")}

    assert engine.submit(wf, agent).result()["quick_step"].value == "done"
    # set before the graph arrived (Dask would guess 0.5 s); its own measurement then blends in
    seen = client.run_on_scheduler(estimates)
    assert 3.5 <= seen["slow_step"] <= 7.0 and seen["quick_step"] <= 0.25
