"""Nodes stranded by a failure: those sharing an erred Dask task with the failure's descendants.

A fused chain holds only descendants of its first node, but a batch unit
(:mod:`cleo_dask.core.batching`) holds independent nodes: when one of its nodes' parents fails
for good (or waits for a retry after a backoff), the whole batch's key errs without running, and
so does every unit depending on it.  Its other nodes, and their descendants, must then run again
with the failure's own descendants (they never ran).  :func:`stranded` finds them: a pure
function over the run's maps.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping


def stranded(names: Iterable[str], units: Mapping[str, tuple[str, ...]], location: Mapping[str, tuple[str, int]],
             known: Collection[str], descendants: Callable[[list[str]], Iterable[str]]) -> set[str]:
    """``names`` plus every node not in ``known`` still in the unit (by ``location``) of one of
    them, plus those nodes' descendants, and so on until nothing is added.  (A unit's list of
    nodes keeps those resubmitted since under new keys: they are not stranded there.)"""
    result = set(names)
    todo = list(result)
    while todo:
        new: list[str] = []
        for key in {location[n][0] for n in todo if n in location}:
            for m in units.get(key, ()):
                if m not in result and m not in known and location[m][0] == key:   # (not moved on since)
                    result.add(m)
                    new.append(m)
        if new:
            for d in descendants(new):
                if d not in result and d not in known:
                    result.add(d)
                    new.append(d)
        todo = new
    return result
