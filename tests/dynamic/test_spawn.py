"""``cd.spawn``: child runs started from inside a task, awaited (async) or waited for seceded (sync)."""
from __future__ import annotations

import time

import pytest

import cleo_dask as cd


@cd.task
def fetch(agent, topic):
    return f"pages about {topic}"


@cd.task
def summarize(agent, fetch):
    return fetch.upper()


@cd.task
async def research(agent, topic):
    child = cd.spawn(cd.Workflow.chain(fetch, summarize), inputs={"topic": topic})
    outcome = await child
    return outcome["summarize"].value


@cd.task
def research_sync(agent, topic):
    return cd.spawn(fetch, inputs={"topic": topic}).result().value


@cd.task
def wait_a_little(agent, topic):
    time.sleep(0.2)
    return topic


@cd.task
def many_sync(agent, topic):
    # each waits for a child while the cluster has only 2 worker threads: without seceding, 3 such
    # parents running at once would hold every slot and their children could never start
    return cd.spawn(wait_a_little, inputs={"topic": topic}).result().value


def test_an_async_task_awaits_a_child_workflow(engine, agent):
    out = engine.run(research, agent, topic="dask")
    assert out.status == cd.Status.SUCCEEDED, out.error
    assert out.value == "PAGES ABOUT DASK"


def test_a_sync_task_waits_for_a_child_task(engine, agent):
    assert engine.run(research_sync, agent, topic="ray").value == "pages about ray"


def test_waiting_parents_hold_no_worker_slot(engine, agent):
    wf = cd.Workflow("fan")
    for i in range(4):
        wf.add(many_sync, name=f"p{i}")
    run = engine.submit(wf, agent, inputs={"topic": "t"})
    out = run.result(timeout=60)
    assert [out[f"p{i}"].value for i in range(4)] == ["t"] * 4


@cd.task
def recurse(agent, level):
    child = cd.spawn(recurse, inputs={"level": level + 1}).result()   # a TaskResult: failures are outcomes
    return child.value if child.status == cd.Status.SUCCEEDED else f"{level + 1}: {child.error}"


def test_the_spawn_depth_is_limited(engine, agent):
    import dask
    with dask.config.set({"cleo_dask.dynamic.max-spawn-depth": 3}):
        out = engine.run(recurse, agent, level=0)
    assert out.status == cd.Status.SUCCEEDED
    assert out.value == "3: cd.spawn: a child run at depth 4 exceeds cleo_dask.dynamic.max-spawn-depth=3 " \
                        "(runs spawning runs without end?)"


def test_spawn_outside_a_task_is_a_cleo_error():
    with pytest.raises(cd.CleoError, match="only inside a task"):
        cd.spawn(fetch, inputs={"topic": "x"})
