"""A run's batched nodes that finally failed: what the client does about them.

A batch (:mod:`cleo_dask.core.batch`) never raises: a node of it that finally fails (or falls
back) ends inside the batch's output, and the worker publishes an ``outcome`` event with
``batch: true`` (the error pickled, its traceback, ``notify``: call ``on_error``).  The trigger
rules below it were already applied on the workers.  The client keeps the node's error and
traceback for its :class:`~cleo_dask.core.outcome.TaskResult`, calls the task's ``on_error`` and,
with ``fail_fast``, fails the node and cancels the rest of the run, as it does for a node that
ran alone (:mod:`cleo_dask.runs.slowpath`).

:class:`RunBatchFailures` is a part of :class:`~cleo_dask.runs.run.Run` (a mixin over its fields).
"""
from __future__ import annotations

import logging
import pickle
from typing import Any

from cleo_dask.core.outcome import NodeRecord
from cleo_dask.core.worker import failure_output

logger = logging.getLogger("cleo_dask")


def is_batch_outcome(msg: Any) -> bool:
    """Whether an event is a batched node's final failure (or fallback) reported by a worker."""
    return isinstance(msg, dict) and msg.get("kind") == "outcome" and bool(msg.get("batch"))


def event_error(msg: dict[str, Any]) -> BaseException:
    """The error an ``outcome`` event of a batch carries (as text if it cannot be loaded here)."""
    blob = msg.get("pickled")
    if blob:
        try:
            err = pickle.loads(blob)
            if isinstance(err, BaseException):
                return err
        except Exception:  # noqa: BLE001 - e.g. its class lives only on the workers
            pass
    return RuntimeError(f"{msg.get('error_type')}: {msg.get('error')}")


def record_batch_outcome(record: NodeRecord, msg: dict[str, Any]) -> None:
    """Keep a batched node's final error and traceback on its record (once: the first event of a
    node is its task's final failure, a later one its fallback's)."""
    if msg.get("status") == "failed" or record.error is None:
        record.error = event_error(msg)
        record.traceback = msg.get("traceback")


class RunBatchFailures:
    """The part of :class:`~cleo_dask.runs.run.Run` acting on batched nodes' final failures."""

    def _note_batch_outcome(self, msg: dict[str, Any]) -> None:
        """On the client's event loop, before the batch's future is done (the scheduler forwards a
        worker's events before the task's end): remember the failure for the run's status, and act
        on it on the driver."""
        if msg.get("status") == "failed":
            self._batch_failed.add(msg.get("node"))
        self._batch_noted += 1   # (only this thread writes it; only the driver the handled count)
        self._soon(self._on_batch_outcome, msg)

    def _batch_unhandled(self) -> bool:
        """Whether some batched node's final failure still waits for the driver (the run is not
        done before its ``on_error`` was called)."""
        return self._batch_noted != self._batch_handled

    def _on_batch_outcome(self, msg: dict[str, Any]) -> None:
        """On the driver: record the error, call ``on_error``, apply ``fail_fast``."""
        try:
            self._act_on_batch_outcome(msg)
        finally:
            with self._lock:
                self._batch_handled += 1
                self._changed.notify_all()

    def _act_on_batch_outcome(self, msg: dict[str, Any]) -> None:
        node = msg.get("node")
        if node not in self.workflow.nodes:
            return
        with self._lock:
            record = self._records.setdefault(node, NodeRecord())
            record_batch_outcome(record, msg)
            error = record.error
            if msg.get("notify"):
                try:
                    self.workflow.nodes[node].task.on_error(self.agent, node, error)
                except Exception:  # noqa: BLE001 - a broken notifier must not break the run
                    logger.exception("on_error of task %r failed", node)
            if msg.get("status") == "failed" and self.fail_fast and not self._cancelled:
                self._known[node] = failure_output(node, error, record.traceback)
                self.log_event("outcome", node=node, status="failed", error=repr(error)[:500])
                self._cancel_rest(keep=msg.get("key"))
