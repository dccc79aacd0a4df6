"""A run: one submission of a workflow for one agent; holds its futures and builds its outcomes.

The fast path is one graph submission.  A node that fails makes its key err (Dask's own
``retries=`` already spent); only then does the run act, on the engine's driver thread: it waits
out the backoff *on the client* and resubmits that node and what depends on it under new keys,
or submits the fallback, or hands a :class:`Failure` to the children (trigger rules).
"""
from __future__ import annotations

import asyncio
import dataclasses
import html
import logging
import threading
import time
import traceback as tb
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from distributed import Future

from cleo_dask.core.compile import Compiled, Defaults, _gc_paused, compile_resubmission, retry_policy
from cleo_dask.errors import CleoError, ClusterLost, CodeError
from cleo_dask.runs.guard import RunGuard
from cleo_dask.core.events import event, run_topic
from cleo_dask.util.futures import all_done as _all_done, erred_exception, lost_elsewhere, release_futures, worker_losses
from cleo_dask.runs import lost as _lost
from cleo_dask.monitor import logs as _logs
from cleo_dask.admission import plugin as _admission
from cleo_dask.admission import estimates as _estimates
from cleo_dask.core.outcome import SKIP_STATUSES, Attempt, NodeRecord, Status, TaskResult
from cleo_dask.failures.decide import DecisionKind, FailedAttempt, decide
from cleo_dask.failures.rules import ALL_SUCCESS, skip_decision
from cleo_dask.runs.end import RunEnd
from cleo_dask.core.worker import FAILED, NodeFailed, NodeOutput, collect_meta, failure_output, skipped_output

if TYPE_CHECKING:
    from cleo_dask.engine import Engine
    from cleo_dask.core.workflow import Workflow

logger = logging.getLogger("cleo_dask")


def send_graph(client: Any, compiled: Compiled, priority: float) -> dict[str, Future]:
    """Send a compiled graph (one run's, or several runs' merged) in one ``client.get``: the
    admission plugin installed first if it needs it, the scheduler given the known durations;
    the futures by key."""
    if compiled.admission:  # max_concurrency / rate_limit / not_before: enforced by a scheduler plugin
        _admission.ensure_installed(client)
    _estimates.seed(client, compiled.durations)
    keys = compiled.keys
    return dict(zip(keys, client.get(compiled.graph(), keys, sync=False, priority=priority)))


class Run(RunGuard, RunEnd):
    """A running (or finished) workflow for one agent.  Returned by :meth:`Engine.submit`."""

    def __init__(self, engine: Engine, workflow: Workflow, agent: Any, run_id: str, compiled: Compiled, *,
                 priority: float = 0, fail_fast: bool = False, defaults: Defaults = Defaults(),
                 name: str | None = None):
        self.id = run_id
        self.workflow = workflow
        self.agent = agent
        self.name = name or workflow.name
        self.priority = priority
        self.fail_fast = fail_fast
        self.started = time.time()
        self.ended: float | None = None
        self._engine = engine
        self._client = engine.client
        self._defaults = defaults
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._location: dict[str, tuple[str, int]] = dict(compiled.location)
        self._units: dict[str, tuple[str, ...]] = dict(compiled.units)
        self._futures: dict[str, Future] = {}
        self._known: dict[str, NodeOutput] = {}
        self._records: dict[str, NodeRecord] = {}
        self._mode: dict[str, str] = {}
        self._handled: set[str] = set()
        self._timers = 0
        self._gen = 0
        self._cancelled = False
        self._finished_event_sent = False
        self._final_status: str | None = None  # set when the run's end is announced
        self._metas: dict[str, Any] = {}
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

    # -- submission ---------------------------------------------------------------------------
    def _submit(self, compiled: Compiled) -> None:
        """Send a (re)compiled part of this run and watch its sinks."""
        self._watch(self._adopt(send_graph(self._client, compiled, self.priority), compiled.keys))

    def _adopt(self, futures: Mapping[str, Future], keys: Iterable[str]) -> list[Future]:
        """Take the futures of ``keys`` (from this run's submission, or one made for many runs at
        once); return those of its sinks, to watch: the driver looks at the run once they are all
        done (one waiter on the client's loop per batch, not a callback and a thread hop per sink;
        failures are acted on earlier, from the workers' ``attempt`` events)."""
        keys = list(keys)
        with self._lock:
            for key in keys:
                self._futures[key] = futures[key]
            self._scan, self._scan_pos = None, 0
            return [self._futures[k] for k in keys if not self._children[self._units[k][-1]]]

    def _watch_sinks(self, keys: list[str]) -> None:
        """Watch the futures of those of ``keys`` that are sinks (after a retry replaced them)."""
        self._watch([self._futures[k] for k in keys if not self._children[self._units[k][-1]]])

    def _root_keys(self) -> list[str]:
        """The Dask keys of the units the run starts with (those a not-before time holds)."""
        nodes = self.workflow.nodes
        return [k for k, names in self._units.items() if not nodes[names[0]].parents]

    def _watch(self, futures: list[Future]) -> None:
        """Look at the run on the driver once all ``futures`` are done (erred ones are handled)."""
        if futures:
            self._client.loop.add_callback(self._await_done, futures)

    async def _await_done(self, futures: list[Future]) -> None:
        await _all_done(futures)
        for f in futures:
            if f.status == "error":
                self._soon(self._handle_erred_safely, f.key)
        self._soon(self._maybe_finished)

    def _on_event(self, item: tuple[float, dict[str, Any]]) -> None:
        """Events of this run's topic (called on the client's event loop: keep it short)."""
        msg = item[1]
        if isinstance(msg, dict) and msg.get("kind") == "attempt" and msg.get("mode", "task") == "task":
            # a worker cannot tell which attempt it runs (Dask's and Client.retry rerun the same
            # task): the client counts them
            n = self._attempts_seen.get(msg.get("node"), 0) + 1
            self._attempts_seen[msg.get("node")] = n
            msg = {**msg, "attempt": n}
        _logs.on_event(self, msg)  # structured log record of a failed attempt (monitoring)
        if isinstance(msg, dict) and msg.get("kind") == "attempt":
            fut = self._futures.get(msg.get("key"))
            if fut is not None:
                fut.add_done_callback(self._on_attempt_done)

    def _on_attempt_done(self, fut: Future) -> None:
        if fut.status == "error":
            self._soon(self._handle_erred_safely, fut.key)

    # -- the slow path ------------------------------------------------------------------------
    def _handle_erred(self, key: str) -> bool:
        """Act on an erred unit key if it is the root of its failure; True if it was handled."""
        with self._lock:
            fut = self._futures.get(key)
            if fut is None or key in self._handled or fut.status != "error" or self._cancelled:
                return False
            exc = erred_exception(fut)  # never fut.exception(): it waits, and may return None
            if exc is None:
                return False  # retried or cancelled meanwhile, or blaming a retried ancestor: watched anew
            names = self._units[key]
            if isinstance(exc, NodeFailed):
                if exc.key != key:
                    return False  # an ancestor's failure, handled with that ancestor
                node, attempt, error, text, completed = exc.node, exc.attempt, exc.error, exc.traceback, exc.completed
                lost = 0
            else:  # the task could not run at all: worker lost too often, unpicklable, ...
                if lost_elsewhere(exc, key):
                    return False  # its ancestor's workers died: handled with that ancestor
                node = names[0]
                exc = self._load_error(exc) or exc
                text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
                lost = worker_losses(self._client, key, exc)  # KilledWorker: retried as the policy says
                # a lost attempt's start is unknown: its end (now, about) orders it among the others
                attempt = Attempt(1, None, time.time() if lost else None, None, repr(exc), type(exc).__name__,
                                  crashed=True,
                                  kind=self._mode.get(node, "task"))
                error, completed = exc, {}
            self._handled.add(key)
            self._known.update(completed)
            record = self._records.setdefault(node, NodeRecord())
            record.worker_losses = max(record.worker_losses, lost)
            _add_attempt(record, attempt)
            mode = self._mode.get(node, "task")
            spec = self.workflow.nodes[node].task
            failed_attempts = sum(1 for a in record.attempts if a.error is not None)
            decision = decide(FailedAttempt(error, failed_attempts, attempt.crashed, lost, fallback=mode == "fallback"),
                              retry_policy(self.workflow.nodes[node], self._defaults),
                              has_fallback=spec.fallback is not None, has_on_error=spec.on_error is not None,
                              fail_fast=self.fail_fast)
            if decision.kind is DecisionKind.RETRY:
                self._log("retry", node=node, attempt=decision.attempt, delay=decision.after)
                self._timers += 1
                self._later(decision.after, self._retry, key)
                return True
            record.error, record.traceback = error, text
            if decision.notify:
                try:
                    spec.on_error(self.agent, node, error)
                except Exception:  # noqa: BLE001 - a broken notifier must not break the run
                    logger.exception("on_error of task %r failed", node)
            if decision.kind is DecisionKind.FAIL_RUN:
                self._known[node] = failure_output(node, error, text)
                self._log("outcome", node=node, status="failed", error=repr(error)[:500])
                self._cancel_rest()
                return True
            if decision.kind is DecisionKind.FALLBACK:
                self._mode[node] = "fallback"
                self._resubmit([node], {node: {"mode": "fallback", "error": error}})
                self._log("fallback", node=node, key=self._location[node][0])
                return True
            self._known[node] = failure_output(node, error, text)
            self._log("outcome", node=node, status="failed", error=repr(error)[:500])
            self._propagate_failure(node)
            return True

    def _load_error(self, exc: BaseException) -> CodeError | None:
        """A :class:`CodeError` if the cluster could not load this run's code (asked once per run)."""
        seen = (type(exc).__name__, str(exc)[:200])
        if seen not in self._code_errors:   # the scheduler fails every key of a graph it cannot load
            from cleo_dask.cluster.upload import explain
            self._code_errors[seen] = explain(self._client, exc, self.workflow, self.agent)
        return self._code_errors[seen]

    def _retry(self, key: str) -> None:
        """The backoff is over: Dask recomputes the erred key and, with it, its erred dependents."""
        with self._lock:
            self._timers = max(0, self._timers - 1)
            fut = self._futures.get(key)
            if self._cancelled or fut is None or fut.status != "error":
                self._soon(self._maybe_finished)  # cancelled, or its cluster is gone: nothing to retry
            else:
                self._handled.discard(key)
                self._client.retry([fut])
                names = self._units[key]
                downstream = set(names) | set(self.workflow.descendants(names))
                self._watch_sinks(sorted({self._location[n][0] for n in downstream
                                          if not self._children[n] and n not in self._known}))
            self._changed.notify_all()

    def _propagate_failure(self, failed: str) -> None:
        """Apply the trigger rules below a finally failed node on the client: ``all_success``
        descendants end ``upstream_failed`` (or ``skipped``, below a skip) without running;
        ``all_done`` / ``one_failed`` ones (and what depends on them) are submitted again with a
        :class:`Failure` standing in for the parent."""
        wf = self.workflow
        to_run: list[str] = []
        pending: set[str] = set()
        for n in wf.descendants([failed]):
            node = wf.nodes[n]
            if n in self._known:
                continue
            if node.trigger == ALL_SUCCESS:
                known = [(p, self._known[p].status, self._known[p].reason) for p in node.parents if p in self._known]
                skip = skip_decision(ALL_SUCCESS, known)
                if skip is not None:
                    self._known[n] = skipped_output(skip[1], status=skip[0])
                    self._log("skipped", node=n, key=self._location[n][0], reason=skip[1], status=skip[0])
                    continue
            to_run.append(n)
            pending.add(n)
        self._forget_known_units()
        self._resubmit(to_run, {}) if to_run else self._changed.notify_all()
        self._soon(self._maybe_finished)

    def _forget_known_units(self) -> None:
        """Drop the futures of units whose every node's outcome is now known here (a stale
        generation may still wait on an erred ancestor: cancel it rather than wait for it)."""
        stale = []
        for key, names in list(self._units.items()):
            if key in self._futures and all(n in self._known for n in names):
                fut = self._futures.pop(key)
                if fut.status == "pending":
                    stale.append(fut)
        if stale:
            self._client.cancel(stale)
        self._interrupt_waiters()

    def _resubmit(self, roots: list[str], overrides: dict[str, dict[str, Any]], after: list[str] = ()) -> None:
        """Submit ``roots`` and every unfinished descendant of ``roots`` + ``after`` under new keys."""
        wf = self.workflow
        subset = set(roots) | set(wf.descendants(list(roots) + list(after)))
        names = [n for n in wf.nodes if n in subset and (n in roots or n not in self._known)]
        for n in roots:
            self._known.pop(n, None)
        if not names:
            self._changed.notify_all()
            self._soon(self._maybe_finished)
            return
        inside = set(names)
        external: dict[str, tuple[str, int]] = {}
        literals: dict[str, NodeOutput] = {}
        for n in names:
            for p in wf.nodes[n].parents:
                if p in inside:
                    continue
                if p in self._known:
                    literals[p] = self._known[p]
                else:
                    external[p] = self._location[p]
        self._gen += 1
        compiled = compile_resubmission(wf, self.id, self.agent, names, self._gen, defaults=self._defaults,
                                        external=external, literals=literals, overrides=overrides,
                                        priority=self.priority, inputs=getattr(self, "inputs", None))
        old_keys = {self._location[n][0] for n in names}
        self._units.update(compiled.units)
        self._location.update(compiled.location)
        # announce the new keys before the old ones are released, so monitors never take the
        # release of a replaced key for the node's end
        self._log("keys", nodes={n: compiled.location[n][0] for n in names})
        self._submit(compiled)
        still_used = {k for k, _ in self._location.values()}
        for k in old_keys - still_used:
            self._futures.pop(k, None)
            self._units.pop(k, None)
        self._interrupt_waiters()
        self._changed.notify_all()

    def _cancel_rest(self) -> None:
        self._cancelled = True
        pending = [f for f in self._futures.values() if f.status == "pending"]
        if pending:
            self._client.cancel(pending)
        self._changed.notify_all()
        self._soon(self._maybe_finished)

    def _log(self, kind: str, **fields: Any) -> None:
        """Publish an event of this run, in order, without waiting (the monitor plugin replays
        transitions of keys that arrive before the events announcing them)."""
        if self._sealed:
            return  # the topic is retired: an event now would only make the scheduler keep it again
        try:
            self._engine._events.send(run_topic(self.id), event(kind, self.id, **fields))
        except Exception:  # noqa: BLE001 - monitoring must never break a run
            logger.debug("could not log event %s", kind, exc_info=True)

    # -- waiting ------------------------------------------------------------------------------
    def _settle(self, timeout: float | None) -> bool:
        """Wait until every node has its final state; False on timeout; :class:`ClusterLost` if the
        client lost the scheduler (or was closed) first."""
        if self._final_status is not None and self._lost is None:
            return True  # it ended before its client went (closed, or lost its scheduler): it stays so
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                futures = list(self._futures.values())
            if self._lost is not None or getattr(self._client, "status", "running") != "running":
                self._raise_if_lost(futures)  # reconnecting or closed: its futures were all cancelled
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                if any(f.status == "pending" for f in futures):
                    return False
            else:
                try:
                    self._client.sync(self._wait_current, futures, remaining)
                except TimeoutError:
                    return False
            with self._lock:
                if self._timers:
                    if remaining is not None and remaining <= 0:
                        return False
                    self._changed.wait(0.05 if remaining is None else min(0.05, max(remaining, 0)))
                    continue
                if any(f.status == "pending" for f in self._futures.values()):
                    if remaining is not None and remaining <= 0:
                        return False
                    continue
                self._raise_if_lost(list(self._futures.values()))  # e.g. reconnected to a new scheduler
                handled = [k for k, f in list(self._futures.items())
                           if f.status == "error" and self._handle_erred_safely(k)]
                if handled or self._timers:
                    continue
                if self.ended is None:
                    self.ended = time.time()
                return True

    async def _wait_current(self, futures: list[Future], timeout: float | None) -> None:
        """Wait for ``futures`` on the client's loop, or until the run replaces some of them."""
        interrupt = asyncio.Event()
        self._interrupts.add(interrupt)
        waiter = asyncio.ensure_future(_all_done(futures))
        stopper = asyncio.ensure_future(interrupt.wait())
        try:
            done, _ = await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise TimeoutError
            if waiter in done and waiter.exception() is not None:
                raise waiter.exception()
        finally:
            self._interrupts.discard(interrupt)
            for f in (waiter, stopper):
                if not f.done():
                    f.cancel()

    def _interrupt_waiters(self) -> None:
        for interrupt in list(self._interrupts):
            self._client.loop.add_callback(interrupt.set)

    def _any_pending(self) -> bool:
        """Whether some current future is pending.  Called once per finished sink, so it must not
        scan every future each time: a cursor skips the ones already seen done, and only a
        "nothing pending" answer is confirmed by a full scan (a retried future turns pending again)."""
        futs = list(self._futures.values()) if self._scan is None else self._scan
        self._scan = futs
        i = self._scan_pos
        while i < len(futs) and futs[i].status != "pending":
            i += 1
        self._scan_pos = i
        if i < len(futs):
            return True
        self._scan, self._scan_pos = None, 0
        return any(f.status == "pending" for f in self._futures.values())

    def _maybe_finished(self) -> None:
        """Called on the driver when watched sinks are done: announce the run's end if it ended."""
        with self._lock:
            if self._finished_event_sent or self._timers:
                return  # a retry's timer watches its keys again when it fires
            pending = self._any_pending()
        try:
            settled = not pending and self._settle(timeout=0.5)
        except ClusterLost:
            settled = True  # the run ended there: announce it (the journal marks it interrupted)
            if self.ended is None:
                self.ended = time.time()
        if not settled:
            # a sink erred while other branches still run (its failed ancestor's siblings), or the
            # slow path is still busy: look again once what is pending now is done
            with self._lock:
                self._watch([f for f in self._futures.values() if f.status == "pending"])
            return
        with self._lock:
            if self._finished_event_sent:
                return
            self._finished_event_sent = True
            self._final_status = self._status_now()
        self._engine._run_finished(self)

    def done(self) -> bool:
        """True once every node has its final state (or the run's cluster was lost)."""
        if self._detached is not None:
            return self._detached.outcome is not None
        with self._lock:
            if self._timers or any(f.status == "pending" for f in self._futures.values()):
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
            outcome = self._cached_outcome(state)
            if outcome is None:
                outcome = RunOutcome(self)
                self._cache_outcome(state, outcome)
        if fetch:
            self._prefetch(list(self.workflow.nodes))
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
            if any(o.status == FAILED for o in self._known.values()):
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
            self._log("finished", status="cancelled", counts={}, ended=time.time())

    def visualize(self) -> Any:
        """A picture of the workflow with each node coloured by its state (SVG; inline in notebooks)."""
        from cleo_dask.monitor.pictures import visualize_run
        return visualize_run(self)

    def show_progress(self, **kwargs: Any) -> bool:
        """Show a progress bar until the run is done (True) or ``timeout=`` passes (False): an
        updating HTML bar in a notebook, a tqdm bar on a terminal, plain lines otherwise."""
        from cleo_dask.monitor.notebook import show_progress
        return show_progress(self, **kwargs)

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
                st = self._futures[key].status if key in self._futures else "pending"
                counts["done" if st == "finished" else "error" if st == "error" else "pending"] += 1
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
            release_futures(self._client, list(self._futures.values()))
            self._futures = {}

    # -- outcomes -----------------------------------------------------------------------------
    def _fetch_metas(self) -> None:
        with self._lock:
            missing = [k for k, f in self._futures.items() if f.status == "finished" and k not in self._metas
                       ]
        if not missing:
            return
        try:
            per_worker = self._client.run(collect_meta, missing)
            for found in per_worker.values():
                self._metas.update(found)
            losses = self._client.run_on_scheduler(_suspicious, missing)
            self._losses.update(losses)
        except Exception:  # noqa: BLE001 - fall back to fetching the outputs themselves
            logger.debug("meta collection failed", exc_info=True)
        for k in missing:
            if k not in self._metas:
                out = self._output(k)
                self._metas[k] = out.meta() if isinstance(out, NodeOutput) else tuple(o.meta() for o in out)

    def _prefetch(self, nodes: list[str]) -> None:
        """Fetch the outputs of ``nodes`` not fetched yet in one ``gather`` (not one per key)."""
        with self._lock:
            futs = {}
            for n in nodes:
                if n in self._known or n not in self._location:
                    continue
                key = self._location[n][0]
                fut = self._futures.get(key)
                if fut is not None and key not in self._outputs and fut.status == "finished":
                    futs[key] = fut
        if futs:
            self._outputs.update(zip(futs, self._client.gather(list(futs.values()))))

    def _output(self, key: str) -> Any:
        if key not in self._outputs:
            fut = self._futures.get(key)
            if key in self._unkept or (fut is None and self._detached is not None and not self._released):
                from cleo_dask.runs.keep import value_gone
                raise value_gone(self.id, " / ".join(repr(n) for n in self._units.get(key, (key,))),
                                 self._detached.reason or "its value was not kept")
            if fut is None:
                raise CleoError(f"run {self.id} was released: values not read before release() are gone")
            self._outputs[key] = fut.result()
        return self._outputs[key]

    def _value_of(self, key: str, idx: int) -> Any:
        out = self._output(key)
        return (out if idx < 0 else out[idx]).value

    def _result_of(self, node: str) -> TaskResult:
        record = self._records.get(node, NodeRecord())
        attempts = list(record.attempts)
        if node in self._known:
            out = self._known[node]
            status = Status(out.status)
            if status == Status.FAILED:
                return TaskResult(node, Status.FAILED, value=None, error=record.error, traceback=record.traceback,
                                  attempts=_numbered(attempts), start=_first(attempts), end=_last(attempts),
                                  worker=attempts[-1].worker if attempts else None,
                                  worker_losses=record.worker_losses, run_id=self.id)
            return self._from_meta(node, out.meta(), record, value=out.value, losses=record.worker_losses)
        key, idx = self._location[node]
        fut = self._futures.get(key)
        st, released_error = (fut.status, None) if fut is not None else self._released.get(key, ("released", None))
        if st == "cancelled" and self._final_status is not None and key in self._metas:
            st = "finished"  # it finished before its client went (which cancels every future it holds)
        if st == "finished":
            meta = self._metas[key] if idx < 0 else self._metas[key][idx]
            return self._from_meta(node, meta, record, fetch=lambda: self._value_of(key, idx),
                                   losses=max(self._losses.get(key, 0), record.worker_losses))
        if st == "error":
            exc = erred_exception(fut) if fut is not None else released_error
            err = exc.error if isinstance(exc, NodeFailed) else exc
            return TaskResult(node, Status.FAILED, error=record.error or err, traceback=record.traceback,
                              attempts=_numbered(attempts), start=_first(attempts), end=_last(attempts),
                              worker_losses=record.worker_losses, run_id=self.id)
        return TaskResult(node, Status.CANCELLED, attempts=_numbered(attempts), run_id=self.id,
                          reason="cancelled before it finished")

    def _from_meta(self, node: str, meta: tuple, record: NodeRecord, value: Any = None, fetch: Any = None,
                   losses: int = 0) -> TaskResult:
        status, start, end, worker, attempt_no, reason, upstream = meta
        if not record.attempts and status == "succeeded" and not losses:  # the common case, kept cheap
            return TaskResult(node, Status.SUCCEEDED, value=value, fetch=fetch,
                              attempts=(Attempt(1, start, end, worker),), start=start, end=end, worker=worker,
                              reason=reason, upstream_fallbacks=tuple(upstream), run_id=self.id)
        attempts = list(record.attempts)
        skipped = status in SKIP_STATUSES
        if not skipped:
            _add_attempt(record, Attempt(attempt_no, start, end, worker,
                                         kind="fallback" if status == "fell_back" else "task"))
            attempts = list(record.attempts)
        first = _first(attempts) or start
        return TaskResult(node, Status(status), value=value, fetch=fetch if not skipped else None,
                          attempts=_numbered(attempts), start=first, end=end, worker=worker, reason=reason,
                          fallback_used=status == "fell_back", upstream_fallbacks=tuple(upstream),
                          worker_losses=losses, error=record.error if status == "fell_back" else None,
                          traceback=record.traceback if status == "fell_back" else None, run_id=self.id)

    def _collect_attempt_events(self) -> None:
        """Failed attempts retried by Dask itself are known only from the workers' events."""
        events = self.events()
        if not self._sealed:  # the run is done (an outcome is built): _seal_events needs no second call
            self._event_log = events
        for _, msg in events:
            if isinstance(msg, dict) and msg.get("kind") == "attempt":
                rec = self._records.setdefault(msg["node"], NodeRecord())
                _add_attempt(rec, Attempt(msg.get("attempt", 1), msg.get("start"), msg.get("end"), msg.get("worker"),
                                          msg.get("error"), msg.get("error_type"), bool(msg.get("timed_out")),
                                          kind=msg.get("mode", "task")))

    def counts(self) -> dict[str, int]:
        """Number of nodes by final status (waits for the run)."""
        out: dict[str, int] = {}
        for r in self.result().values():
            out[r.status.value] = out.get(r.status.value, 0) + 1
        return out

    def __repr__(self) -> str:
        return f"<cleo_dask.Run {self.id} {self.name!r} agent={_agent_label(self.agent)!r} " \
               f"nodes={len(self.workflow)} status={self.status()}>"

    def _repr_html_(self) -> str:
        p = self.progress()
        link = self._engine.dashboard_link
        return (f"<div><strong>cleo_dask Run</strong> <code>{html.escape(self.id)}</code> "
                f"({html.escape(self.name)}, agent <code>{html.escape(_agent_label(self.agent))}</code>)<br>"
                f"status: <b>{self.status()}</b>; nodes: {p['total']} — done {p['done']}, "
                f"errored {p['error']}, pending {p['pending']}"
                + (f"<br><a href='{html.escape(link)}' target='_blank'>Dask dashboard</a>" if link else "")
                + "</div>")


class RunOutcome(Mapping[str, TaskResult]):
    """The outcome of a run: node name -> :class:`TaskResult`; values are fetched when read."""

    def __init__(self, run: Run):
        self.run = run
        with run._lock:
            run._collect_attempt_events()
            run._fetch_metas()
            with _gc_paused():  # one result per node, none of them garbage: skip full collections
                self._results = {n: run._result_of(n) for n in run.workflow.nodes}

    def __getitem__(self, node: str) -> TaskResult:
        return self._results[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def ok(self) -> bool:
        """True if every node succeeded, fell back or was skipped (by its condition, or as
        ``upstream_failed``: then the failed node itself makes this False)."""
        return all(r.status in (Status.SUCCEEDED, Status.FELL_BACK, Status.SKIPPED, Status.UPSTREAM_FAILED)
                   for r in self._results.values())

    @property
    def durable(self) -> bool:
        """True when the run is completely in the engine's journal (``Engine(store=...)``); False
        without a store or when a journal write of the run failed (:attr:`durable_reason` says why)."""
        return self.durable_reason is None

    @property
    def durable_reason(self) -> str | None:
        """Why the run is not durable (``None`` if it is); waits for the end of the run to be journaled."""
        durability = self.run._engine.durable
        if durability is None:
            return "the engine keeps no journal (create it with Engine(store=...))"
        return durability.problem(self.run)

    def counts(self) -> dict[str, int]:
        """Number of nodes by status."""
        out: dict[str, int] = {}
        for r in self._results.values():
            out[r.status.value] = out.get(r.status.value, 0) + 1
        return out

    def values_by_node(self, nodes: Iterable[str] | None = None) -> dict[str, Any]:
        """The values of ``nodes`` (default: every node), fetched now in one gather."""
        names = list(self._results) if nodes is None else list(nodes)
        self.run._prefetch([n for n in names if n in self._results])
        return {n: self._results[n].value for n in names}

    def __repr__(self) -> str:
        return f"<RunOutcome {self.run.id}: {self.counts()}>"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{r.status.value}</td><td>{len(r.attempts)}</td>"
            f"<td>{'' if r.duration is None else f'{r.duration:.3f}'}</td>"
            f"<td>{html.escape(repr(r.error)) if r.error is not None else html.escape(r.reason or '')}</td></tr>"
            for n, r in list(self._results.items())[:100])
        return ("<table><tr><th>node</th><th>status</th><th>attempts</th><th>seconds</th><th>error / reason</th></tr>"
                f"{rows}</table>")


def _suspicious(keys: list[str], dask_scheduler: Any = None) -> dict[str, int]:
    out = {}
    for k in keys:
        ts = dask_scheduler.tasks.get(k)
        if ts is not None and ts.suspicious:
            out[k] = ts.suspicious
    return out


def _add_attempt(record: NodeRecord, attempt: Attempt) -> None:
    for a in record.attempts:
        if a.start is not None and a.start == attempt.start and a.error == attempt.error:
            return
    record.attempts.append(attempt)


def _numbered(attempts: list[Attempt]) -> tuple[Attempt, ...]:
    when = [a.start if a.start is not None else a.end for a in attempts]  # a lost attempt: its end
    ordered = [a for _, a in sorted(zip(when, attempts), key=lambda p: (p[0] is None, p[0] or 0.0))]
    return tuple(dataclasses.replace(a, number=i + 1) for i, a in enumerate(ordered))


def _first(attempts: list[Attempt]) -> float | None:
    starts = [a.start for a in attempts if a.start is not None]
    return min(starts) if starts else None


def _last(attempts: list[Attempt]) -> float | None:
    ends = [a.end for a in attempts if a.end is not None]
    return max(ends) if ends else None


def _agent_label(agent: Any) -> str:
    from cleo_dask.core.agent import agent_id
    return agent_id(agent)
