"""The issue's own example, end to end: plan -> map of searches -> wait for an approval -> combine,
durable (a store), the approval sent while the mapped items run."""
from __future__ import annotations

import asyncio

import pytest

import cleo_dask as cd


@cd.task
def plan(agent, question):
    return ["dask scheduling", "ray core", "temporal"]


@cd.task(retries=3, backoff=cd.exponential(first=1))
async def search(agent, item):
    await asyncio.sleep(0.05)
    return item.upper()


@cd.task
def combine(agent, search, approval):
    return {"answers": search, "approved": approval["approved"]}


def test_plan_map_wait_for_approval_then_combine(client, tmp_path):
    wf = cd.Workflow()
    p = wf.add(plan)
    s = wf.map(search, over=p)
    ok = wf.add_signal("approval", after=[s], timeout=3600)
    wf.add(combine, after=[s, ok])
    with cd.Engine(client=client, store=str(tmp_path / "runs.db")) as engine:
        run = engine.submit(wf, cd.Agent("planner"), inputs={"question": "which engine?"})
        engine.signal(run.id, "approval", {"approved": True})    # a workflow with maps knows its signals too
        out = run.result(timeout=60)
        assert out["search[1]"].value == "RAY CORE"
        assert list(out["search"].children) == ["search[0]", "search[1]", "search[2]"]
        assert out["combine"].value == {"answers": ["DASK SCHEDULING", "RAY CORE", "TEMPORAL"], "approved": True}
        with pytest.raises(cd.CleoError, match="already finished"):
            engine.signal(run.id, "approval", {"approved": False})
    assert out["combine"].value["approved"] is True   # read after the engine closed
