"""The end of a run: what it keeps of itself so the cluster and the client can forget the rest.

:class:`RunEnd` is a part of :class:`~cleo_dask.runs.run.Run` (a mixin over its fields):

* the outcome cache, held weakly once the engine has seen the run end (an outcome references
  its run for values read later, so a strong cache would make every finished run a reference
  cycle whose futures, and the cluster's results, wait for a garbage collection);
* the run's events, copied once it ended (:meth:`RunEnd.events`): its topic can then be retired
  on the scheduler (:mod:`cleo_dask.runs.forget`);
* what the engine's close keeps (:mod:`cleo_dask.runs.keep`): the values fetched for the run, the
  outcome and status (:meth:`RunEnd.detach`).
"""
from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from distributed import Future

from cleo_dask.core.events import run_topic
from cleo_dask.util.futures import release_futures


class RunEnd:
    """The end-of-run part of :class:`~cleo_dask.runs.run.Run` (see the module docstring)."""

    def _init_end(self) -> None:
        # the outcome, cached while nothing changes: weakly once the engine saw the run end
        self._outcome: tuple[tuple, Any] | None = None
        self._outcome_weak = False
        self._event_log: tuple | None = None   # the topic's events, kept once the run ended (sealed)
        self._sealed = False
        self._detached: Any = None   # a _keep.Detached once the engine closed
        self._unkept: set[str] = set()   # keys whose value was not kept at close
        # set by the run's subscription when an event other than an announcement arrives; a run
        # with ``topic_unread_if_quiet`` (cd.spawn's children) then skips reading its topic back
        # when it ends with nothing noted (one round trip less per small run)
        self.events_noted = False
        self.topic_unread_if_quiet = False

    # -- the outcome cache ------------------------------------------------------------------------
    def _state(self) -> tuple:
        return (self._gen, len(self._known), len(self._handled), self._cancelled, self._timers)

    def cached_outcome(self, state: tuple | None = None) -> Any:
        """The cached outcome (of ``state``, default the current one), if still there."""
        with self._lock:
            cached = self._outcome
            if cached is None or cached[0] != (self._state() if state is None else state):
                return None
            return cached[1]() if isinstance(cached[1], weakref.ref) else cached[1]

    def _cache_outcome(self, state: tuple, outcome: Any) -> None:
        self._outcome = (state, weakref.ref(outcome) if self._outcome_weak else outcome)

    def hold_outcome_weakly(self) -> None:
        """From now on cache the outcome weakly (the engine has used it: the run has ended)."""
        with self._lock:
            self._outcome_weak = True
            if self._outcome is not None and not isinstance(self._outcome[1], weakref.ref):
                self._outcome = (self._outcome[0], weakref.ref(self._outcome[1]))

    # -- events and the engine closing ------------------------------------------------------------
    def events(self) -> tuple:
        """The events of this run's topic (see :mod:`cleo_dask.core.events`): from the scheduler
        while the run goes on, from the run's own copy once it has ended."""
        with self._lock:
            if self._sealed:
                return self._event_log or ()
        try:
            return tuple(self._client.get_events(run_topic(self.id)))
        except Exception:  # noqa: BLE001
            return ()

    def seal_events(self) -> None:
        """Keep a copy of the topic's events (announcements left out); the topic may then go."""
        with self._lock:
            if self._sealed:
                return
            events = self._event_log if self._event_log is not None else self.events()
            self._event_log = tuple(e for e in events
                                    if not (isinstance(e[1], dict) and e[1].get("kind") in ("run", "keys")))
            self._sealed = True

    def unread_futures(self) -> list[tuple[str, Future]]:
        """The finished futures whose value this client has not fetched (nor knows otherwise)."""
        with self._lock:
            known = self._known
            return [(k, f) for k, f in self._futures.items()
                    if f.status == "finished" and k not in self._outputs
                    and not all(n in known for n in self._units.get(k, ()))]

    def keep_values(self, values: Mapping[str, Any]) -> None:
        """Values of this run's keys fetched by someone else (one gather for many runs)."""
        with self._lock:
            self._outputs.update(values)

    def unkept_nodes(self) -> list[str]:
        """Nodes whose value was not kept when the engine closed."""
        return [n for n, (k, _) in self._location.items() if k in self._unkept and n not in self._known]

    def detach(self, values: Mapping[str, Any], detached: Any) -> None:
        """The engine is closing: keep ``values`` (by key) and ``detached`` (the outcome, the
        status), then let the cluster forget the run."""
        with self._lock:
            unread = {k for k, _ in self.unread_futures()}
            for k in unread & values.keys():
                self._outputs[k] = values[k]
            self._unkept = unread - values.keys()
            self._detached = detached
            self._drop_retired()
            release_futures(self._client, list(self._futures.values()))
            self._futures = {}
