"""Critical-path priorities: each node's bottom level, the longest path (by estimated duration) to a sink."""
from __future__ import annotations

from collections.abc import Mapping

from cleo_dask.core.workflow import Workflow


def bottom_levels(wf: Workflow, default_duration: float | None = None,
                  durations: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each node's bottom level: the longest path (by estimated duration) from it to a sink.

    A node's duration is ``durations[node]`` (estimates, e.g. from an earlier run), else its
    task's ``duration=``, else ``default_duration`` (default: the mean of the known ones, or 1).
    """
    given = durations or {}
    own = {n: given.get(n, node.task.duration) for n, node in wf.nodes.items()}
    if default_duration is None:
        known = [d for d in own.values() if d is not None]
        default_duration = sum(known) / len(known) if known else 1.0
    level: dict[str, float] = {}
    below: dict[str, float] = {}   # node -> the highest level among its children seen so far
    nodes = wf.nodes
    for n in reversed(nodes):      # children before parents: push each level up to the parents
        d = own[n]
        lv = level[n] = (default_duration if d is None else d) + below.get(n, 0.0)
        for p in nodes[n].parents:
            if p not in below or lv > below[p]:
                below[p] = lv
    return level
