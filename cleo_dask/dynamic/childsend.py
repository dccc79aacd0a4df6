"""Child runs sent in bulk, and told apart when they end, for ``cd.spawn`` from async tasks.

A parent that spawns many children in a row (``[cd.spawn(t) for _ in range(1000)]``) must not
pay one graph submission and one scheduler round trip per child.  :class:`SpawnQueue` gathers
the spawns of one process as they come and sends what has gathered in one
:meth:`Engine.submit_many` (one graph per :data:`~cleo_dask.runs.launch.GRAPH_RUNS` runs, one
announcement for all) from a thread of its own, while the parent's event loop goes on.  A child
whose own submission is bad input gets its error alone (the others are sent again one by one).

:class:`Endings` turns the engine's ``"finished"`` notice into one ``concurrent.futures.Future``
per run, so ``await child`` waits on that instead of polling the run.
"""
from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from cleo_dask.errors import WorkflowError
from cleo_dask.util.bursts import Bursts
from cleo_dask.runs.metapeers import MetaPeers


class Endings:
    """One future per run of an engine, done when that run has finished (see the module docstring)."""

    def __init__(self, engine: Any):
        self._lock = threading.Lock()
        self._waiting: dict[str, concurrent.futures.Future] = {}
        engine.add_listener(self._on_run)

    def _on_run(self, kind: str, run: Any) -> None:
        if kind != "finished":
            return
        with self._lock:
            fut = self._waiting.pop(run.id, None)
        if fut is not None and not fut.done():
            fut.set_result(run)

    def watch(self, run: Any) -> concurrent.futures.Future:
        """Follow ``run`` (just sent): a future done once it has finished.  Not on the
        client's event loop (``run.done()`` may wait for it)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._waiting[run.id] = fut
        if run.done():   # finished before we asked (its notice may have gone already)
            with self._lock:
                self._waiting.pop(run.id, None)
            if not fut.done():
                fut.set_result(run)
        return fut


class SpawnQueue:
    """Spawns waiting to be sent: ``put`` returns a future of the child's :class:`Run` at once;
    one flush (on ``pool``) sends every spawn gathered by then in one :meth:`Engine.submit_many`.

    ``engine_of(worker)``: the engine submitting a worker's children; ``before(engine, item)``:
    called first with each item (may raise: that child's error; e.g. too deep); ``after(run,
    item)``: called with each child run sent (records its parent and depth); ``after_burst(engine,
    [(run, item), ...])``: then once with every child of the burst sent."""

    def __init__(self, pool: concurrent.futures.Executor, engine_of: Callable[[Any], Any],
                 before: Callable[[Any, dict[str, Any]], None], after: Callable[[Any, dict[str, Any]], None],
                 after_burst: Callable[[Any, list[tuple[Any, dict[str, Any]]]], None] | None = None):
        self._engine_of = engine_of
        self._before = before
        self._after = after
        self._after_burst = after_burst
        self._bursts = Bursts(pool, self._send_all)

    def put(self, item: dict[str, Any]) -> concurrent.futures.Future:
        """Queue ``item`` (``worker``, ``target``, ``agent``, ``inputs``, ``options`` and what ``after``
        reads); a future of its run (or of the error its submission raised)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._bursts.put((item, fut))
        return fut

    def _send_all(self, items: list[tuple[dict[str, Any], concurrent.futures.Future]]) -> None:
        by_engine: dict[int, tuple[Any, list[tuple[dict[str, Any], concurrent.futures.Future]]]] = {}
        for item, fut in items:
            try:
                engine = self._engine_of(item["worker"])
                self._before(engine, item)
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
                continue
            by_engine.setdefault(id(engine), (engine, []))[1].append((item, fut))
        for engine, group in by_engine.values():
            self._send(engine, group)

    def _send(self, engine: Any, group: list[tuple[dict[str, Any], concurrent.futures.Future]]) -> None:
        try:
            runs = engine.submit_many([_submission(item) for item, _ in group]) if len(group) > 1 else None
            if runs:
                MetaPeers(runs)   # they tend to end together: their records are collected together
        except WorkflowError:
            runs = None   # one of them is bad input: each is sent alone, so each gets its own error
        except BaseException as exc:  # noqa: BLE001 - the cluster refused them all
            for _, fut in group:
                fut.set_exception(exc)
            return
        sent = []
        for i, (item, fut) in enumerate(group):
            try:
                run = runs[i] if runs is not None else engine.submit(item["target"], item["agent"],
                                                                     inputs=item["inputs"], **item["options"])
                self._after(run, item)
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
            else:
                sent.append((run, item, fut))
        if self._after_burst is not None and sent:
            self._after_burst(engine, [(run, item) for run, item, _ in sent])
        for run, _, fut in sent:
            fut.set_result(run)


def _submission(item: dict[str, Any]) -> dict[str, Any]:
    return {"target": item["target"], "agent": item["agent"], "inputs": item["inputs"], **item["options"]}
