"""I/O-bound work on the workers: it waits, so it must not hold one of the cores' slots.

A Dask worker runs at most ``nthreads`` tasks at once (its slots).  An ``async`` task, or a sync
one marked ``io_bound=True``, mostly waits (an LLM, an HTTP API), so holding a slot while it
waits would cap a 2-core ``LocalCluster`` at two calls in flight.  cleo_dask therefore runs every
I/O unit as a coroutine on the worker's event loop and, as its first step, *secedes* it: the
same state change ``distributed.secede()`` makes for a thread (the worker state machine's
``SecedeEvent``; the scheduler hears ``long-running``).  The slot is freed at once for CPU work
and for the next I/O task, so hundreds of calls can be in flight per worker, and CPU-bound
tasks still run ``nthreads`` at a time.

* ``async def`` bodies are awaited on the loop; a timeout cancels the coroutine
  (``asyncio.CancelledError`` is raised inside it).
* Blocking ``io_bound`` bodies run in a per-process thread pool of ``cleo_dask.io-threads``
  threads (Dask config, read on the worker), not in the worker's own pool.  Python cannot stop a
  thread: over its time limit the attempt fails and the body runs on, abandoned.

Nothing needs configuring on remote workers beyond having cleo_dask installed (which running any
cleo_dask task already requires); ``io-threads`` may be raised in the workers' Dask config.
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cleo_dask import config as _config
from cleo_dask.errors import TaskTimeout, WorkflowError
from cleo_dask.failures.timeout import set_deadline
from cleo_dask.util.options import Field, OptionPolicy

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def io_pool() -> ThreadPoolExecutor:
    """This process's thread pool for blocking ``io_bound`` bodies (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(int(_config.get("io-threads", 512) or 512), thread_name_prefix="cleo-io")
        return _pool


def release_slot(key: str) -> bool:
    """Free the worker slot held by the running task ``key`` (call it from that task's coroutine).

    Returns False outside a worker or if the task is not executing there (e.g. a direct call).
    """
    try:
        from distributed import get_worker
        from distributed.worker_state_machine import SecedeEvent
        worker = get_worker()
    except Exception:  # noqa: BLE001 - not on a worker: nothing to free
        return False
    ts = worker.state.tasks.get(key)
    if ts is None or ts.state != "executing":
        return False
    # No duration: the unit has only just started.  A reported 0 became its key prefix's
    # estimate on the scheduler, and work stealing asserts on an estimate of 0 (admission/stealing).
    worker.loop.add_callback(worker.handle_stimulus,
                             SecedeEvent(key=key, compute_duration=None, stimulus_id=f"cleo-io-{time.time()}"))
    return True


async def run_blocking(fn: Callable[..., Any], args: tuple, kwargs: dict, timeout: float | None) -> Any:
    """Run a blocking body in :func:`io_pool` and await it; past ``timeout`` raise :class:`TaskTimeout`."""
    ends = None if timeout is None else time.time() + timeout

    def body() -> Any:
        set_deadline(ends)
        return fn(*args, **kwargs)

    ctx = contextvars.copy_context()
    fut = asyncio.get_running_loop().run_in_executor(io_pool(), ctx.run, body)
    if timeout is None:
        return await fut
    try:
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        raise TaskTimeout(f"attempt exceeded its time limit of {timeout:g} s (the body was abandoned)") from None


class IoBoundOptions(OptionPolicy):
    """The option ``io_bound`` of a task: a blocking body that mostly waits (see the module)."""

    names = ("io_bound",)

    def check(self, options: Any, what: str) -> None:
        """``io_bound``: True or False."""
        if not isinstance(options.io_bound, bool):
            raise WorkflowError(f"{what}: io_bound must be True or False, got {options.io_bound!r}")

    def read(self, data: Mapping[str, Any], field: Field, out: dict[str, Any]) -> None:
        """``io_bound: true``."""
        if "io_bound" in data:
            if not isinstance(data["io_bound"], bool):
                field.at("io_bound", data).problem(f"must be true or false, got {data['io_bound']!r}")
            else:
                out["io_bound"] = data["io_bound"]


#: The I/O-bound policy's option.
IO_BOUND_OPTIONS = IoBoundOptions()
