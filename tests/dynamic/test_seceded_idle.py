"""A worker whose task seceded to wait for its child counts as idle on the scheduler (it steals
and takes work), as Dask's scheduler-side queuing already has it."""
from __future__ import annotations

import time

import cleo_dask as cd


def _approval() -> cd.Workflow:
    wf = cd.Workflow("child")
    wf.add_signal("go")
    return wf


@cd.task
def waits_for_approval(agent):
    return cd.spawn(_approval()).result()["go"].value


def _parent_on_scheduler(run_id: str, dask_scheduler=None):
    """(its worker seceded it, its worker counts as idle) for the parent task of ``run_id``."""
    for key, ts in dask_scheduler.tasks.items():
        if run_id in str(key) and ts.processing_on is not None:
            ws = ts.processing_on
            return ts in ws.long_running, ws.address in dask_scheduler.idle
    return None


def test_a_worker_whose_task_waits_for_a_child_counts_as_idle(engine, agent):
    run = engine.submit(waits_for_approval, agent)
    try:
        deadline = time.time() + 15
        state = None
        while time.time() < deadline:
            state = engine.client.run_on_scheduler(_parent_on_scheduler, run.id)
            if state is not None and state[0] and state[1]:
                break
            time.sleep(0.05)
        assert state == (True, True), f"(seceded, idle) = {state}"
    finally:
        run.cancel()
