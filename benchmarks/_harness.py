"""The shared benchmark harness.

A benchmark module builds an argument parser with :func:`parser`, starts a cluster with
:func:`cluster`, measures several *contenders* with :func:`compare` (warm-up, then repetitions
interleaved so that noise from the shared machine hits every contender alike) and reports with
:func:`report` (JSON lines on stdout and/or ``--json FILE``, then a markdown table)::

    args = parser(__doc__).parse_args(argv)
    with cluster(args) as client:
        rows = compare("chain-1000", {"raw": Contender(run_raw), "cleo": Contender(run_cleo)},
                       args, tasks=1000, baseline="raw", client=client)
    report(rows, args, columns=["case", "contender", "median_s", "per_task_ms", "ratio"])

Peak memory: the client process (resident set size, sampled every 20 ms by a thread) and, for a
``processes=True`` cluster, each worker process (sampled likewise through psutil by pid).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

MiB = 1024 * 1024


# -- arguments -------------------------------------------------------------------------------
def parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments every benchmark shares (add your own to the returned parser)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny sizes, one repetition: a smoke test in seconds")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per contender (default: per benchmark, tiny: 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per contender (default 1)")
    p.add_argument("--json", metavar="FILE", default=None, help="also append the JSON lines to FILE")
    p.add_argument("--quiet", action="store_true", help="no JSON lines on stdout (table only)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    p.add_argument("--in-process", action="store_true",
                   help="in-process cluster (processes=False); default: worker processes, like the engine")
    p.add_argument("--address", default=None, help="use a running scheduler instead of a LocalCluster")
    return p


def reps(args: argparse.Namespace, default: int = 3) -> int:
    """Timed repetitions: ``--reps``, else 1 in tiny mode, else ``default``."""
    if args.reps is not None:
        return max(1, args.reps)
    return 1 if args.tiny else default


# -- cluster -------------------------------------------------------------------------------------
@contextlib.contextmanager
def cluster(args: argparse.Namespace, **cluster_kwargs: Any) -> Iterator[Any]:
    """A ``distributed.Client`` on a fresh ``LocalCluster`` (or ``--address``), closed afterwards."""
    from distributed import Client, LocalCluster

    if args.address:
        with Client(args.address, set_as_default=False) as client:
            yield client
        return
    # the engine's advice about I/O-bound agents (worker-saturation) is noise here
    warnings.filterwarnings("ignore", message="cleo_dask: this cluster is not set up")
    opts = dict(n_workers=args.workers, threads_per_worker=args.threads, processes=not args.in_process,
                dashboard_address=":0")
    opts.update(cluster_kwargs)
    with LocalCluster(**opts) as lc, Client(lc, set_as_default=False) as client:
        client.wait_for_workers(opts["n_workers"])
        yield client


def machine(client: Any = None) -> dict[str, Any]:
    """Where the numbers come from: cores, memory, Python, dask, cluster shape, load."""
    import dask
    import distributed

    info: dict[str, Any] = {
        "cpus": os.cpu_count(), "mem_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(), "dask": dask.__version__, "distributed": distributed.__version__,
        "platform": platform.platform(), "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    if client is not None:
        workers = client.scheduler_info().get("workers", {})
        info["workers"] = len(workers)
        info["threads"] = sum(w.get("nthreads", 0) for w in workers.values())
    return info


# -- memory --------------------------------------------------------------------------------------
class PeakMemory:
    """Sample the resident memory of this process and of the worker processes while active."""

    def __init__(self, client: Any = None, interval: float = 0.02):
        self.interval = interval
        self._me = psutil.Process()
        self._workers: list[psutil.Process] = []
        if client is not None:
            try:
                pids = client.run(os.getpid)
                self._workers = [psutil.Process(p) for p in set(pids.values()) if p != os.getpid()]
            except Exception:  # noqa: BLE001 - no worker processes to watch (e.g. remote)
                self._workers = []
        self.client_peak = 0
        self.client_start = 0
        self.worker_peak = 0
        self.client_cpu = 0.0
        self.workers_cpu = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        try:
            self.client_peak = max(self.client_peak, self._me.memory_info().rss)
            if self._workers:
                total = 0
                for w in self._workers:
                    try:
                        total += w.memory_info().rss
                    except psutil.Error:
                        pass
                self.worker_peak = max(self.worker_peak, total)
        except psutil.Error:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _cpu(self) -> tuple[float, float]:
        mine = self._me.cpu_times()
        theirs = 0.0
        for w in self._workers:
            try:
                t = w.cpu_times()
                theirs += t.user + t.system
            except psutil.Error:
                pass
        return mine.user + mine.system, theirs

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.client_start = self._me.memory_info().rss
        self._cpu0 = self._cpu()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        cpu = self._cpu()
        self.client_cpu = cpu[0] - self._cpu0[0]
        self.workers_cpu = cpu[1] - self._cpu0[1]

    def as_dict(self) -> dict[str, float | None]:
        """Peaks in MiB (``client_delta_mib``: peak minus the resident size at the start) and CPU
        seconds used meanwhile by this process (client, and the scheduler of a LocalCluster) and
        by the worker processes: less sensitive to a busy machine than wall time."""
        return {"client_peak_mib": round(self.client_peak / MiB, 1),
                "client_delta_mib": round((self.client_peak - self.client_start) / MiB, 1),
                "workers_peak_mib": round(self.worker_peak / MiB, 1) if self._workers else None,
                "client_cpu_s": round(self.client_cpu, 3),
                "workers_cpu_s": round(self.workers_cpu, 3) if self._workers else None}


def _interrupt_main() -> None:
    """A real SIGINT to the main thread: unlike ``_thread.interrupt_main`` (a flag checked between
    bytecodes) it also wakes a main thread blocked in a lock or a system call."""
    import signal
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    else:
        import _thread
        _thread.interrupt_main()


class TreeMemory:
    """Sample, in a thread, the resident memory of this process (the client, and the scheduler of a
    ``LocalCluster``) and of its descendant processes (listed again every 0.5 s: workers that
    come and go are counted), split into ``group`` (pids given, and their descendants: e.g. the
    Dask cluster's nannies and workers) and the others (e.g. Ray's processes).

    A guard: when the resident memory of this process and all its descendants passes ``cap``
    bytes, :attr:`tripped` says so and, with ``interrupt=True``, the main thread gets a
    ``KeyboardInterrupt`` (so even a call that blocks, like a graph submission, stops: the machine
    survives a contender that does not fit).  ``floor``: the same when the memory the machine has
    available (other users' processes included) falls below ``floor`` bytes."""

    def __init__(self, group: set[int] | None = None, count: str = "group", cap: float | None = None,
                 interval: float = 0.05, interrupt: bool = False, floor: float | None = None):
        self.group = set(group or ())
        self.count = count          # "group": the group's processes; "others": everything else
        self.cap = cap
        self.floor = floor          # trip too when the machine's available memory falls below this
        self.interval = interval
        self.interrupt = interrupt
        self._me = psutil.Process()
        self.client_start = self.client_peak = self.procs_peak = self.total_peak = 0
        self.tripped: str | None = None
        self._told = False
        self.client_cpu = self._client_cpu0 = 0.0
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._kind: dict[int, bool] = {}     # pid -> in the group
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self.list_every = 0.5   # seconds between listings of the descendant processes
        self.grace = 20.0       # seconds a tripped guard waits for its interrupt to stop the run
        self._told_at = 0.0
        self._kids: list[psutil.Process] = []
        self._kids_at = -1e9

    def _in_group(self, p: psutil.Process) -> bool:
        if p.pid not in self._kind:
            try:
                self._kind[p.pid] = p.pid in self.group or any(a.pid in self.group for a in p.parents())
            except psutil.Error:
                return False
        return self._kind[p.pid]

    def _sample(self) -> None:
        try:
            mine = self._me.memory_info().rss
            now = time.perf_counter()
            if now - self._kids_at >= self.list_every:
                # listing descendants reads every process of the machine (/proc/*/stat): not at
                # each sample, since this thread shares the GIL with the client it measures
                self._kids, self._kids_at = self._me.children(recursive=True), now
            kids = self._kids
        except psutil.Error:
            return
        counted = everything = 0
        for k in kids:
            try:
                rss = k.memory_info().rss
                cpu = k.cpu_times()
            except psutil.Error:
                continue
            everything += rss
            if self._in_group(k) == (self.count == "group"):
                counted += rss
                self._cpu_first.setdefault(k.pid, cpu.user + cpu.system)
                self._cpu_last[k.pid] = cpu.user + cpu.system
        self.client_peak = max(self.client_peak, mine)
        self.procs_peak = max(self.procs_peak, counted)
        self.total_peak = max(self.total_peak, mine + counted)
        if self.tripped is None and self.cap is not None and mine + everything > self.cap:
            self.tripped = (f"memory cap {self.cap / 1024**3:.1f} GiB passed (all processes "
                            f"{(mine + everything) / 1024**3:.1f} GiB) after {time.perf_counter() - self._t0:.1f} s")
        if self.tripped is None and self.floor is not None:
            free = psutil.virtual_memory().available
            if free < self.floor:
                self.tripped = (f"the machine's available memory fell to {free / 1024**3:.1f} GiB (all processes "
                                f"{(mine + everything) / 1024**3:.1f} GiB) after {time.perf_counter() - self._t0:.1f} s")
        if self.tripped is not None and not self._told:
            self._told, self._told_at = True, time.perf_counter()
            if self.interrupt:
                _interrupt_main()
        elif self.tripped is not None and self.interrupt and time.perf_counter() - self._told_at > self.grace:
            # the interrupt did not land (the main thread blocks in C while memory still grows):
            # end this process and its children rather than run a shared machine out of memory
            print(f"benchmark guard: {self.tripped}; the interrupt did not stop it, exiting", file=sys.stderr,
                  flush=True)
            for k in self._kids:
                with contextlib.suppress(psutil.Error):
                    k.kill()
            os._exit(70)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeMemory:
        gc.collect()
        self.client_start = self._me.memory_info().rss
        t = self._me.cpu_times()
        self._client_cpu0 = t.user + t.system
        self._sample()
        self._cpu_first = dict(self._cpu_last)   # processes already there count from now
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="tree-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.interrupt = False      # a pending interrupt may still land here: the fields are set already
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        t = self._me.cpu_times()
        self.client_cpu = t.user + t.system - self._client_cpu0

    def as_dict(self) -> dict[str, float]:
        """Peaks in MiB (and ``client_start_mib``, before): this process (``client_peak_mib``: the
        client and an in-process scheduler; it holds the benchmark's own graph too), the
        counted processes together (``procs_peak_mib``), both at the same moment (``total_peak_mib``);
        CPU seconds meanwhile of this process and of the counted processes."""
        return {"client_start_mib": round(self.client_start / MiB, 1),
                "client_peak_mib": round(self.client_peak / MiB, 1),
                "procs_peak_mib": round(self.procs_peak / MiB, 1),
                "total_peak_mib": round(self.total_peak / MiB, 1),
                "client_cpu_s": round(self.client_cpu, 2),
                "procs_cpu_s": round(sum(v - self._cpu_first.get(p, 0.0) for p, v in self._cpu_last.items()), 2)}


# -- measuring -----------------------------------------------------------------------------------
@dataclass
class Contender:
    """One way of doing the benchmark's work.

    ``run(prepared)`` is timed; ``setup()`` (untimed, called before every run) returns what ``run``
    takes; ``teardown(prepared)`` (untimed) cleans up after a run.
    """

    run: Callable[[Any], Any]
    setup: Callable[[], Any] | None = None
    teardown: Callable[[Any], Any] | None = None
    note: str = ""
    max_reps: int | None = None   # at most this many timed runs, and no warm-up (slow contenders)


@dataclass
class Timing:
    """The measurements of one contender on one case."""

    times: list[float] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None


def _once(c: Contender) -> float:
    prepared = c.setup() if c.setup is not None else None
    t0 = time.perf_counter()
    c.run(prepared)
    elapsed = time.perf_counter() - t0
    if c.teardown is not None:
        c.teardown(prepared)
    return elapsed


def measure(contenders: Mapping[str, Contender], args: argparse.Namespace, client: Any = None,
            default_reps: int = 3, warmup: int | None = None) -> dict[str, Timing]:
    """Warm up each contender, then time ``reps`` rounds, each running every contender once
    (the order rotates between rounds).  Memory peaks are per contender over its timed runs.
    ``warmup`` overrides ``--warmup`` (e.g. 0 for big cases after a warmed-up small one)."""
    names = list(contenders)
    out = {n: Timing() for n in names}
    warm = args.warmup if warmup is None else warmup
    for n in names:
        for _ in range(0 if args.tiny or contenders[n].max_reps else warm):
            try:
                _once(contenders[n])
            except Exception as exc:  # noqa: BLE001 - a broken contender is reported, not fatal
                out[n].error = f"{type(exc).__name__}: {exc}"
                break
    for r in range(reps(args, default_reps)):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            if out[n].error or (contenders[n].max_reps and len(out[n].times) >= contenders[n].max_reps):
                continue
            with PeakMemory(client) as mem:
                try:
                    out[n].times.append(_once(contenders[n]))
                except Exception as exc:  # noqa: BLE001
                    out[n].error = f"{type(exc).__name__}: {exc}"
            for k, v in mem.as_dict().items():
                if v is None:
                    continue
                if k.endswith("_cpu_s"):
                    out[n].cpu.setdefault(k, []).append(v)
                else:
                    out[n].memory[k] = max(out[n].memory.get(k, v), v)
    return out


def compare(case: str, contenders: Mapping[str, Contender], args: argparse.Namespace, *, tasks: int,
            baseline: str | None = None, client: Any = None, default_reps: int = 3, warmup: int | None = None,
            **extra: Any) -> list[dict[str, Any]]:
    """:func:`measure` and turn the timings into rows: median / min seconds, per-task ms, ratio
    of medians to ``baseline``, memory peaks.  ``extra`` fields are added to every row."""
    timings = measure(contenders, args, client, default_reps, warmup)
    base = timings.get(baseline) if baseline else None
    base_med = statistics.median(base.times) if base is not None and base.times else None
    rows = []
    for name, t in timings.items():
        row: dict[str, Any] = {"case": case, "contender": name, "tasks": tasks, **extra}
        if t.times:
            med = statistics.median(t.times)
            row.update(median_s=round(med, 4), min_s=round(min(t.times), 4), reps=len(t.times),
                       per_task_ms=round(1000 * med / max(tasks, 1), 4),
                       ratio=float(f"{med / base_med:.4g}") if base_med else None)
        if t.error:
            row["error"] = t.error
        if contenders[name].note:
            row["note"] = contenders[name].note
        row.update(t.memory)
        for k, v in t.cpu.items():
            row[k] = round(statistics.median(v), 3)
        if base is not None and base.cpu and t.cpu:
            mine = sum(statistics.median(v) for v in t.cpu.values())
            theirs = sum(statistics.median(v) for v in base.cpu.values())
            row["cpu_ratio"] = round(mine / theirs, 3) if theirs else None
        rows.append(row)
    return rows


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


# -- reporting -----------------------------------------------------------------------------------
def emit(row: Mapping[str, Any], args: argparse.Namespace, benchmark: str) -> None:
    """Write one JSON line (stdout unless ``--quiet``; appended to ``--json FILE``)."""
    line = json.dumps({"benchmark": benchmark, **row}, default=str)
    if not args.quiet:
        print(line, flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")


def markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of ``rows`` (missing cells empty)."""
    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
        return str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def report(rows: Sequence[Mapping[str, Any]], args: argparse.Namespace, benchmark: str,
           columns: Sequence[str], client: Any = None, title: str | None = None) -> None:
    """Emit every row as a JSON line, a ``machine`` line, then print the markdown table."""
    info = machine(client)
    emit({"case": "machine", **info}, args, benchmark)
    for r in rows:
        emit(r, args, benchmark)
    print()
    print(f"### {title or benchmark}  ({info['cpus']} cores, load {info['loadavg']}, "
          f"dask {info['dask']}, python {info['python']})")
    print()
    print(markdown(rows, columns))
    sys.stdout.flush()
