"""Scale: compile and submit 100,000 nodes; compile 1,000,000 nodes.  Seconds and client memory.

For each size (layered DAG of no-ops, 100 layers, 1-3 parents each from the previous layer):

* ``build_s``: building the :class:`~cleo_dask.Workflow` (``wf.add`` per node, validated);
* ``compile_s``: compiling it into one Dask graph (plus ``graph_s``: the annotated layer);
* ``workflow_b_per_node``, ``compiled_b_per_node``: resident memory the workflow and the compiled
  graph add, per node; ``rawgraph_b_per_node``: the same graph as Dask ``Task`` objects built
  directly (what Dask itself holds), so ``extra_b_per_node`` is cleo's own cost beyond it;
* with ``--submit`` sizes (default 100,000): ``submit_s`` (``engine.submit`` returns),
  ``first_result_s`` (the scheduler has taken the graph and a first task is done), and
  ``run_b_per_node``: client memory held by the submitted :class:`~cleo_dask.Run` per node.
  The run is then cancelled (``--complete``: run it to the end and report ``complete_s``).

Memory is the process's resident set size (``gc.collect()`` first), so figures are approximate.

``--from-networkx [SIZES]`` (default 1,000,000; no cluster): the layered DAG as a networkx graph
built beforehand (the user's own), then ``Workflow.from_networkx`` (``nx_build_s``), ``validate``
(``validate_s``) and ``compile_workflow`` (``compile_s``): ``total_s``, ``us_per_node`` (wall) and
``cpu_us_per_node`` (this process's CPU: the machine may be shared), ``kept_b_per_node`` (resident
memory the workflow and its compiled graph hold, beyond the graph), ``peak_b_per_node`` (peak
resident memory meanwhile, beyond the graph), ``full_gc_s`` (one full garbage collection
afterwards: the objects made are examined once, then).

``--e2e [SIZES]`` (default 10,000 100,000 1,000,000): end to end on a ``LocalCluster`` (2 worker
processes x 1 thread), from ``Workflow.from_networkx`` of the networkx graph built beforehand, through
submission and every node done, to the sinks' values read (``median_s``, ``per_node_ms``), for
``cleo``, ``raw`` (a Dask dict graph made from the networkx graph; above 100,000 nodes only with
``--raw-1m``) and ``ray`` (when importable: ``ray.init(num_cpus=2)``, one remote per node), in the
same run.  Peak resident memory, sampled every 50 ms over the process tree: ``client_peak_mib`` (this
process: client and the LocalCluster's scheduler), ``procs_peak_mib`` (the contender's other
processes: Dask's nannies and workers, or Ray's), ``total_peak_mib`` (both at the same moment);
``ratio``: time over raw Dask's.  ``--fail-pct P``: the same sizes again with P % of the nodes
(by a hash of the name) failing once, with ``retries=1``: ``fail_ratio`` over the same contender
without failures.  Each run is guarded: stopped and reported (``error``) when all processes
together pass ``--mem-cap-gib`` (default: half the memory available at the start), when the
machine has less than ``--min-free-gib`` available (default 2: other users' processes count), or the run
passes ``--run-timeout`` (default 120 s + 5 ms per node); a contender stopped is skipped at the
larger sizes.

    python -m benchmarks.scale [--tiny] [--json FILE] [--complete]
    python -m benchmarks.scale --from-networkx 1000000
    python -m benchmarks.scale --e2e 10000 100000 --fail-pct 1
"""
from __future__ import annotations

import argparse
import gc
import time
import uuid
from typing import Any

import psutil

from . import _e2e
from . import _harness as h
from . import _shapes as s


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def raw_task_graph(shape: s.Shape) -> dict[str, Any]:
    """The same DAG as Dask ``Task`` objects, built directly (what Dask itself would hold)."""
    from dask.task_spec import Task, TaskRef
    return {n: Task(n, s.noop, *(TaskRef(p) for p in ps)) for n, ps in shape.items()}


def compile_row(n: int) -> tuple[dict[str, Any], Any, Any]:
    """Build and compile an ``n``-node layered workflow; returns (row, workflow, shape)."""
    import cleo_dask as cd
    from cleo_dask.core.compile import compile_workflow

    shape = s.layered(n)
    with h.PeakMemory() as mem:
        r0 = _rss()
        t_build, wf = h.timed(lambda: s.workflow(shape))
        r1 = _rss()
        t_compile, compiled = h.timed(lambda: compile_workflow(wf, uuid.uuid4().hex[:16], cd.Agent("bench")))
        t_graph, _ = h.timed(compiled.graph)
        r2 = _rss()
        raw = raw_task_graph(shape)
        r3 = _rss()
    row = {"case": f"compile-{n}", "contender": "cleo", "tasks": n, "build_s": round(t_build, 3),
           "compile_s": round(t_compile, 3), "graph_s": round(t_graph, 3),
           "workflow_b_per_node": round((r1 - r0) / n), "compiled_b_per_node": round((r2 - r1) / n),
           "rawgraph_b_per_node": round((r3 - r2) / n), "extra_b_per_node": round((r2 - r1 - (r3 - r2)) / n),
           **mem.as_dict()}
    del compiled, raw
    return row, wf, shape


def networkx_graph(n: int, integer_names: bool = False) -> tuple[Any, dict[Any, Any]]:
    """The layered DAG of ``n`` no-op nodes as a networkx graph, and its ``tasks`` mapping."""
    import networkx as nx

    import cleo_dask as cd
    shape = s.layered(n)
    if integer_names:
        number = {name: i for i, name in enumerate(shape)}
        edges = [(number[p], number[c]) for c, ps in shape.items() for p in ps]
        nodes: Any = range(n)
    else:
        edges, nodes = [(p, c) for c, ps in shape.items() for p in ps], shape
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    spec = cd.task(s.agent_noop, name="noop")
    return graph, dict.fromkeys(graph, spec)


def networkx_row(n: int, integer_names: bool = False) -> dict[str, Any]:
    """From a networkx graph built beforehand: build, validate and compile ``n`` nodes (no cluster)."""
    import cleo_dask as cd
    from cleo_dask.core.compile import compile_workflow

    graph, tasks = networkx_graph(n, integer_names)
    agent = cd.Agent("bench")
    with h.PeakMemory() as mem:
        r0 = mem.client_start
        c0 = time.process_time()
        t_build, wf = h.timed(lambda: cd.Workflow.from_networkx(graph, tasks))
        t_validate, _ = h.timed(wf.validate)
        t_compile, compiled = h.timed(lambda: compile_workflow(wf, uuid.uuid4().hex[:16], agent))
        cpu = time.process_time() - c0
        t_gc, _ = h.timed(gc.collect)
        r1 = psutil.Process().memory_info().rss
    total = t_build + t_validate + t_compile
    row = {"case": f"from-networkx-{n}" + ("-int" if integer_names else ""), "contender": "cleo", "tasks": n,
           "nx_build_s": round(t_build, 3), "validate_s": round(t_validate, 3), "compile_s": round(t_compile, 3),
           "total_s": round(total, 3), "us_per_node": round(1e6 * total / n, 2),
           "cpu_us_per_node": round(1e6 * cpu / n, 2), "full_gc_s": round(t_gc, 3),
           "kept_b_per_node": round((r1 - r0) / n), "peak_b_per_node": round((mem.client_peak - r0) / n)}
    del compiled, wf
    return row


def submit_row(n: int, wf: Any, engine: Any, client: Any, complete: bool) -> dict[str, Any]:
    """Submit ``wf``; time to return, to the first finished task; memory held by the run."""
    from distributed.client import FIRST_COMPLETED, _wait

    import cleo_dask as cd
    r0 = _rss()
    with h.PeakMemory(client) as mem:
        t0 = time.perf_counter()
        run = engine.submit(wf, cd.Agent("bench"))
        submit_s = time.perf_counter() - t0
        client.sync(_wait, list(set(run.futures.values())), return_when=FIRST_COMPLETED)
        first_s = time.perf_counter() - t0
        r1 = _rss()
        row: dict[str, Any] = {"case": f"submit-{n}", "contender": "cleo", "tasks": n, "submit_s": round(submit_s, 3),
                               "first_result_s": round(first_s, 3), "run_b_per_node": round((r1 - r0) / n)}
        if complete:
            outcome = run.result()
            row["complete_s"] = round(time.perf_counter() - t0, 3)
            row["per_task_ms"] = round(1000 * row["complete_s"] / n, 4)
            row["ok"] = outcome.ok
        else:
            run.cancel()
            run.wait(timeout=120)
        run.release()
    row.update(mem.as_dict())
    return row


E2E_COLUMNS = ["case", "contender", "tasks", "failing", "median_s", "per_node_ms", "ratio", "fail_ratio",
               "client_start_mib", "client_peak_mib", "procs_peak_mib", "total_peak_mib", "client_cpu_s",
               "procs_cpu_s", "error", "note"]


def end_to_end(args: argparse.Namespace) -> int:
    """``--e2e``: each run in a fresh process (or all here with ``--shared-cluster`` / ``--address``)."""
    import cleo_dask as cd

    names, notes = _e2e.contender_names(args)
    title = "scale: end to end from networkx (layered DAG, 100 layers, no-op tasks)"
    if args.child or args.shared_cluster or args.address:
        with h.cluster(args) as client, cd.Engine(client=client) as engine:
            engine.run(s.agent_noop, cd.Agent("bench"))  # warm-up
            here = _e2e.InProcess(args, client, engine, lambda n: networkx_graph(n)[0], [args.child] if args.child else names)
            try:
                if args.warmup:
                    here.warm_up()
                if args.child:   # one run, as it is: the parent summarizes
                    h.emit({"case": "e2e-run", **here.run(args.child, args.e2e[0], args.fail_pct)}, args, "scale")
                    return 0
                rows = _e2e.run_cases(args, names, here.run, notes)
                for r in rows:
                    r["mem_cap_gib"] = round(here.cap / 1024**3, 1)
            finally:
                here.close()
            h.report(rows, args, "scale", E2E_COLUMNS, client=client, title=title)
        return 0
    rows = _e2e.run_cases(args, names, lambda name, n, pct: _e2e.isolated_run(args, name, n, pct), notes)
    for r in rows:
        r["mem_cap_gib"] = round(_e2e.cap_of(args) / 1024**3, 1)
    h.report(rows, args, "scale", E2E_COLUMNS, title=title + ", each run in a fresh process")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    import cleo_dask as cd

    p = h.parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="*", default=None, help="compile sizes (default 100000 1000000)")
    p.add_argument("--submit", type=int, nargs="*", default=None, help="sizes also submitted (default 100000)")
    p.add_argument("--complete", action="store_true", help="run submitted workflows to the end")
    p.add_argument("--from-networkx", type=int, nargs="*", default=None, metavar="SIZE",
                   help="only time Workflow.from_networkx + validate + compile of SIZE nodes (default 1000000; "
                        "no cluster): per-node time and memory")
    p.add_argument("--integer-names", action="store_true", help="with --from-networkx: integer node names")
    p.add_argument("--e2e", type=int, nargs="*", default=None, metavar="SIZE",
                   help="end to end, cleo / raw Dask / Ray in the same run (default 10000 100000 1000000)")
    p.add_argument("--fail-pct", type=float, default=0.0, help="with --e2e: also with this %% of nodes failing once")
    p.add_argument("--raw-1m", action="store_true", help="with --e2e: raw Dask above 100,000 nodes too (guarded)")
    p.add_argument("--no-ray", action="store_true", help="with --e2e: leave Ray out")
    p.add_argument("--mem-cap-gib", type=float, default=None,
                   help="with --e2e: stop a run when all processes pass this (default: half the available memory)")
    p.add_argument("--shared-cluster", action="store_true",
                   help="with --e2e: every contender in this process, on one cluster (default: each run in a "
                        "fresh process with its own cluster, so no contender's leftovers count in another's memory)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)   # one isolated run (--e2e N --child NAME)
    p.add_argument("--min-free-gib", type=float, default=2.0,
                   help="with --e2e: stop a run when the machine has less memory than this available (default 2)")
    p.add_argument("--run-timeout", type=float, default=None,
                   help="with --e2e: stop a run after this many seconds (default 120 + 5 ms per node)")
    args = p.parse_args(argv)
    if args.e2e is not None:
        return end_to_end(args)
    if args.from_networkx is not None:
        sizes = args.from_networkx or ([10_000] if args.tiny else [1_000_000])
        rows = []
        for n in sizes:
            rows.append(networkx_row(n, args.integer_names))
            if not args.quiet:
                print(f"# from-networkx {n}: {rows[-1]['total_s']} s", flush=True)
        h.report(rows, args, "scale",
                 ["case", "tasks", "nx_build_s", "validate_s", "compile_s", "total_s", "us_per_node",
                  "cpu_us_per_node", "full_gc_s", "kept_b_per_node", "peak_b_per_node"],
                 title="scale: from_networkx + validate + compile (layered DAG, 100 layers, no cluster)")
        return 0
    sizes = args.sizes or ([1000, 10_000] if args.tiny else [100_000, 1_000_000])
    submit = set(args.submit if args.submit is not None else ([1000] if args.tiny else [100_000]))
    rows: list[dict[str, Any]] = []
    client = None
    with h.cluster(args) as client, cd.Engine(client=client) as engine:
        engine.run(s.agent_noop, cd.Agent("bench"))  # warm-up
        for n in sizes:
            row, wf, _ = compile_row(n)
            rows.append(row)
            if not args.quiet:
                print(f"# compile {n}: {row['compile_s']} s", flush=True)
            if n in submit:
                rows.append(submit_row(n, wf, engine, client, args.complete))
            del wf
        h.report(rows, args, "scale",
                 ["case", "tasks", "build_s", "compile_s", "graph_s", "workflow_b_per_node", "compiled_b_per_node",
                  "rawgraph_b_per_node", "extra_b_per_node", "submit_s", "first_result_s", "run_b_per_node",
                  "complete_s", "client_peak_mib"], client=client,
                 title="scale: build / compile / submit (layered DAG, 100 layers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
