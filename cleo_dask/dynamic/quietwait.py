"""A seceded task's wait, left out of the worker's profiler.

Dask's worker samples the stack of every thread running a task (``Worker.active_threads``) every
``distributed.worker.profile.interval`` (10 ms).  A task that seceded to wait for a child run
(:meth:`~cleo_dask.dynamic.spawn.ChildRun.result`) stays in that table, so 100 such waits cost
the worker 10,000 stack walks a second while nothing runs.  :func:`unprofiled` takes the calling
thread out of the table while it waits and puts it back before the task goes on (Dask reads
the entry again when the task returns: ``get_current_task`` and the end of ``_run_task``).
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def unprofiled(worker: Any) -> Iterator[None]:
    """While in the block, the calling thread's task is not sampled by ``worker``'s profiler."""
    lock = getattr(worker, "active_threads_lock", None)
    table = getattr(worker, "active_threads", None)
    if lock is None or not isinstance(table, dict):
        yield
        return
    ident = threading.get_ident()
    with lock:
        key = table.pop(ident, None)
    try:
        yield
    finally:
        if key is not None:
            with lock:
                table[ident] = key
