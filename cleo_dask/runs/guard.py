"""How a run ends when something other than its tasks goes wrong (a mixin of :class:`Run`).

* Its cluster is lost (or its client closed) before it finished: :class:`ClusterLost`, naming
  the scheduler, from ``result()`` / ``wait()``; ``status()`` is ``interrupted`` (see ``_lost``).
* cleo_dask's own handling of the run raises on the driver thread (a bug, or a user's backoff
  that raises): the run ends, every node without an outcome failed with a :class:`CleoError`
  naming the exception, rather than the run hanging and the engine hanging at close.
"""
from __future__ import annotations

import logging
import time
import traceback as tb
from typing import Any

from cleo_dask.runs import lost as _lost
from cleo_dask.errors import CleoError, ClusterLost
from cleo_dask.core.outcome import NodeRecord
from cleo_dask.core.worker import failure_output

logger = logging.getLogger("cleo_dask")


class RunGuard:
    """Driver calls that cannot hang their run, loss of the cluster; mixed into :class:`Run`."""

    _lost: ClusterLost | None = None
    _internal_error: CleoError | None = None

    def _soon(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the driver; an exception there ends this run (:meth:`_fail_internal`)."""
        self._context.driver.call_soon(fn, *args, on_error=self._fail_internal)

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        """:meth:`_soon`, ``delay`` seconds from now."""
        self._context.driver.call_later(delay, fn, *args, on_error=self._fail_internal)

    def _handle_erred_safely(self, key: str) -> bool:
        """:meth:`_handle_erred`, where a bug ends the run rather than escaping to the caller.

        The run's lock is held until the run is ended, so no reader sees the erred key handled
        but its nodes without the error that ended the run."""
        with self._lock:
            try:
                return self._handle_erred(key)
            except Exception as exc:  # noqa: BLE001
                self._fail_internal(exc)
                return True

    def _raise_if_lost(self, futures: list[Any]) -> None:
        """Raise :class:`ClusterLost` if the client took this run's futures away (see ``_lost``)."""
        if self._lost is None and getattr(self, "_final_status", None) is not None:
            return  # it had finished before its client went: nothing of it was lost
        if self._lost is None and not self._cancelled:
            why = _lost.lost_reason(self._client, futures)
            if why is not None:
                with self._lock:
                    if self._lost is None:
                        self._lost = _lost.cluster_lost(self.id, self._address, why, self._context.journal() is not None)
                        logger.warning("%s", self._lost)
        if self._lost is not None:
            raise ClusterLost(str(self._lost), self._lost.address, self.id)

    def _fail_internal(self, exc: BaseException) -> None:
        """An exception escaped cleo_dask's own handling of this run: end the run rather than
        leave it hanging.  Nodes without an outcome fail with a :class:`CleoError` naming that
        exception; what still runs is cancelled; the run's end is announced."""
        text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        with self._lock:
            if self._internal_error is None:
                error = self._internal_error = CleoError(
                    f"run {self.id} stopped: cleo_dask failed while handling it ({type(exc).__name__}: {exc}); "
                    "nodes without an outcome are marked failed")
                error.__cause__ = exc
                logger.error("%s", error, exc_info=exc)
                for node, (key, _) in self._location.items():
                    fut = self._futures.get(key)
                    if node in self._known or (fut is not None and fut.status == "finished"):
                        continue
                    record = self._records.setdefault(node, NodeRecord())
                    record.error, record.traceback = error, text
                    self._known[node] = failure_output(node, error, text)
                self._timers = 0
                self._cancel_rest()  # looks at the run again on the driver
                return
        # it failed again (e.g. in _maybe_finished): announce the end directly
        logger.debug("run %s: cleo_dask failed again while ending it", self.id, exc_info=exc)
        with self._lock:
            if self._finished_event_sent:
                return
            self._finished_event_sent = True
            if self.ended is None:
                self.ended = time.time()
        self._context.on_finished(self)
