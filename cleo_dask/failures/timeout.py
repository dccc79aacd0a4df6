"""Time limits for one attempt, and the deadline a running task can read.

Python cannot stop a thread from outside.  A synchronous task over its limit is therefore
*abandoned*, not killed: the attempt fails at once with :class:`TaskTimeout`, the worker slot is
freed, and the body keeps running in a daemon thread until it returns on its own (its result is
discarded).  Long bodies should check :func:`time_left` and stop early.  An ``async`` task over its
limit is really cancelled (``asyncio.CancelledError`` is raised inside the coroutine).
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

from cleo_dask.errors import TaskTimeout
from cleo_dask.util.numbers import seconds

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("cleo_deadline", default=None)


def deadline() -> float | None:
    """The epoch time (``time.time()``) by which the current attempt must end, or ``None``."""
    return _deadline.get()


def set_deadline(ends: float | None) -> None:
    """Set the epoch time by which the current attempt (this thread or task context) must end."""
    _deadline.set(ends)


def time_left() -> float | None:
    """Seconds left to the current attempt, or ``None`` if it has no time limit."""
    d = _deadline.get()
    return None if d is None else max(0.0, d - time.time())


def check_timeout(timeout: object) -> float | None:
    """Return ``timeout`` as a float, or raise :class:`WorkflowError` unless it is a finite number
    of seconds > 0 (at most :data:`~cleo_dask.util.numbers.MAX_SECONDS`: ``threading`` refuses more)."""
    if timeout is None:
        return None
    return seconds(timeout, "timeout", positive=True)


def call_with_timeout(fn: Callable[..., Any], args: tuple, kwargs: dict, timeout: float | None) -> Any:
    """Call ``fn(*args, **kwargs)``; past ``timeout`` seconds raise :class:`TaskTimeout`."""
    if timeout is None:
        return fn(*args, **kwargs)
    box: dict[str, Any] = {}
    ends = time.time() + timeout

    def body() -> None:
        _deadline.set(ends)
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the waiting thread
            box["error"] = exc

    thread = threading.Thread(target=contextvars.copy_context().run, args=(body,), daemon=True,
                              name=f"cleo-task-{getattr(fn, '__name__', 'task')}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TaskTimeout(f"attempt exceeded its time limit of {timeout:g} s (the body was abandoned)")
    if "error" in box:
        raise box["error"]
    return box["value"]


async def await_with_timeout(coro: Any, timeout: float | None) -> Any:
    """Await ``coro``; past ``timeout`` seconds cancel it and raise :class:`TaskTimeout`."""
    if timeout is None:
        return await coro
    _deadline.set(time.time() + timeout)
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise TaskTimeout(f"attempt exceeded its time limit of {timeout:g} s (the coroutine was cancelled)") from None
