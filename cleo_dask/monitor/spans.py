"""A bounded history of Dask's spans on the scheduler.

Dask's scheduler groups the tasks of each computation into a *span* (``distributed.spans``) for
its fine performance metrics, and keeps every span forever (distributed 2026.8): a span holds
the task groups it saw and their cumulative metrics.  Graphs sent without a span annotation
share a ``("default",)`` span until all its tasks are done; the next graph starts a new one.
An engine that runs runs one after the other makes one such span per run or so, which adds up
on a scheduler that lives for weeks.  :func:`prune` keeps the newest
``cleo_dask.monitor.max-spans`` root spans and forgets older default spans whose task groups
are all gone from the scheduler (finished and released, so nothing can join them again).
Called on the scheduler when finished runs are forgotten (see :mod:`cleo_dask.runs.forget`).
"""
from __future__ import annotations

import logging
from typing import Any

from cleo_dask import config as _config

logger = logging.getLogger("cleo_dask")
DEFAULT = ("default",)


def prune(dask_scheduler: Any, keep: int | None = None) -> int:
    """Forget old finished default spans beyond the newest ``keep`` root spans; how many went."""
    ext = getattr(dask_scheduler, "extensions", {}).get("spans")
    roots = getattr(ext, "root_spans", None)
    keep = int(_config.get("monitor.max-spans", 100) if keep is None else keep)
    if roots is None or len(roots) <= keep:
        return 0
    try:
        live = dask_scheduler.task_groups
        gone = {span.id for span in roots[: len(roots) - keep]
                if span.name == DEFAULT and not span.children
                and all(live.get(tg.name) is not tg for tg in span.groups)}
        if not gone:
            return 0
        for span_id in gone:
            ext.spans.pop(span_id, None)
        ext.root_spans = [s for s in roots if s.id not in gone]
        for index, key in ((ext.spans_search_by_name, DEFAULT), (ext.spans_search_by_tag, DEFAULT[0])):
            if key in index:
                index[key] = [s for s in index[key] if s.id not in gone]
        return len(gone)
    except Exception:  # noqa: BLE001 - another distributed: keep its spans
        logger.debug("could not prune spans", exc_info=True)
        return 0


def count(dask_scheduler: Any = None) -> int:
    """How many spans the scheduler keeps (tests, benchmarks)."""
    ext = getattr(dask_scheduler, "extensions", {}).get("spans")
    return len(getattr(ext, "spans", ()))
