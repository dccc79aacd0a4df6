"""Launching runs: register, announce and send them, the same way for a submission and a resume.

:class:`Launcher` is the engine's one path from compiled runs to the cluster: it journals new
runs first (with ``store=``), registers each run and subscribes to its event topic, announces it
with its ``run`` event (before its graph, so the event precedes every other of the run), sends
the graphs (one ``client.get`` per priority and :data:`GRAPH_RUNS` runs), tells the listeners,
and, once a run has ended, announces that, forgets its topic and holds it weakly.  It also
builds the :class:`~cleo_dask.runs.context.RunContext` its runs get instead of the engine.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from cleo_dask.core.agent import agent_id
from cleo_dask.core.compile import Compiled
from cleo_dask.core.events import event, run_topic
from cleo_dask.runs.context import RunContext
from cleo_dask.runs.driver import Driver
from cleo_dask.runs.eventsend import EventSender
from cleo_dask.runs.metapeers import MetaPeers
from cleo_dask.runs.registry import RunRegistry
from cleo_dask.runs.run import Run, send_graph

logger = logging.getLogger("cleo_dask")
#: Engine.submit_many sends at most this many runs per graph
GRAPH_RUNS = 100


class Launcher:
    """Registers, announces and sends an engine's runs; calls its listeners on their
    ``"submitted"`` and ``"finished"``.

    ``journal()``: the engine's journal (``None`` without ``store=``), read at each launch;
    ``lock``: guards ``registry``.
    """

    def __init__(self, client: Any, driver: Driver, events: EventSender, registry: RunRegistry,
                 lock: threading.Lock, *, journal: Callable[[], Any], dashboard_link: Callable[[], str | None]):
        self.client = client
        self.events = events
        self.registry = registry
        self.lock = lock
        self.listeners: list[Callable[[str, Run], Any]] = []
        self._journal = journal
        self.context = RunContext(client, driver, events, self.run_finished, dashboard_link, journal)

    def new_run(self, workflow: Any, agent: Any, run_id: str, compiled: Compiled, **options: Any) -> Run:
        """A :class:`Run` of ``compiled`` (not sent yet); ``options``: the :class:`Run` keyword arguments."""
        return Run(self.context, workflow, agent, run_id, compiled, **options)

    def launch(self, prepared: list[tuple[Run, Compiled]], *, resumed: bool = False) -> list[Run]:
        """Announce prepared runs and send their graphs in one ``client.get`` per priority.

        With a journal, new runs are journaled first: a :class:`StoreError` then, and nothing is
        sent.  ``resumed``: the run (one) is a resume its journal already marked running again
        (its ``run`` event says so; the caller journals a failed resubmission)."""
        journal = None if resumed else self._journal()
        if journal is not None:
            journal.record([run for run, _ in prepared])
        sent: set[str] = set()
        try:
            if len(prepared) > 1:
                self.announce_many(prepared)
            else:
                for run, compiled in prepared:
                    self.announce(run, compiled, **({"resumed": True} if resumed else {}))
            by_priority: dict[float, list[tuple[Run, Compiled]]] = {}
            for run, compiled in prepared:
                by_priority.setdefault(run.priority, []).append((run, compiled))
            # graphs of at most GRAPH_RUNS runs: the scheduler handles each graph in one go on its event
            # loop, and smaller graphs let its timers (runs due now) through in between
            chunks = [(p, g[i:i + GRAPH_RUNS]) for p, g in by_priority.items() for i in range(0, len(g), GRAPH_RUNS)]
            for priority, group in chunks:
                futures = send_graph(self.client, Compiled.merge([c for _, c in group]), priority)
                sent.update(run.id for run, _ in group)
                watch = [(run, run.adopt(futures, c.keys)) for run, c in group]
                for run, c in group:
                    run.start_windows(c.keys)   # a big run: its next window once this one is mostly done
                    run.start_maps()   # mapped nodes: expanded once what they map over is done
                self.client.loop.add_callback(_await_runs, watch)  # one hop to the loop for the batch
        except BaseException as exc:
            if journal is not None:  # journaled as running, never sent: not running under this process
                journal.not_submitted([run for run, _ in prepared if run.id not in sent], exc)
            raise
        runs = [run for run, _ in prepared]
        if len(runs) > 1:   # sent together, they tend to end together: their records are collected together
            MetaPeers([run for run in runs if run.metas_peers is None])
        for run in runs:
            self.notify("submitted", run)
        return runs

    def announce(self, run: Run, compiled: Compiled, **extra: Any) -> None:
        """Register a run, follow its events and announce it (before its graph is sent);
        ``extra``: more fields of its ``run`` event (``resumed=True``)."""
        with self.lock:
            self.registry[run.id] = run
        if extra.get("resumed"):
            self.events.wait_sent()  # an earlier run of this id retires its topic first
        self.client.subscribe_topic(run_topic(run.id), run.on_event)
        run.log_event("run", **_run_fields(run, compiled), **extra)

    def announce_many(self, prepared: list[tuple[Run, Compiled]]) -> None:
        """:meth:`announce` for a batch: the ``run`` events in one call that returns once the
        scheduler has them (so they precede every other event of these runs), then the
        subscriptions in one hop to the client's loop (ahead of the graphs, on the same stream)."""
        try:
            self.client.run_on_scheduler(_log_events, [(run_topic(run.id), event("run", run.id, **_run_fields(run, c)))
                                                       for run, c in prepared])
        except Exception:  # noqa: BLE001 - cleo_dask not importable on the scheduler: one event per run
            for run, compiled in prepared:
                self.announce(run, compiled)
            return
        with self.lock:
            for run, _ in prepared:
                self.registry[run.id] = run
        client = self.client
        if not (hasattr(client, "_event_handlers") and hasattr(client, "_send_to_scheduler_safe")):
            for run, _ in prepared:
                client.subscribe_topic(run_topic(run.id), run.on_event)
            return
        msgs = []
        for run, _ in prepared:  # what Client.subscribe_topic does, without a loop hop per run
            client._event_handlers[run_topic(run.id)] = run.on_event
            msgs.append({"op": "subscribe-topic", "topic": run_topic(run.id), "client": client.id})
        client.loop.add_callback(_send_all, client, msgs)

    def notify(self, kind: str, run: Run) -> None:
        """Call every listener with ``(kind, run)``; one that raises is logged, the others still run."""
        for listener in self.listeners:
            _safe(listener, kind, run)

    def run_finished(self, run: Run) -> None:
        """The run has ended: announce it, tell the listeners, then forget what the client and the
        scheduler keep of it (its event topic) and hold it weakly (see :mod:`cleo_dask.runs.forget`)."""
        outcome = None
        try:
            outcome = run.result()  # held while the listeners read it
            run.log_event("finished", status=run.status(), counts=outcome.counts(), ended=run.ended)
        except Exception:  # noqa: BLE001
            logger.debug("finishing run %s", run.id, exc_info=True)
        run.seal_events()
        self.notify("finished", run)
        self.events.retire(run_topic(run.id))
        run.hold_outcome_weakly()
        del outcome
        self.registry.finished(run.id)


async def _await_runs(watch: list[tuple[Run, list[Any]]]) -> None:
    """On the client's loop: each run of a batch looks at itself once its sinks are done."""
    for run, sinks in watch:
        if sinks:
            asyncio.ensure_future(run.await_done(sinks))


def _send_all(client: Any, msgs: list[dict[str, Any]]) -> None:
    for msg in msgs:
        client._send_to_scheduler_safe(msg)


def _run_fields(run: Run, compiled: Compiled) -> dict[str, Any]:
    """The fields of a run's ``run`` event (see :mod:`cleo_dask.core.events`)."""
    wf, location = run.workflow, compiled.location
    # a windowed run announces its first window's nodes only (the monitor follows those): their edges
    nodes = wf.nodes.items() if len(location) >= len(wf.nodes) else ((n, wf.nodes[n]) for n in location)
    return {"agent": agent_id(run.agent), "name": run.name, "started": run.started,
            "nodes": {n: k for n, (k, _) in location.items()},
            "edges": [[p, n] for n, node in nodes for p in node.parents]}


def _log_events(events: list[tuple[str, dict[str, Any]]], dask_scheduler: Any = None) -> int:
    """On the scheduler: log many events at once."""
    for topic, msg in events:
        dask_scheduler.log_event(topic, msg)
    return len(events)


def _safe(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        logger.exception("cleo_dask listener %r failed", fn)
