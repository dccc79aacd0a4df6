"""Agents that decide at run time (issue 19): what a mapped node costs against a static workflow.

``--map``: 100 agents (one run each, sent together with ``submit_many``), each ``plan`` -> a map of
100 async calls of 50 ms (``asyncio.sleep``) -> ``combine``: 10,000 nodes made at run time.  The
same workflow written statically (``plan`` -> 100 ``search_i`` nodes, each reading element ``i``
-> ``combine``) runs on the same cluster, the two alternating; the figure is the median makespan
of each and their ratio (target: dynamic <= 1.2x static).

    python -m benchmarks.dynamic --map [--agents N] [--items N] [--reps N] [--tiny] [--json FILE]

``--spawn`` (per-child overhead of child runs) and ``--waits`` (waits beside a CPU workflow) are in
:mod:`benchmarks.dynamic_children`; ``python -m benchmarks.dynamic --spawn`` / ``--waits`` run them.
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import dask

import cleo_dask as cd
from cleo_dask.admission.cluster_needs import scheduler_settings

from . import _harness as h

CALL_S = 0.05


def plan(agent: Any, items: int = 100) -> list[str]:
    """The planner: ``items`` sub-questions."""
    return [f"question {i}" for i in range(items)]


async def search(agent: Any, item: str) -> int:
    """One call of 50 ms per element."""
    await asyncio.sleep(CALL_S)
    return len(item)


def combine(agent: Any, search: list[int]) -> int:
    """The answers combined."""
    return sum(search)


class StaticSearch:
    """The static stand-in for item ``i``: reads element ``i`` of the plan itself."""

    def __init__(self, i: int):
        self.i = i

    async def __call__(self, agent: Any, plan: list[str]) -> int:
        return await search(agent, plan[self.i])


def static_combine(agent: Any, **answers: int) -> int:
    """``combine`` over the static nodes' results."""
    return combine(agent, list(answers.values()))


def dynamic_workflow() -> cd.Workflow:
    """plan -> map(search) -> combine."""
    wf = cd.Workflow("dynamic")
    p = wf.add(cd.task(plan))
    s = wf.map(cd.task(search), over=p)
    wf.add(cd.task(combine), after=[s])
    return wf


def static_workflow(items: int) -> cd.Workflow:
    """plan -> search_0 .. search_{items-1} -> combine, fixed before submission."""
    wf = cd.Workflow("static")
    p = wf.add(cd.task(plan))
    names = [wf.add(cd.task(StaticSearch(i), name="search"), name=f"search_{i}", after=[p]) for i in range(items)]
    wf.add(cd.task(static_combine, name="combine"), after=names)
    return wf


def makespan(engine: cd.Engine, wf: cd.Workflow, agents: int, items: int) -> float:
    """Seconds from submitting ``agents`` runs of ``wf`` to every one of them done (checked)."""
    t0 = time.perf_counter()
    runs = engine.submit_many([{"target": wf, "agent": cd.Agent(f"agent-{a}"), "inputs": {"items": items}}
                               for a in range(agents)])
    for run in runs:
        if not run.wait(timeout=600):
            raise RuntimeError(f"run {run.id} of {wf.name} not done after 600 s: {run.progress()}")
    took = time.perf_counter() - t0
    print(f"{wf.name}: {took:.2f} s", file=sys.stderr, flush=True)
    expected = sum(len(q) for q in plan(None, items))
    for run in runs:
        out = run.result()
        assert out["combine"].value == expected, (run.status(), out["combine"])
        run.release()
    return took


def main(argv: list[str] | None = None) -> None:
    given = sys.argv[1:] if argv is None else argv
    if "--spawn" in given or "--waits" in given:
        from . import dynamic_children
        return dynamic_children.main(given)
    p = h.parser(__doc__)
    p.add_argument("--map", action="store_true", help="the mapped-node case (the default)")
    p.add_argument("--agents", type=int, default=None, help="runs (agents), default 100 (tiny: 5)")
    p.add_argument("--items", type=int, default=None, help="elements per plan, default 100 (tiny: 10)")
    p.add_argument("--stealing", action="store_true", help="leave Dask's work stealing on (see main())")
    args = p.parse_args(argv)
    agents = args.agents or (5 if args.tiny else 100)
    items = args.items or (10 if args.tiny else 100)
    rows = []
    # Dask's work stealing is off for both contenders unless --stealing (it once asserted on async
    # tasks' prefixes, whose duration estimate was 0: fixed in cleo_dask/admission/stealing.py).
    settings = {**scheduler_settings(), "distributed.scheduler.work-stealing": args.stealing}
    with dask.config.set(settings), h.cluster(args) as client, cd.Engine(client=client) as engine:
        dynamic, static = dynamic_workflow(), static_workflow(items)
        for _ in range(args.warmup):
            makespan(engine, dynamic, agents, items)
            makespan(engine, static, agents, items)
        times: dict[str, list[float]] = {"dynamic": [], "static": []}
        for _ in range(h.reps(args)):
            times["static"].append(makespan(engine, static, agents, items))
            times["dynamic"].append(makespan(engine, dynamic, agents, items))
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in ("static", "dynamic"):
            rows.append({"case": "map", "workflow": k, "agents": agents, "items": items,
                         "nodes": agents * (items + 2), "makespan_s": med[k], "all_s": times[k],
                         "ratio": med[k] / med["static"]})
        h.report(rows, args, "dynamic", ["case", "workflow", "agents", "items", "nodes", "makespan_s", "ratio"],
                 client=client, title="mapped nodes against the same workflow written statically")


if __name__ == "__main__":
    main()
