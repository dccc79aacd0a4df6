"""Overhead of cleo_dask against raw Dask on no-op workflows, on one cluster, in one run.

Shapes: chain 1,000; fan-out 10,000; layered 10,000 and 50,000 (100 layers, 1-3 parents each
from the previous layer, seeded).  Contenders, repetitions interleaved:

* ``raw``: a raw Dask dict graph, ``client.get(dsk, sinks)`` (the baseline of every ratio);
* ``cleo``: ``engine.submit(wf, agent).result()`` plus fetching the sinks' values (as raw does);
* ``delayed``: one ``dask.delayed`` per node, built and computed (skipped above 10,000 nodes:
  each delayed merges its ancestors' graphs, so building is superlinear in time and memory);
* ``ray`` (only if ``ray`` is importable): one remote no-op per node, ObjectRefs as arguments.

Then the time to build and to compile (no cluster) 10,000- and 100,000-node layered workflows.

    python -m benchmarks.overhead [--tiny] [--json FILE] [--reps N] [--in-process]
"""
from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from . import _harness as h
from . import _shapes as s

DELAYED_MAX = 10_000
_counter = itertools.count()


def shapes(tiny: bool) -> dict[str, s.Shape]:
    """The benchmark's cases (tiny: a few dozen nodes each)."""
    if tiny:
        return {"chain-20": s.chain(20), "fanout-50": s.fan_out(50), "layered-200": s.layered(200, layers=10)}
    return {"chain-1000": s.chain(1000), "fanout-10000": s.fan_out(10_000),
            "layered-10000": s.layered(10_000), "layered-50000": s.layered(50_000)}


def contenders(shape: s.Shape, client: Any, engine: Any, agent: Any, ray: Any = None) -> dict[str, h.Contender]:
    """raw / cleo / delayed (/ ray) for one shape."""
    out_sinks = s.sinks(shape)
    wf = s.workflow(shape)

    def cleo_run(_: Any) -> None:
        s.run_cleo(engine, wf, agent, out_sinks)

    def delayed_run(_: Any) -> None:
        import dask
        ds = s.delayed_sinks(shape, suffix=f"-d{next(_counter)}")
        dask.compute(*ds, scheduler=client)

    found = {"raw": s.raw_contender(shape, client), "cleo": h.Contender(cleo_run)}
    if len(shape) <= DELAYED_MAX:
        slow = len(shape) >= 5000  # building 10,000 delayed objects alone takes tens of seconds
        found["delayed"] = h.Contender(delayed_run, max_reps=1 if slow else None,
                                       note="1 run (slow to build)" if slow else "")
    if ray is not None:
        found["ray"] = h.Contender(lambda _: _ray_run(ray, shape, out_sinks))
    return found


def _ray_run(ray: Any, shape: s.Shape, out_sinks: list[str]) -> None:
    noop = _ray_noop(ray)
    refs: dict[str, Any] = {}
    for n, ps in shape.items():
        refs[n] = noop.remote(*(refs[p] for p in ps))
    ray.get([refs[k] for k in out_sinks])


_RAY_NOOP = None


def _ray_noop(ray: Any) -> Any:
    global _RAY_NOOP
    if _RAY_NOOP is None:
        _RAY_NOOP = ray.remote(s.noop)
    return _RAY_NOOP


def compile_rows(sizes: list[int]) -> list[dict[str, Any]]:
    """Seconds to build (``Workflow.add`` per node) and to compile layered workflows; no cluster."""
    import cleo_dask as cd
    from cleo_dask.core.compile import compile_workflow

    rows = []
    agent = cd.Agent("bench")
    for n in sizes:
        shape = s.layered(n)
        with h.PeakMemory() as mem:
            t_build, wf = h.timed(lambda: s.workflow(shape))
            t_compile, compiled = h.timed(lambda: compile_workflow(wf, uuid.uuid4().hex[:16], agent))
            t_graph, _ = h.timed(compiled.graph)
        rows.append({"case": f"compile-{n}", "contender": "cleo", "tasks": n, "build_s": round(t_build, 3),
                     "compile_s": round(t_compile, 3), "graph_s": round(t_graph, 3),
                     "compile_us_per_node": round(1e6 * t_compile / n, 2), **mem.as_dict()})
        del wf, compiled
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    import cleo_dask as cd

    p = h.parser(__doc__)
    p.add_argument("--case", action="append", default=None,
                   help="run only this case (repeatable; e.g. layered-10000, compile)")
    p.add_argument("--no-delayed", action="store_true", help="leave out the dask.delayed contender")
    args = p.parse_args(argv)
    try:
        import ray  # type: ignore[import-not-found]
    except ImportError:
        ray = None
    rows: list[dict[str, Any]] = []
    with h.cluster(args) as client, cd.Engine(client=client) as engine:
        agent = cd.Agent("bench")
        if ray is not None:
            ray.init(num_cpus=args.workers * args.threads, include_dashboard=False, log_to_driver=False)
        for i, (case, shape) in enumerate(shapes(args.tiny).items()):
            if args.case and case not in args.case:
                continue
            t0 = time.perf_counter()
            found = contenders(shape, client, engine, agent, ray)
            if args.no_delayed:
                found.pop("delayed", None)
            big = len(shape) > 20_000  # one interleaved round keeps the whole run within minutes
            rows += h.compare(case, found, args, tasks=len(shape), baseline="raw", client=client,
                              default_reps=1 if big else 2, warmup=None if i == 0 or args.case else 0)
            if not args.quiet:
                print(f"# {case}: {time.perf_counter() - t0:.1f} s", flush=True)
        if ray is not None:
            ray.shutdown()
        if not args.case or "compile" in args.case:
            rows += compile_rows([100, 1000] if args.tiny else [10_000, 100_000])
        h.report(rows, args, "overhead",
                 ["case", "contender", "tasks", "median_s", "per_task_ms", "ratio", "cpu_ratio", "client_delta_mib",
                  "workers_peak_mib", "build_s", "compile_s", "note"], client=client,
                 title="overhead: cleo_dask vs raw Dask (ratio = median / raw median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
