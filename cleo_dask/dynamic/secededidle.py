"""Workers whose tasks all seceded to wait count as idle on the scheduler.

A sync task waiting for its child run secedes (``distributed.secede``): its thread no longer
holds a slot.  Dask's scheduler (with ``worker-saturation: inf``, no scheduler-side queuing)
still counts such a task as processing when it tells idle workers from busy ones
(``Scheduler.is_unoccupied``), and does not look at the worker again when the task secedes.  A
worker with 50 tasks waiting then never counts as idle: it steals nothing, and tasks whose inputs
sit on another worker all run there (``python -m benchmarks.dynamic --waits``: 40 of 40 CPU tasks
on one of two workers, the other idle).  Scheduler-side queuing already leaves seceded tasks out
(``_task_slots_available``); :func:`install` does the same for the idle test, and looks at a
worker again when one of its tasks secedes.  Installed on the scheduler once, by the first sync
task that waits for a child (see :mod:`cleo_dask.dynamic.spawn`).
"""
from __future__ import annotations

import threading
from typing import Any

_MARK = "cleo_seceded_idle"
_installed: set[str] = set()   # scheduler addresses this process installed on
_lock = threading.Lock()


def ensure(client: Any) -> None:
    """Install on ``client``'s scheduler once per process (best effort: never fails a task)."""
    address = str(getattr(client.scheduler, "address", ""))
    with _lock:
        if address in _installed:
            return
        _installed.add(address)
    try:
        client.run_on_scheduler(install)
    except Exception:  # noqa: BLE001 - an older or odd scheduler: waits still hold no slot
        pass


def install(dask_scheduler: Any = None) -> bool:
    """On the scheduler: seceded tasks left out of the idle test; a worker looked at again
    when one of its tasks secedes.  ``False``: installed already."""
    s = dask_scheduler
    if getattr(s, _MARK, False) or "long-running" not in s.stream_handlers:
        return False
    unoccupied = s.is_unoccupied
    handler = s.stream_handlers["long-running"]

    def is_unoccupied(ws: Any, occupancy: float, nprocessing: int) -> bool:
        return unoccupied(ws, occupancy, nprocessing - len(ws.long_running))

    def long_running(*args: Any, **kwargs: Any) -> None:
        handler(*args, **kwargs)
        ws = s.workers.get(kwargs.get("worker"))
        if ws is not None:
            s.check_idle_saturated(ws)

    s.is_unoccupied = is_unoccupied
    s.stream_handlers["long-running"] = long_running
    setattr(s, _MARK, True)
    return True
