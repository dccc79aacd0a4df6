"""The monitor: a scheduler plugin that keeps the state of cleo runs ON THE SCHEDULER.

It reads two streams the scheduler already has: cleo's events (:mod:`cleo_dask.core.events`, every
topic starting with ``"cleo"``) and the task transitions of the keys a ``run`` / ``keys`` event
announced.  From them it keeps, for the last N runs (``cleo_dask.monitor.max-runs``, and
at most ``max-nodes`` nodes in all), each
run's agent, start, state and counts, and each node's state (pending, running, retrying,
succeeded, fell_back, failed, skipped, upstream_failed, cancelled) with its attempts per worker.  The dashboard
page and the Prometheus metrics read it; clients read a copy with :func:`snapshot`.  It never imports the page:
:mod:`cleo_dask.monitor.install` registers it and adds the page.

Everything runs on the scheduler's event loop, so no locks; every hook is a dict lookup for keys
that are not cleo's.
"""
from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from cleo_dask import config as _config
from cleo_dask.admission.plugin import observe_releases
from cleo_dask.monitor import metrics as _metrics
from cleo_dask.core.events import TOPIC

_CLEO_KEY = re.compile(r"-[0-9a-f]{16}(-|$)")   # <task>-<run id>-<node>[-<generation>]
MAX_EARLY_KEYS = 100_000

PLUGIN_NAME = "cleo-monitor"
STATES = ("pending", "running", "retrying", "succeeded", "fell_back", "failed", "skipped", "upstream_failed",
          "cancelled")
FINAL = frozenset({"succeeded", "fell_back", "failed", "skipped", "upstream_failed", "cancelled"})
SKIPS = frozenset({"skipped", "upstream_failed"})


@dataclass(frozen=True)
class RunSummary:
    """A monitored run at a glance: a row of the runs table (``counts``: nodes by state)."""

    id: str
    name: str
    agent: str
    started: float
    ended: float | None
    state: str
    counts: dict[str, int]
    nodes: int

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy (what :func:`snapshot` sends)."""
        return asdict(self)


class NodeState:
    """One node of a monitored run."""

    __slots__ = ("name", "key", "state", "attempts", "mode", "error", "worker", "since")

    def __init__(self, name: str, key: str):
        self.name = name
        self.key = key
        self.state = "pending"
        self.attempts = 0
        self.mode = "task"
        self.error: str | None = None
        self.worker: str | None = None
        self.since: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy."""
        return {"name": self.name, "key": self.key, "state": self.state, "attempts": self.attempts,
                "mode": self.mode, "error": self.error, "worker": self.worker, "since": self.since}


class RunState:
    """One monitored run: its nodes, edges and the attempt bars of its timeline."""

    def __init__(self, run_id: str, msg: dict[str, Any], max_bars: int):
        self.id = run_id
        self.name = str(msg.get("name") or "")
        self.agent = str(msg.get("agent") or "")
        self.started = float(msg.get("started") or time.time())
        self.ended: float | None = None
        self.state = "running"
        self.nodes: dict[str, NodeState] = {n: NodeState(n, k) for n, k in (msg.get("nodes") or {}).items()}
        self.order = {n: i for i, n in enumerate(self.nodes)}   # workflow order (units run in it)
        self.edges: list[list[str]] = msg.get("edges") or []   # [[parent, child], ...] as sent
        # bars of the timeline: dicts with node, worker, start, end, status
        self.bars: list[dict[str, Any]] = []
        self.bars_total = 0   # bars ever added (the page streams only the new ones)
        self.max_bars = max_bars
        self.failed_in: dict[str, str] = {}   # key -> node whose attempt failed in it last

    def counts(self) -> dict[str, int]:
        """Number of nodes by state."""
        out: dict[str, int] = {}
        for n in self.nodes.values():
            out[n.state] = out.get(n.state, 0) + 1
        return out

    def bar(self, **fields: Any) -> None:
        """Add an attempt to the timeline (the oldest are dropped past ``max_bars``)."""
        self.bars.append(fields)
        self.bars_total += 1
        if len(self.bars) > self.max_bars:
            del self.bars[: len(self.bars) - self.max_bars]

    def summary(self) -> RunSummary:
        """The run at a glance (what the runs table shows)."""
        return RunSummary(self.id, self.name, self.agent, self.started, self.ended, self.state, self.counts(),
                          len(self.nodes))

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy (msgpack-able)."""
        return {"id": self.id, "name": self.name, "agent": self.agent, "started": self.started,
                "ended": self.ended, "state": self.state, "counts": self.counts(),
                "nodes": {n: s.to_dict() for n, s in self.nodes.items()},
                "edges": [list(e) for e in self.edges], "bars": [dict(b) for b in self.bars]}


class CleoMonitor(SchedulerPlugin):
    """Scheduler plugin keeping the last ``max_runs`` cleo runs (registered by :class:`Engine`)."""

    idempotent = True
    name = PLUGIN_NAME

    def __init__(self, max_runs: int | None = None, max_bars: int | None = None, dashboard: bool | None = None):
        """``dashboard``: whether the installer (:mod:`cleo_dask.monitor.install`) serves this
        monitor's page (default ``cleo_dask.monitor.dashboard``); the plugin itself never does."""
        self.max_runs = int(max_runs if max_runs is not None else _config.get("monitor.max-runs", 100))
        self.max_bars = int(max_bars if max_bars is not None else _config.get("monitor.max-bars", 2000))
        self.max_nodes = int(_config.get("monitor.max-nodes", 200_000))
        self.nodes_kept = 0
        self.dashboard = bool(_config.get("monitor.dashboard", True) if dashboard is None else dashboard)
        self.runs: OrderedDict[str, RunState] = OrderedDict()
        self.keys: dict[str, tuple[str, tuple[str, ...]]] = {}   # dask key -> (run id, nodes of the unit)
        # transitions of cleo keys not announced yet: the engine sends its "run" / "keys" events
        # without waiting, so they may arrive after the graph; replayed when the keys are mapped
        self.early: OrderedDict[str, list[tuple[str, str, dict[str, Any]]]] = OrderedDict()
        self.scheduler: Any = None
        self.version = 0   # bumped at every change (the dashboard redraws only when it moved)

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        _metrics.metrics()
        observe_releases(_metrics.observe_schedule_lateness)   # pre-staged runs' lateness, from admission

    # -- events ----------------------------------------------------------------------------
    def log_event(self, topic: str, msg: Any) -> None:
        if not isinstance(topic, str) or not topic.startswith(TOPIC) or not isinstance(msg, dict):
            return
        kind = msg.get("kind")
        if kind == "lateness":
            _metrics.observe_schedule_lateness(float(msg.get("seconds") or 0.0))
            return
        run_id = msg.get("run")
        if kind == "run":
            self._new_run(str(run_id), msg)
            return
        run = self.runs.get(run_id)
        if run is None:
            return
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(run, msg)
            self.version += 1

    def _new_run(self, run_id: str, msg: dict[str, Any]) -> None:
        run = RunState(run_id, msg, self.max_bars)
        self.runs[run_id] = run
        self._map_keys(run, {n: s.key for n, s in run.nodes.items()})
        self.nodes_kept += len(run.nodes)
        while len(self.runs) > 1 and (len(self.runs) > self.max_runs or self.nodes_kept > self.max_nodes):
            self._evict()
        self.version += 1

    def _evict(self) -> None:
        victim = next((r for r in self.runs.values() if r.state != "running"), None)
        if victim is None:
            victim = next(iter(self.runs.values()))
        del self.runs[victim.id]
        self.nodes_kept -= len(victim.nodes)
        for s in victim.nodes.values():   # its current keys (older ones were dropped when replaced)
            entry = self.keys.get(s.key)
            if entry is not None and entry[0] == victim.id:
                del self.keys[s.key]

    def _map_keys(self, run: RunState, nodes: dict[str, str]) -> None:
        by_key: dict[str, list[str]] = {}
        for n, k in nodes.items():
            by_key.setdefault(k, []).append(n)
        for k, names in by_key.items():
            if len(names) > 1:
                names.sort(key=run.order.__getitem__)
            self.keys[k] = (run.id, tuple(names))
            for start, finish, kwargs in self.early.pop(k, ()):
                self.transition(k, start, finish, **kwargs)

    def _on_keys(self, run: RunState, msg: dict[str, Any]) -> None:
        if msg.get("edges"):   # nodes made at run time (mapped items: runs/expand.py) join the run
            for n, k in (msg.get("nodes") or {}).items():
                if n not in run.nodes:
                    run.nodes[n] = NodeState(n, k)
                    run.order[n] = len(run.order)
                    self.nodes_kept += 1
            run.edges.extend(msg["edges"])
        nodes = {n: k for n, k in (msg.get("nodes") or {}).items() if n in run.nodes}
        for n, k in nodes.items():
            s = run.nodes[n]
            old, s.key = s.key, k
            if s.state != "retrying":
                s.state = "pending"
            if old in self.keys and all(run.nodes[m].key != old for m in self.keys[old][1]):
                del self.keys[old]
        self._map_keys(run, nodes)

    def _on_attempt(self, run: RunState, msg: dict[str, Any]) -> None:
        s = run.nodes.get(msg.get("node"))
        if s is None:
            return
        s.attempts += 1
        s.error = msg.get("error")
        start, end = msg.get("start"), msg.get("end")
        run.bar(node=s.name, worker=str(msg.get("worker") or "?"), start=start, end=end, status="failed",
                attempt=msg.get("attempt"), error=s.error)
        if msg.get("key"):
            run.failed_in[msg["key"]] = s.name
        duration = end - start if isinstance(start, (int, float)) and isinstance(end, (int, float)) else None
        _metrics.observe_attempt("failed", duration, bool(msg.get("timed_out")))

    def _on_skipped(self, run: RunState, msg: dict[str, Any]) -> None:
        s = run.nodes.get(msg.get("node"))
        if s is not None:
            s.state = msg.get("status") if msg.get("status") in SKIPS else "skipped"
            s.error = msg.get("reason")

    def _on_retry(self, run: RunState, msg: dict[str, Any]) -> None:
        s = run.nodes.get(msg.get("node"))
        if s is not None:
            s.state = "retrying"
        _metrics.observe_retry()

    def _on_fallback(self, run: RunState, msg: dict[str, Any]) -> None:
        s = run.nodes.get(msg.get("node"))
        if s is not None:
            s.mode = "fallback"
            s.state = "retrying"
        _metrics.observe_fallback()

    def _on_outcome(self, run: RunState, msg: dict[str, Any]) -> None:
        s = run.nodes.get(msg.get("node"))
        if s is not None and msg.get("status") in STATES:
            s.state = msg["status"]
            s.error = msg.get("error") or s.error

    def _on_finished(self, run: RunState, msg: dict[str, Any]) -> None:
        if run.ended is not None:
            return
        run.ended = float(msg.get("ended") or time.time())
        run.state = str(msg.get("status") or "succeeded")
        for s in run.nodes.values():
            if s.state not in FINAL:
                s.state = "cancelled"
        for state, count in run.counts().items():
            _metrics.observe_node(state, count)
        _metrics.observe_run(run.state)

    # -- transitions -----------------------------------------------------------------------
    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        entry = self.keys.get(key)
        if entry is None:
            if finish == "forgotten":  # e.g. a key of a run evicted from the history: nothing to replay
                self.early.pop(key, None)
            elif isinstance(key, str) and _CLEO_KEY.search(key):
                self.early.setdefault(key, []).append((start, finish, kwargs))
                if len(self.early) > MAX_EARLY_KEYS:
                    self.early.popitem(last=False)
            return
        run = self.runs.get(entry[0])
        if run is None:
            return
        nodes = [run.nodes[n] for n in entry[1] if n in run.nodes and run.nodes[n].key == key]
        if not nodes:
            return
        now = time.time()
        if finish == "processing":
            ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
            worker = ts.processing_on.address if ts is not None and ts.processing_on is not None else None
            for s in nodes:
                s.worker, s.since = worker, now
            current = next((s for s in nodes if s.state not in FINAL), None)
            if current is not None:
                current.state = "running"
        elif start == "processing" and finish == "memory":
            t0, t1 = _compute_span(kwargs.get("startstops"), now)
            worker = kwargs.get("worker") or nodes[0].worker
            for s in nodes:
                if s.state in SKIPS:
                    continue
                s.state = "fell_back" if s.mode == "fallback" else "succeeded"
                s.attempts += 1
                s.worker = worker
            ran = [s.name for s in nodes if s.state not in SKIPS]
            if ran:
                run.bar(node=" > ".join(ran), worker=str(worker or "?"), start=t0, end=t1,
                        status="fell_back" if any(s.mode == "fallback" for s in nodes) else "succeeded",
                        attempt=None, error=None)
                _metrics.observe_attempt("succeeded", t1 - t0)
        elif start == "processing" and finish == "erred":
            failed = run.failed_in.get(key)
            for s in nodes:
                if s.name == failed or failed is None:
                    if s.state not in FINAL or s.state == "failed":
                        s.state = "failed"
                    break
                if s.state not in FINAL:
                    s.state = "succeeded"
        elif start == "processing" and finish in ("waiting", "released"):
            for s in nodes:   # Dask's own retry, or a lost worker: runs again
                if s.state == "running":
                    s.state = "retrying"
        else:
            return
        self.version += 1

    # -- reading ---------------------------------------------------------------------------
    def summaries(self) -> list[RunSummary]:
        """One summary per kept run, newest first."""
        return [r.summary() for r in reversed(self.runs.values())]

    def snapshot(self, run_id: str | None = None) -> dict[str, Any]:
        """``{"runs": [summary...]}`` newest first, plus ``"run"`` (full copy) for ``run_id``."""
        out: dict[str, Any] = {"runs": [s.to_dict() for s in self.summaries()]}
        if run_id is not None and run_id in self.runs:
            out["run"] = self.runs[run_id].to_dict()
        return out


def _compute_span(startstops: Any, now: float) -> tuple[float, float]:
    for ss in startstops or ():
        if isinstance(ss, dict) and ss.get("action") == "compute":
            return float(ss["start"]), float(ss["stop"])
    return now, now


def snapshot(run_id: str | None = None, dask_scheduler: Any = None) -> dict[str, Any]:
    """On the scheduler (``client.run_on_scheduler(snapshot, run_id)``): the monitor's state."""
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return {"runs": [], "missing": True}
    return plugin.snapshot(run_id)
