"""Fair share across runs: a big backlog must not delay a small agent's first task by its whole
backlog.

Dask orders ready tasks by ``(-user priority, submission generation, graph order)``, so a run
submitted first would run *all* its tasks before any task of a run submitted a moment later.
cleo_dask lowers each unit's priority by a tiny rank: ``priority - rank * STEP`` where ``rank``
is the unit's position in its run (topological order).  The k-th task of every run then competes
with the k-th task of every other run (ties go to the earlier submission): runs interleave,
round-robin.  ``STEP`` keeps the offsets of a million-unit run below 0.001, so any difference
in user ``priority=`` of 0.001 or more still wins.  Runs that order by their critical path
(``duration=`` hints) keep that order instead.  Setting ``cleo_dask.fair-share: false`` turns
this off (plain Dask order).
"""
from __future__ import annotations

from typing import Any

from . import _config

STEP = 1e-9


def fair_share(compiled: Any, priority: float = 0) -> None:
    """Give every unit of ``compiled`` (a fresh run) its fair-share priority, in place."""
    if not _config.get("fair-share", True):
        return
    for rank, key in enumerate(compiled.units):
        compiled.priority[key] = priority - rank * STEP
