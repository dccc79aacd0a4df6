"""Memory over long runs: does a long-lived engine keep flat memory? (issue 15)

``--runs`` runs (default 5,000) of a 20-node workflow (a layered DAG, 4 layers, 1-3 parents;
each node returns 1 KiB) one after the other: each run's sink values are read, then every
reference to the run is dropped, as a ``serve`` or a notebook loop does.  Every
``--sample-every`` runs the resident memory (RSS) of the client, the scheduler and each worker
is sampled (after a garbage collection in each process: what is *kept*, not what awaits a
collection), with the scheduler's task count and number of event topics.  Growth is the slope
of a least-squares line through the samples after ``--warmup-runs``, in MiB per 1,000 runs
(target: <= 2 in each process).

Dask caches ``key_split`` (a task's name from its key) for the last 100,000 keys in every
process (about 17 MB); cleo's keys are unique per run, so a long-lived engine fills that cache
over its first 100,000 tasks (5,000 runs of 20 nodes) and it stays full after.  The benchmark
fills it first (``--no-fill-dask-caches``: it does not), so that growth is what a long-lived
process shows once its bounded caches are full.  Dask's other bounded histories (its
logs, the recent messages of each stream, the last 100 computations) fill during the warm-up.

Contenders, one after the other on the same cluster: ``raw``, the same DAG as a raw Dask dict
graph under fresh keys (``client.get`` of its sinks: what Dask itself keeps per graph), then
``cleo`` (``raw_mib`` in its rows: the raw baseline's growth in the same process).

Modes (``--mode``, default both):

* ``local``: ``cd.Engine()`` starting its own ``LocalCluster`` (worker processes; its
  scheduler runs in the client's process, reported as ``client+scheduler``);
* ``separate``: real ``dask scheduler`` and ``dask worker`` processes started for the
  benchmark, the engine connecting to them (``cd.Engine(address)``);
* ``--address``: only a running scheduler (what the smoke test uses).

    python -m benchmarks.soak [--tiny] [--runs N] [--mode local|separate] [--no-raw] [--workers 2] [--json FILE]
"""
from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import _harness as h
from . import _shapes as s

TARGET_MIB_PER_1000 = 2.0


def kib(agent: Any, **parents: Any) -> bytes:
    """A node's work: 1 KiB of output (so a run whose results were kept would show)."""
    return b"x" * 1024


# -- sampling (these run in each process: the functions travel by reference) ----------------------
def _rss() -> int:
    import psutil
    gc.collect()
    return psutil.Process().memory_info().rss


def _fill_key_split() -> int:
    """Fill Dask's ``key_split`` cache (an LRU of 100,000 keys, ~17 MB) with keys of no run:
    it then stays full, as it does in any process that has seen 100,000 keys."""
    from dask.utils import key_split
    size = key_split.cache_info().maxsize or 0
    for i in range(size):
        key_split(f"soak-fill-{i}-0123456789abcdef-node")
    return size


def _scheduler_fill(dask_scheduler: Any = None) -> int:
    return _fill_key_split()


def _scheduler_sample(dask_scheduler: Any = None) -> dict[str, Any]:
    from cleo_dask.runs.forget import topic_count
    from cleo_dask.monitor.spans import count
    return {"pid": os.getpid(), "rss": _rss(), "tasks": len(dask_scheduler.tasks),
            "topics": topic_count(dask_scheduler), "spans": count(dask_scheduler)}


def sample(client: Any) -> dict[str, Any]:
    """RSS of the client, scheduler and workers (bytes), the scheduler's tasks and topics."""
    sched = client.run_on_scheduler(_scheduler_sample)
    workers = client.run(_rss)
    return {"client": _rss(), "scheduler": sched["rss"], "scheduler_pid": sched["pid"], "tasks": sched["tasks"],
            "topics": sched["topics"], "spans": sched["spans"], "workers": [workers[w] for w in sorted(workers)]}


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0 with fewer than 2 points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


# -- the soak --------------------------------------------------------------------------------------
def kib_raw(*parents: Any) -> bytes:
    """The raw Dask baseline's task: 1 KiB, like :func:`kib`."""
    return b"x" * 1024


def cleo_runner(engine: Any, nodes: int) -> Callable[[], None]:
    """One cleo run of the soak's workflow, its sinks' values read, nothing kept."""
    import cleo_dask as cd

    shape = s.layered(nodes, layers=4)
    wf = s.workflow(shape, fn=kib, name="soak")
    sinks = s.sinks(shape)
    agent = cd.Agent("soak")

    def one() -> None:
        run = engine.submit(wf, agent)
        values = run.result().values_by_node(sinks)
        assert len(values) == len(sinks) and all(len(v) == 1024 for v in values.values())

    return one


def raw_runner(client: Any, nodes: int) -> Callable[[], None]:
    """The same DAG as a raw Dask graph under fresh keys, ``client.get`` of its sinks."""
    shape = s.layered(nodes, layers=4)
    sinks = s.sinks(shape)

    def one() -> None:
        sfx = f"-{uuid.uuid4().hex[:16]}"
        values = client.get(s.raw_graph(shape, fn=kib_raw, suffix=sfx), [k + sfx for k in sinks])
        assert len(values) == len(sinks)

    return one


def soak(client: Any, one: Callable[[], None], runs: int, every: int, warmup: int,
         fill: bool = True) -> tuple[list[tuple[int, dict]], float]:
    """Call ``one()`` ``runs`` times, sampling every ``every``: ``([(runs done, sample)...], seconds)``.
    ``fill``: fill Dask's key_split caches first (see :func:`_fill_key_split`)."""
    if fill:
        _fill_key_split()
        client.run_on_scheduler(_scheduler_fill)
        client.run(_fill_key_split)
    samples = [(0, sample(client))]
    t0 = time.perf_counter()
    for i in range(1, runs + 1):
        one()
        if i == runs:  # the last run's release and topic retirement are on their way: let them land
            deadline = time.monotonic() + 5
            while client.run_on_scheduler(_scheduler_sample)["tasks"] and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.6)
        if i % every == 0 or i == runs or i == warmup:
            samples.append((i, sample(client)))
    return samples, time.perf_counter() - t0


def rows_of(mode: str, contender: str, samples: list[tuple[int, dict]], seconds: float,
            warmup: int) -> list[dict[str, Any]]:
    """One row per process (growth per 1,000 runs after warm-up) and one for the scheduler's counts."""
    after = [(i, smp) for i, smp in samples if i >= warmup] or samples
    xs = [i / 1000 for i, _ in after]
    same = samples[0][1]["scheduler_pid"] == os.getpid()
    series = {"client+scheduler" if same else "client": [smp["client"] for _, smp in after]}
    if not same:
        series["scheduler"] = [smp["scheduler"] for _, smp in after]
    for w in range(len(after[0][1]["workers"])):
        series[f"worker-{w}"] = [smp["workers"][w] if w < len(smp["workers"]) else 0 for _, smp in after]
    runs = samples[-1][0]
    out = []
    for proc, ys in series.items():
        growth = slope(xs, [y / h.MiB for y in ys])
        out.append({"case": mode, "contender": contender, "process": proc, "runs": runs,
                    "rss_start_mib": round(ys[0] / h.MiB, 1), "rss_end_mib": round(ys[-1] / h.MiB, 1),
                    "mib_per_1000_runs": round(growth, 3), "target": TARGET_MIB_PER_1000,
                    "ok": growth <= TARGET_MIB_PER_1000})
    first, last = samples[0][1], samples[-1][1]
    out.append({"case": mode, "contender": contender, "process": "scheduler state", "runs": runs,
                "seconds": round(seconds, 1), "runs_per_s": round(runs / seconds, 1) if seconds else None,
                "tasks_start": first["tasks"], "tasks_end": last["tasks"],
                "tasks_per_1000_runs": round(slope(xs, [smp["tasks"] for _, smp in after]), 2),
                "topics_start": first["topics"], "topics_end": last["topics"],
                "topics_per_1000_runs": round(slope(xs, [smp["topics"] for _, smp in after]), 2),
                "spans_end": last["spans"]})
    return out


def against_raw(rows: list[dict[str, Any]]) -> None:
    """Give each cleo row the growth of the raw Dask baseline in the same process (``raw_mib``)."""
    raw = {(r["case"], r["process"]): r.get("mib_per_1000_runs") for r in rows if r["contender"] == "raw"}
    for r in rows:
        if r["contender"] == "cleo" and "mib_per_1000_runs" in r:
            r["raw_mib"] = raw.get((r["case"], r["process"]))


@contextmanager
def separate_cluster(workers: int, threads: int) -> Iterator[str]:
    """Real ``dask scheduler`` + ``dask worker`` processes (this checkout importable); their address."""
    where = tempfile.mkdtemp(prefix="cleo-soak-")
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    sched_file = os.path.join(where, "scheduler.json")
    procs = [subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                                      "--scheduler-file", sched_file], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sched_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(workers):
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                           sched_file, "--nthreads", str(threads), "--no-nanny",
                                           "--death-timeout", "30"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield sched_file
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(where, ignore_errors=True)


def run_mode(mode: str, args: Any) -> list[dict[str, Any]]:
    """One soak in ``mode`` (local, separate, or address): raw Dask first (unless ``--no-raw``),
    then cleo, on the same cluster."""
    import warnings

    import cleo_dask as cd

    warnings.filterwarnings("ignore", message="cleo_dask: this cluster is not set up")
    runs, every, warmup = args.runs, args.sample_every, min(args.warmup_runs, args.runs)
    with contextlib.ExitStack() as stack:
        if mode == "local":
            engine = stack.enter_context(cd.Engine(n_workers=args.workers, threads_per_worker=args.threads))
            engine.client.wait_for_workers(args.workers)
        elif mode == "separate":
            sched_file = stack.enter_context(separate_cluster(args.workers, args.threads))
            engine = stack.enter_context(cd.Engine(scheduler_file=sched_file, timeout=60))
            engine.client.wait_for_workers(args.workers, timeout=60)
        else:
            engine = stack.enter_context(cd.Engine(args.address))
        rows = []
        contenders = {"raw": raw_runner(engine.client, args.nodes)} if args.raw else {}
        contenders["cleo"] = cleo_runner(engine, args.nodes)
        for name, one in contenders.items():
            samples, secs = soak(engine.client, one, runs, every, warmup, args.fill_dask_caches and not args.tiny)
            rows += rows_of(mode, name, samples, secs, warmup)
            if not args.quiet:
                print(f"# {mode} {name}: {secs:.0f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 (1 if a process grew past the target, with ``--check``)."""
    p = h.parser(__doc__)
    p.add_argument("--runs", type=int, default=None, help="runs per mode (default 5000, tiny 40)")
    p.add_argument("--nodes", type=int, default=20, help="nodes per workflow (default 20)")
    p.add_argument("--sample-every", type=int, default=None, help="runs between samples (default 250, tiny 10)")
    p.add_argument("--warmup-runs", type=int, default=None,
                   help="runs before growth is measured (default 1000, tiny 10)")
    p.add_argument("--mode", action="append", choices=["local", "separate"], default=None,
                   help="local (cd.Engine()) and/or separate (dask scheduler + dask worker processes); default both")
    p.add_argument("--no-fill-dask-caches", dest="fill_dask_caches", action="store_false",
                   help="(always with --tiny) do not fill Dask's key_split cache first (growth then includes its filling: "
                        "~3.4 MiB per 1,000 runs of 20 nodes in each process, up to ~17 MB)")
    p.add_argument("--no-raw", dest="raw", action="store_false",
                   help="no raw Dask baseline (the same DAG as client.get of a dict graph, same runs)")
    p.add_argument("--check", action="store_true", help="exit 1 if a process grew more than the target")
    args = p.parse_args(argv)
    args.runs = args.runs or (40 if args.tiny else 5000)
    args.sample_every = args.sample_every or (10 if args.tiny else 250)
    args.warmup_runs = args.warmup_runs if args.warmup_runs is not None else (10 if args.tiny else 1000)
    modes = ["address"] if args.address else (args.mode or ["local", "separate"])
    rows: list[dict[str, Any]] = []
    for mode in modes:
        rows += run_mode(mode, args)
    against_raw(rows)
    h.report(rows, args, "soak", ["case", "contender", "process", "runs", "rss_start_mib", "rss_end_mib",
                                  "mib_per_1000_runs", "raw_mib", "ok", "tasks_end", "tasks_per_1000_runs", "topics_end", "topics_per_1000_runs",
                                  "spans_end", "runs_per_s"],
             title=f"soak: memory growth per 1,000 runs of {args.nodes} nodes after {args.warmup_runs} runs "
                   f"(target <= {TARGET_MIB_PER_1000} MiB per process)")
    bad = [r for r in rows if r.get("ok") is False and r["contender"] == "cleo"]
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
