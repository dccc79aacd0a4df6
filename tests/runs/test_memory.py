"""A long-lived engine keeps flat memory (issue 15 item 1): a finished run the user dropped leaves
nothing behind, on the client, on the scheduler (tasks, event topics, plugin state) or the workers."""
from __future__ import annotations

import gc
import time
import weakref

import pytest

import cleo_dask as cd
from cleo_dask.runs.forget import topic_count


@cd.task
def step(agent, **parents):
    return len(parents)


def five_nodes() -> cd.Workflow:
    wf = cd.Workflow("five")
    wf.add(step, name="a")
    wf.add(step, name="b", after=["a"])
    wf.add(step, name="c", after=["a"])
    wf.add(step, name="d", after=["b", "c"])
    wf.add(step, name="e", after=["d"])
    return wf


def _scheduler_state(dask_scheduler=None):
    monitor = dask_scheduler.plugins.get("cleo-monitor")
    return {"tasks": len(dask_scheduler.tasks), "topics": topic_count(dask_scheduler),
            "early": len(monitor.early) if monitor is not None else 0}


def _state(engine) -> dict:
    client = engine.client
    return {**client.run_on_scheduler(_scheduler_state), "handlers": len(client._event_handlers),
            "futures": len(client.futures), "runs": len(engine.runs_in_memory)}


def _settles_to(engine, baseline: dict, timeout: float = 20) -> dict:
    deadline = time.time() + timeout
    while True:
        now = _state(engine)
        if now == baseline or time.time() > deadline:
            return now
        time.sleep(0.1)


@pytest.mark.slow
def test_the_scheduler_and_client_return_to_their_baseline_after_200_runs(engine, agent):
    wf = five_nodes()
    engine.submit(wf, agent).result()   # warm-up: the RETIRED handler, prefixes, plugins
    deadline = time.time() + 10
    while _state(engine)["runs"] and time.time() < deadline:  # the warm-up run finishing
        time.sleep(0.05)
    time.sleep(0.2)
    baseline = _state(engine)
    for _ in range(50):
        out = engine.submit(wf, agent).result()
        assert out["e"].value == 1
    for _ in range(3):
        runs = engine.submit_many([{"target": wf, "agent": agent} for _ in range(50)])
        assert all(r.result().ok for r in runs)
    del out, runs
    assert _settles_to(engine, baseline) == baseline


def test_a_dropped_run_is_freed_without_waiting_for_a_garbage_collection(engine, agent):
    wf = five_nodes()
    gc.disable()
    try:
        run = engine.submit(wf, agent)
        assert run.result().values_by_node()["e"] == 1
        ref = weakref.ref(run)
        del run
        deadline = time.time() + 10
        while ref() is not None and time.time() < deadline:
            time.sleep(0.05)
        assert ref() is None
    finally:
        gc.enable()


def test_events_of_a_finished_run_stay_readable_from_the_run(engine, agent):
    @cd.task(retries=1)
    def flaky(agent):
        flaky_calls.append(1)
        if len(flaky_calls) == 1:
            raise ValueError("once")
        return "ok"

    flaky_calls: list[int] = []
    run = engine.submit(flaky, agent)
    assert run.result()["flaky"].value == "ok"
    deadline = time.time() + 10
    while not run._sealed and time.time() < deadline:
        time.sleep(0.05)
    assert "attempt" in [m["kind"] for _, m in run.events()]   # kept by the run: its topic is gone
    assert len(run.result()["flaky"].attempts) == 2   # an outcome built again reads them there
