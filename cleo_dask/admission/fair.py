"""Fair share across runs: a big backlog must not delay a small agent's first task by its whole
backlog.

Dask orders ready tasks by ``(-user priority, submission generation, graph order)``, so a run
submitted first would run *all* its tasks before any task of a run submitted a moment later.
cleo_dask lowers each root unit's priority by a tiny rank: ``priority - rank * STEP`` where
``rank`` is the root's position among its run's roots.  The k-th root of every run then competes
with the k-th root of every other run (ties go to the earlier submission): runs interleave,
round-robin, however long ago the big run was submitted (Dask alone interleaves graphs only
within its 60-second ``fifo_timeout`` epochs, and runs older epochs first).  ``STEP`` keeps the offsets of a million-unit run below 0.001, so any difference
in user ``priority=`` of 0.001 or more still wins.  Runs that order by their critical path
(``duration=`` hints) keep that order instead.  Setting ``cleo_dask.fair-share: false`` turns
this off (plain Dask order).
"""
from __future__ import annotations

from typing import Any

from cleo_dask import config as _config

STEP = 1e-9


def fair_share(compiled: Any, wf: Any, priority: float = 0) -> None:
    """Give the root units of ``compiled`` (a fresh run of ``wf``) their fair-share priority, in place.

    Only roots are ranked: they are what a big run has ready at once (its backlog); a later
    task becomes ready only when its parents finish, and then runs at the run's ``priority``
    (Dask's own graph order among them).  This keeps the per-key table small for deep graphs.
    """
    if not _config.get("fair-share", True):
        return
    nodes = wf.nodes
    rank = 0
    for key, names in compiled.units.items():
        if not nodes[names[0]].parents:
            compiled.priority[key] = priority - rank * STEP
            rank += 1
