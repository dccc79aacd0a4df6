"""A run's outcome: each node's :class:`TaskResult`, assembled on the client from what it knows.

:class:`RunResults` is a part of :class:`~cleo_dask.runs.run.Run` (a mixin over its fields): it
collects the workers' small records of finished keys (never their values), the attempts the
workers reported, and builds one result per node; values are fetched when first read, or all at
once in one gather.  :class:`RunOutcome` is what ``Run.result()`` returns.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cleo_dask.core.outcome import SKIP_STATUSES, Attempt, NodeRecord, Status, TaskResult
from cleo_dask.core.worker import NodeFailed, NodeOutput, collect_meta
from cleo_dask.errors import CleoError
from cleo_dask.runs.batchevents import is_batch_outcome, record_batch_outcome
from cleo_dask.runs.html import outcome_html
from cleo_dask.runs.windows import released_error
from cleo_dask.util.futures import erred_exception
from cleo_dask.util.gcpause import gc_paused

logger = logging.getLogger("cleo_dask")


class RunResults:
    """The outcome-building part of :class:`~cleo_dask.runs.run.Run` (see the module docstring)."""

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

    def prefetch(self, nodes: list[str]) -> None:
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
                raise self._detached.value_gone(self.id, " / ".join(repr(n) for n in self._units.get(key, (key,))))
            if fut is None and self.window_released(key):
                raise released_error(self.id, " / ".join(repr(n) for n in self._units.get(key, (key,))))
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
                                  attempts=numbered(attempts), start=first_start(attempts), end=last_end(attempts),
                                  worker=attempts[-1].worker if attempts else None,
                                  worker_losses=record.worker_losses, run_id=self.id)
            return result_from_meta(node, out.meta(), record, self.id, value=out.value, losses=record.worker_losses)
        if node not in self._location:   # a windowed run ended before sending it
            return TaskResult(node, Status.CANCELLED, run_id=self.id, reason="cancelled before it was sent")
        key, idx = self._location[node]
        fut = self._futures.get(key)
        st, released_error = (fut.status, None) if fut is not None else self._released.get(key, ("released", None))
        if st == "cancelled" and self._final_status is not None and key in self._metas:
            st = "finished"  # it finished before its client went (which cancels every future it holds)
        if st == "finished":
            meta = self._metas[key] if idx < 0 else self._metas[key][idx]
            return result_from_meta(node, meta, record, self.id, fetch=lambda: self._value_of(key, idx),
                                    losses=max(self._losses.get(key, 0), record.worker_losses))
        if st == "error":
            exc = erred_exception(fut) if fut is not None else released_error
            if isinstance(exc, NodeFailed) and node in exc.completed:   # a fail_fast batch's node
                out = exc.completed[node]
                return result_from_meta(node, out.meta(), record, self.id, value=out.value, losses=record.worker_losses)
            err = exc.error if isinstance(exc, NodeFailed) else exc
            return TaskResult(node, Status.FAILED, error=record.error or err, traceback=record.traceback,
                              attempts=numbered(attempts), start=first_start(attempts), end=last_end(attempts),
                              worker_losses=record.worker_losses, run_id=self.id)
        return TaskResult(node, Status.CANCELLED, attempts=numbered(attempts), run_id=self.id,
                          reason="cancelled before it finished")


    def _collect_attempt_events(self) -> None:
        """Failed attempts retried by Dask itself are known only from the workers' events."""
        events = self.events()
        if not self._sealed:  # the run is done (an outcome is built): seal_events needs no second call
            self._event_log = events
        for _, msg in events:
            if isinstance(msg, dict) and msg.get("kind") == "attempt":
                add_attempt(self._records.setdefault(msg["node"], NodeRecord()), attempt_of(msg))
            elif is_batch_outcome(msg):   # a batched node's final failure: its error, its traceback
                record_batch_outcome(self._records.setdefault(msg["node"], NodeRecord()), msg)

    def node_results(self) -> dict[str, TaskResult]:
        """Every node's :class:`TaskResult` as things stand (the run is done: see ``result()``)."""
        with self._lock:
            self._collect_attempt_events()
            self._fetch_metas()
            with gc_paused():  # one result per node, none of them garbage: skip full collections
                return {n: self._result_of(n) for n in self.workflow.nodes}


class RunOutcome(Mapping[str, TaskResult]):
    """The outcome of a run: node name -> :class:`TaskResult`; values are fetched when read."""

    def __init__(self, run: Any):
        self.run = run   # the Run (values are fetched through it when read)
        self._results = run.node_results()

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
        durability = self.run._context.journal()
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
        self.run.prefetch([n for n in names if n in self._results])
        return {n: self._results[n].value for n in names}

    def __repr__(self) -> str:
        return f"<RunOutcome {self.run.id}: {self.counts()}>"

    def _repr_html_(self) -> str:
        return outcome_html(self._results)


def result_from_meta(node: str, meta: tuple, record: NodeRecord, run_id: str, value: Any = None, fetch: Any = None,
                 losses: int = 0) -> TaskResult:
    """The :class:`TaskResult` of ``node`` from its output's ``meta`` (status, start, end, worker,
    attempt number, reason, upstream fallbacks) and the attempts the client recorded."""
    status, start, end, worker, attempt_no, reason, upstream = meta
    if not record.attempts and status == "succeeded" and not losses:  # the common case, kept cheap
        return TaskResult(node, Status.SUCCEEDED, value=value, fetch=fetch,
                          attempts=(Attempt(1, start, end, worker),), start=start, end=end, worker=worker,
                          reason=reason, upstream_fallbacks=tuple(upstream), run_id=run_id)
    attempts = list(record.attempts)
    if status == "failed":   # a batched node (a batch never raises): its attempts came as events
        return TaskResult(node, Status.FAILED, error=record.error, traceback=record.traceback,
                          attempts=numbered(attempts), start=first_start(attempts), end=last_end(attempts),
                          worker=attempts[-1].worker if attempts else worker, worker_losses=losses, run_id=run_id)
    skipped = status in SKIP_STATUSES
    if not skipped:
        add_attempt(record, Attempt(attempt_no, start, end, worker,
                                     kind="fallback" if status == "fell_back" else "task"))
        attempts = list(record.attempts)
    first = first_start(attempts) or start
    return TaskResult(node, Status(status), value=value, fetch=fetch if not skipped else None,
                      attempts=numbered(attempts), start=first, end=end, worker=worker, reason=reason,
                      fallback_used=status == "fell_back", upstream_fallbacks=tuple(upstream),
                      worker_losses=losses, error=record.error if status == "fell_back" else None,
                      traceback=record.traceback if status == "fell_back" else None, run_id=run_id)


def _suspicious(keys: list[str], dask_scheduler: Any = None) -> dict[str, int]:
    out = {}
    for k in keys:
        ts = dask_scheduler.tasks.get(k)
        if ts is not None and ts.suspicious:
            out[k] = ts.suspicious
    return out


def attempt_of(msg: dict[str, Any]) -> Attempt:
    """The failed :class:`Attempt` an ``attempt`` event reports."""
    return Attempt(msg.get("attempt", 1), msg.get("start"), msg.get("end"), msg.get("worker"), msg.get("error"),
                   msg.get("error_type"), bool(msg.get("timed_out")), kind=msg.get("mode", "task"))


def add_attempt(record: NodeRecord, attempt: Attempt) -> None:
    """Add ``attempt`` to ``record`` unless the same attempt is there already (seen twice)."""
    for a in record.attempts:
        if a.start is not None and a.start == attempt.start and a.error == attempt.error:
            return
    record.attempts.append(attempt)


def numbered(attempts: list[Attempt]) -> tuple[Attempt, ...]:
    """``attempts`` in the order they started, numbered from 1."""
    when = [a.start if a.start is not None else a.end for a in attempts]  # a lost attempt: its end
    ordered = [a for _, a in sorted(zip(when, attempts), key=lambda p: (p[0] is None, p[0] or 0.0))]
    return tuple(dataclasses.replace(a, number=i + 1) for i, a in enumerate(ordered))


def first_start(attempts: list[Attempt]) -> float | None:
    """When the first of ``attempts`` started (``None`` if unknown)."""
    starts = [a.start for a in attempts if a.start is not None]
    return min(starts) if starts else None


def last_end(attempts: list[Attempt]) -> float | None:
    """When the last of ``attempts`` ended (``None`` if unknown)."""
    ends = [a.end for a in attempts if a.end is not None]
    return max(ends) if ends else None
