"""Ready work reaches free slots in priority order, whatever the tasks are named.

Dask sends a ready task to a worker at once, chosen among the workers holding its dependencies,
unless it deems the task *root-ish* (its task group big, with few dependencies).  A scheduler
that queues (``distributed.scheduler.worker-saturation`` finite, Dask's default 1.1) keeps
root-ish tasks on the scheduler and hands the best-priority one to whichever worker frees a
slot: a list schedule in priority order (critical path, fair share, ``priority=``).  Whether a
cleo task is root-ish depended on its name: one task function for a whole workflow makes one
task group that depends on itself, never root-ish, so a fan-out of 1,000 siblings went to the
worker holding their root and the other worker idled until work stealing moved some.

So on a queuing scheduler every CPU unit of a run is marked a *data producer*
(``Task.data_producer``), which Dask takes as root-ish: all of them wait on the scheduler and
reach free slots by priority.  Units on the worker's event loop (async, ``io_bound``) are left
alone: they free their slot while they wait, which queuing would not see.  A scheduler that does
not queue (``worker-saturation: inf``, what the engine's own ``LocalCluster`` uses) is left to
its eager dispatch and work stealing.  ``cleo_dask.queue-on-scheduler: false`` turns this off.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from dask.task_spec import Task

from cleo_dask import config as _config
from cleo_dask.core.batch import run_batch
from cleo_dask.core.worker import run_unit

logger = logging.getLogger("cleo_dask")

_queues: dict[str, bool] = {}   # scheduler address -> whether it queues root-ish tasks (asked once)
_CPU_FUNCS = (run_unit, run_batch)


def _saturation(dask_scheduler: Any = None) -> float:
    return float(dask_scheduler.WORKER_SATURATION)


def scheduler_queues(client: Any) -> bool:
    """Whether ``client``'s scheduler queues root-ish tasks (finite ``worker-saturation``); asked
    once per scheduler address.  ``False`` when it cannot be asked."""
    address = str(getattr(getattr(client, "scheduler", None), "address", None) or id(client))
    found = _queues.get(address)
    if found is None:
        try:
            found = not math.isinf(client.run_on_scheduler(_saturation))
        except Exception:  # noqa: BLE001 - an optimisation: the scheduler keeps its own dispatch
            logger.debug("could not read the scheduler's worker-saturation", exc_info=True)
            found = False
        _queues[address] = found
    return found


def queue_units(client: Any, compiled: Any) -> int:
    """Mark the CPU units of ``compiled`` as data producers when the scheduler queues (see the
    module docstring); returns how many were marked."""
    if not _config.get("queue-on-scheduler", True) or not scheduler_queues(client):
        return 0
    dsk = compiled.dsk
    marked = 0
    for key in compiled.units:
        task = dsk.get(key)
        if isinstance(task, Task) and task.func in _CPU_FUNCS:
            task._data_producer = True   # (what Task(..., _data_producer=True) sets)
            marked += 1
    return marked
