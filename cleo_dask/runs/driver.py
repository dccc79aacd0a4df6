"""The engine's one background thread for the client-side slow path.

It runs callbacks in order (erred keys to handle, resubmissions) and timed callbacks (retries
waiting out their backoff).  Waiting happens here, on the client, so no worker slot is held.
The clock is passed in, so the timing logic can be tested with a fixed time.  A callback that
raises is logged and handed to its ``on_error`` (a run ends itself there): the thread goes on.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("cleo_dask")


class Driver:
    """A single thread running ``call_soon`` callbacks in order and ``call_later`` ones when due."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, name: str = "cleo-driver"):
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[..., Any], tuple, Callable[[BaseException], Any] | None]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def call_soon(self, fn: Callable[..., Any], *args: Any,
                  on_error: Callable[[BaseException], Any] | None = None) -> None:
        """Run ``fn(*args)`` on the driver thread as soon as possible; ``on_error(exc)`` if it raises."""
        self.call_later(0.0, fn, *args, on_error=on_error)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any,
                   on_error: Callable[[BaseException], Any] | None = None) -> None:
        """Run ``fn(*args)`` on the driver thread ``delay`` seconds from now; ``on_error(exc)`` if it raises."""
        with self._cv:
            if self._closed:
                return
            heapq.heappush(self._heap, (self._clock() + max(0.0, delay), next(self._seq), fn, args, on_error))
            self._cv.notify()

    def pending(self) -> int:
        """How many callbacks are waiting."""
        with self._cv:
            return len(self._heap)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread; callbacks not yet due are dropped."""
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap or self._heap[0][0] > self._clock()):
                    wait = None if not self._heap else max(0.0, self._heap[0][0] - self._clock())
                    self._cv.wait(wait if wait is None else min(wait, 1.0))
                if self._closed:
                    return
                _, _, fn, args, on_error = heapq.heappop(self._heap)
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - one failing callback must not stop the engine
                _report(fn, exc, on_error)
            # while waiting, hold nothing of the last callback (e.g. a finished run)
            del fn, args, on_error


def _report(fn: Callable[..., Any], exc: BaseException, on_error: Callable[[BaseException], Any] | None) -> None:
    """Hand a callback's exception to its ``on_error`` (or log it when it has none)."""
    if on_error is None:
        logger.exception("cleo_dask driver callback %r failed", fn, exc_info=exc)
        return
    try:
        on_error(exc)
    except Exception:  # noqa: BLE001
        logger.exception("cleo_dask driver callback %r failed, and so did its on_error", fn)
