"""Schedules: how late do 1,000 interval schedules (each every 1 s, for 60 s) fire no-op tasks?

Two layouts: ``spread`` (schedule i first due at i ms past the second) and ``aligned`` (all due at
the same instants).  Contenders, on one cluster, in one run:

* ``cleo``: ``engine.schedule(noop, agent, every=1, start=...)`` x N, in-memory store; each firing
  is an ordinary run (``Engine.submit_many``: a tick's firings in one submission), handed over
  up to ``cleo_dask.schedules.lookahead`` seconds early and held on the Dask scheduler until due.
* ``cleo-loop``: the same scheduling loop, store and lookahead, a tick's firings handed over as
  one bare Dask graph (one task per firing, annotated with its not-before time) instead of runs
  (the loop's own cost);
* ``raw``: the baseline: one thread sleeping until each due time and calling ``client.submit``
  (no store, no misfire policy, no run objects).

Reported per layout and contender: p50 / p99 / max lateness of the **hand-off** (the run submitted
vs its due time; negative: handed over early, pre-staged), of the **release** (the Dask scheduler
letting a pre-staged task go vs its due time; cleo and cleo-loop) and of the **start** (the task
starting on a worker vs its due time), fired / expected, missed, duplicates, skipped; ``ratio``:
cleo's hand-off p99 over raw's.

    python -m benchmarks.schedules [--tiny] [--schedules 1000] [--seconds 60] [--gc-freeze] [--json FILE]

Start times are recorded on the scheduler (a small plugin), so no contender holds its runs or
futures until the end; each schedule keeps ``KEEP_RUNS`` runs (config ``keep-runs``).
"""
from __future__ import annotations

import heapq
import math
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import dask
from distributed import fire_and_forget
from distributed.diagnostics.plugin import SchedulerPlugin

from . import _harness as h

#: Run objects (futures) each schedule keeps in the benchmark (config ``cleo_dask.schedules.keep-runs``)
KEEP_RUNS = 2


def noop(agent: Any) -> float:
    """The scheduled task: does nothing, returns when it started."""
    return time.time()


def raw_noop(_: int) -> float:
    """The raw Dask task: likewise."""
    return time.time()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _stats(prefix: str, seconds: list[float]) -> dict[str, Any]:
    ms = [1000 * s for s in seconds]
    return {f"{prefix}_p50_ms": _round(_pct(ms, 0.50)), f"{prefix}_p99_ms": _round(_pct(ms, 0.99)),
            f"{prefix}_max_ms": _round(max(ms) if ms else None)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _starts(n: int, layout: str, base: float) -> list[float]:
    return [base + (i / 1000.0 if layout == "spread" else 0.0) for i in range(n)]


class StartRecorder(SchedulerPlugin):
    """On the scheduler: when each task began computing (its worker's clock), by key, so the
    benchmark need not hold every run and future until the end (that heap growth alone costs
    the client process long garbage-collector pauses)."""

    name = "bench-schedules-starts"

    def __init__(self) -> None:
        self.starts: dict[Any, float] = {}

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start == "processing" and finish == "memory":
            for ss in kwargs.get("startstops") or ():
                if ss.get("action") == "compute":
                    self.starts[key] = ss["start"]
                    return


def _install_recorder(client: Any) -> None:
    client.register_plugin(StartRecorder(), name=StartRecorder.name)


def _recorded(client: Any, clear: bool = False) -> dict[Any, float]:
    """The start times recorded so far (key -> epoch seconds)."""
    return client.run_on_scheduler(_recorded_on_scheduler, clear)


def _recorded_on_scheduler(clear: bool = False, dask_scheduler: Any = None) -> dict[Any, float]:
    plugin = dask_scheduler.plugins.get(StartRecorder.name)
    out = dict(plugin.starts) if plugin is not None else {}
    if clear and plugin is not None:
        plugin.starts.clear()
    return out


def _starts_of(client: Any, due_of_key: dict[Any, float], wait: float = 120.0) -> list[float]:
    """Start minus due time of each key in ``due_of_key``, once they have all started (or ``wait`` s)."""
    deadline = time.time() + wait
    while True:
        seen = _recorded(client)
        if all(k in seen for k in due_of_key) or time.time() > deadline:
            break
        time.sleep(0.5)
    _recorded(client, clear=True)
    return [seen[k] - due for k, due in due_of_key.items() if k in seen]


def _releases(client: Any) -> list[float]:
    """The release lateness the admission plugin kept since the last call (and forget them)."""
    from cleo_dask.admission.plugin import release_lateness
    try:
        return release_lateness(client, clear=True)
    except Exception:  # noqa: BLE001 - no plugin: nothing was pre-staged
        return []


def run_cleo(engine: Any, client: Any, n: int, seconds: int, layout: str) -> dict[str, Any]:
    """N schedules through ``engine.schedule``; the measurements."""
    import cleo_dask as cd

    task = cd.task(noop)
    agent = cd.Agent("bench")
    t0, far = time.time(), datetime.fromtimestamp(time.time() + 3600, timezone.utc)
    for s in [engine.schedule(task, agent, every=1.0, start=far) for _ in range(20)]:
        s.cancel()
    per = (time.time() - t0) / 20  # creating the schedules takes a while on a busy machine: start after that
    base = math.ceil(time.time() + 1.0 + 2.0 * per * n)
    _releases(client)
    _recorded(client, clear=True)
    with dask.config.set({"cleo_dask.schedules.keep-runs": KEEP_RUNS}):
        schedules = [engine.schedule(task, agent, every=1.0, start=datetime.fromtimestamp(t, timezone.utc))
                     for t in _starts(n, layout, base)]
    end = base + seconds
    time.sleep(max(0.0, end - time.time()))
    for s in schedules:
        s.cancel()
    deadline = time.time() + 120  # let the submissions still queued finish (or turn into recorded misses)
    while True:
        firings = [f for s in schedules for f in s.firings()]
        if time.time() > deadline or all(f.handoff is not None for f in firings if f.outcome == "fired"):
            break
        time.sleep(0.5)
    due_of = {f.run_id: f.due for f in firings if f.outcome == "fired" and f.run_id and f.due < end}
    expected = sum(sum(1 for k in range(seconds) if t + k < end) for t in _starts(n, layout, base))
    in_window = [f for f in firings if f.due < end]
    fired = [f for f in in_window if f.outcome == "fired"]
    releases = _releases(client)
    starts = _starts_of(client, {f"noop-{rid}-noop": due for rid, due in due_of.items()})
    per_due = Counter((f.schedule_id, f.due) for f in fired)
    row = {"fired": len(fired), "expected": expected,
           "missed": sum(f.count for f in in_window if f.outcome == "missed"),
           "skipped": sum(f.count for f in in_window if f.outcome == "skipped"),
           "skip_reasons": sorted({f.reason for f in in_window if f.outcome == "skipped"}) or None,
           "miss_reasons": sorted({(f.reason or "")[:80] for f in in_window if f.outcome == "missed"})[:3] or None,
           "duplicates": sum(c - 1 for c in per_due.values() if c > 1),
           **_stats("handoff", [f.lateness for f in fired if f.lateness is not None]),
           **_stats("release", releases), **_stats("start", starts)}
    return row


def run_loop(client: Any, n: int, seconds: int, layout: str) -> dict[str, Any]:
    """cleo_dask's scheduling loop and store, handing each firing to a bare ``client.submit``
    (no Run): what the loop itself costs, apart from ``engine.submit``."""
    import uuid

    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
    from dask.task_spec import Task

    from cleo_dask import config as _config
    from cleo_dask.admission.plugin import ANNOTATION, ensure_installed
    from cleo_dask.schedules.store import ScheduleStore
    from cleo_dask.schedules.loop import Scheduler

    submitted: dict[Any, float] = {}

    def submit(target: Any, agent: Any, schedule: Any, due: float) -> Any:
        return submit_many([(target, agent, schedule, due)])[0]

    def submit_many(items: list[tuple[Any, Any, Any, float]]) -> list[Any]:
        keys = [f"raw_noop-{uuid.uuid4().hex}" for _ in items]
        dsk = {k: Task(k, raw_noop, 0) for k in keys}
        table = {k: {"limits": {}, "rates": {}, "not_before": due} for k, (_, _, _, due) in zip(keys, items)}
        layer = MaterializedLayer(dsk, annotations={ANNOTATION: table.__getitem__})
        futs = client.get(HighLevelGraph({"loop": layer}, {"loop": set()}), keys, sync=False)
        fire_and_forget(futs)
        for key, (_, _, _, due) in zip(keys, items):
            submitted[key] = due
        return futs

    ensure_installed(client)
    _releases(client)
    _recorded(client, clear=True)
    loop = Scheduler(ScheduleStore(), submit, submit_many=submit_many, is_running=lambda f: not f.done(),
                     lookahead=float(_config.get("schedules.lookahead", 1.0) or 0.0))
    base = math.ceil(time.time() + 1.0 + 0.002 * n)
    ids = []
    with dask.config.set({"cleo_dask.schedules.keep-runs": KEEP_RUNS}):
        ids += _add_loop_schedules(loop, n, layout, base)
    end = base + seconds
    time.sleep(max(0.0, end - time.time()))
    handles = [loop.get(i) for i in ids]
    for sch in handles:
        sch.cancel()
    time.sleep(1.0)
    firings = [f for sch in handles for f in sch.firings()]
    loop.close()
    releases = _releases(client)
    in_window = [f for f in firings if f.due < end]
    fired = [f for f in in_window if f.outcome == "fired"]
    starts = _starts_of(client, {k: due for k, due in submitted.items() if due < end})
    expected = sum(sum(1 for k in range(seconds) if t + k < end) for t in _starts(n, layout, base))
    return {"fired": len(fired), "expected": expected,
            "missed": sum(f.count for f in in_window if f.outcome == "missed"),
            "skipped": sum(f.count for f in in_window if f.outcome == "skipped"),
            "duplicates": len(fired) - len({(f.schedule_id, f.due) for f in fired}),
            **_stats("handoff", [f.lateness for f in fired if f.lateness is not None]), **_stats("release", releases),
            **_stats("start", starts)}


def _add_loop_schedules(loop: Any, n: int, layout: str, base: float) -> list[str]:
    """The ``cleo-loop`` contender's N interval schedules; their ids."""
    import cleo_dask as cd
    from cleo_dask.schedules.build import make_options, make_trigger, new_record

    ids = []
    for t in _starts(n, layout, base):
        trig, tz = make_trigger(time.time(), every=1.0, start=datetime.fromtimestamp(t, timezone.utc))
        rec = new_record(loop.store, "noop", None, trig, tz, make_options(), name="noop", now=time.time())
        ids.append(loop.add(rec, target=raw_noop, agent=cd.Agent("bench")).id)
    return ids


def run_raw(client: Any, n: int, seconds: int, layout: str) -> dict[str, Any]:
    """The same firings from a bare timer thread calling ``client.submit``."""
    base = math.ceil(time.time()) + 2.0
    end = base + seconds
    heap = [(t, i) for i, t in enumerate(_starts(n, layout, base))]
    heapq.heapify(heap)
    handed: list[tuple[float, float, Any]] = []
    _recorded(client, clear=True)
    cv = threading.Condition()
    while heap:
        due, i = heap[0]
        if due >= end:
            break
        wait = due - time.time()
        if wait > 0:
            with cv:
                cv.wait(wait)
            continue
        heapq.heappop(heap)
        fut = client.submit(raw_noop, i, pure=False)
        handed.append((due, time.time(), fut.key))
        fire_and_forget(fut)
        heapq.heappush(heap, (due + 1.0, i))
    starts = _starts_of(client, {key: due for due, _, key in handed})
    return {"fired": len(handed), "expected": len(handed) + 0, "missed": 0, "skipped": 0, "duplicates": 0,
            **_stats("handoff", [at - due for due, at, _ in handed]), **_stats("release", []),
            **_stats("start", starts)}


def run(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; the rows."""
    import cleo_dask as cd

    p = h.parser(__doc__)
    p.add_argument("--schedules", type=int, default=None, help="number of schedules (default 1000, tiny 50)")
    p.add_argument("--seconds", type=int, default=None, help="how long each layout runs (default 60, tiny 3)")
    p.add_argument("--layout", action="append", choices=["spread", "aligned"], default=None)
    p.add_argument("--no-raw", action="store_true", help="leave out the raw Dask baseline")
    p.add_argument("--contender", action="append", choices=["cleo", "cleo-loop", "raw"], default=None,
                   help="run only this contender (repeatable)")
    p.add_argument("--gc-freeze", action="store_true",
                   help="gc.freeze() once the cluster is up (what `cleo-dask serve` does): shorter collector pauses")
    args = p.parse_args(argv)
    n = args.schedules or (50 if args.tiny else 1000)
    seconds = args.seconds or (3 if args.tiny else 60)
    rows: list[dict[str, Any]] = []
    from cleo_dask.admission.cluster_needs import scheduler_settings

    # the cluster an Engine would start (no root-task queuing), for every contender alike
    with dask.config.set(scheduler_settings()), h.cluster(args) as client, cd.Engine(client=client) as engine:
        _install_recorder(client)
        if args.gc_freeze:
            import gc
            gc.collect()
            gc.freeze()
        for layout in args.layout or ["spread", "aligned"]:
            chosen = args.contender or ["cleo", "cleo-loop"] + ([] if args.no_raw else ["raw"])
            results = {}
            if "cleo" in chosen:
                results["cleo"] = run_cleo(engine, client, n, seconds, layout)
            if "cleo-loop" in chosen:
                results["cleo-loop"] = run_loop(client, n, seconds, layout)
            if "raw" in chosen:
                results["raw"] = run_raw(client, n, seconds, layout)
            for name, r in results.items():
                row = {"case": f"{layout}-{n}x{seconds}s", "layout": layout, "contender": name, "schedules": n,
                       "seconds": seconds, **r}
                raw = results.get("raw", {}).get("handoff_p99_ms")
                row["ratio"] = (round(r["handoff_p99_ms"] / raw, 2) if raw and raw > 0 and r.get("handoff_p99_ms")
                                and r["handoff_p99_ms"] > 0 else None)  # pre-staged (early): no ratio
                rows.append(row)
                if not args.quiet:
                    print(f"# {row['case']} {name}: fired {row['fired']}/{row['expected']}, missed {row['missed']}, "
                          f"hand-off p99 {row['handoff_p99_ms']} ms, release p99 {row['release_p99_ms']} ms, "
                          f"start p99 {row['start_p99_ms']} ms", flush=True)
        h.report(rows, args, "schedules",
                 ["case", "contender", "fired", "expected", "missed", "duplicates", "skipped", "handoff_p50_ms",
                  "handoff_p99_ms", "handoff_max_ms", "release_p50_ms", "release_p99_ms", "release_max_ms",
                  "start_p50_ms", "start_p99_ms", "start_max_ms", "ratio"],
                 client=client, title="schedules: lateness of interval firings (ratio = hand-off p99 / raw's)")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0."""
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
