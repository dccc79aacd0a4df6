"""Freed slots refilled from Dask's queue when a task is handed back.

On a queuing scheduler (finite ``worker-saturation``) Dask hands queued tasks to free slots when
a task finishes or errs, not when a worker hands a task back (``distributed.Reschedule``, which
a held retry uses: :mod:`cleo_dask.failures.hold`).  The slot then idles until that worker's next
task ends (0.25 s per handed-back task in ``python -m benchmarks.failures --part backoff``).
:class:`SlotRefill` asks the scheduler to look at its queue once the current transitions are done.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

logger = logging.getLogger("cleo_dask")


class SlotRefill:
    """Refills ``scheduler``'s free slots from its queue, at most once per event-loop turn."""

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self._pending = False

    def soon(self) -> None:
        """Look at the queue once the running transitions are over (if anything is queued)."""
        if not self._pending and self.scheduler.queued:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._refill)

    def _refill(self) -> None:
        self._pending = False
        try:
            self.scheduler.stimulus_queue_slots_maybe_opened(stimulus_id=f"cleo-refill-{time.time()}")
        except Exception:  # noqa: BLE001 - an optimisation: Dask refills at the next task's end anyway
            logger.debug("cleo_dask: could not refill the freed slots", exc_info=True)
