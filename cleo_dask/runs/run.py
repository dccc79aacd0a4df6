"""A run: one submission of a workflow for one agent; holds its futures and builds its outcomes.

The fast path is one graph submission.  A node that fails makes its key err (Dask's own
``retries=`` already spent); only then does the run act, on the engine's driver thread: it waits
out the backoff *on the client* and resubmits that node and what depends on it under new keys,
or submits the fallback, or hands a :class:`Failure` to the children (trigger rules).

This module holds the run's fields and its public API; each job is a part of its own module
(listed in :class:`Run`'s docstring).
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from distributed import Future

from cleo_dask.core.compile import Compiled, Defaults
from cleo_dask.core.outcome import NodeRecord, Status
from cleo_dask.core.worker import FAILED, NodeOutput
from cleo_dask.errors import ClusterLost, CodeError
from cleo_dask.runs import lost as _lost
from cleo_dask.runs.assemble import RunOutcome, RunResults
from cleo_dask.runs.batchevents import RunBatchFailures
from cleo_dask.runs.columns import NodeMetas
from cleo_dask.runs.end import RunEnd
from cleo_dask.runs.expand import RunExpand
from cleo_dask.runs.guard import RunGuard
from cleo_dask.runs.html import agent_label, run_html
from cleo_dask.runs.retire import RunRetired
from cleo_dask.runs.slowpath import RunSlowPath
from cleo_dask.runs.waiting import RunWaiting
from cleo_dask.runs.watch import RunWatch, send_graph
from cleo_dask.runs.windows import RunWindows
from cleo_dask.util.futures import release_futures

if TYPE_CHECKING:
    from cleo_dask.runs.context import RunContext
    from cleo_dask.core.workflow import Workflow

__all__ = ["Run", "RunOutcome", "send_graph"]


class Run(RunWatch, RunSlowPath, RunBatchFailures, RunWaiting, RunResults, RunGuard, RunEnd, RunWindows,
          RunRetired, RunExpand):
    """A running (or finished) workflow for one agent.  Returned by :meth:`Engine.submit`.

    Its parts, one idea each, work over the fields set here: the futures
    (:mod:`~cleo_dask.runs.watch`), the failure slow path (:mod:`~cleo_dask.runs.slowpath`), batched
    nodes' failures (:mod:`~cleo_dask.runs.batchevents`),
    waiting (:mod:`~cleo_dask.runs.waiting`), the outcome (:mod:`~cleo_dask.runs.assemble`), the
    driver guard (:mod:`~cleo_dask.runs.guard`), what is kept at its end (:mod:`~cleo_dask.runs.end`)
    the keys it replaced (:mod:`~cleo_dask.runs.retire`), for a big workflow, its windows
    (:mod:`~cleo_dask.runs.windows`) and nodes made at run time (:mod:`~cleo_dask.runs.expand`).
    """

    def __init__(self, context: RunContext, workflow: Workflow, agent: Any, run_id: str, compiled: Compiled, *,
                 priority: float = 0, fail_fast: bool = False, defaults: Defaults = Defaults(),
                 name: str | None = None, generation: int = 0):
        self.id = run_id
        self.workflow = workflow
        self.agent = agent
        self.name = name or workflow.name
        self.priority = priority
        self.fail_fast = fail_fast
        self.started = time.time()
        self.ended: float | None = None
        self._context = context
        self._client = context.client
        self._defaults = defaults
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._location: dict[str, tuple[str, int]] = dict(compiled.location)
        self._units: dict[str, tuple[str, ...]] = dict(compiled.units)
        self._futures: dict[str, Future] = {}
        self._retired: list[Future] = []   # of keys replaced: held until the run ends (runs.retire)
        self._known: dict[str, NodeOutput] = {}
        self._records: dict[str, NodeRecord] = {}
        self._mode: dict[str, str] = {}
        self._handled: set[str] = set()
        self._batch_failed: set[str] = set()   # batched nodes that finally failed (runs/batchevents.py)
        self._batch_noted = self._batch_handled = 0   # their events seen / acted on
        self._timers = 0
        self._gen = generation   # of slow-path keys (a resume starts past every earlier attempt's)
        self._cancelled = False
        self._finished_event_sent = False
        self._final_status: str | None = None  # set when the run's end is announced
        self._metas = NodeMetas(list(workflow.nodes))   # the workers' records of finished units
        self._outputs: dict[str, Any] = {}
        self._losses: dict[str, int] = {}
        self._children = workflow.children()
        self._interrupts: set[asyncio.Event] = set()
        self._attempts_seen: dict[str, int] = {}
        self._code_errors: dict[tuple[str, str], CodeError | None] = {}   # crashes explained (see _load_error)
        self._released: dict[str, tuple[str, Any]] = {}   # key -> (status, error) when release()d
        self._init_end()
        self.inputs: dict[str, Any] = {}   # keyword inputs of the root nodes (set by the engine)
        self._scan: list[Future] | None = None   # _any_pending's snapshot and cursor
        self._scan_pos = 0
        self._address = _lost.scheduler_address(self._client)  # named if the cluster is lost (_runguard)

    # -- the public API ----------------------------------------------------------------------
    def done(self) -> bool:
        """True once every node has its final state (or the run's cluster was lost)."""
        if self._detached is not None:
            return self._detached.outcome is not None
        with self._lock:
            if self._timers or self._batch_unhandled() or any(f.status == "pending" for f in self._futures.values()):
                return False
        try:
            return self._settle(timeout=0)
        except ClusterLost:
            return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run is done (True) or ``timeout`` seconds pass (False).

        Raises :class:`ClusterLost` (naming the scheduler) if the client lost its scheduler, or
        was closed, before the run finished."""
        if self._detached is not None:
            return self.done()
        return self._settle(timeout)

    def result(self, timeout: float | None = None, fetch: bool = False) -> RunOutcome:
        """Wait for the run and return its outcome: a mapping node name -> :class:`TaskResult`.

        Never raises for task failures (they are results with ``status == "failed"``); raises
        :class:`TimeoutError` if the run is not done within ``timeout`` seconds, and
        :class:`ClusterLost` (naming the scheduler) if the client lost its scheduler, or was
        closed, first (with ``store=`` the run is then ``interrupted`` in the journal: resume it).
        Values are fetched when first read; ``fetch=True`` fetches every value now, in one gather (they
        then stay readable after the engine closes, whatever ``cleo_dask.close-fetch-limit``).
        """
        if self._detached is not None:
            return self._detached.result(self.id, fetch)
        if not self._settle(timeout):
            raise TimeoutError(f"run {self.id} not finished within {timeout} s")
        with self._lock:
            if self._final_status is None and self._lost is None:
                self._final_status = self._status_now()  # the driver may not have announced it yet
            state = self._state()
            outcome = self.cached_outcome(state)
            if outcome is None:
                outcome = RunOutcome(self)
                self._cache_outcome(state, outcome)
        if fetch:
            self.prefetch(list(self.workflow.nodes))
        return outcome

    def status(self) -> str:
        """``"running"``, ``"succeeded"``, ``"failed"`` (some node failed), ``"cancelled"`` or
        ``"interrupted"`` (its cluster was lost: :class:`ClusterLost`)."""
        if self._detached is not None:
            return self._detached.status
        if self._final_status is not None and self._lost is None:
            return self._final_status  # its futures may be cancelled since (the client went)
        if not self.done():
            return "running"
        return self._status_now()

    def _status_now(self) -> str:
        with self._lock:
            if self._lost is not None:
                return "interrupted"
            if self._batch_failed or any(o.status == FAILED for o in self._known.values()):
                return "failed"
            if any(f.status == "error" for f in self._futures.values()):
                return "failed"
            if self._cancelled or any(f.status == "cancelled" for f in self._futures.values()):
                return "cancelled"
        return "succeeded"

    def cancel(self) -> None:
        """Cancel every node not finished yet (they end ``cancelled``); pending retries are dropped."""
        with self._lock:
            self._cancel_rest()
            self.log_event("finished", status="cancelled", counts={}, ended=time.time())

    def visualize(self) -> Any:
        """A picture of the workflow with each node coloured by its state (SVG; inline in notebooks)."""
        from cleo_dask.monitor.pictures import visualize_run
        return visualize_run(self, self._client)

    def show_progress(self, **kwargs: Any) -> bool:
        """Show a progress bar until the run is done (True) or ``timeout=`` passes (False): an
        updating HTML bar in a notebook, a tqdm bar on a terminal, plain lines otherwise."""
        from cleo_dask.monitor.notebook import display_progress
        return display_progress(self, **kwargs)

    def progress(self) -> dict[str, int]:
        """Counts of nodes by coarse state (``done``, ``error``, ``pending``), without fetching values."""
        counts = {"done": 0, "error": 0, "pending": 0, "total": len(self.workflow)}
        if self._detached is not None and self._detached.outcome is not None:
            for r in self._detached.outcome.values():
                counts["error" if r.status == Status.FAILED else "done"] += 1
            return counts
        with self._lock:
            for n, (key, _) in self._location.items():
                if n in self._known:
                    counts["done"] += 1
                    continue
                st = self._futures[key].status if key in self._futures else \
                    "finished" if self.window_released(key) else "pending"
                counts["done" if st == "finished" else "error" if st == "error" else "pending"] += 1
            for n in self.unsent():   # a windowed run's nodes not sent yet
                counts["done" if n in self._known else "pending"] += 1
        return counts

    @property
    def futures(self) -> Mapping[str, Future]:
        """The current Dask future of each node (nodes fused into one task share a future)."""
        with self._lock:
            return {n: self._futures[k] for n, (k, _) in self._location.items() if k in self._futures}

    def release(self) -> None:
        """Let the cluster forget this run's results (outcomes already fetched stay readable)."""
        with self._lock:
            if not self._futures:
                return
            if self.done():  # what result() needs later, without the futures
                self._fetch_metas()
                self._released.update((k, (f.status, f.exception() if f.status == "error" else None))
                                      for k, f in self._futures.items())
            self._drop_retired()
            release_futures(self._client, list(self._futures.values()))
            self._futures = {}

    def counts(self) -> dict[str, int]:
        """Number of nodes by final status (waits for the run)."""
        out: dict[str, int] = {}
        for r in self.result().values():
            out[r.status.value] = out.get(r.status.value, 0) + 1
        return out

    def __repr__(self) -> str:
        return f"<cleo_dask.Run {self.id} {self.name!r} agent={agent_label(self.agent)!r} " \
               f"nodes={len(self.workflow)} status={self.status()}>"

    def _repr_html_(self) -> str:
        p = self.progress()
        link = self._context.dashboard_link()
        return run_html(self.id, self.name, self.agent, self.status(), p, link)
