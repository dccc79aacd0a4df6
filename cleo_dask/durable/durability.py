"""Durable runs: an engine with ``store=`` journals every run and can resume one after a crash.

* Workers write each finished node's output to the result store (see ``_resultstore``).
* The client journals runs: the run and its spec before it is submitted (a journal that cannot
  record it is a :class:`StoreError` and nothing is submitted), node statuses as their Dask tasks
  finish (a light poller, one SQLite transaction per tick, nothing added to the non-durable
  path), final statuses, attempts, cache keys and unstorable results when the run finishes.  A
  write that fails later is warned about once per run and makes ``outcome.durable`` False.
* A run whose cluster is lost (:class:`ClusterLost`), whose engine closes first, or whose
  resume fails is journaled ``interrupted``: resume it once a cluster is back.
* :meth:`Durability.resume`: nodes whose output is stored (and whose parents are all kept too)
  keep it: they become tasks that read the stored output on a worker, so no value goes through
  the client; every other node runs again, in a new generation of keys.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle
from dask.task_spec import Task

from cleo_dask import config as _config
from cleo_dask.core.agent import agent_id
from cleo_dask.core.compile import compile_resubmission
from cleo_dask.errors import ClusterLost, StoreError
from cleo_dask.durable.journal import FINISHED, HOST, Journal, RunRecord
from cleo_dask.durable.resultstore import ResultStore, load_output
from cleo_dask.runs.assemble import META_BATCH
from cleo_dask.runs.columns import compact_metas, journal_rows
from cleo_dask.runs.expand import resume_held

if TYPE_CHECKING:
    from cleo_dask.runs.run import Run

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
    """Journals every run of ``engine`` into ``store``; resumes runs from it.

    ``engine``: a :class:`cleo_dask.Engine` (its public ``client``, ``closed``, ``defaults``,
    ``add_listener``, ``runs_in_memory`` and ``launcher``); it gives its runs' tasks this
    journal's result store (``defaults.store``) itself.
    """

    def __init__(self, engine: Any, store: Any):
        self.engine = engine
        self.store = as_run_store(store)
        self.journal = Journal(self.store.journal)
        self.results = ResultStore(self.store.results_url, fsync=bool(_config.get("durable.fsync", True)))
        self.poll_interval = float(_config.get("durable.poll-interval", 0.25))
        self._lock = threading.Lock()
        self._active: dict[str, _Tracked] = {}
        self._resuming: dict[str, set[str]] = {}
        self._finished_early: dict[str, Run] = {}
        self._finishing: set[str] = set()
        self._recorded: set[str] = set()  # journaled before their submission, not yet tracked
        self._problems: weakref.WeakKeyDictionary[Run, str] = weakref.WeakKeyDictionary()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        engine.add_listener(self._on_run)

    # -- journaling ---------------------------------------------------------------------------
    def _on_run(self, kind: str, run: Run) -> None:
        if kind == "submitted":
            with self._lock:
                stored = self._resuming.pop(run.id, None)
            with self._lock:
                recorded = run.id in self._recorded
                self._recorded.discard(run.id)
            if stored is None and not recorded:
                self._record_now(run)
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

    def record(self, runs: list[Run]) -> None:
        """Journal new ``runs`` before they are submitted, in one transaction; :class:`StoreError`
        (naming the journal) if it cannot record them: then nothing may be submitted."""
        self.journal.add_runs([self._new_row(run) for run in runs])
        with self._lock:
            self._recorded.update(run.id for run in runs)

    def not_submitted(self, runs: list[Run], error: BaseException) -> None:
        """``runs`` were journaled but their submission failed: mark them interrupted (not running
        under this process, which would make a resume elsewhere wait for it)."""
        for run in runs:
            with self._lock:
                self._recorded.discard(run.id)
            self.not_submitted_id(run.id, error)

    def _record_now(self, run: Run) -> None:
        try:
            self.journal.add_runs([self._new_row(run)])
        except StoreError as exc:
            self._write_failed(run, exc)

    def _new_row(self, run: Run) -> dict[str, Any]:
        spec, note = None, None
        try:
            spec = cloudpickle.dumps({"workflow": run.workflow, "agent": run.agent, "priority": run.priority,
                                      "fail_fast": run.fail_fast, "name": run.name,
                                      "inputs": dict(getattr(run, "inputs", None) or {})})
        except Exception as exc:  # noqa: BLE001 - the run goes on, it just cannot be resumed
            note = f"not resumable: the workflow or agent cannot be pickled ({type(exc).__name__}: {exc})"
            logger.warning("run %s: %s", run.id, note)
        return dict(run_id=run.id, agent=agent_id(run.agent), workflow=run.workflow.name, name=run.name,
                    started=run.started, nodes=list(run.workflow.nodes), results=self.results.url, spec=spec,
                    note=note)

    def _write_failed(self, run: Run, exc: BaseException) -> None:
        """A journal write of ``run`` failed: its outcome is not durable; warn once per run."""
        with self._lock:
            first = run not in self._problems
            if first:
                self._problems[run] = str(exc)
        if first:
            logger.warning("run %s is not durable: %s; the run goes on (outcome.durable is False)", run.id, exc)
        else:
            logger.debug("run %s: journal write failed again: %s", run.id, exc)

    def problem(self, run: Run, timeout: float = 30) -> str | None:
        """Why ``run`` is not (completely) in the journal, or ``None`` if it is; waits up to
        ``timeout`` seconds for the end of a finished run to be journaled."""
        if run.done() and not self.wait_journaled(run.id, timeout):
            return f"the end of run {run.id} is not in journal {self.journal.path} yet"
        with self._lock:
            return self._problems.get(run)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            if self.engine.closed:
                return
            with self._lock:
                active = list(self._active.values())
            try:
                self._poll(active)
            except Exception:  # noqa: BLE001 - journaling is best effort mid-run
                logger.debug("journal poll failed", exc_info=True)

    def _poll(self, active: list[_Tracked]) -> None:
        """Journal the nodes of ``active`` runs whose units finished since the last look: the
        workers' records of all of them in one ``Client.run``, their rows in one transaction."""
        found = [(tracked, units) for tracked in active if (units := tracked.run.finished_units(tracked.seen))]
        if not found:
            return
        metas: dict[str, Any] = {}
        for tracked, units in found:
            metas.update(tracked.run.known_metas(list(units)))   # a unit a windowed run released: only there
        try:
            missing = [k for _, units in found for k in units if k not in metas]
            for start in range(0, len(missing), META_BATCH):
                chunk = missing[start:start + META_BATCH]
                for batch in self.engine.client.run(compact_metas, chunk).values():
                    metas.update(batch.metas(chunk))
        except Exception:  # noqa: BLE001 - statuses then come at the end of the run
            logger.debug("collect_meta failed", exc_info=True)
        writes = [(tracked.run.id, *self._node_rows(tracked, units, metas)) for tracked, units in found]
        try:
            self.journal.mark_nodes_many(writes)
        except StoreError as exc:
            for tracked, _ in found:
                self._write_failed(tracked.run, exc)

    def _node_rows(self, tracked: _Tracked, units: dict[str, tuple[str, ...]],
                   metas: dict[str, Any]) -> tuple[list[tuple], list[tuple]]:
        """The journal rows (nodes, first attempts) of a run's newly finished ``units``."""
        run = tracked.run
        rows, attempts = [], []
        for key, names in units.items():
            tracked.seen.add(key)
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
                    if status == "succeeded" and attempt == 1:  # its one attempt (the end fixes any other)
                        attempts.append((node, 1, start, end, worker, None, None))
        return rows, attempts

    def _journal_finished(self, tracked: _Tracked) -> None:
        try:
            self._journal_end(tracked)
        except StoreError as exc:
            self._write_failed(tracked.run, exc)

    def _journal_end(self, tracked: _Tracked) -> None:
        run = tracked.run
        try:
            outcome = run.result(timeout=5)
        except ClusterLost:
            self._journal_interrupted(tracked)
            return
        except Exception:  # noqa: BLE001
            logger.exception("run %s: could not read its outcome for the journal", run.id)
            return
        nodes, attempts, counts, notes = [], [], {}, {}
        path = self.results.node_path
        for name, status, n_attempts, start, end, worker, reason, tried in journal_rows(outcome.columns):
            counts[status] = counts.get(status, 0) + 1
            if status in ("skipped", "upstream_failed") and reason:
                notes[name] = reason  # upstream_failed: the failing ancestor
            kept = status in FINISHED
            nodes.append((name, status, n_attempts, start, end, worker, path(run.id, name) if kept else None))
            attempts.extend((name, a.number, a.start, a.end, a.worker, a.error, a.error_type) for a in tried)
        self.journal.finish_run(run.id, status=run.status(), ended=run.ended, counts=counts, nodes=nodes,
                                attempts=attempts, notes=notes)
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

    def _journal_interrupted(self, tracked: _Tracked) -> None:
        """The run did not finish (its cluster was lost, its engine closed): keep what the journal
        knows of its finished nodes (and what the result store holds beyond it) and mark it
        ``interrupted``, for a resume."""
        run = tracked.run
        rows = []
        for name, row in self.journal.nodes(run.id).items():
            path = self.results.node_path(run.id, name)
            if row.status in FINISHED or not self.results.exists(path):
                continue
            try:  # finished after the poller's last look: its stored output has its record
                meta = self.results.load(path).meta()
            except Exception:  # noqa: BLE001 - resume checks the file again
                continue
            rows.append((name, meta[0], meta[4], meta[1], meta[2], meta[3], path))
        self.journal.mark_nodes(run.id, rows)
        self.journal.interrupt(run.id, run.ended)
        logger.warning("run %s did not finish and is journaled as interrupted: resume it (engine.resume(%r) / "
                       "cleo-dask resume %s --store %s)", run.id, run.id, run.id, self.store.journal)

    def close(self) -> None:
        """Stop the poller; journal the end of runs that are done (the engine is closing) and mark
        the others interrupted (nothing follows them any more: resume them)."""
        self._stop.set()
        with self._lock:
            active = list(self._active.values())
        for tracked in active:
            try:
                with self._lock:
                    if self._active.pop(tracked.run.id, None) is None:
                        continue
                if not tracked.run.done():
                    self._journal_interrupted(tracked)
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
                self.results.read_output(path)  # StoreError naming the file if damaged or foreign
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
        A resume that fails once the journal says the run is running again leaves it
        ``interrupted``, not running under this process.
        """
        from cleo_dask.runs import lost as _lost
        engine = self.engine
        record = self.journal.run(run_id)
        self.journal.check()  # a damaged journal is an error, not a guess
        if record.status == "running" and record.host == HOST and record.pid not in (None, os.getpid()) and not force:
            raise StoreError(f"run {run_id!r} is still running in process {record.pid} on this host; "
                             "resume it when that process is gone (or pass force=True)")
        existing = engine.runs_in_memory.get(run_id)
        if existing is not None:
            if not existing.done():
                raise StoreError(f"run {run_id!r} is still running in this engine")
            self.wait_journaled(run_id)  # its end is in the journal before it starts again
        try:
            spec = self.journal.load_spec(run_id)
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
        if _lost.client_closed(engine.client):
            raise ClusterLost(f"run {run_id!r} cannot be resumed: this engine's client is closed",
                              _lost.scheduler_address(engine.client), run_id)
        resumes = self.journal.start_resume(run_id)
        try:
            return self._resubmit(run_id, spec, wf, agent, kept, again, resumes)
        except BaseException as exc:
            with self._lock:
                self._resuming.pop(run_id, None)
            self.not_submitted_id(run_id, exc)
            raise

    def not_submitted_id(self, run_id: str, error: BaseException) -> None:
        """Run ``run_id`` is marked running again but its (re)submission failed: interrupted."""
        try:
            self.journal.interrupt(run_id)
        except StoreError as exc:
            logger.warning("run %s: its submission failed (%s) and the journal cannot say so: %s", run_id, error, exc)

    def _resubmit(self, run_id: str, spec: dict[str, Any], wf: Any, agent: Any, kept: list[str], again: list[str],
                  resumes: int) -> Run:
        """Compile what runs again (and a loader task per kept node) and launch it the way a
        submission is launched, as a resume."""
        engine = self.engine
        gen = f"r{resumes}"
        wf, held, again = resume_held(wf, again)   # mapped nodes not finished: expanded again as the run goes
        loaders = {n: f"{n}-{run_id}-{gen}-stored" for n in kept}
        compiled = compile_resubmission(wf, run_id, agent, again, gen, defaults=engine.defaults,
                                        external={n: (k, -1) for n, k in loaders.items()}, literals={},
                                        overrides={}, priority=spec.get("priority", 0), inputs=spec.get("inputs"))
        for n, key in loaders.items():
            compiled.dsk[key] = Task(key, load_output, self.results, run_id, n)
            compiled.units[key] = (n,)
            compiled.location[n] = (key, -1)
        # slow-path keys of this resume never meet an earlier attempt's
        run = engine.launcher.new_run(wf, agent, run_id, compiled, priority=spec.get("priority", 0),
                                      fail_fast=spec.get("fail_fast", False), defaults=engine.defaults,
                                      name=spec.get("name"), generation=resumes * 1_000_000)
        run.inputs = spec.get("inputs") or {}
        run.resumed_from = {"kept": len(kept), "again": len(again) + len(held)}
        run.add_held(held)
        run.stored_loader = functools.partial(_stored_loaders, self.results, run_id, gen)
        with self._lock:
            self._resuming[run_id] = set(kept)
        engine.launcher.launch([(run, compiled)], resumed=True)
        run.watch_keys(list(loaders.values()))  # the run may end with its loaders
        logger.info("run %s resumed: %d node(s) kept, %d to run", run_id, len(kept), len(again))
        return run


def _stored_loaders(results: ResultStore, run_id: str, gen: str, names: list[str]) -> dict[str, tuple[str, Task]]:
    """Of ``names`` (nodes made at run time: mapped items), those whose output this run stored
    before it was interrupted: name -> (key, the Dask task loading it)."""
    out = {}
    for n in names:
        if results.exists(results.node_path(run_id, n)):
            key = f"{n}-{run_id}-{gen}-stored"
            out[n] = (key, Task(key, load_output, results, run_id, n))
    return out
