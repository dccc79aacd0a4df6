"""A run's outcome: each node's :class:`TaskResult`, assembled on the client from what it knows.

:class:`RunResults` is a part of :class:`~cleo_dask.runs.run.Run` (a mixin over its fields): it
collects the workers' small records of finished keys (never their values), the attempts the
workers reported, and builds one result per node; values are fetched when first read, or all at
once in one gather.  :class:`RunOutcome` is what ``Run.result()`` returns.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from cleo_dask.core.outcome import SKIP_STATUSES, Attempt, NodeRecord, Status, TaskResult
from cleo_dask.core.worker import NodeFailed, NodeOutput
from cleo_dask.errors import CleoError
from cleo_dask.runs.batchevents import is_batch_outcome, record_batch_outcome
from cleo_dask.runs.columns import CODE, OutcomeColumns, compact_metas
from cleo_dask.runs.html import outcome_html
from cleo_dask.runs.metapeers import fetch_with_peers, suspicious
from cleo_dask.runs.windows import released_error
from cleo_dask.util.futures import erred_exception
from cleo_dask.util.gcpause import gc_paused

logger = logging.getLogger("cleo_dask")

SUCCEEDED_CODE, FELL_BACK_CODE, FAILED_CODE = CODE["succeeded"], CODE["fell_back"], CODE["failed"]
SKIPPED_CODE, UPSTREAM_FAILED_CODE, CANCELLED_CODE = CODE["skipped"], CODE["upstream_failed"], CODE["cancelled"]
PENDING_CODE = CODE["pending"]
CANCELLED_REASON = "cancelled before it finished"


META_BATCH = 50_000   # keys per Client.run / run_on_scheduler call when collecting records


class RunResults:
    """The outcome-building part of :class:`~cleo_dask.runs.run.Run` (see the module docstring)."""

    #: runs sent together with this one whose records are collected with its own (one ``Client.run``
    #: for all of them: :mod:`cleo_dask.runs.metapeers`); ``None``: alone
    metas_peers: Any = None

    def missing_metas(self, wait: bool = True) -> list[str] | None:
        """The keys of finished units whose workers' records are not here yet (``wait=False``:
        ``None`` if another thread holds the run now: a peer never waits for it, see metapeers)."""
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            return [k for k, f in self._futures.items() if f.status == "finished" and k not in self._metas]
        finally:
            self._lock.release()

    def put_metas(self, keys: list[str], batches: Iterable[Any], losses: Mapping[str, int],
                  wait: bool = True) -> bool:
        """Keep the records of ``keys`` (the workers' answers to ``compact_metas(keys)``) and the
        worker losses the scheduler counted for them (``wait=False``: kept only if no other
        thread holds the run now; says whether they were)."""
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            for batch in batches:
                # no node moved to another key before the first resubmission
                self._metas.put_batch(keys, batch, self._units, self._location if self._gen else None)
        finally:
            self._lock.release()
        self._losses.update((k, losses[k]) for k in keys if k in losses)
        return True

    def _fetch_metas(self) -> None:
        missing = self.missing_metas()
        if not missing:
            return
        try:
            if self.metas_peers is not None:
                fetch_with_peers(self._client, self, missing, META_BATCH)
            else:
                for start in range(0, len(missing), META_BATCH):
                    chunk = missing[start:start + META_BATCH]
                    batches = self._client.run(compact_metas, chunk).values()
                    self.put_metas(chunk, batches, self._client.run_on_scheduler(suspicious, chunk))
        except Exception:  # noqa: BLE001 - fall back to fetching the outputs themselves
            logger.debug("meta collection failed", exc_info=True)
        for k in missing:
            if k not in self._metas and k in self._units:
                out = self._output(k)
                meta = out.meta() if isinstance(out, NodeOutput) else tuple(o.meta() for o in out)
                with self._lock:
                    self._metas.put(k, self._units[k], meta, self._location)

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

    def value_fetcher(self, node: str) -> Callable[[], Any]:
        """A function that reads ``node``'s value from the cluster (when called)."""
        key, idx = self._location[node]
        return lambda: self._value_of(key, idx)

    def _key_status(self, key: str) -> tuple[str, Any]:
        fut = self._futures.get(key)
        st, released_error = (fut.status, None) if fut is not None else self._released.get(key, ("released", None))
        if st == "cancelled" and self._final_status is not None and key in self._metas:
            st = "finished"  # it finished before its client went (which cancels every future it holds)
        return st, released_error

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
        st, released_error = self._key_status(key)
        if st == "finished":
            return result_from_meta(node, self._metas.meta(node), record, self.id,
                                    fetch=lambda: self._value_of(key, idx),
                                    losses=max(self._losses.get(key, 0), record.worker_losses))
        if st == "error":
            fut = self._futures.get(key)
            exc = erred_exception(fut) if fut is not None else released_error
            if isinstance(exc, NodeFailed) and node in exc.completed:   # a fail_fast batch's node
                out = exc.completed[node]
                return result_from_meta(node, out.meta(), record, self.id, value=out.value, losses=record.worker_losses)
            err = exc.error if isinstance(exc, NodeFailed) else exc
            return TaskResult(node, Status.FAILED, error=record.error or err, traceback=record.traceback,
                              attempts=numbered(attempts), start=first_start(attempts), end=last_end(attempts),
                              worker_losses=record.worker_losses, run_id=self.id)
        return TaskResult(node, Status.CANCELLED, attempts=numbered(attempts), run_id=self.id,
                          reason=CANCELLED_REASON)

    def _collect_attempt_events(self) -> None:
        """Failed attempts retried by Dask itself are known only from the workers' events."""
        # a run that may skip the round trip (spawned children) and has seen nothing but
        # announcements on its topic, nor anything but successes, has no such events
        quiet = (self.topic_unread_if_quiet and not self.events_noted and not self._known and not self._records
                 and all(f.status == "finished" for f in self._futures.values()))
        events = () if quiet and not self._sealed else self.events()
        if not self._sealed:  # the run is done (an outcome is built): seal_events needs no second call
            self._event_log = events
        for _, msg in events:
            if isinstance(msg, dict) and msg.get("kind") == "attempt":
                add_attempt(self._records.setdefault(msg["node"], NodeRecord()), attempt_of(msg))
            elif is_batch_outcome(msg):   # a batched node's final failure: its error, its traceback
                record_batch_outcome(self._records.setdefault(msg["node"], NodeRecord()), msg)

    def outcome_columns(self) -> OutcomeColumns:
        """Every node's outcome as things stand, in columns (the run is done: see ``result()``):
        plain rows straight from the workers' records, a whole result only where there is more."""
        with self._lock:
            self._collect_attempt_events()
            self._fetch_metas()
            metas, location, losses = self._metas, self._location, self._losses
            cols = OutcomeColumns.from_metas(metas)   # every row as its worker's record says
            redo = set(self._known) | set(self._records)   # rows made from a whole result
            with gc_paused():  # the few results made here are not garbage: skip full collections
                for key, names in self._units.items():
                    st = self._key_status(key)[0]
                    if st == "finished" and not losses.get(key):
                        continue
                    for node in names:
                        if node in redo or location.get(node, (None,))[0] != key:
                            continue
                        if st in ("finished", "error"):
                            redo.add(node)
                        else:
                            cols.set_plain(metas.index[node], CANCELLED_CODE, None, None, None, CANCELLED_REASON)
                names = metas.names
                for i in cols.rows_with((FELL_BACK_CODE, FAILED_CODE, PENDING_CODE)):
                    redo.add(names[i])
                redo.update(names[i] for i in metas.with_upstream())
                for node in redo:
                    cols.set_result(metas.index[node], self._result_of(node))
        return cols

    def node_results(self) -> dict[str, TaskResult]:
        """Every node's :class:`TaskResult` as things stand, all made now (``result()`` makes
        each when asked for)."""
        outcome = RunOutcome(self)
        return dict(outcome.items())


class RunOutcome(Mapping[str, TaskResult]):
    """The outcome of a run: node name -> :class:`TaskResult`; values are fetched when read.

    Statuses, times and attempt counts are kept in columns (:mod:`cleo_dask.runs.columns`); a
    :class:`TaskResult` is made each time one is asked for (iterating makes one at a time).
    """

    def __init__(self, run: Any):
        self.run = run   # the Run (values are fetched through it when read)
        self._columns: OutcomeColumns = run.outcome_columns()

    def __getitem__(self, node: str) -> TaskResult:
        cols = self._columns
        i = cols.index[node]
        fetch = self.run.value_fetcher(node) if cols.code_of(i) == SUCCEEDED_CODE and i not in cols.extra else None
        result = cols.result(i, self.run.id, fetch)
        children = getattr(self.run, "map_children", None)
        if children is not None:
            result.children = children(node)
        return result

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns.names)

    def __len__(self) -> int:
        return len(self._columns)

    def __contains__(self, node: object) -> bool:
        return node in self._columns.index

    @property
    def columns(self) -> OutcomeColumns:
        """The outcome's columns (statuses, times, attempt counts by node number)."""
        return self._columns

    @property
    def ok(self) -> bool:
        """True if every node succeeded, fell back or was skipped (by its condition, or as
        ``upstream_failed``: then the failed node itself makes this False)."""
        return self._columns.all_in((SUCCEEDED_CODE, FELL_BACK_CODE, SKIPPED_CODE, UPSTREAM_FAILED_CODE))

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
        """Number of nodes by status (from the columns: no result is made)."""
        return self._columns.counts()

    def failed(self) -> list[TaskResult]:
        """The results of the nodes that failed, in the workflow's order; each names every failed
        attempt in ``attempts`` (with its error) and the final ``error``."""
        names = self._columns.names
        return [self[names[i]] for i in self._columns.rows_with((FAILED_CODE,))]

    def values_by_node(self, nodes: Iterable[str] | None = None) -> dict[str, Any]:
        """The values of ``nodes`` (default: every node), fetched now in one gather."""
        names = list(self) if nodes is None else list(nodes)
        self.run.prefetch([n for n in names if n in self])
        return {n: self[n].value for n in names}

    def __repr__(self) -> str:
        return f"<RunOutcome {self.run.id}: {self.counts()}>"

    def _repr_html_(self) -> str:
        return outcome_html(self)


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
