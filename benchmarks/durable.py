"""Cost of durable runs (journal + result files written by the workers) on no-op workflows.

Layered shapes (1,000 and 5,000 nodes); contenders on one cluster, repetitions interleaved:

* ``raw``: a raw Dask dict graph, ``client.get(dsk, sinks)`` (the baseline of every ratio);
* ``cleo``: ``engine.submit(wf, agent).result()`` + the sinks' values, no store;
* ``durable``: the same with ``Engine(store=...)``: every node's output written atomically
  (fsync) by the workers, the run journaled in SQLite (until the journal has the run's end);
* ``durable-nofsync``: the same with ``cleo_dask.durable.fsync: false``;
* ``resume``: ``engine.resume(run_id)`` of a finished durable run: every node is kept, read back
  from its result file on a worker, nothing runs.

    python -m benchmarks.durable [--tiny] [--case layered-1000] [--json FILE] [--reps N] [--in-process]
                                 [--store-dir DIR]
"""
from __future__ import annotations

import shutil
import tempfile
from typing import Any

from . import _harness as h
from . import _shapes as s



def shapes(tiny: bool) -> dict[str, s.Shape]:
    """The cases (tiny: 100 nodes)."""
    if tiny:
        return {"layered-100": s.layered(100, layers=10)}
    return {"layered-1000": s.layered(1000, layers=20), "layered-5000": s.layered(5000, layers=50)}


def contenders(shape: s.Shape, client: Any, plain: Any, durable: Any, nofsync: Any,
               agent: Any) -> dict[str, h.Contender]:
    """raw / cleo / durable / durable-nofsync / resume for one shape."""
    out_sinks = s.sinks(shape)
    wf = s.workflow(shape)

    def cleo_run(engine: Any) -> Any:
        return s.run_cleo(engine, wf, agent, out_sinks)

    def durable_run(engine: Any) -> None:
        run = cleo_run(engine)
        engine.durable.wait_journaled(run.id)

    finished = cleo_run(durable)
    durable.durable.wait_journaled(finished.id)

    def resume_run(_: Any) -> None:
        run = durable.resume(finished.id)
        assert len(run.result().values_by_node(out_sinks)) == len(out_sinks)
        run.release()
        durable.durable.wait_journaled(run.id)

    return {"raw": s.raw_contender(shape, client), "cleo": h.Contender(lambda _: cleo_run(plain)),
            "durable": h.Contender(lambda _: durable_run(durable)),
            "durable-nofsync": h.Contender(lambda _: durable_run(nofsync)), "resume": h.Contender(resume_run, note="all nodes kept")}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    import dask.config

    import cleo_dask as cd

    p = h.parser(__doc__)
    p.add_argument("--store-dir", default=None, help="where the journal and results go (default: a temp dir)")
    p.add_argument("--case", action="append", default=None, help="run only this case (repeatable)")
    args = p.parse_args(argv)
    where = args.store_dir or tempfile.mkdtemp(prefix="cleo-durable-bench-")
    rows: list[dict[str, Any]] = []
    try:
        with h.cluster(args) as client, cd.Engine(client=client) as plain, \
                cd.Engine(client=client, store=f"{where}/runs.db") as durable:
            with dask.config.set({"cleo_dask.durable.fsync": False}):
                nofsync = cd.Engine(client=client, store=f"{where}/nofsync.db")
            agent = cd.Agent("bench")
            for case, shape in shapes(args.tiny).items():
                if args.case and case not in args.case:
                    continue
                rows += h.compare(case, contenders(shape, client, plain, durable, nofsync, agent), args,
                                  tasks=len(shape), baseline="raw", client=client)
            nofsync.close()
            h.report(rows, args, "durable",
                     ["case", "contender", "tasks", "median_s", "per_task_ms", "ratio", "client_delta_mib",
                      "workers_peak_mib", "note"], client=client,
                     title="durable runs: journal + result store vs plain cleo_dask vs raw Dask "
                           "(ratio = median / raw median)")
    finally:
        if args.store_dir is None:
            shutil.rmtree(where, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
