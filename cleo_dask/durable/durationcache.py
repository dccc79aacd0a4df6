"""Learned durations read from the journal without a scan of it per submission.

``Journal.node_durations`` averages every earlier run of a workflow: a query whose cost grows
with the journal.  Asked once per submission, a stream of small runs (a queue consumer, a burst
of ``submit_many``) pays it thousands of times over an ever larger journal.  A workflow whose
every node was measured at least :data:`SETTLED` times has settled means: one more run moves them
little, so they are read again at most every ``durable.durations-ttl`` seconds.  A workflow with
fewer measurements (the first runs, whose measurements matter most) is read afresh each time.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cleo_dask import config as _config

#: measurements per node after which a workflow's means are reused for ``durable.durations-ttl`` seconds
SETTLED = 20


class DurationCache:
    """``get(workflow, limit)``: ``node -> mean seconds`` from ``fetch(workflow, limit)``, which gives
    ``node -> (mean seconds, how many measurements)``."""

    def __init__(self, fetch: Callable[[str, int], dict[str, tuple[float, int]]]):
        self._fetch = fetch
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], tuple[float, dict[str, float]]] = {}

    def get(self, workflow: str, limit: int) -> dict[str, float]:
        """The means of ``workflow``'s nodes (a settled workflow's possibly a few seconds old)."""
        ttl = float(_config.get("durable.durations-ttl", 10.0))
        key = (workflow, limit)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry[0] < ttl:
            return dict(entry[1])
        found = self._fetch(workflow, limit)
        means = {node: seconds for node, (seconds, _) in found.items()}
        settled = bool(found) and min(count for _, count in found.values()) >= SETTLED
        with self._lock:
            if settled and ttl > 0:
                self._entries[key] = (time.monotonic(), means)
            else:
                self._entries.pop(key, None)
        return dict(means)
