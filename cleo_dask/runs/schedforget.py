"""Forgetting a windowed run's released tasks on the scheduler (issue 17, bounded memory).

When the client releases a key, Dask forgets its task only once no task depends on it any more.
In a run sent window by window, every task is an ancestor of some sink the run still holds, so
without help the scheduler would keep one task record (a few KiB) for every node of the run,
1,000,000 of them for a 1M-node run, long after their values were freed.
:func:`drop_released` (run on the scheduler) forgets the released tasks whose dependents are
all done (in memory or erred) or released themselves: Dask marks those dependents as having lost
a dependency, so they are forgotten in turn once the client releases them.  A task someone
still wants or waits for is left alone, and nothing is done when the scheduler validates its
state (``distributed.scheduler.validate``: Dask asserts there that only unneeded tasks are
forgotten).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("cleo_dask")

#: a dependent in these states no longer needs its dependencies' tasks
DONE_STATES = frozenset({"memory", "erred"})


async def forget_released(client: Any, keys: Sequence[str]) -> None:
    """On the client's loop: forget on the scheduler those of ``keys`` that are released and no
    longer needed (see the module docstring); a failure (cleo_dask not importable there) is logged."""
    if not keys:
        return
    try:
        await client._run_on_scheduler(drop_released, list(keys))
    except Exception:  # noqa: BLE001 - the scheduler then keeps the records, as Dask does
        logger.debug("could not forget released tasks on the scheduler", exc_info=True)


def _unneeded(ts: Any) -> bool:
    if ts.state != "released" or ts.who_wants or ts.waiters or ts.waiting_on:
        return False
    for dts in ts.dependents:
        if dts.state in DONE_STATES:
            continue
        if dts.state != "released" or dts.who_wants or dts.waiters:
            return False
    return True


def drop_released(keys: list[str], dask_scheduler: Any = None) -> int:
    """On the scheduler: forget the tasks of ``keys`` that are released and that nothing needs
    (see the module docstring); returns how many were forgotten (their dependencies that nothing
    needs any more go with them)."""
    if dask_scheduler is None or getattr(dask_scheduler, "validate", False):
        return 0
    tasks = dask_scheduler.tasks
    recs = {}
    for key in keys:
        ts = tasks.get(key)
        if ts is not None and _unneeded(ts):
            recs[key] = "forgotten"
    if recs:
        dask_scheduler.transitions(recs, f"cleo-window-forget-{time.time()}")
    return len(recs)
