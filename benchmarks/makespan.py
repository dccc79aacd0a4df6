"""Makespan on real workflow traces (WfInstances), against the ideal and a reference scheduler.

The eight traces in ``../shared/bench/workloads/wfinstances/`` (read from there, never copied) run
on the cluster's P worker slots; every task sleeps ``runtime_s * k``, with ``k`` chosen per
workflow so that the ideal makespan ``max(critical path, total work / P)`` is 20 s (tiny: 1 s).
Reported per workflow: makespan / ideal for

* ``cleo-cp``: cleo_dask with critical-path priorities (each task declares ``duration=``, so the
  engine prioritises by bottom level: the longest remaining path to the end);
* ``cleo``: cleo_dask without durations (Dask's own ordering);
* ``cleo-est`` (with ``--estimated``): no declared durations; priorities from the durations the
  ``cleo`` run just measured (``critical_path={node: seconds}``: estimates from history);
* ``cleo-store`` (with ``--store``): no declared durations, the second run of the workflow on an
  engine with ``store=``: the priorities and Dask's estimates come from what the journal measured
  in the first (``cleo-store-first``: the same engine, nothing learned yet; the pair isolates the
  learned ordering from the journal's own cost);
* ``cleo-hops`` (with ``--hops``): no durations, ``critical_path=True``: bottom levels counting
  every task as one (the longest remaining chain of tasks first);
* ``raw`` (with ``--raw``): a raw Dask dict graph of the same sleeps;
* ``<contender>-eager`` (with ``--eager``): the same with ``cleo_dask.queue-on-scheduler: false``
  (units dispatched by Dask at once to a worker holding their inputs, as before issue 18);

``--synthetic``: instead of the traces, the generated workflows of :mod:`benchmarks.synthetic`
(WfCommons-like recipes at several sizes, tasks named ``t_<i>``, one task name for all), each
scaled to a 10 s ideal (``--target``).

beside the reference of ``../shared/bench/wfsim.py``: a greedy critical-path list schedule with
1 ms per-task overhead (``ref_ratio``).  ``makespan_s`` is wall time from submission to the
outcome; ``vs_ref`` = makespan / the reference's makespan (target <= 1.05).

    python -m benchmarks.makespan [--tiny] [--synthetic] [--target 20] [--workflow NAME ...] [--estimated] [--store]
                                   [--raw] [--json FILE]
"""
from __future__ import annotations

import importlib.util
import json
import re
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from . import _harness as h

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "bench"
TRACES = SHARED / "workloads" / "wfinstances"
OVERHEAD_S = 0.001


def wfsim() -> Any:
    """The shared reference simulator (``../shared/bench/wfsim.py``), imported from its path."""
    spec = importlib.util.spec_from_file_location("wfsim", SHARED / "wfsim.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def traces(names: list[str] | None = None) -> list[Path]:
    """The trace files (all, or those whose file name contains one of ``names``)."""
    if not TRACES.is_dir():
        raise SystemExit(f"no traces at {TRACES} (expected ../shared/bench next to the repository)")
    files = sorted(p for p in TRACES.glob("*.json") if not p.name.startswith("index"))
    if names:
        files = [p for p in files if any(n in p.name for n in names)]
    return files


class Sleep:
    """A task that sleeps a fixed number of seconds (``run(agent, **inputs)``: a Cleo-style task).
    ``name``: the task's name (its category in the trace: every ``blastall`` is the same program)."""

    def __init__(self, seconds: float, name: str = "sleep"):
        self.seconds = seconds
        self.name = name

    def run(self, agent: Any, **inputs: Any) -> None:
        time.sleep(self.seconds)


def sleep_raw(seconds: float, *deps: Any) -> None:
    """The raw Dask task body."""
    time.sleep(seconds)


def category(task_id: str) -> str:
    """The program a trace task runs, from its id: ``blastall_ID000002`` -> ``blastall``,
    ``NFCORE_RNASEQ.RNASEQ.QUANT.SALMON_12`` -> ``SALMON``, ``fastqSplit_fastqSplit_<sample>`` -> ``fastqSplit``."""
    base = re.sub(r"_?ID\d+$", "", task_id)
    base = re.sub(r"_\d+$", "", base).rsplit(".", 1)[-1]
    doubled = re.match(r"([A-Za-z0-9]+)_\1_", base)
    return doubled.group(1) if doubled else base


def workflow(inst: dict, k: float, durations: bool, named: bool = True) -> Any:
    """The trace as a cleo_dask Workflow (``durations``: each task declares ``duration=``).

    Each node's task is named after its category, as the same program would be in a real
    workflow: Dask groups keys by that name (its per-group duration estimates and its detection
    of wide fan-outs, which it queues on the scheduler, depend on it).  ``named=False``: one task
    name (``work``) for all, as in a user's workflow whose tasks share one function."""
    import cleo_dask as cd

    wf = cd.Workflow(inst.get("name", "trace"))
    for t in inst["tasks"]:
        seconds = max(0.0, float(t.get("runtime_s") or 0.0)) * k
        opts = {"duration": seconds} if durations else {}
        wf.add(Sleep(seconds, category(t["id"]) if named else "work"), name=t["id"], after=t.get("parents", ()), **opts)
    return wf


def raw_graph(inst: dict, k: float, suffix: str) -> tuple[dict, list[tuple[str, str]]]:
    """The trace as a raw Dask dict graph and its sink keys (``(category, id)`` keys: Dask
    groups them by category, as cleo_dask's keys are grouped by task name)."""
    key = {t["id"]: (category(t["id"]), t["id"] + suffix) for t in inst["tasks"]}
    dsk = {key[t["id"]]: (sleep_raw, max(0.0, float(t.get("runtime_s") or 0.0)) * k,
                          *(key[p] for p in t.get("parents", ()))) for t in inst["tasks"]}
    has_child = {p for t in inst["tasks"] for p in t.get("parents", ())}
    return dsk, [key[t["id"]] for t in inst["tasks"] if t["id"] not in has_child]


def run_one(inst: dict, k: float, contender: str, client: Any, engine: Any, agent: Any,
            estimates: dict[str, float] | None = None, named: bool = True,
            wf_name: str | None = None) -> dict[str, Any]:
    """Run one workflow once with one contender: makespan (wall) and the tasks' own span
    (``cleo-est``: priorities from ``estimates``, the durations measured in an earlier run;
    ``wf_name``: the workflow's name, which a store learns durations under)."""
    if contender == "raw":
        dsk, keys = raw_graph(inst, k, f"-{uuid.uuid4().hex[:8]}")
        t0 = time.perf_counter()
        client.get(dsk, keys)
        return {"makespan_s": time.perf_counter() - t0}
    if contender.endswith("-eager"):   # the same without queuing every unit on the scheduler
        import dask
        with dask.config.set({"cleo_dask.queue-on-scheduler": False}):
            return run_one(inst, k, contender[:-len("-eager")], client, engine, agent, estimates, named, wf_name)
    wf = workflow(inst | ({"name": wf_name} if wf_name else {}), k, durations=contender == "cleo-cp", named=named)
    t0 = time.perf_counter()
    critical = estimates if contender == "cleo-est" else (True if contender in ("cleo-cp", "cleo-hops") else None)
    run = engine.submit(wf, agent, critical_path=critical)
    outcome = run.result()
    wall = time.perf_counter() - t0
    starts = [r.start for r in outcome.values() if r.start is not None]
    ends = [r.end for r in outcome.values() if r.end is not None]
    ok = outcome.ok
    if engine.store is not None:
        outcome.durable   # (waits for the run's end to be journaled: the next run learns from it)
    measured = {n: r.duration for n, r in outcome.items() if r.duration is not None}
    run.release()
    return {"makespan_s": wall, "span_s": (max(ends) - min(starts)) if starts else None, "ok": ok,
            "measured": measured}


def instances(args: Any) -> list[dict]:
    """The workflows to run: the traces, or (``--synthetic``) the generated ones."""
    if args.synthetic:
        from .synthetic import instances as generated
        found = generated(args.tiny)
        return [i for i in found if not args.workflow or any(n in i["name"] for n in args.workflow)]
    loaded = [(path, json.loads(path.read_text())) for path in traces(args.workflow)]
    return [inst | {"name": inst.get("name", path.stem)} for path, inst in loaded]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    import tempfile

    import cleo_dask as cd

    p = h.parser(__doc__)
    p.add_argument("--target", type=float, default=None,
                   help="ideal makespan in seconds (default 20, synthetic 10, tiny 1)")
    p.add_argument("--workflow", action="append", default=None, help="only workflows whose name contains this")
    p.add_argument("--synthetic", action="store_true", help="generated WfCommons-like workflows (tasks t_<i>)")
    p.add_argument("--one-name", action="store_true", help="traces too: one task name for all (as --synthetic)")
    p.add_argument("--raw", action="store_true", help="also run a raw Dask dict graph of the same sleeps")
    p.add_argument("--no-baseline", action="store_true", help="only cleo-cp (skip cleo without durations)")
    p.add_argument("--estimated", action="store_true",
                   help="also cleo-est: no declared durations, priorities from the durations the cleo run measured")
    p.add_argument("--eager", action="store_true",
                   help="also each cleo contender with cleo_dask.queue-on-scheduler: false (Dask's eager dispatch)")
    p.add_argument("--hops", action="store_true", help="also cleo-hops: critical_path=True, no durations")
    p.add_argument("--store", action="store_true",
                   help="also cleo-store: a second run on an engine with store=, durations learned from the first")
    args = p.parse_args(argv)
    target = args.target or (1.0 if args.tiny else 10.0 if args.synthetic else 20.0)
    named = not (args.synthetic or args.one_name)
    sim = wfsim()
    contenders = (["cleo-cp"] + ([] if args.no_baseline else ["cleo"]) + (["cleo-hops"] if args.hops else [])
                  + (["raw"] if args.raw else []))
    if args.eager:
        contenders += [f"{c}-eager" for c in contenders if c.startswith("cleo")]
    estimated = args.estimated and not args.no_baseline
    extra = (["cleo-est"] if estimated else []) + (["cleo-store-first", "cleo-store"] if args.store else [])
    rows: list[dict[str, Any]] = []
    with h.cluster(args) as client, cd.Engine(client=client) as engine, tempfile.TemporaryDirectory() as tmp:
        durable = cd.Engine(client=client, store=f"{tmp}/runs.db") if args.store else None
        agent = cd.Agent("bench")
        P = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        engine.run(lambda agent: None, agent)  # warm-up: imports, connections
        for inst in instances(args):
            k = sim.scale_for(inst, P, target_lb=target)
            ref = sim.analyse(inst, P=P, o=OVERHEAD_S, scale=k, policy="cp")
            fifo = sim.analyse(inst, P=P, o=OVERHEAD_S, scale=k, policy="fifo")
            ideal = ref["lb"]
            for r in range(h.reps(args, 1)):
                order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
                if estimated:
                    order.insert(order.index("cleo") + 1, "cleo-est")
                if durable is not None:   # first a run to learn from (journaled, not reported), then the second
                    order += ["cleo-store-first", "cleo-store"]
                measured: dict[str, float] = {}
                for c in order:
                    on = durable if c.startswith("cleo-store") else engine
                    with h.PeakMemory(client) as mem:
                        res = run_one(inst, k, "cleo" if c == "cleo-store-first" else c, client, on, agent,
                                      estimates=measured, named=named, wf_name=f"{inst['name']}-{r}")
                    if c == "cleo":
                        measured = res["measured"]
                    row = {"case": inst["name"], "contender": c, "tasks": ref["tasks"], "P": P,
                           "k": round(k, 6), "ideal_s": round(ideal, 3), "cp_s": round(ref["cp"], 3),
                           "makespan_s": round(res["makespan_s"], 3),
                           "span_s": round(res["span_s"], 3) if res.get("span_s") else None,
                           "ratio": round(res["makespan_s"] / ideal, 4),
                           "ref_makespan_s": round(ref["makespan"], 3), "ref_ratio": round(ref["ratio"], 4),
                           "fifo_ratio": round(fifo["ratio"], 4),
                           "vs_ref": round(res["makespan_s"] / ref["makespan"], 4), "rep": r, **mem.as_dict()}
                    if "ok" in res:
                        row["ok"] = res["ok"]
                    rows.append(row)
                    if not args.quiet:
                        print(f"# {row['case']} {c}: {row['makespan_s']} s, ratio {row['ratio']}, "
                              f"vs_ref {row['vs_ref']}", flush=True)
        if durable is not None:
            durable.close()
        for c in contenders + extra:
            ratios = [r["ratio"] for r in rows if r["contender"] == c]
            vs = [r["vs_ref"] for r in rows if r["contender"] == c]
            rows.append({"case": "median", "contender": c, "ratio": round(statistics.median(ratios), 4),
                         "vs_ref": round(statistics.median(vs), 4), "worst_vs_ref": round(max(vs), 4),
                         "ref_ratio": round(statistics.median(r["ref_ratio"] for r in rows
                                                              if r.get("contender") == c and "tasks" in r), 4)})
        h.report(rows, args, "makespan",
                 ["case", "contender", "tasks", "ideal_s", "cp_s", "makespan_s", "ratio", "ref_ratio", "fifo_ratio",
                  "vs_ref", "worst_vs_ref"], client=client,
                 title=f"makespan / ideal on {P} slots (ideal {target:g} s; ref = wfsim cp list schedule, 1 ms/task)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
