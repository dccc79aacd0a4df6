"""A compiled run's Dask priorities and duration estimates: critical path, or fair share.

With durations known (declared ``duration=``, a ``critical_path`` mapping, or ``learned`` from
earlier runs: :mod:`cleo_dask.core.durations`), each unit's priority is the user's plus its
bottom level (:mod:`cleo_dask.core.critical`) scaled into ``[0, 1)``, so the longest path to a sink
starts first; units whose nodes all have an estimate give Dask that estimate.  Otherwise the
agents' fair share orders the work (:mod:`cleo_dask.admission.fair`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cleo_dask.admission.fair import fair_share
from cleo_dask.core.critical import bottom_levels
from cleo_dask.core.durations import priority_estimates
from cleo_dask.errors import WorkflowError


def set_priorities(compiled: Any, wf: Any, priority: float, critical_path: bool | Mapping[str, float] | None,
                   learned: Mapping[str, float] | None, levels: Mapping[str, float] | None = None) -> None:
    """Fill ``compiled.priority`` and ``compiled.durations`` (see the module); ``levels``: the bottom
    levels when worked out already (the windows of one run)."""
    if isinstance(critical_path, Mapping):
        check_durations(wf, critical_path)
    given = priority_estimates(wf, critical_path, learned)
    if given is not None:
        levels = bottom_levels(wf, durations=given) if levels is None else levels
        top = max(levels.values(), default=0.0) or 1.0
        for key, names in compiled.units.items():
            compiled.priority[key] = priority + levels[names[0]] / (top * 1.001)
            known = [given.get(n, wf.nodes[n].task.duration) for n in names]
            if all(d is not None for d in known):
                compiled.durations[key] = float(sum(known))
        return
    if priority:
        for key in compiled.units:
            compiled.priority[key] = priority
    fair_share(compiled, wf, priority)


def check_durations(wf: Any, durations: Mapping[str, float]) -> None:
    """A ``critical_path`` mapping names nodes of ``wf`` and gives finite seconds >= 0."""
    unknown = sorted(set(durations) - set(wf.nodes))
    if unknown:
        raise WorkflowError(f"critical_path durations name unknown nodes: {unknown[:5]}")
    bad = {n: d for n, d in durations.items()
           if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < float("inf")}
    if bad:
        raise WorkflowError(f"critical_path durations must be finite seconds >= 0, got {dict(list(bad.items())[:5])}")
