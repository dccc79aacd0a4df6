"""I/O-bound agents: calls in flight, per-agent concurrency and rate limits, beside raw Dask.

On ``LocalCluster(n_workers=2, threads_per_worker=1)`` with worker processes and the scheduler settings
``Engine()`` gives the clusters it starts (no root-task queuing, see ``cleo_dask.admission.cluster_needs``):

1. ``async``: one agent, 2,000 async tasks each awaiting ``asyncio.sleep(0.5)`` (an LLM call).
   Makespan; ideal 0.5 s, target <= 2 s.
2. ``io_bound``: the same with blocking ``time.sleep(0.5)`` tasks marked ``io_bound``; target <= 5 s.
3. ``max_concurrency``: 100 agents x 50 such (async) tasks, ``max_concurrency=10`` each: makespan
   (ideal 2.5 s) and the largest number of one agent's tasks in flight (must never exceed 10).
4. ``rate_limit``: ``rate_limit="100/s"`` on 1,000 short async tasks: achieved starts per second
   (``(n - 1) / (last start - first start)``; target 100 +- 5), the least-squares rate, and the
   most starts in any one-second window.

Raw Dask with default settings runs the same task bodies as plain Dask tasks: an async task holds
one of the 2 slots while it waits, so 2,000 half-second calls take ~500 s.  Raw is therefore
measured on ``--raw-tasks`` tasks (default 40) and its makespan for the full count extrapolated
(``makespan_s`` of a ``raw`` row says ``extrapolated``); raw Dask has no per-agent limits or rate
limits (its rows show what runs without them).

    python -m benchmarks.io_agents [--tiny] [--json FILE] [--reps N] [--raw-tasks N]
"""
from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from typing import Any

import dask

from cleo_dask.admission.cluster_needs import scheduler_settings

from . import _harness as h

CALL_S = 0.5


async def llm_call(agent: Any, seconds: float = CALL_S) -> tuple[float, float]:
    """A stand-in for an LLM call: wait ``seconds``; returns (start, end)."""
    start = time.time()
    await asyncio.sleep(seconds)
    return start, time.time()


def legacy_call(agent: Any, seconds: float = CALL_S) -> tuple[float, float]:
    """A blocking client: sleep ``seconds``; returns (start, end)."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def max_in_flight(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals overlapping at one moment."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def starts_per_second(starts: list[float]) -> float:
    """1 / the least-squares slope of sorted start times against their index."""
    ys = sorted(starts)
    n = len(ys)
    if n < 2:
        return float("nan")
    mx, my = (n - 1) / 2, sum(ys) / n
    slope = sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))
    return 1 / slope if slope > 0 else float("inf")


def async_task(seconds: float, **options: Any) -> Any:
    """A ``cd.task`` awaiting ``seconds`` (:func:`llm_call`)."""
    import cleo_dask as cd

    async def llm(agent: Any) -> tuple[float, float]:
        return await llm_call(agent, seconds)
    return cd.task(llm, name="llm_call", **options)


def blocking_task(seconds: float) -> Any:
    """An ``io_bound`` ``cd.task`` sleeping ``seconds`` (:func:`legacy_call`)."""
    import cleo_dask as cd

    def legacy(agent: Any) -> tuple[float, float]:
        return legacy_call(agent, seconds)
    return cd.task(legacy, name="legacy_call", io_bound=True)


def rate_stats(starts: list[float], per: float = 1.0) -> dict[str, float]:
    """Achieved rate ``(n - 1) / (last - first)``, the least-squares rate, and the most starts seen
    in any window of ``per`` seconds."""
    ys = sorted(starts)
    span = ys[-1] - ys[0] if len(ys) > 1 else 0.0
    most, j = 0, 0
    for i, y in enumerate(ys):
        while ys[j] < y - per:
            j += 1
        most = max(most, i - j + 1)
    return {"achieved_per_s": round((len(ys) - 1) / span, 2) if span > 0 else float("nan"),
            "slope_per_s": round(starts_per_second(ys), 2), "max_in_window": most}


def _workflow(task: Any, n: int, seconds: float) -> Any:
    import cleo_dask as cd
    wf = cd.Workflow()
    for i in range(n):
        wf.add(task, name=f"call-{i}")  # one Dask task prefix ("call") for all: see README
    return wf


def _cleo(engine: Any, runs: list[tuple[Any, Any]]) -> tuple[float, list[list[tuple[float, float]]]]:
    """Submit every (workflow, agent) at once; makespan and each run's (start, end) values."""
    t0 = time.perf_counter()
    submitted = [engine.submit(wf, agent) for wf, agent in runs]
    outcomes = [r.result() for r in submitted]
    makespan = time.perf_counter() - t0
    values = []
    for run, out in zip(submitted, outcomes):
        bad = [n for n, r in out.items() if r.status != "succeeded"]
        if bad:
            raise RuntimeError(f"{len(bad)} tasks did not succeed, e.g. {out[bad[0]]!r}")
        values.append(list(out.values_by_node().values()))
        run.release()
    return makespan, values


def _raw(client: Any, fn: Any, n: int, seconds: float) -> tuple[float, list[tuple[float, float]]]:
    """``n`` plain Dask tasks running ``fn(None, seconds)`` with default settings."""
    from dask.task_spec import Task
    sfx = uuid.uuid4().hex[:8]
    dsk = {f"raw-{i}-{sfx}": Task(f"raw-{i}-{sfx}", fn, None, seconds) for i in range(n)}
    t0 = time.perf_counter()
    values = client.get(dsk, list(dsk))
    return time.perf_counter() - t0, list(values)


def sizes(tiny: bool, raw_tasks: int) -> dict[str, Any]:
    """Counts and durations of each scenario."""
    if tiny:
        return dict(calls=40, call_s=0.05, agents=5, per_agent=10, limit=3, rate="20/s", rate_tasks=20,
                    raw=4)
    return dict(calls=2000, call_s=CALL_S, agents=100, per_agent=50, limit=10, rate="100/s", rate_tasks=1000,
                raw=raw_tasks)


def run(client: Any, tiny: bool = False, reps: int = 1, raw_tasks: int = 40) -> list[dict[str, Any]]:
    """Run the four scenarios (cleo, then raw Dask) on ``client``'s cluster; returns the rows."""
    import cleo_dask as cd

    z = sizes(tiny, raw_tasks)
    rows: list[dict[str, Any]] = []
    with cd.Engine(client=client) as engine:
        # 1 and 2: one agent, many calls in flight
        for scenario, task, raw_fn, target in (("async", async_task(z["call_s"]), llm_call, 2.0),
                                               ("io_bound", blocking_task(z["call_s"]), legacy_call, 5.0)):
            wf = _workflow(task, z["calls"], z["call_s"])
            times, flights = [], []
            for _ in range(reps):
                t, vals = _cleo(engine, [(wf, cd.Agent("researcher-1"))])
                times.append(t)
                flights.append(max_in_flight(vals[0]))
            rows.append({"scenario": scenario, "contender": "cleo", "tasks": z["calls"],
                         "makespan_s": round(statistics.median(times), 3), "ideal_s": z["call_s"],
                         "target_s": None if tiny else target, "max_in_flight": max(flights), "reps": reps})
            t, vals = _raw(client, raw_fn, z["raw"], z["call_s"])
            rows.append({"scenario": scenario, "contender": "raw-dask", "tasks": z["calls"],
                         "makespan_s": round(t * z["calls"] / z["raw"], 1), "ideal_s": z["call_s"],
                         "max_in_flight": max_in_flight(vals),
                         "note": f"extrapolated from {z['raw']} tasks ({t:.2f} s)"})

        # 3: many agents, each limited
        task = async_task(z["call_s"])
        wf = _workflow(task, z["per_agent"], z["call_s"])
        times, per_agent = [], []
        for _ in range(reps):
            agents = [cd.Agent(f"agent-{i}-{uuid.uuid4().hex[:6]}", max_concurrency=z["limit"])
                      for i in range(z["agents"])]
            t, vals = _cleo(engine, [(wf, a) for a in agents])
            times.append(t)
            per_agent.append(max(max_in_flight(v) for v in vals))
            total_flight = max_in_flight([iv for v in vals for iv in v])
        n = z["agents"] * z["per_agent"]
        ideal = z["per_agent"] / z["limit"] * z["call_s"]
        rows.append({"scenario": "max_concurrency", "contender": "cleo", "tasks": n,
                     "makespan_s": round(statistics.median(times), 3), "ideal_s": ideal,
                     "max_in_flight_per_agent": max(per_agent), "limit": z["limit"],
                     "max_in_flight": total_flight, "reps": reps})
        t, vals = _raw(client, llm_call, z["raw"], z["call_s"])
        rows.append({"scenario": "max_concurrency", "contender": "raw-dask", "tasks": n,
                     "makespan_s": round(t * n / z["raw"], 1), "ideal_s": ideal, "max_in_flight": max_in_flight(vals),
                     "note": f"no per-agent limit; extrapolated from {z['raw']} tasks ({t:.2f} s)"})

        # 4: a rate-limited task
        limited = async_task(0.01, rate_limit=z["rate"])
        wf = _workflow(limited, z["rate_tasks"], 0.01)
        stats, times = [], []
        for _ in range(reps):
            t, vals = _cleo(engine, [(wf, cd.Agent("searcher"))])
            times.append(t)
            stats.append(rate_stats([s for s, _ in vals[0]]))
        mid = sorted(stats, key=lambda r: r["achieved_per_s"])[len(stats) // 2]
        rows.append({"scenario": "rate_limit", "contender": "cleo", "tasks": z["rate_tasks"],
                     "makespan_s": round(statistics.median(times), 3), "limit": z["rate"], **mid, "reps": reps})
        t, vals = _raw(client, llm_call, max(z["raw"], 20), 0.01)
        rows.append({"scenario": "rate_limit", "contender": "raw-dask", "tasks": max(z["raw"], 20),
                     "makespan_s": round(t, 3), **rate_stats([s for s, _ in vals]),
                     "note": "no rate limit in Dask: starts as fast as 2 slots allow"})
    return rows


COLUMNS = ["scenario", "contender", "tasks", "makespan_s", "ideal_s", "target_s", "max_in_flight",
           "max_in_flight_per_agent", "limit", "achieved_per_s", "slope_per_s", "max_in_window", "note"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    p = h.parser(__doc__)
    p.add_argument("--raw-tasks", type=int, default=40, help="tasks raw Dask runs per scenario (extrapolated)")
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        with dask.config.set(scheduler_settings()):  # the scheduler settings Engine() gives its own clusters
            client = stack.enter_context(h.cluster(args))
        rows = run(client, tiny=args.tiny, reps=h.reps(args, 1), raw_tasks=args.raw_tasks)
        h.report(rows, args, "io_agents", COLUMNS, client=client,
                 title="I/O-bound agents: cleo_dask vs raw Dask (default settings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
