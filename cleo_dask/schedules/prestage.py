"""Pre-staging: scheduled runs handed to the cluster ahead of their due time.

With a lookahead ``L`` (config ``cleo_dask.schedules.lookahead``), the scheduling loop decides a
firing up to ``L`` seconds before it is due and submits its run with a not-before time equal to
the due time; the Dask scheduler holds the run's root tasks (on no worker, holding no slot) until
then (:mod:`cleo_dask.admission.plugin`).  So the client's work (compiling, submitting) happens ahead of
time and in batches, and the start no longer depends on the client keeping up at the due instant.

* Decisions are batched on a grid: a firing due at ``t`` is decided at the grid point (every
  ``L / 10`` seconds) at or before ``t - L``, so every firing is handed over between ``0.9 L`` and
  ``L`` ahead, and all firings of a grid cell go out in one submission (:func:`decide_at`).
* Only firings whose decision does not depend on the state at the due time are pre-staged: a
  schedule with ``max_running`` is decided at its due time.
* A pre-staged run that has not been released yet is *withdrawn* when its schedule is paused
  or cancelled (here or by another process) or the loop closes: the scheduler plugin drops it
  atomically (a run is either withdrawn or released, never both), the run is cancelled and its
  firing recorded as skipped, with the reason (:class:`Prestaged` keeps them per schedule).
"""
from __future__ import annotations

import math
import threading
from typing import Any

#: decisions are taken on a grid of lookahead / GRID_DIVISIONS seconds (batches of firings)
GRID_DIVISIONS = 10


def decide_at(due: float, lookahead: float) -> float:
    """When the firing due at ``due`` is decided: the grid point at or before ``due - lookahead``."""
    if lookahead <= 0:
        return due
    grid = lookahead / GRID_DIVISIONS
    return math.floor((due - lookahead) / grid + 1e-6) * grid  # (1e-6: a due time on the grid stays on it)


class Prestaged:
    """Runs handed over ahead of their due time, per schedule, until that time passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, dict[float, tuple[Any, int | None]]] = {}

    def add(self, schedule_id: str, due: float, run: Any, firing_id: int | None) -> None:
        """Remember ``run``, due at ``due``, until it is due."""
        with self._lock:
            self._runs.setdefault(schedule_id, {})[due] = (run, firing_id)

    def take(self, schedule_id: str | None, now: float) -> list[tuple[str, float, Any, int | None]]:
        """Remove and return the runs of ``schedule_id`` (``None``: every schedule) not yet due at ``now``
        as ``(schedule id, due, run, firing id)``; forget those already due."""
        out = []
        with self._lock:
            sids = list(self._runs) if schedule_id is None else [schedule_id]
            for sid in sids:
                runs = self._runs.pop(sid, {})
                out += [(sid, due, run, fid) for due, (run, fid) in sorted(runs.items()) if due > now]
        return out

    def prune(self, now: float) -> None:
        """Forget the runs already due at ``now`` (called now and then by the loop)."""
        with self._lock:
            for sid in list(self._runs):
                runs = self._runs[sid]
                for due in [d for d in runs if d <= now]:
                    del runs[due]
                if not runs:
                    del self._runs[sid]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(r) for r in self._runs.values())
