"""Dask's work stealing kept from asserting on a task prefix whose duration estimate is 0.

Dask's scheduler estimates a task's duration per key prefix (``TaskPrefix.duration_average``).
When a task with dependencies enters ``processing``, the work-stealing extension prices moving
it as transfer time over that estimate, and *asserts* that an estimate of exactly 0 belongs to
a long-running (seceded) task (``WorkStealing.steal_time_ratio`` in distributed 2026.8.0:
``assert ts in ts.processing_on.long_running``).  The estimate becomes exactly 0 when

* a task secedes reporting ``compute_duration=0`` while the prefix has no estimate yet (or has
  0): ``Scheduler.handle_long_running`` takes it as the estimate.  cleo's I/O units (``async``
  and ``io_bound``) secede as their first step, so their prefix read 0 until one of them
  finished, and every unit of that prefix with a parent that reached a worker meanwhile (the
  items of a mapped node, a fan-out across runs) tripped the assertion;
* a duration of 0 is given: ``@cd.task(duration=0)`` (seeded by
  :mod:`cleo_dask.admission.estimates`) or ``distributed.scheduler.default-task-durations``.

I/O units now report no duration when they secede (:func:`cleo_dask.admission.io.release_slot`
sends ``None``: the estimate then comes from finished units only), and estimates are seeded at
no less than :data:`FLOOR`.  On a scheduler with the admission plugin, :func:`guard` also floors
any zero estimate when a graph arrives and makes a seceding task's ``compute_duration`` of 0
count as "unknown" (for workers running an older cleo_dask, or Dask's own ``secede()`` on a
coarse clock).  A floor of 1 microsecond makes a task too cheap to be worth stealing
(``steal_time_ratio`` returns ``None``), which is what Dask means by 0 for a seceded task.
"""
from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("cleo_dask")

#: The smallest duration estimate (seconds) cleo_dask leaves on a Dask task prefix.
FLOOR = 1e-6


def floor_duration(seconds: float) -> float:
    """``seconds`` raised to :data:`FLOOR` if it is a known estimate below it (``< 0``, Dask's
    "unknown", is kept)."""
    return seconds if seconds < 0 or seconds >= FLOOR else FLOOR


def floor_prefixes(scheduler: Any) -> None:
    """Raise every zero duration estimate of ``scheduler``'s task prefixes to :data:`FLOOR`."""
    for prefix in scheduler.task_prefixes.values():
        if 0 <= prefix.duration_average < FLOOR:
            prefix.duration_average = FLOOR


def guard(scheduler: Any) -> bool:
    """Make ``scheduler``'s ``long-running`` handler treat a reported duration of 0 as unknown
    and floor the seceding task's prefix first (see the module).  Idempotent; False if this
    Dask has no such handler (nothing changed)."""
    handlers = getattr(scheduler, "stream_handlers", None)
    handler = handlers.get("long-running") if isinstance(handlers, dict) else None
    if handler is None or getattr(handler, "_cleo_guarded", False):
        return False

    def long_running(key: Any = None, worker: Any = None, run_id: Any = None,
                     compute_duration: float | None = None, stimulus_id: Any = None, **kw: Any) -> Any:
        ts = scheduler.tasks.get(key)
        if ts is not None and ts.prefix is not None and 0 <= ts.prefix.duration_average < FLOOR:
            ts.prefix.duration_average = FLOOR
        if compute_duration is not None and compute_duration < FLOOR:
            compute_duration = None
        return handler(key=key, worker=worker, run_id=run_id, compute_duration=compute_duration,
                       stimulus_id=stimulus_id, **kw)

    long_running._cleo_guarded = True  # type: ignore[attr-defined]
    handlers["long-running"] = long_running
    return True
