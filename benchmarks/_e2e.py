"""End to end at scale (``python -m benchmarks.scale --e2e``): the layered DAG of no-ops from a
networkx graph built beforehand, through submission and every node done, to the sinks' values read,
for cleo_dask, a raw Dask dict graph and Ray (one remote per node), in the same run, on the same
machine; optionally with a seeded ``pct`` % of the nodes failing once (``retries=1``).  By
default each run is made in a fresh process with its own cluster of the same shape
(:func:`isolated_run`), so what one contender leaves in memory never counts against the next;
:class:`InProcess` runs them all in one process, on one cluster.

Each timed run is guarded: it is stopped (and reported with ``error``) when every process of the
benchmark together passes the memory cap, or when it passes its time limit, so the machine
survives a contender that does not fit.  Memory: :class:`benchmarks._harness.TreeMemory`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any

import psutil

from . import _harness as h
from . import _shapes as s


class Aborted(Exception):
    """A timed run stopped by its guard (memory cap or time limit)."""


# -- failing once ----------------------------------------------------------------------------------
def failing(names: Any, pct: float) -> set[Any]:
    """The nodes that fail once: ``pct`` % of them, chosen by a hash of the name (the same in every
    run, process and contender)."""
    if not pct:
        return set()
    bound = round(pct * 100)
    return {n for n in names if zlib.crc32(str(n).encode()) % 10_000 < bound}


def first_attempt_fails(marker: str) -> None:
    """Raise the first time ``marker`` is seen (a file created atomically: any process, any attempt)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    raise ConnectionError("first attempt fails (benchmark)")


class FailOnce:
    """A no-op task whose first attempt fails (cleo_dask: ``run(agent, **inputs)``)."""

    def __init__(self, marker: str):
        self.marker = marker

    def run(self, agent: Any, **inputs: Any) -> None:
        first_attempt_fails(self.marker)


def raw_fail_once(marker: str, *parents: Any) -> None:
    """The raw Dask task of a node that fails once."""
    first_attempt_fails(marker)


def ray_noop(*parents: Any) -> None:
    """Ray's no-op task."""


def ray_fail_once(marker: str, *parents: Any) -> None:
    """Ray's task of a node that fails once."""
    first_attempt_fails(marker)


# -- one case: the graph, its failing nodes ---------------------------------------------------------
class Case:
    """The graph (in topological order, as built), its sinks, and the nodes failing once
    (markers in a fresh directory per run: :meth:`fresh`)."""

    def __init__(self, graph: Any, pct: float):
        self.graph = graph
        self.n = graph.number_of_nodes()
        self.pct = pct
        self.sinks = [n for n in graph if not graph.succ[n]]
        self.failing = failing(graph, pct)
        self.dir: str | None = None

    def fresh(self) -> None:
        """A new marker directory (every failing node fails again once)."""
        self.clean()
        if self.failing:
            self.dir = tempfile.mkdtemp(prefix="cleo-bench-e2e-")

    def marker(self, node: Any) -> str:
        assert self.dir is not None
        return os.path.join(self.dir, str(node))

    def clean(self) -> None:
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


def await_done(done: Callable[[float], bool], guard: h.TreeMemory, deadline: float) -> None:
    """Poll ``done(timeout)`` until it is true; :class:`Aborted` on the guard or the deadline."""
    while not done(0.5):
        if guard.tripped:
            raise Aborted(guard.tripped)
        if time.perf_counter() > deadline:
            raise Aborted("time limit passed (--run-timeout)")


# -- the contenders ------------------------------------------------------------------------------------
class CleoContender:
    """``Workflow.from_networkx`` + ``engine.submit`` + every node done + the sinks' values."""

    name = "cleo"

    def __init__(self, engine: Any):
        import cleo_dask as cd
        self.engine, self.agent = engine, cd.Agent("bench")
        self.plain = cd.task(s.agent_noop, name="noop")
        self.retried = cd.task(s.agent_noop, name="noop", retries=1)
        self.run_: Any = None

    def setup(self, case: Case) -> Any:
        """The user's own ``tasks`` mapping (untimed)."""
        import cleo_dask as cd
        if not case.failing:
            return dict.fromkeys(case.graph, self.plain)
        tasks = dict.fromkeys(case.graph, self.retried)
        for n in case.failing:
            tasks[n] = cd.task(FailOnce(case.marker(n)).run, name="noop", retries=1)
        return tasks

    def run(self, case: Case, tasks: Any, guard: h.TreeMemory, deadline: float) -> None:
        import cleo_dask as cd
        wf = cd.Workflow.from_networkx(case.graph, tasks, name="e2e")
        self.run_ = self.engine.submit(wf, self.agent)
        await_done(lambda t: self.run_.wait(timeout=t), guard, deadline)
        outcome = self.run_.result()
        assert len(outcome.values_by_node(case.sinks)) == len(case.sinks)

    def check(self, case: Case) -> dict[str, Any]:
        """Every node ended well, and each failing node took two attempts (untimed)."""
        outcome = self.run_.result()
        assert outcome.ok, outcome.counts()
        retried = sum(len(outcome[n].attempts) > 1 for n in case.failing)
        assert retried == len(case.failing), (retried, len(case.failing))
        return {}

    def cleanup(self, aborted: bool) -> None:
        if self.run_ is not None:
            if aborted:
                self.run_.cancel()
            self.run_.release()
        self.run_ = None


class RawContender:
    """A raw Dask dict graph made from the networkx graph, ``client.get(dsk, sinks, sync=False)``
    (``retries=1`` when nodes fail), every sink done, gathered."""

    name = "raw"

    def __init__(self, client: Any, restart: bool = True):
        self.client = client
        self.restart = restart      # after a stopped run (not on a cluster shared with others)
        self.futures: list[Any] = []
        self._runs = 0

    def setup(self, case: Case) -> Any:
        self._runs += 1
        return f"-r{self._runs}"        # fresh keys each run

    def run(self, case: Case, sfx: str, guard: h.TreeMemory, deadline: float) -> None:
        from distributed.client import _wait
        pred, fails = case.graph.pred, case.failing
        dsk = {n + sfx: ((raw_fail_once, case.marker(n)) if n in fails else (s.noop,)) + tuple(p + sfx for p in pred[n])
               for n in case.graph}
        self.futures = self.client.get(dsk, [k + sfx for k in case.sinks], sync=False,
                                       retries=1 if fails else None)
        del dsk

        def done(t: float) -> bool:
            try:
                self.client.sync(_wait, self.futures, timeout=t)
                return True
            except TimeoutError:
                return False
        await_done(done, guard, deadline)
        assert len(self.client.gather(self.futures)) == len(case.sinks)

    def check(self, case: Case) -> dict[str, Any]:
        return {}

    def cleanup(self, aborted: bool) -> None:
        if aborted and self.futures:
            self.client.cancel(self.futures)
        self.futures = []
        if aborted and self.restart:   # what the scheduler and workers still hold of the graph goes
            with contextlib.suppress(Exception):   # best effort
                self.client.restart()


class RayContender:
    """One Ray remote per node (``.remote(*parent_refs)`` in topological order), the sinks' values
    read with ``ray.get``; failing nodes ``max_retries=1, retry_exceptions=True``."""

    name = "ray"

    def __init__(self) -> None:
        import ray
        self.ray = ray
        self.noop = ray.remote(ray_noop)
        self.fail = ray.remote(ray_fail_once).options(max_retries=1, retry_exceptions=True)
        self.retried = self.noop.options(max_retries=1, retry_exceptions=True)
        self.refs: dict[Any, Any] = {}

    def setup(self, case: Case) -> Any:
        return None

    def run(self, case: Case, _: Any, guard: h.TreeMemory, deadline: float) -> None:
        pred, fails, refs = case.graph.pred, case.failing, self.refs
        plain = self.retried if fails else self.noop
        for n in case.graph:
            parents = [refs[p] for p in pred[n]]
            refs[n] = self.fail.remote(case.marker(n), *parents) if n in fails else plain.remote(*parents)
        sinks = [refs[n] for n in case.sinks]

        def done(t: float) -> bool:
            ready, _ = self.ray.wait(sinks, num_returns=len(sinks), timeout=t, fetch_local=False)
            return len(ready) == len(sinks)
        await_done(done, guard, deadline)
        assert len(self.ray.get(sinks)) == len(sinks)

    def check(self, case: Case) -> dict[str, Any]:
        return {}

    def cleanup(self, aborted: bool) -> None:
        if aborted:
            for r in self.refs.values():
                with contextlib.suppress(Exception):   # best effort
                    self.ray.cancel(r, force=True)
        self.refs = {}


# -- measuring -----------------------------------------------------------------------------------------
def timed_run(contender: Any, case: Case, *, group: set[int], count: str, cap: float | None,
              limit: float, floor: float | None = None) -> dict[str, Any]:
    """One guarded, timed run of ``contender`` on ``case``: seconds, memory, or ``error``."""
    case.fresh()
    prepared = contender.setup(case)
    row: dict[str, Any] = {}
    aborted = False
    guard = h.TreeMemory(group, count=count, cap=cap, interrupt=True, floor=floor)
    try:
        try:
            with guard:
                t0 = time.perf_counter()
                try:
                    contender.run(case, prepared, guard, t0 + limit)
                    row["seconds"] = time.perf_counter() - t0
                except Aborted as exc:
                    aborted = True
                    row["error"] = f"aborted: {exc}"
                except Exception as exc:  # noqa: BLE001 - a broken contender is reported, not fatal
                    aborted = True
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        except KeyboardInterrupt:         # the guard's, wherever it landed; a user's goes on up
            if not guard.tripped:
                raise
            aborted = True
            row.pop("seconds", None)
            row["error"] = f"aborted: {guard.tripped}"
        row.update(guard.as_dict())
        if not aborted:
            try:
                row.update(contender.check(case))
            except AssertionError as exc:      # it ran, but not every node ended as it should
                row["error"] = f"check failed: {exc}"[:300]
    finally:
        contender.cleanup(aborted)
        case.clean()
    return row


def summarize(n: int, pct: float, failing_: int, name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of a contender on a case: median seconds, per-node ms, memory peaks (max over runs)."""
    row: dict[str, Any] = {"case": case_name(n, pct), "contender": name, "tasks": n, "fail_pct": pct,
                           "failing": failing_}
    times = [r["seconds"] for r in runs if "seconds" in r]
    if times:
        med = statistics.median(times)
        row.update(median_s=round(med, 3), min_s=round(min(times), 3), reps=len(times),
                   per_node_ms=round(1000 * med / n, 4))
    measured = [r for r in runs if "client_peak_mib" in r]
    if measured:
        row["client_start_mib"] = min(r["client_start_mib"] for r in measured)
        for key in ("client_peak_mib", "procs_peak_mib", "total_peak_mib"):
            row[key] = max(r[key] for r in measured)
        for key in ("client_cpu_s", "procs_cpu_s"):
            row[key] = round(statistics.median(r[key] for r in measured), 2)
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        row["error"] = errors[0]
    return row


def ratios(rows: list[dict[str, Any]]) -> None:
    """``ratio``: median time over raw Dask's on the same case; ``fail_ratio``: over the same
    contender's time without failures at the same size."""
    rows = [r for r in rows if "tasks" in r]
    by = {(r["tasks"], r["fail_pct"], r["contender"]): r for r in rows}
    for r in rows:
        raw = by.get((r["tasks"], r["fail_pct"], "raw"))
        if r.get("median_s") and raw and raw.get("median_s"):
            r["ratio"] = round(r["median_s"] / raw["median_s"], 3)
        base = by.get((r["tasks"], 0, r["contender"]))
        if r["fail_pct"] and r.get("median_s") and base and base.get("median_s"):
            r["fail_ratio"] = round(r["median_s"] / base["median_s"], 3)


def dask_workers(client: Any) -> set[int]:
    """The pids of the cluster's worker processes now (new ones after a restart); none when the
    workers live in this process."""
    return set(client.run(os.getpid).values()) - {os.getpid()}


def default_cap() -> float:
    """Half the memory available now: what the benchmark's processes may take together."""
    return psutil.virtual_memory().available / 2


def default_limit(n: int) -> float:
    """Seconds a run of ``n`` nodes may take: 120 s + 5 ms per node."""
    return 120 + 0.005 * n


def contender_names(args: Any) -> tuple[list[str], dict[str, str]]:
    """The contenders to run, and a note for each left out."""
    import importlib.util
    names, notes = ["cleo", "raw"], {}
    if args.no_ray:
        notes["ray"] = "left out (--no-ray)"
    elif importlib.util.find_spec("ray") is None:
        notes["ray"] = "not importable (pip install ray)"
    else:
        names.append("ray")
    return names, notes


def case_name(n: int, pct: float) -> str:
    return f"e2e-{n}" + (f"-fail{pct:g}%" if pct else "")


def run_cases(args: Any, names: list[str], one_run: Callable[[str, int, float], dict[str, Any]],
              notes: dict[str, str]) -> list[dict[str, Any]]:
    """Every size of ``args.e2e``, each also with ``args.fail_pct`` % failing once, each contender
    in turn (the order rotates between repetitions): ``one_run(name, n, pct)``; a contender
    stopped by its guard is skipped afterwards.  Returns the summarized rows."""
    sizes = args.e2e or ([300] if args.tiny else [10_000, 100_000, 1_000_000])
    pcts = [0.0] + ([args.fail_pct] if args.fail_pct else [])
    rows: list[dict[str, Any]] = []
    for n in sizes:
        for pct in pcts:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for r in range(h.reps(args, 1)):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    if name in notes or (name == "raw" and n > 100_000 and not args.raw_1m):
                        continue
                    if not args.quiet:
                        print(f"# e2e {n} fail {pct:g}%: {name} ...", flush=True)
                    got = one_run(name, n, pct)
                    runs[name].append(got)
                    if "error" in got:
                        notes[name] = f"skipped: {got['error']} at {n} nodes"
            for name in names:
                if runs[name]:
                    rows.append(summarize(n, pct, got_failing(runs[name]), name, runs[name]))
                else:
                    rows.append({"case": case_name(n, pct), "contender": name, "tasks": n, "fail_pct": pct,
                                 "note": notes.get(name) or "skipped above 100,000 nodes (--raw-1m runs it)"})
                if not args.quiet:
                    print(f"# {rows[-1]}", flush=True)
    rows += [{"case": "e2e", "contender": name, "note": note} for name, note in notes.items()
             if name not in names]
    ratios(rows)
    return rows


def got_failing(runs: list[dict[str, Any]]) -> int:
    return max(r.get("failing", 0) for r in runs)


class InProcess:
    """Contenders run here, on this process's cluster (``--shared-cluster``, ``--address``, and
    each isolated child)."""

    def __init__(self, args: Any, client: Any, engine: Any, graph_of: Callable[[int], Any], names: list[str]):
        self.args, self.client, self.graph_of = args, client, graph_of
        self.cap = cap_of(args)
        self.contenders: dict[str, Any] = {}
        self._graph: tuple[int, Any] | None = None
        self.ray: Any = None
        for name in names:
            if name == "cleo":
                self.contenders[name] = CleoContender(engine)
            elif name == "raw":
                self.contenders[name] = RawContender(client, restart=not args.address)
            elif name == "ray":
                import ray
                self.ray = ray
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                self.contenders[name] = RayContender()

    def graph(self, n: int) -> Any:
        if self._graph is None or self._graph[0] != n:
            self._graph = None
            self._graph = (n, self.graph_of(n))
        return self._graph[1]

    def warm_up(self) -> None:
        """One untimed run of each contender on a small graph."""
        for name in self.contenders:
            self.run(name, 200 if self.args.tiny else 1000, 0.0, limit=120)
        self._graph = None

    def run(self, name: str, n: int, pct: float, limit: float | None = None) -> dict[str, Any]:
        """One guarded, timed run (:func:`timed_run`)."""
        case = Case(self.graph(n), pct)
        row = timed_run(self.contenders[name], case, group=dask_workers(self.client),
                        count="others" if name == "ray" else "group", cap=self.cap,
                        floor=self.args.min_free_gib * 1024**3,
                        limit=limit or self.args.run_timeout or default_limit(n))
        row["failing"] = len(case.failing)
        return row

    def close(self) -> None:
        if self.ray is not None:
            self.ray.shutdown()


def isolated_run(args: Any, name: str, n: int, pct: float) -> dict[str, Any]:
    """One run of ``name`` in a fresh process with its own cluster (``benchmarks.scale --e2e N
    --child NAME``): nothing left over from another contender counts in its memory."""
    import json
    import subprocess
    import sys
    with tempfile.TemporaryDirectory(prefix="cleo-bench-e2e-") as d:
        out = os.path.join(d, "run.jsonl")
        cmd = [sys.executable, "-m", "benchmarks.scale", "--e2e", str(n), "--child", name, "--fail-pct", str(pct),
               "--json", out, "--quiet", "--warmup", str(args.warmup), "--workers", str(args.workers),
               "--threads", str(args.threads), "--mem-cap-gib", str(cap_of(args) / 1024**3),
               "--min-free-gib", str(args.min_free_gib),
               "--run-timeout", str(args.run_timeout or default_limit(n))]
        cmd += (["--in-process"] if args.in_process else []) + (["--tiny"] if args.tiny else [])
        try:
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
                                  timeout=(args.run_timeout or default_limit(n)) + 600)
        except subprocess.TimeoutExpired:
            return {"error": "aborted: its process did not end in time"}
        rows = []
        if os.path.exists(out):
            with open(out) as f:
                rows = [json.loads(line) for line in f]
        runs = [r for r in rows if r.get("case") == "e2e-run"]
        if not runs:
            if done.returncode < 0:
                return {"error": f"its process was killed (signal {-done.returncode})"}
            tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
            return {"error": f"its process ended with code {done.returncode}: {tail[0][:200]}"}
        return {k: v for k, v in runs[0].items() if k not in ("benchmark", "case")}


def cap_of(args: Any) -> float:
    """The memory cap in bytes: ``--mem-cap-gib``, else half the memory available now."""
    if not getattr(args, "_cap", None):
        args._cap = args.mem_cap_gib * 1024**3 if args.mem_cap_gib else default_cap()
    return args._cap
