"""Durable runs: an engine with ``store=`` journals every run and can resume one after a crash.

* Workers write each finished node's output to the result store (see ``_resultstore``).
* The client journals runs: the run and its spec at submit, node statuses as their Dask tasks
  finish (a light poller, one SQLite transaction per tick, nothing added to the non-durable
  path), final statuses, attempts, cache keys and unstorable results when the run finishes.
* :meth:`Durability.resume`: nodes whose output is stored (and whose parents are all kept too)
  keep it: they become tasks that read the stored output on a worker, so no value goes through
  the client; every other node runs again, in a new generation of keys.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle
from dask.task_spec import Task

from . import _config
from ._agent import agent_id
from ._compile import compile_resubmission
from ._errors import StoreError
from ._journal import _HOST as HOST
from ._journal import FINISHED, Journal, RunRecord
from ._resultstore import ResultStore, load_output
from ._worker import collect_meta

if TYPE_CHECKING:
    from ._engine import Engine
    from ._run import Run

logger = logging.getLogger("cleo_dask")



@dataclass(frozen=True)
class RunStore:
    """Where durable runs are kept: the SQLite ``journal`` and a ``results`` URL (default: a
    directory beside the journal, ``<journal>.results``; any fsspec URL otherwise).

    ``Engine(store="runs.db")`` is ``Engine(store=RunStore("runs.db"))``.
    """

    journal: str
    results: str | None = None

    @property
    def results_url(self) -> str:
        """The result store's location."""
        return self.results or f"{self.journal}.results"

    def __fspath__(self) -> str:
        return self.journal

    def __str__(self) -> str:
        return self.journal


def as_run_store(store: Any) -> RunStore:
    """``store=`` as a :class:`RunStore` (a path or a RunStore); :class:`StoreError` otherwise."""
    if isinstance(store, (str, os.PathLike)) and not isinstance(store, RunStore):
        store = RunStore(os.fspath(store))
    if isinstance(store, RunStore):
        results = store.results
        if results is not None and "://" not in results:
            results = os.path.abspath(results)
        return RunStore(os.path.abspath(store.journal), results)
    raise StoreError(f"store must be a path to a journal file or a cd.RunStore, got {store!r}")


class _Tracked:
    def __init__(self, run: Run, stored: set[str]):
        self.run = run
        self.seen: set[str] = set()
        self.stored = stored  # nodes already kept from an earlier attempt of the run (resume)


class Durability:
    """Journals every run of ``engine`` into ``store``; resumes runs from it."""

    def __init__(self, engine: Engine, store: Any):
        self.engine = engine
        self.store = as_run_store(store)
        self.journal = Journal(self.store.journal)
        self.results = ResultStore(self.store.results_url, fsync=bool(_config.get("durable.fsync", True)))
        self.poll_interval = float(_config.get("durable.poll-interval", 0.25))
        engine.defaults = dataclasses.replace(engine.defaults, store=self.results)
        self._lock = threading.Lock()
        self._active: dict[str, _Tracked] = {}
        self._resuming: dict[str, set[str]] = {}
        self._finished_early: dict[str, Run] = {}
        self._finishing: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        engine.add_listener(self._on_run)

    # -- journaling ---------------------------------------------------------------------------
    def _on_run(self, kind: str, run: Run) -> None:
        if kind == "submitted":
            with self._lock:
                stored = self._resuming.pop(run.id, None)
            if stored is None:
                self._journal_new(run)
            tracked = _Tracked(run, stored or set())
            with self._lock:
                early = self._finished_early.pop(run.id, None) is run
                if not early:
                    self._active[run.id] = tracked
                if self._thread is None:
                    self._thread = threading.Thread(target=self._poll_loop, name="cleo-dask-journal", daemon=True)
                    self._thread.start()
            if early:  # the run ended before its "submitted" reached us
                self._journal_finished(tracked)
        elif kind == "finished":
            with self._lock:
                tracked = self._active.get(run.id)
                if tracked is None or tracked.run is not run:
                    tracked = None
                    self._finished_early[run.id] = run
                else:
                    del self._active[run.id]
                    self._finishing.add(run.id)
            if tracked is not None:
                try:
                    self._journal_finished(tracked)
                finally:
                    with self._lock:
                        self._finishing.discard(run.id)

    def wait_journaled(self, run_id: str, timeout: float = 30) -> bool:
        """Wait until the end of run ``run_id`` (which must be done) is in the journal."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                pending = run_id in self._active or run_id in self._finishing
            if not pending:
                return True
            time.sleep(0.02)
        return False

    def _journal_new(self, run: Run) -> None:
        spec, note = None, None
        try:
            spec = cloudpickle.dumps({"workflow": run.workflow, "agent": run.agent, "priority": run.priority,
                                      "fail_fast": run.fail_fast, "name": run.name,
                                      "inputs": dict(getattr(run, "inputs", None) or {})})
        except Exception as exc:  # noqa: BLE001 - the run goes on, it just cannot be resumed
            note = f"not resumable: the workflow or agent cannot be pickled ({type(exc).__name__}: {exc})"
            logger.warning("run %s: %s", run.id, note)
        self.journal.add_run(run.id, agent=agent_id(run.agent), workflow=run.workflow.name, name=run.name,
                             started=run.started, nodes=list(run.workflow.nodes), results=self.results.url,
                             spec=spec, note=note)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            if self.engine._closed:
                return
            with self._lock:
                active = list(self._active.values())
            for tracked in active:
                try:
                    self._poll(tracked)
                except Exception:  # noqa: BLE001 - journaling is best effort mid-run
                    logger.debug("journal poll of run %s failed", tracked.run.id, exc_info=True)

    def _poll(self, tracked: _Tracked) -> None:
        run = tracked.run
        with run._lock:
            units = dict(run._units)
            new = [k for k, f in run._futures.items()
                   if f.status == "finished" and k not in tracked.seen and k in units]
        if not new:
            return
        metas: dict[str, Any] = {}
        try:
            for found in self.engine.client.run(collect_meta, new).values():
                metas.update(found)
        except Exception:  # noqa: BLE001 - statuses then come at the end of the run
            logger.debug("collect_meta failed", exc_info=True)
        rows = []
        for key in new:
            tracked.seen.add(key)
            names = units[key]
            meta = metas.get(key)
            for i, node in enumerate(names):
                if node in tracked.stored:
                    continue
                m = (meta if len(names) == 1 else meta[i]) if meta is not None else None
                if m is None:
                    rows.append((node, "succeeded", 1, None, None, None, self.results.node_path(run.id, node)))
                else:
                    status, start, end, worker, attempt = m[:5]
                    rows.append((node, status, attempt, start, end, worker, self.results.node_path(run.id, node)))
        self.journal.mark_nodes(run.id, rows)

    def _journal_finished(self, tracked: _Tracked) -> None:
        run = tracked.run
        try:
            outcome = run.result(timeout=5)
        except Exception:  # noqa: BLE001
            logger.exception("run %s: could not read its outcome for the journal", run.id)
            return
        nodes, attempts, counts = [], [], {}
        for name, r in outcome.items():
            status = r.status.value
            counts[status] = counts.get(status, 0) + 1
            kept = status in FINISHED
            nodes.append((name, status, len(r.attempts), r.start, r.end, r.worker,
                          self.results.node_path(run.id, name) if kept else None))
            attempts.extend((name, a.number, a.start, a.end, a.worker, a.error, a.error_type) for a in r.attempts)
        self.journal.finish_run(run.id, status=run.status(), ended=run.ended, counts=counts, nodes=nodes,
                                attempts=attempts)
        for _, msg in run.events():
            if not isinstance(msg, dict) or msg.get("node") not in run.workflow.nodes:
                continue
            if msg.get("kind") == "unstorable":
                note = f"not resumable: {msg.get('error')}"
                logger.warning("run %s, node %r: %s; the run goes on, a resume runs this node again",
                               run.id, msg["node"], note)
                self.journal.annotate(run.id, msg["node"], resumable=False, note=note)
            elif msg.get("kind") == "cache" and msg.get("cache_key"):
                self.journal.annotate(run.id, msg["node"], cache_key=msg["cache_key"],
                                      note="cache hit" if msg.get("hit") else None)

    def close(self) -> None:
        """Stop the poller; journal the end of runs that are done (the engine is closing)."""
        self._stop.set()
        with self._lock:
            active = list(self._active.values())
        for tracked in active:
            try:
                if not tracked.run.done():
                    continue
                with self._lock:
                    if self._active.pop(tracked.run.id, None) is None:
                        continue
                self._journal_finished(tracked)
            except Exception:  # noqa: BLE001 - closing must not fail
                logger.debug("journaling run %s at close failed", tracked.run.id, exc_info=True)
        deadline = time.monotonic() + 5
        while self._finishing and time.monotonic() < deadline:  # "finished" handlers in flight
            time.sleep(0.02)

    # -- reading ------------------------------------------------------------------------------
    def runs(self, *, agent: str | None = None, status: str | None = None, workflow: str | None = None,
             limit: int | None = None) -> list[RunRecord]:
        """Run history from the journal, newest first."""
        return self.journal.runs(agent=agent, status=status, workflow=workflow, limit=limit)

    # -- resuming -----------------------------------------------------------------------------
    def plan(self, run_id: str, wf: Any) -> tuple[list[str], list[str]]:
        """Which nodes keep their stored output and which run again (checking every kept file)."""
        rows = self.journal.nodes(run_id)
        kept: list[str] = []
        keep: set[str] = set()
        again: list[str] = []
        for name, node in wf.nodes.items():
            path = self.results.node_path(run_id, name)
            row = rows.get(name)
            if all(p in keep for p in node.parents) and self.results.exists(path):
                self.results.read(path)  # StoreError naming the file if truncated or corrupted
                keep.add(name)
                kept.append(name)
                continue
            if row is not None and row.status in FINISHED and all(p in keep for p in node.parents):
                why = row.note or f"its result file {path} is missing"
                logger.warning("run %s, node %r finished but cannot be resumed (%s): it runs again", run_id, name, why)
            again.append(name)
        return kept, again

    def resume(self, run_id: str, *, force: bool = False) -> Run:
        """Resubmit run ``run_id`` from the journal: finished nodes keep their stored results.

        A run still running in another live process of this host is refused unless ``force``.
        """
        from ._run import Run
        engine = self.engine
        record = self.journal.run(run_id)
        self.journal.check()  # a damaged journal is an error, not a guess
        if record.status == "running" and record.host == HOST and record.pid not in (None, os.getpid()) and not force:
            raise StoreError(f"run {run_id!r} is still running in process {record.pid} on this host; "
                             "resume it when that process is gone (or pass force=True)")
        existing = engine._runs.get(run_id)
        if existing is not None:
            if not existing.done():
                raise StoreError(f"run {run_id!r} is still running in this engine")
            self.wait_journaled(run_id)  # its end is in the journal before it starts again
        try:
            spec = cloudpickle.loads(self.journal.spec(run_id))
            wf, agent = spec["workflow"], spec["agent"]
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the task module cannot be imported here
            raise StoreError(f"run {run_id!r} in journal {self.journal.path} cannot be recreated: "
                             f"{type(exc).__name__}: {exc}") from None
        if record.results and record.results != self.results.url:
            raise StoreError(f"run {run_id!r} keeps its results in {record.results}, this engine uses "
                             f"{self.results.url}: give Engine(store=cd.RunStore(..., results={record.results!r}))")
        kept, again = self.plan(run_id, wf)
        resumes = self.journal.start_resume(run_id)
        gen = f"r{resumes}"
        loaders = {n: f"{n}-{run_id}-{gen}-stored" for n in kept}
        compiled = compile_resubmission(wf, run_id, agent, again, gen, defaults=engine.defaults,
                                        external={n: (k, -1) for n, k in loaders.items()}, literals={},
                                        overrides={}, priority=spec.get("priority", 0), inputs=spec.get("inputs"))
        for n, key in loaders.items():
            compiled.dsk[key] = Task(key, load_output, self.results, run_id, n)
            compiled.units[key] = (n,)
            compiled.location[n] = (key, -1)
        run = Run(engine, wf, agent, run_id, compiled, priority=spec.get("priority", 0),
                  fail_fast=spec.get("fail_fast", False), defaults=engine.defaults, name=spec.get("name"))
        run._gen = resumes * 1_000_000  # slow-path keys of this resume never meet an earlier attempt's
        run.inputs = spec.get("inputs") or {}
        run.resumed_from = {"kept": len(kept), "again": len(again)}
        with self._lock:
            self._resuming[run_id] = set(kept)
        engine._announce(run, compiled, resumed=True)
        run._submit(compiled)
        run._watch([run._futures[key] for key in loaders.values()])  # the run may end with its loaders
        engine._notify("submitted", run)
        logger.info("run %s resumed: %d node(s) kept, %d to run", run_id, len(kept), len(again))
        return run

