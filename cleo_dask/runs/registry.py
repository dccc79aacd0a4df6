"""The engine's runs by id: held strongly while they run, weakly once finished."""
from __future__ import annotations

import weakref
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cleo_dask.runs.run import Run


class RunRegistry(MutableMapping):
    """The engine's runs by id: held strongly while they run, weakly once finished.

    A running run must stay referenced (dropping its futures would cancel its tasks, and
    ``engine.submit(...)`` without keeping the result is a normal way to fire and forget); a
    finished one is kept only as long as the user holds it, so a long-lived engine (a
    ``cleo-dask serve``) does not pin every result it ever produced in the cluster's memory.
    """

    def __init__(self) -> None:
        self._running: dict[str, Run] = {}
        self._done: weakref.WeakValueDictionary[str, Run] = weakref.WeakValueDictionary()

    def finished(self, run_id: str) -> None:
        """Keep ``run_id`` only weakly from now on."""
        run = self._running.pop(run_id, None)
        if run is not None:
            self._done[run_id] = run

    def hold_all_weakly(self) -> None:
        """Hold every run weakly (the engine is closing: only runs referenced elsewhere stay)."""
        self._done.update(self._running)
        self._running.clear()

    def alive(self) -> list[Run]:
        """Every run still in memory."""
        return list(self._running.values()) + list(self._done.values())

    def __getitem__(self, run_id: str) -> Run:
        run = self._running.get(run_id)
        return run if run is not None else self._done[run_id]

    def __setitem__(self, run_id: str, run: Run) -> None:
        self._done.pop(run_id, None)
        self._running[run_id] = run

    def __delitem__(self, run_id: str) -> None:
        if self._running.pop(run_id, None) is None:
            del self._done[run_id]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._running) + [k for k in list(self._done) if k not in self._running])

    def __len__(self) -> int:
        return len(self._running) + len(self._done)
