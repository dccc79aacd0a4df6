"""A run's slow path: acting on a failed node, on the engine's driver thread.

:class:`RunSlowPath` is a part of :class:`~cleo_dask.runs.run.Run` (a mixin over its fields).  It
finds the root of a failure (the erred key whose own node failed, not an ancestor's), records the
attempt, asks :func:`cleo_dask.failures.decide.decide` what to do and carries that out: a retry
after its backoff (``Client.retry`` of the erred key: a lost worker, or a retry the scheduler
could not hold; the others are held there, :mod:`cleo_dask.failures.hold`), the fallback or the failure's propagation
to the children (trigger rules) submitted under new keys, or the rest of the run cancelled.
"""
from __future__ import annotations

import logging
import time
import traceback as tb
from typing import Any, NamedTuple

from cleo_dask.core.compile import compile_resubmission, retry_policy
from cleo_dask.core.outcome import Attempt, NodeRecord
from cleo_dask.core.worker import NodeFailed, NodeOutput, failure_output, skipped_output
from cleo_dask.errors import CodeError
from cleo_dask.failures.decide import Decision, DecisionKind, FailedAttempt, decide, propagate
from cleo_dask.runs.assemble import add_attempt
from cleo_dask.runs.stranded import stranded
from cleo_dask.util.futures import erred_exception, lost_elsewhere, worker_losses

logger = logging.getLogger("cleo_dask")


class ErredAttempt(NamedTuple):
    """What the future of a failure's root tells: the node, its attempt, the error and its
    traceback, the outputs of the nodes of its unit that did finish, how often a worker died
    running it (``KilledWorker``), and its earlier attempts retried while the scheduler held it."""

    node: str
    attempt: Attempt
    error: BaseException | None
    traceback: str
    completed: dict[str, NodeOutput]
    lost: int
    previous: tuple[Attempt, ...] = ()


class RunSlowPath:
    """The failure-handling part of :class:`~cleo_dask.runs.run.Run` (see the module docstring)."""

    def _handle_erred(self, key: str) -> bool:
        """Act on an erred unit key if it is the root of its failure; True if it was handled:
        record the attempt, :func:`decide` what to do, carry that out."""
        with self._lock:
            failed = self._root_failure(key)
            if failed is None:
                return False
            node = failed.node
            self._handled.add(key)
            self._known.update(failed.completed)
            record = self._records.setdefault(node, NodeRecord())
            record.worker_losses = max(record.worker_losses, failed.lost)
            for attempt in (*failed.previous, failed.attempt):   # held retries' attempts came with it
                add_attempt(record, attempt)
            spec = self.workflow.nodes[node].task
            failed_attempts = sum(1 for a in record.attempts if a.error is not None)
            decision = decide(FailedAttempt(failed.error, failed_attempts, failed.attempt.crashed, failed.lost,
                                            fallback=self._mode.get(node, "task") == "fallback"),
                              retry_policy(self.workflow.nodes[node], self._defaults),
                              has_fallback=spec.fallback is not None, has_on_error=spec.on_error is not None,
                              fail_fast=self.fail_fast)
            self._carry_out(decision, key, failed, record)
            return True

    def _root_failure(self, key: str) -> ErredAttempt | None:
        """What failed, if the erred ``key`` is the root of its failure (``None``: nothing to do
        for this key now, or its failure is an ancestor's, handled with that ancestor)."""
        fut = self._futures.get(key)
        if fut is None or key in self._handled or fut.status != "error" or self._cancelled:
            return None
        exc = erred_exception(fut)  # never fut.exception(): it waits, and may return None
        if exc is None:
            return None  # retried or cancelled meanwhile, or blaming a retried ancestor: watched anew
        names = self._units[key]
        if isinstance(exc, NodeFailed):
            if exc.key != key:
                return None  # an ancestor's failure, handled with that ancestor
            return ErredAttempt(exc.node, exc.attempt, exc.error, exc.traceback, exc.completed, 0,
                                getattr(exc, "previous", ()))
        # the task could not run at all: worker lost too often, unpicklable, ...
        if lost_elsewhere(exc, key):
            return None  # its ancestor's workers died: handled with that ancestor
        node = names[0]
        exc = self._load_error(exc) or exc
        text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        lost = worker_losses(self._client, key, exc)  # KilledWorker: retried as the policy says
        # a lost attempt's start is unknown: its end (now, about) orders it among the others
        attempt = Attempt(1, None, time.time() if lost else None, None, repr(exc), type(exc).__name__,
                          crashed=True,
                          kind=self._mode.get(node, "task"))
        return ErredAttempt(node, attempt, exc, text, {}, lost)

    def _carry_out(self, decision: Decision, key: str, failed: ErredAttempt, record: NodeRecord) -> None:
        """Do what :func:`decide` chose for the failure of ``failed.node`` (erred ``key``)."""
        node, error, text = failed.node, failed.error, failed.traceback
        if decision.kind is DecisionKind.RETRY:
            self.log_event("retry", node=node, attempt=decision.attempt, delay=decision.after)
            self._timers += 1
            self._later(decision.after, self._retry, key)
            return
        record.error, record.traceback = error, text
        if decision.notify:
            try:
                self.workflow.nodes[node].task.on_error(self.agent, node, error)
            except Exception:  # noqa: BLE001 - a broken notifier must not break the run
                logger.exception("on_error of task %r failed", node)
        if decision.kind is DecisionKind.FAIL_RUN:
            self._known[node] = failure_output(node, error, text)
            self.log_event("outcome", node=node, status="failed", error=repr(error)[:500])
            self._cancel_rest()
        elif decision.kind is DecisionKind.FALLBACK:
            self._mode[node] = "fallback"
            self._resubmit([node], {node: {"mode": "fallback", "error": error}})
            self.log_event("fallback", node=node, key=self._location[node][0])
        else:
            self._known[node] = failure_output(node, error, text)
            self.log_event("outcome", node=node, status="failed", error=repr(error)[:500])
            self._propagate_failure(node)

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
                downstream = self._stranded(set(names) | set(self._below(names)))
                self._watch_sinks(sorted({self._location[n][0] for n in downstream
                                          if not self._children[n] and n not in self._known
                                          and n in self._location}))
            self._changed.notify_all()

    def _propagate_failure(self, failed: str) -> None:
        """Apply the trigger rules below a finally failed node on the client (:func:`propagate`
        decides, this carries it out): ``all_success`` descendants end ``upstream_failed`` (or
        ``skipped``, below a skip) without running; ``all_done`` / ``one_failed`` ones (and what
        depends on them) are submitted again with a :class:`Failure` standing in for the parent."""
        plan = propagate(self._below([failed]), self.workflow.nodes, self._known)
        for n, (status, reason) in plan.skipped.items():
            self._known[n] = skipped_output(reason, status=status)
            self.log_event("skipped", node=n, key=self._location.get(n, ("",))[0], reason=reason, status=status)
        self._forget_known_units()
        again = self._stranded({failed, *plan.skipped, *plan.rerun})
        rerun = [n for n in self.workflow.nodes if n in again and n not in self._known]
        self._resubmit(rerun, {}) if rerun else self._changed.notify_all()
        self._soon(self._maybe_finished)

    def _stranded(self, names: set[str]) -> set[str]:
        """``names`` and the nodes stranded with them in erred batches (:func:`stranded`)."""
        return stranded(names, self._units, self._location, self._known, self._below)

    def _below(self, names: list[str]) -> list[str]:
        """The nodes whose current keys depend on those of ``names``: their descendants reached
        without passing a node whose outcome is known here.  Below a known node the keys took its
        outcome as it is (a finished key, or a value sent with a later generation), so a failure
        further up changes nothing there: resubmitting them would run again what already ran."""
        return self.workflow.descendants(names, avoid=self._known)

    def _forget_known_units(self) -> None:
        """Drop the futures of units whose every node's outcome is now known here (a stale
        generation may still wait on an erred ancestor: cancel it rather than wait for it); they
        are retired (:mod:`cleo_dask.runs.retire`), not dropped."""
        self._retire([self._futures.pop(key) for key, names in list(self._units.items())
                      if key in self._futures and all(n in self._known for n in names)])
        self._interrupt_waiters()

    def _resubmit(self, roots: list[str], overrides: dict[str, dict[str, Any]], after: list[str] = ()) -> None:
        """Submit ``roots`` and every unfinished descendant of ``roots`` + ``after`` under new keys
        (the keys replaced are retired: :mod:`cleo_dask.runs.retire`)."""
        wf = self.workflow
        subset = set(roots) | set(self._below(list(roots) + list(after)))
        subset = self._stranded(subset)   # with their batch mates: their batches erred too
        # a windowed run's nodes not sent yet go with their window, their parents as they are then
        names = [n for n in wf.nodes if n in subset and (n in roots or n not in self._known) and n in self._location]
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
        self.log_event("keys", nodes={n: compiled.location[n][0] for n in names})
        self._submit(compiled)
        still_used = {k for k, _ in self._location.values()}
        for k in old_keys - still_used:
            self._units.pop(k, None)
        self._retire([self._futures.pop(k, None) for k in old_keys - still_used])
        self._interrupt_waiters()
        self._changed.notify_all()
