"""Outcomes of spawned children fetched in bulk as they end: one ``gather`` for many children.

A parent that spawned a burst of children gets each child's outcome with its values in it (the
parent reads them on the worker's event loop, where no blocking fetch may happen).  Fetched one
child at a time, that is a ``gather`` round trip per child.  :class:`OutcomeFetcher` takes the
children as they end, and a flush (on a pool thread) fetches the values of every child ended by
then in one ``Client.gather`` before building each outcome.
"""
from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from cleo_dask.util.bursts import Bursts


class OutcomeFetcher:
    """Children waiting for their outcome: ``put(run, fill)``; ``fill(run)`` then runs on
    ``pool`` once ``run``'s values are here (fetched with those of the runs put meanwhile)."""

    def __init__(self, pool: concurrent.futures.Executor):
        self._bursts = Bursts(pool, self._fill_all)

    def put(self, run: Any, fill: Callable[[Any], None]) -> None:
        """``run`` has ended: fetch its values (with others') then call ``fill(run)``."""
        self._bursts.put((run, fill))

    @staticmethod
    def _fill_all(items: list[tuple[Any, Callable[[Any], None]]]) -> None:
        _gather_all([run for run, _ in items])
        for run, fill in items:
            fill(run)


def _gather_all(runs: list[Any]) -> None:
    """The unread values of ``runs`` in one gather per client (best effort: a run whose values
    cannot come this way fetches its own when its outcome is built)."""
    by_client: dict[int, tuple[Any, list[tuple[Any, str, Any]]]] = {}
    for run in runs:
        try:
            unread = run.unread_futures()
        except Exception:  # noqa: BLE001
            continue
        if unread:
            client = unread[0][1].client
            by_client.setdefault(id(client), (client, []))[1].extend((run, k, f) for k, f in unread)
    for client, rows in by_client.values():
        try:
            values = client.gather([f for _, _, f in rows], errors="skip")
        except Exception:  # noqa: BLE001
            continue
        if len(values) != len(rows):   # some were lost meanwhile: each run fetches its own
            continue
        per_run: dict[int, tuple[Any, dict[str, Any]]] = {}
        for (run, key, _), value in zip(rows, values):
            per_run.setdefault(id(run), (run, {}))[1][key] = value
        for run, got in per_run.values():
            run.keep_values(got)
