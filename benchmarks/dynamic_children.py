"""Agents that decide at run time (issue 19): the spawn and wait cases.

* ``--spawn``: one parent task spawns N child runs of one no-op task (all at once, then awaits
  them); per-child overhead = (parent run with N children - parent run with none) / N.
* ``--waits``: a CPU workflow (tasks busy-looping on the CPU) alone, then beside W runs waiting
  for signals (held on the scheduler) and P tasks waiting for child runs (which themselves wait
  for a signal); ``slowdown`` = makespan beside / makespan alone.

    python -m benchmarks.dynamic --spawn  (this module; benchmarks.dynamic hands these cases here) [--children 1000]
    python -m benchmarks.dynamic --waits [--runs 1000] [--parents 100]

(``--map``, the dynamic-map case, is in :mod:`benchmarks.dynamic`.)
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import cleo_dask as cd


@cd.task
def noop(agent: Any) -> int:
    return 1


@cd.task
async def spawner(agent: Any, n: int) -> int:
    children = [cd.spawn(noop) for _ in range(n)]
    return sum([(await c).value for c in children])


@cd.task
def burn(agent: Any, i: int, seconds: float = 0.25) -> int:
    end, x = time.process_time() + seconds, 0
    while time.process_time() < end:
        x += 1
    return x


@cd.task
def waits_for_child(agent: Any, i: int) -> Any:
    return cd.spawn(_approval_wf(f"child-{i}")).result()["go"].value


def _approval_wf(name: str) -> cd.Workflow:
    wf = cd.Workflow(name)
    wf.add_signal("go")
    return wf


def _cpu_wf(n: int) -> cd.Workflow:
    wf = cd.Workflow("cpu")
    for i in range(n):
        wf.add(burn.options(batch=False), name=f"burn{i}")
    return wf


def _cpu_seconds(engine: cd.Engine) -> float:
    """CPU seconds used so far by this process (client and scheduler) and every worker process."""
    return time.process_time() + sum(engine.client.run(time.process_time).values())


def bench_spawn(engine: cd.Engine, children: int, repeat: int = 1) -> dict[str, Any]:
    agent = cd.Agent("spawner")
    engine.run(spawner, agent, n=2)   # warm: the worker's engine exists
    c0, t0 = _cpu_seconds(engine), time.perf_counter()
    engine.run(spawner, agent, n=0)
    base, base_cpu = time.perf_counter() - t0, _cpu_seconds(engine) - c0
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = _cpu_seconds(engine), time.perf_counter()
        res = engine.run(spawner, agent, n=children)
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu_seconds(engine) - c0)
        assert res.value == children, res.error
    total, cpu = min(walls), min(cpus)
    # wall time on a shared machine varies with the others' load; CPU seconds (every process of
    # the cluster) much less
    return {"children": children, "parent_alone_s": round(base, 3), "parent_with_children_s": round(total, 3),
            "per_child_ms": round(1000 * (total - base) / children, 3),
            "per_child_ms_all": [round(1000 * (w - base) / children, 3) for w in walls],
            "per_child_cpu_ms": round(1000 * (cpu - base_cpu) / children, 3),
            "per_child_cpu_ms_all": [round(1000 * (c - base_cpu) / children, 3) for c in cpus]}


def bench_waits(engine: cd.Engine, runs: int, parents: int, cpu_tasks: int) -> dict[str, Any]:
    agent = cd.Agent("bench")
    c0, t0 = _cpu_seconds(engine), time.perf_counter()
    out = engine.submit(_cpu_wf(cpu_tasks), agent, inputs={"i": 0}).result()
    alone, alone_cpu = time.perf_counter() - t0, _cpu_seconds(engine) - c0
    alone_per_worker = _per_worker(out)
    waiting = engine.submit_many([{"target": _approval_wf(f"w{i}"), "agent": agent} for i in range(runs)])
    spawning = engine.submit_many([{"target": waits_for_child, "agent": agent, "inputs": {"i": i}}
                                   for i in range(parents)])
    # the waits in place before the CPU workflow starts: every parent has spawned its child (and
    # seceded), the signal nodes are held; setting them up (spawn overhead) is --spawn's figure
    deadline = time.time() + 300
    while len(engine.client.get_metadata(["cleo-spawn"], default={})) < parents and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    c0, t0 = _cpu_seconds(engine), time.perf_counter()
    out = engine.submit(_cpu_wf(cpu_tasks), agent, inputs={"i": 0}).result()
    beside, beside_cpu = time.perf_counter() - t0, _cpu_seconds(engine) - c0
    # idle: what the waits cost the cluster's processes while nothing else runs
    c0, t0 = _cpu_seconds(engine), time.perf_counter()
    time.sleep(5)
    idle_cpu, idle_s = _cpu_seconds(engine) - c0, time.perf_counter() - t0
    done = all(not r.done() for r in waiting)
    for r in waiting:
        r.cancel()
    for r in spawning:
        r.cancel()
    return {"runs_waiting": runs, "parents_waiting": parents, "cpu_tasks": cpu_tasks,
            "alone_s": round(alone, 3), "beside_s": round(beside, 3), "slowdown": round(beside / alone, 3),
            # CPU seconds of every process of the cluster (the client's too): wall time on a shared
            # machine moves with the others' load, these much less
            "alone_cpu_s": round(alone_cpu, 3), "beside_cpu_s": round(beside_cpu, 3),
            "cpu_ratio": round(beside_cpu / alone_cpu, 3),
            "waits_idle_cpu_share": round(idle_cpu / idle_s, 3),   # cores the waits keep busy meanwhile
            "waits_still_held": done, "alone_tasks_per_worker": alone_per_worker,
            "beside_tasks_per_worker": _per_worker(out)}


def _per_worker(outcome: Any) -> list[int]:
    """How many nodes of ``outcome`` each worker ran."""
    counts: dict[str, int] = {}
    for r in outcome.values():
        counts[str(r.worker)] = counts.get(str(r.worker), 0) + 1
    return sorted(counts.values())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spawn", action="store_true")
    p.add_argument("--waits", action="store_true")
    p.add_argument("--children", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=1, help="--spawn: runs of N children (the fastest is kept)")
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--parents", type=int, default=100)
    p.add_argument("--cpu-tasks", type=int, default=40)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    out: dict[str, Any] = {}
    with cd.Engine(n_workers=args.workers, threads_per_worker=1, processes=True) as engine:
        if args.spawn:
            out["spawn"] = bench_spawn(engine, args.children, args.repeat)
        if args.waits:
            out["waits"] = bench_waits(engine, args.runs, args.parents, args.cpu_tasks)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
