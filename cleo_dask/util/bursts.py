"""Items put from any thread, handed on in bursts from a pool thread.

The first ``put`` of a quiet spell starts one flush on the pool; the flush takes everything put
by then, hands it to ``handle`` as one list, and goes on until nothing is left.  What is put while
a burst is handled waits for the next one: many puts in a row cost one round of work, not one each.
"""
from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any


class Bursts:
    """``put(item)`` from any thread; ``handle([items...])`` on ``pool``, one burst at a time."""

    def __init__(self, pool: concurrent.futures.Executor, handle: Callable[[list[Any]], None]):
        self._pool = pool
        self._handle = handle
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._flushing = False

    def put(self, item: Any) -> None:
        """Add ``item`` to the next burst (starting a flush if none is under way)."""
        with self._lock:
            self._items.append(item)
            if self._flushing:
                return
            self._flushing = True
        self._pool.submit(self._flush)

    def _flush(self) -> None:
        while True:
            with self._lock:
                items, self._items = self._items, []
                if not items:
                    self._flushing = False
                    return
            self._handle(items)
