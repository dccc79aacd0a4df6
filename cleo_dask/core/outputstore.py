"""What the worker asks of a durable run's store: the interface the task wrapper calls.

A durable run's compiled graph carries its store (a
:class:`cleo_dask.durable.resultstore.ResultStore`) in every :class:`~cleo_dask.core.worker.UnitCall`;
the worker only calls these methods on it, so ``core`` never imports ``durable``.
"""
from __future__ import annotations

from typing import Any, Protocol

from cleo_dask.core.nodeoutput import NodeOutput


class OutputStore(Protocol):
    """Where a worker writes the outputs of a durable run's nodes and looks up ``cache=`` values."""

    def save_output(self, run_id: str, key: str, node: str, out: NodeOutput) -> None:
        """Store a finished node's output (a failure to store is reported, never raised)."""

    def cache_key(self, call: Any, args: tuple, kwargs: dict[str, Any], run_id: str) -> str | None:
        """The cache key of one call of a ``cache=`` task (``None``: not cacheable this time)."""

    def cache_get(self, key: str, node: str, run_id: str) -> tuple[Any] | None:
        """``(value,)`` if the cache holds ``key``, else ``None``."""

    def cache_put(self, key: str, value: Any, node: str, run_id: str) -> None:
        """Keep ``value`` under ``key`` (silently skipped if it cannot be kept)."""
