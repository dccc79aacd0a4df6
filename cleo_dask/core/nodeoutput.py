"""A node's output as it lives in Dask memory (and, for durable runs, in the result store).

:class:`NodeOutput` is the value plus the small record of how it came (status, times, worker,
attempt); workers make them, children unwrap them, the client fetches their records.
"""
from __future__ import annotations

import sys
from typing import Any

from dask.sizeof import sizeof


class NodeOutput:
    """A node's output as stored in Dask memory: the value and the record of how it came."""

    __slots__ = ("value", "status", "start", "end", "worker", "attempt", "reason", "upstream_fallbacks")

    def __init__(self, value: Any, status: str, start: float | None = None, end: float | None = None,
                 worker: str | None = None, attempt: int = 1, reason: str | None = None,
                 upstream_fallbacks: tuple[str, ...] = ()):
        self.value = value
        self.status = status
        self.start = start
        self.end = end
        self.worker = worker
        self.attempt = attempt
        self.reason = reason
        self.upstream_fallbacks = upstream_fallbacks

    def __reduce__(self):
        return (NodeOutput, (self.value, self.status, self.start, self.end, self.worker, self.attempt,
                             self.reason, self.upstream_fallbacks))

    def meta(self) -> tuple:
        """Everything but the value (what the client fetches for statuses and timings)."""
        return (self.status, self.start, self.end, self.worker, self.attempt, self.reason, self.upstream_fallbacks)


@sizeof.register(NodeOutput)
def _sizeof_output(out: NodeOutput) -> int:
    # Dask's default for an object is its shallow size: count the value, so that worker memory
    # limits, spilling and cleo's close-fetch-limit see what the output really holds
    return sys.getsizeof(out) + sizeof(out.value)
