"""The worker's side of a delayed retry held on the scheduler (:mod:`cleo_dask.failures.hold`).

The compiler marks a single-node unit whose retries wait with the per-key annotation
:data:`~cleo_dask.failures.hold.RETRY_ANNOTATION` (its retry policy, pickled: Dask hands a task's
annotations to the worker that runs it).  When such a node's attempt fails, :func:`hold_or_final`
asks :func:`~cleo_dask.failures.hold.retry_delay`; on a retry it tells the scheduler's admission
plugin to hold the key for the delay (a message on the worker's ordered stream, ahead of the
reschedule) and the caller raises ``distributed.Reschedule``.  On a final failure it returns the
records of the earlier attempts (the scheduler kept them and put them in the task's annotations),
so the error the client's slow path sees carries every attempt.
"""
from __future__ import annotations

import pickle
import threading
from typing import Any

import cloudpickle

from cleo_dask import config as _config
from cleo_dask.core.events import event, send_from_worker
from cleo_dask.core.outcome import Attempt
from cleo_dask.failures.hold import HISTORY_ANNOTATION, HOLD_OP, RETRY_ANNOTATION, holds_retries, retry_delay
from cleo_dask.failures.retry import RetryPolicy

_policies: dict[bytes, RetryPolicy | None] = {}   # a pickled policy -> the policy (None: does not load here)
_annotations: dict[int, tuple[RetryPolicy, bytes | None]] = {}   # id(policy) -> (policy, its annotation)
_ERROR_CHARS = 500   # as the ``attempt`` event cuts an error's text, so the client sees one attempt once


def retry_annotation(policy: RetryPolicy) -> bytes | None:
    """The annotation of a unit run under ``policy``: the policy pickled when its retries are held
    on the scheduler, else ``None`` (no retries, Dask's own ``retries=`` do them all, or the setting
    ``cleo_dask.hold-retries`` is off)."""
    if not holds_retries(policy) or not _config.get("hold-retries", True):
        return None
    hit = _annotations.get(id(policy))
    if hit is None or hit[0] is not policy:   # one pickle per policy (compiled policies are shared)
        try:
            blob = cloudpickle.dumps(policy)
        except Exception:  # noqa: BLE001 - a policy that does not pickle: the client's slow path retries it
            blob = None
        if len(_annotations) > 1024:
            _annotations.clear()
        hit = _annotations[id(policy)] = (policy, blob)
    return hit[1]


def _policy(blob: bytes) -> RetryPolicy | None:
    if blob not in _policies:
        try:
            _policies[blob] = pickle.loads(blob)
        except Exception:  # noqa: BLE001 - e.g. an error class this worker cannot import: no hold
            _policies[blob] = None
        if len(_policies) > 1024:
            _policies.pop(next(iter(_policies)))
    return _policies[blob]


def _current(key: str) -> tuple[Any, dict[str, Any]]:
    """The worker running ``key`` and the task's annotations (``(None, {})`` outside a worker)."""
    try:
        from distributed import get_worker
        worker = get_worker()
        ts = worker.state.tasks.get(key)
    except Exception:  # noqa: BLE001 - not on a worker (a direct call)
        return None, {}
    return worker, (ts.annotations or {}) if ts is not None else {}


def record_of(attempt: Attempt) -> tuple:
    """A failed attempt as the plain tuple the scheduler keeps for it."""
    error = attempt.error[:_ERROR_CHARS] if attempt.error is not None else None
    return (attempt.start, attempt.end, attempt.worker, error, attempt.error_type, attempt.timed_out)


def attempt_of_record(record: Any) -> Attempt:
    """The :class:`Attempt` of a record made by :func:`record_of` (numbered later, by start)."""
    start, end, worker, error, error_type, timed_out = record
    return Attempt(1, start, end, worker, error, error_type, bool(timed_out))


def hold_or_final(key: str, attempt: Attempt, error: BaseException, run_id: str,
                  node: str) -> tuple[bool, tuple[Attempt, ...]]:
    """After the failed ``attempt`` of ``node``, the one node of unit ``key`` of run ``run_id``:
    ``(True, ())`` if the scheduler was asked to hold the key for a retry (the run's ``retry`` event
    is published; the caller raises ``Reschedule``), else ``(False, the earlier attempts held on
    the scheduler)`` (the key errs as before)."""
    worker, annotations = _current(key)
    blob = annotations.get(RETRY_ANNOTATION)
    if worker is None or blob is None or HISTORY_ANNOTATION not in annotations:
        return False, ()   # not marked, or the scheduler has no plugin to hold it: the client retries
    past = tuple(annotations[HISTORY_ANNOTATION] or ())
    policy = _policy(blob)
    try:
        delay = retry_delay(error, len(past) + 1, policy) if policy is not None else None
    except Exception:  # noqa: BLE001 - a broken backoff: the client decides, and reports it as today
        delay = None
    if delay is None:   # (a None in ``past``: an attempt that erred, which the client recorded itself)
        return False, tuple(attempt_of_record(r) for r in past if r is not None)
    msg = {"op": HOLD_OP, "key": key, "delay": delay, "record": record_of(attempt)}
    if worker.thread_id == threading.get_ident():   # an async unit, on the worker's event loop
        worker.batched_send(msg)
    else:   # before the task's end reaches the loop, so the scheduler holds the key before it comes back
        worker.loop.add_callback(worker.batched_send, msg)
    send_from_worker(event("retry", run_id, node=node, attempt=len(past) + 2, delay=delay))
    return True, ()
