"""Waiting inside a running Dask task without holding its worker slot.

A batch (:mod:`cleo_dask.core.batch`) whose node failed and retries after a delay runs its other
nodes first, then waits for the retry's time.  :class:`PoolWait` does that wait outside the
worker's thread pool (``distributed.secede``: the slot runs other tasks meanwhile) and takes a
slot again (``distributed.rejoin``) before the next attempt runs, as a task released after its
delay would.  Outside a worker's pool thread (a direct call) it only sleeps.  A wait ends early
when the worker no longer wants the task (its run was cancelled): :meth:`PoolWait.sleep_until`
then returns ``False``.
"""
from __future__ import annotations

import threading
import time
from typing import Any

_TICK = 0.25   # seconds between looks at whether the task is still wanted


def _in_pool_thread() -> bool:
    try:
        from distributed.worker import thread_state
        in_task = bool(getattr(thread_state, "execution_state", None))
        return in_task and threading.current_thread() is not threading.main_thread()
    except Exception:  # noqa: BLE001 - no distributed worker here
        return False


class PoolWait:
    """The waits of one running task ``key`` (see the module docstring); ``pool=False``: the
    caller knows it is not in a pool thread (its waits only sleep)."""

    def __init__(self, key: str, pool: bool = True):
        self.key = key
        self.pooled = pool and _in_pool_thread()   # in a worker's pool thread: a wait secedes
        self.seceded = False

    def sleep_until(self, due: float) -> bool:
        """Sleep until ``due`` (``time.monotonic``) outside the worker's pool; ``False`` if the
        task stopped being wanted meanwhile."""
        while True:
            left = due - time.monotonic()
            if left <= 0:
                return True
            if self.pooled and not self.seceded:
                from distributed import secede
                secede()
                self.seceded = True
            time.sleep(min(left, _TICK))
            if self.pooled and not self._wanted():
                return False

    def take_slot(self) -> None:
        """Back into the worker's pool (waits for a free slot) before running more work."""
        if self.seceded:
            from distributed import rejoin
            rejoin()
            self.seceded = False

    def _wanted(self) -> bool:
        try:
            from distributed import get_worker
            ts: Any = get_worker().state.tasks.get(self.key)
        except Exception:  # noqa: BLE001 - cannot tell: keep waiting
            return True
        return ts is not None and ts.state not in ("cancelled", "released", "forgotten")
