"""A run's futures: sending its graph, adopting the futures, watching its sinks, its events.

:class:`RunWatch` is a part of :class:`~cleo_dask.runs.run.Run` (a mixin over its fields): the
fast path.  Once every watched sink is done, or a worker reports a failed attempt whose future
then errs, the run is looked at again on the engine's driver thread (the slow path,
:mod:`cleo_dask.runs.slowpath`; the end, :mod:`cleo_dask.runs.waiting`).
"""
from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Mapping
from typing import Any

from distributed import Future

from cleo_dask.admission import estimates as _estimates
from cleo_dask.runs.queueing import queue_units
from cleo_dask.admission import plugin as _admission
from cleo_dask.core.compile import Compiled
from cleo_dask.core.events import event, run_topic
from cleo_dask.monitor import logs as _logs
from cleo_dask.core.outcome import NodeRecord
from cleo_dask.runs.assemble import add_attempt, attempt_of
from cleo_dask.runs.batchevents import is_batch_outcome
from cleo_dask.util.futures import all_done as _all_done
from cleo_dask.util.gcpause import gc_paused

logger = logging.getLogger("cleo_dask")


def send_graph(client: Any, compiled: Compiled, priority: float) -> dict[str, Future]:
    """Send a compiled graph (one run's, or several runs' merged) in one ``client.get``: the
    admission plugin installed first if it needs it, the scheduler given the known durations;
    the futures by key."""
    if compiled.admission or compiled.held:  # limits, not_before, held retries: a scheduler plugin's
        _admission.ensure_installed(client)
    _estimates.seed(client, compiled.durations)
    queue_units(client, compiled)   # a queuing scheduler hands every unit to free slots by priority
    keys = compiled.keys
    # the graph is pickled here: a few objects per node, none of them garbage, yet each full
    # collection meanwhile walks the whole process (most of the client's GC time at 100k nodes)
    with gc_paused():
        return dict(zip(keys, client.get(compiled.graph(), keys, sync=False, priority=priority)))


class RunWatch:
    """The futures part of :class:`~cleo_dask.runs.run.Run` (see the module docstring)."""

    def _submit(self, compiled: Compiled) -> None:
        """Send a (re)compiled part of this run and watch its sinks."""
        self._watch(self.adopt(send_graph(self._client, compiled, self.priority), compiled.keys))

    def adopt(self, futures: Mapping[str, Future], keys: Iterable[str]) -> list[Future]:
        """Take the futures of ``keys`` (from this run's submission, or one made for many runs at
        once); return those of its sinks, to watch: the driver looks at the run once they are all
        done (one waiter on the client's loop per batch, not a callback and a thread hop per sink;
        failures are acted on earlier, from the workers' ``attempt`` events)."""
        keys = list(keys)
        with self._lock:
            for key in keys:
                self._futures[key] = futures[key]
            self._scan, self._scan_pos = None, 0
            return [self._futures[k] for k in keys if not self._children[self._units[k][-1]]]

    def _watch_sinks(self, keys: list[str]) -> None:
        """Watch the futures of those of ``keys`` that are sinks (after a retry replaced them)."""
        self._watch([self._futures[k] for k in keys if not self._children[self._units[k][-1]]])

    def root_keys(self) -> list[str]:
        """The Dask keys of the units the run starts with (those a not-before time holds)."""
        nodes = self.workflow.nodes
        return [k for k, names in self._units.items() if not nodes[names[0]].parents]

    def watch_keys(self, keys: Iterable[str]) -> None:
        """Look at the run once the futures of ``keys`` are done (e.g. a resume's loaders of kept nodes)."""
        with self._lock:
            self._watch([self._futures[k] for k in keys if k in self._futures])

    def finished_units(self, seen: Container[str] = ()) -> dict[str, tuple[str, ...]]:
        """The units whose futures have finished, but those in ``seen``: key -> node names (the journal's poller)."""
        with self._lock:
            found = {k: self._units[k] for k, f in self._futures.items()
                     if f.status == "finished" and k not in seen and k in self._units}
            found.update((k, self._units[k]) for k, (st, _) in self._released.items()   # released by windows
                         if st == "finished" and k not in seen and k in self._units)
            return found

    def _watch(self, futures: list[Future]) -> None:
        """Look at the run on the driver once all ``futures`` are done (erred ones are handled)."""
        if futures:
            self._client.loop.add_callback(self.await_done, futures)

    async def await_done(self, futures: list[Future]) -> None:
        await _all_done(futures)
        for f in futures:
            if f.status == "error":
                self._soon(self._handle_erred_safely, f.key)
        self._soon(self._maybe_finished)

    def on_event(self, item: tuple[float, dict[str, Any]]) -> None:
        """Events of this run's topic (called on the client's event loop: keep it short)."""
        msg = item[1]
        if not (isinstance(msg, dict) and msg.get("kind") in ("run", "keys", "finished")):
            self.events_noted = True   # something beyond announcements: its outcome reads the topic
        if isinstance(msg, dict) and msg.get("kind") == "attempt" and msg.get("mode", "task") == "task":
            # a worker cannot tell which attempt it runs (Dask's and Client.retry rerun the same
            # task): the client counts them
            n = self._attempts_seen.get(msg.get("node"), 0) + 1
            self._attempts_seen[msg.get("node")] = n
            msg = {**msg, "attempt": n}
        _logs.on_event(self, msg)  # structured log record of a failed attempt (monitoring)
        if is_batch_outcome(msg):
            self._note_batch_outcome(msg)
            return
        if isinstance(msg, dict) and msg.get("kind") == "attempt":
            # kept as it comes: the scheduler keeps only the last events of a topic
            # (distributed.admin.low-level-log-length), a big run's early ones are gone at its end
            if msg.get("node") in self._children:
                add_attempt(self._records.setdefault(msg["node"], NodeRecord()), attempt_of(msg))
            fut = self._futures.get(msg.get("key"))
            if fut is not None:
                fut.add_done_callback(self._on_attempt_done)

    def _on_attempt_done(self, fut: Future) -> None:
        if fut.status == "error":
            self._soon(self._handle_erred_safely, fut.key)

    def _cancel_rest(self, keep: str | None = None) -> None:
        """Cancel every pending future of the run (retries waiting are dropped when they fire) but
        that of ``keep`` (a batch whose node failed: its siblings' outcomes are on their way)."""
        self._cancelled = True
        pending = [f for k, f in self._futures.items() if f.status == "pending" and k != keep]
        if pending:
            self._client.cancel(pending)
        self._changed.notify_all()
        self._soon(self._maybe_finished)
        if self._windows is not None:
            self._soon(self._next_window)   # it sends no more windows

    def log_event(self, kind: str, **fields: Any) -> None:
        """Publish an event of this run, in order, without waiting (the monitor plugin replays
        transitions of keys that arrive before the events announcing them)."""
        if self._sealed:
            return  # the topic is retired: an event now would only make the scheduler keep it again
        try:
            self._context.events.send(run_topic(self.id), event(kind, self.id, **fields))
        except Exception:  # noqa: BLE001 - monitoring must never break a run
            logger.debug("could not log event %s", kind, exc_info=True)
