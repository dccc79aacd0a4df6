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


def _log(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


@cd.task
def child_logs(agent, n):
    _log(agent.config["log"], f"child-{n}")
    return n * 10


@cd.task
def parent_fails_once(agent):
    first = cd.spawn(child_logs, inputs={"n": 1}).result()
    _log(agent.config["log"], "parent")
    if open(agent.config["log"]).read().count("parent") == 1:
        raise RuntimeError("the parent dies after its first child")
    return first.value + cd.spawn(child_logs, inputs={"n": 2}).result().value


def test_a_resumed_durable_parent_keeps_its_finished_children(client, tmp_path):
    log = tmp_path / "exec.log"
    agent = cd.Agent("durable", config={"log": str(log)})
    with cd.Engine(client=client, store=tmp_path / "runs.db") as engine:
        run = engine.submit(parent_fails_once, agent)
        assert run.result(timeout=60)["parent_fails_once"].status == cd.Status.FAILED
        again = engine.resume(run.id).result(timeout=60)
    assert again["parent_fails_once"].value == 30
    assert log.read_text().split() == ["child-1", "parent", "parent", "child-2"]   # child 1 ran once


@cd.task
def blocks(agent, seconds):
    time.sleep(seconds)
    return seconds


@cd.task
async def waits_for_a_long_child(agent):
    child = cd.spawn(blocks, inputs={"seconds": 3})
    return (await child).value


def test_cancelling_the_parent_cancels_its_children(engine, agent):
    run = engine.submit(waits_for_a_long_child, agent)
    deadline = time.time() + 30
    from cleo_dask.dynamic.spawn import worker_engine  # noqa: F401 - the children's engine lives on the workers
    children = []
    while not children and time.time() < deadline:
        children = [r for e in _worker_engines() for r in e.runs_in_memory.values()
                    if getattr(r, "parent", (None,))[0] == run.id]
        time.sleep(0.05)
    assert children, "no child run started"
    assert children[0].parent == (run.id, "waits_for_a_long_child") and children[0].depth == 1
    run.cancel()
    assert children[0].wait(timeout=30)
    assert children[0].status() == "cancelled"


def _worker_engines():
    from cleo_dask.dynamic import spawn as sp
    return list(sp.worker_engines())
