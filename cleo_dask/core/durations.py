"""Durations learned, not declared: what earlier runs measured, as estimates for this run's ordering.

A workflow's nodes rarely declare ``duration=``.  With a store, the journal knows how long each
node took when it succeeded in earlier runs of the same workflow (``Journal.node_durations``).
:func:`learned_durations` turns that into ``node -> seconds`` for the nodes declaring nothing:

* the node's own mean, when an earlier run ran a node of that name (node ids identify "the same
  task" even when one task function runs them all, as ``t_<id>`` nodes of one function do);
* else the mean of the earlier nodes that ran the node's task (same task name): a node new in
  this version of the workflow is estimated like its siblings;
* else nothing (the caller's default).

The compiler uses them like declared ones: critical-path priorities (bottom levels) and Dask's
first duration estimates (:mod:`cleo_dask.admission.estimates`).  Pure: plain data in and out.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def learned_durations(wf: Any, past: Mapping[str, float] | None) -> dict[str, float]:
    """``node -> seconds`` for the nodes of ``wf`` that declare no ``duration``, from ``past``
    (node -> mean seconds in earlier runs of the workflow; nodes no longer in ``wf`` are
    ignored, except to estimate their task)."""
    if not past:
        return {}
    nodes = wf.nodes
    by_task: dict[str, list[float]] = {}
    for n, seconds in past.items():
        node = nodes.get(n)
        if node is not None and _valid(seconds):
            acc = by_task.setdefault(node.task.name, [0.0, 0])
            acc[0] += seconds
            acc[1] += 1
    task_mean = {name: total / count for name, (total, count) in by_task.items()}
    learned: dict[str, float] = {}
    for n, node in nodes.items():
        if node.task.duration is not None:
            continue
        seconds = past.get(n)
        if _valid(seconds):
            learned[n] = float(seconds)
        elif (mean := task_mean.get(node.task.name)) is not None:
            learned[n] = mean
    return learned


def _valid(seconds: Any) -> bool:
    return isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds < float("inf")


def priority_estimates(wf: Any, critical_path: Any, learned: Mapping[str, float] | None) -> Mapping[str, float] | None:
    """What a run's critical-path priorities are computed from: ``node -> seconds`` estimates
    (empty: declared ``duration=`` only), or ``None`` for no critical-path priorities.

    ``critical_path``: the caller's (``Engine.submit``): a mapping of estimates wins; ``False``
    turns priorities off; ``True`` or ``None`` (the default) use the ``learned`` durations, and
    ``None`` turns priorities on only when some duration is known (declared or learned)."""
    if isinstance(critical_path, Mapping):
        return critical_path or None
    if critical_path is False:
        return None
    if critical_path is None and not learned and all(node.task.duration is None for node in wf.nodes.values()):
        return None
    return learned or {}
