"""Cost of the cleo monitor (the scheduler plugin behind the /cleo page and the metrics).

On one cluster, repetitions interleaved: ``raw`` (a raw Dask graph, monitor off: the baseline of
every ratio), ``cleo-off`` (cleo_dask with the monitor plugin unregistered) and ``cleo-on`` (the
monitor registered, as an Engine does by default).  ``monitor_ratio`` = cleo-on / cleo-off.
A last case keeps the /cleo page open in a Bokeh session (its periodic update runs on the
scheduler's event loop) while cleo-on runs.

    python -m benchmarks.monitor [--tiny] [--nodes N] [--json FILE] [--reps N] [--in-process]
"""
from __future__ import annotations

import statistics
from typing import Any

from . import _harness as h
from . import _shapes as s



def _set_monitor(client: Any, on: bool) -> None:
    from cleo_dask.monitor.install import install
    from cleo_dask.monitor.state import PLUGIN_NAME
    present = client.run_on_scheduler(lambda dask_scheduler: PLUGIN_NAME in dask_scheduler.plugins)
    if on and not present:
        install(client)
    elif not on and present:
        client.unregister_scheduler_plugin(PLUGIN_NAME)


def contenders(shape: s.Shape, client: Any, engine: Any, agent: Any) -> dict[str, h.Contender]:
    """raw / cleo-off / cleo-on for one shape."""
    out_sinks = s.sinks(shape)
    wf = s.workflow(shape)

    def cleo_run(_: Any) -> None:
        s.run_cleo(engine, wf, agent, out_sinks)

    return {"raw": s.raw_contender(shape, client, before=lambda: _set_monitor(client, False)),
            "cleo-off": h.Contender(cleo_run, setup=lambda: _set_monitor(client, False)),
            "cleo-on": h.Contender(cleo_run, setup=lambda: _set_monitor(client, True))}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    import cleo_dask as cd

    p = h.parser(__doc__)
    p.add_argument("--nodes", type=int, default=10_000, help="nodes per workflow (default 10000)")
    args = p.parse_args(argv)
    n = args.nodes
    cases = {"fanout-50": s.fan_out(50)} if args.tiny else \
        {f"fanout-{n}": s.fan_out(n), f"layered-{n}": s.layered(n, layers=min(100, max(2, n // 20)))}
    rows: list[dict[str, Any]] = []
    with h.cluster(args) as client, cd.Engine(client=client) as engine:
        agent = cd.Agent("bench")
        for case, shape in cases.items():
            found = contenders(shape, client, engine, agent)
            case_rows = h.compare(case, found, args, tasks=len(shape), baseline="raw", client=client)
            times = {r["contender"]: r.get("median_s") for r in case_rows}
            for r in case_rows:
                if r["contender"] == "cleo-on" and times.get("cleo-off"):
                    r["monitor_ratio"] = round(times["cleo-on"] / times["cleo-off"], 3)
            rows += case_rows
            if not args.quiet:
                print(f"# {case}: {times}", flush=True)
        _set_monitor(client, True)
        rows += _with_page_open(client, engine, agent, cases, args)
        h.report(rows, args, "monitor", ["case", "contender", "tasks", "median_s", "per_task_ms", "ratio",
                                         "monitor_ratio", "note"], client=client,
                 title="monitor: cost of the cleo scheduler plugin (ratio = median / raw median)")
    return 0


def _with_page_open(client: Any, engine: Any, agent: Any, cases: dict[str, s.Shape], args: Any) -> list[dict]:
    """cleo-on again, with a Bokeh session of the /cleo page pulling updates the whole time."""
    from bokeh.client import pull_session
    case, shape = list(cases.items())[-1]
    wf = s.workflow(shape)
    session = pull_session(url=engine.cleo_dashboard_link)
    try:
        times = []
        for _ in range(h.reps(args)):
            t, run = h.timed(lambda: engine.submit(wf, agent).result().run)
            times.append(t)
            run.release()
    finally:
        session.close()
    med = statistics.median(times)
    return [{"case": case, "contender": "cleo-on+page", "tasks": len(shape), "median_s": round(med, 4),
             "per_task_ms": round(1000 * med / len(shape), 4), "note": "the /cleo page open in a Bokeh session"}]


if __name__ == "__main__":
    raise SystemExit(main())
