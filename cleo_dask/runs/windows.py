"""A big run sent window by window, releasing what no node still needs (issue 17).

:func:`compile_run` compiles a workflow whole when it fits in one window (``cleo_dask.window.nodes``)
and nothing is left to measure (see :meth:`~cleo_dask.runs.windowplan.WindowSettings.windowed`),
else only its first window, and returns the :class:`~cleo_dask.runs.windowplan.WindowPlan` of
the rest.  :class:`RunWindows` is a part of :class:`~cleo_dask.runs.run.Run` (a mixin over its
fields) that carries the plan out on the engine's driver thread: once a window is mostly done
(``window.send-at``), the records of what finished are fetched (durations measured per task,
handed to the next window's compile), finished units no child needs any more are released
(never a sink's; ``window.keep-values: true`` keeps them all) and then forgotten on the
scheduler (:mod:`~cleo_dask.runs.schedforget`), and the next window is compiled
from its nodes, its parents read from where their outputs live (a key, or the client's record
of a failed or skipped parent), and sent.  While windows remain, the run holds one of its
``_timers``: it is not done, and its waiters wait, as for a retry waiting out its backoff.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from cleo_dask.core.batching import BatchSettings
from cleo_dask.core.critical import bottom_levels
from cleo_dask.core.compile import Compiled, child_counts, compile_workflow
from cleo_dask.core.nodeoutput import NodeOutput
from cleo_dask.core.shipping import data_node
from cleo_dask.errors import CleoError
from cleo_dask.runs.schedforget import forget_released
from cleo_dask.runs.windowplan import WindowPlan, WindowSettings, mean_by_task, releasable
from cleo_dask.util.futures import all_done, release_futures

#: why a released value cannot be read (see ``cleo_dask.window.keep-values``)
RELEASED = ("was released during its run (a windowed run releases a value once every child of its node "
            "has finished, sinks excepted); set dask config cleo_dask.window.keep-values: true to keep them")


def compile_run(wf: Any, run_id: str, agent: Any, *, past: Callable[[], Mapping[str, float]] | None = None,
                **options: Any) -> tuple[Compiled, WindowPlan | None]:
    """Compile run ``run_id`` of ``wf``: whole (plan ``None``), or its first window and the plan
    of the rest when it is bigger than ``cleo_dask.window.nodes``.  ``options``: the keyword
    arguments of :func:`compile_workflow`; ``past()``: node -> seconds its task took in earlier
    runs of this workflow (asked only for a windowed run)."""
    settings = WindowSettings.from_config()
    nodes = wf.nodes
    if not settings.windowed(len(nodes), known=False):   # small: one graph, nothing to ask
        return compile_workflow(wf, run_id, agent, **options), None
    plan = WindowPlan(list(nodes), settings, frozenset(node.task.name for node in nodes.values()), dict(options))
    plan.learn_all({node.task.name: node.task.duration for node in nodes.values() if node.task.duration is not None})
    if past is not None:
        plan.learn_all(mean_by_task(past(), lambda n: nodes[n].task.name if n in nodes else None))
    if not settings.windowed(len(nodes), known=plan.all_known() or BatchSettings.from_config().force):
        # fits in one window and nothing is left to measure: one graph, batched by what is known
        return compile_workflow(wf, run_id, agent, durations=plan.durations or None, **options), None
    # worked out once for every window, not once per window (each is linear in the whole workflow)
    critical = plan.options.get("critical_path")
    if critical is None:
        critical = plan.options["critical_path"] = any(node.task.duration is not None for node in nodes.values())
    plan.options["counts"] = child_counts(wf)
    plan.options["sinks_apart"] = True   # a unit holding a sink is never released
    names = plan.take((), plan.next_size())
    first = compile_window(wf, run_id, agent, names, plan, location={}, known={})   # (checks the options)
    if critical:   # the next windows' priorities from the whole workflow's bottom levels, worked out once
        plan.options["levels"] = bottom_levels(wf, durations=critical if isinstance(critical, Mapping) else None)
    return first, plan


def compile_window(wf: Any, run_id: str, agent: Any, names: list[str], plan: WindowPlan, *,
                   location: Mapping[str, tuple[str, int]], known: Mapping[str, NodeOutput]) -> Compiled:
    """Compile one window of ``names``: a parent sent earlier is read from its key (``location``),
    one whose outcome the client knows (failed, skipped) from that outcome, embedded as data."""
    inside = set(names)
    external: dict[str, tuple[str, int]] = {}
    data: dict[str, NodeOutput] = {}
    nodes = wf.nodes
    for n in names:
        for p in nodes[n].parents:
            if p in inside or p in external:
                continue
            if p in known:
                key = f"{p}-{run_id}-known"
                data[key] = known[p]
                external[p] = (key, -1)
            else:
                external[p] = location[p]
    compiled = compile_workflow(wf, run_id, agent, names=names, external=external,
                                durations=plan.durations or None, **plan.options)
    for key, out in data.items():
        compiled.dsk[key] = data_node(key, out)
    return compiled


class RunWindows:
    """The windows part of :class:`~cleo_dask.runs.run.Run` (see the module docstring)."""

    _windows: WindowPlan | None = None

    def use_windows(self, plan: WindowPlan | None) -> None:
        """Send this run window by window (before it is launched): it waits for the windows to come."""
        if plan is None:
            return
        with self._lock:
            self._windows = plan
            self._window_keys: list[str] = []   # sent by windows, neither measured nor released yet
            self._window_held: list[tuple[str, int]] = []   # measured, not released yet (a child still
            # runs), with the position of its last child (see _last_child)
            self._window_forget: list[str] = []   # released, to forget on the scheduler next time
            self._timers += 1

    def start_windows(self, keys: list[str]) -> None:
        """The first window was sent (its unit ``keys``): send the next when it is mostly done."""
        if self._windows is not None:
            with self._lock:
                self._arm_window(keys)

    def unsent(self) -> list[str]:
        """The nodes not sent to the cluster (yet, or ever: the run was cancelled)."""
        plan = self._windows
        return [] if plan is None else plan.order[plan.cursor:]

    def window_released(self, key: str) -> bool:
        """Whether the unit ``key`` was released during the run (its values are gone)."""
        plan = self._windows
        return plan is not None and key in plan.released

    def window_stats(self) -> dict[str, Any]:
        """A windowed run's windows: how many were sent, how many units were released, the mean
        seconds measured per task (empty for a run sent in one graph)."""
        plan = self._windows
        if plan is None:
            return {}
        with self._lock:
            return {"sent": plan.sent_windows, "released": len(plan.released), "unsent": plan.remaining,
                    "durations": plan.durations}

    def known_metas(self, keys: list[str]) -> dict[str, Any]:
        """The records of ``keys`` the client has fetched already (a released unit's are only here)."""
        with self._lock:
            return {k: self._unit_meta(k) for k in keys if k in self._metas and k in self._units}

    def _unit_meta(self, key: str) -> Any:
        """Unit ``key``'s record as ``collect_meta`` gives it: one meta tuple, or one per node."""
        names = self._units[key]
        metas = tuple(self._metas.meta(n) for n in names)
        return metas[0] if len(names) == 1 else metas

    def _arm_window(self, keys: list[str]) -> None:
        self._window_keys.extend(keys)
        futs = [self._futures[k] for k in keys if k in self._futures]
        # the last window: once all done, what it holds that no child needs is released too
        at = self._windows.settings.send_at if self._windows.remaining else 1.0
        part = futs[:max(1, math.ceil(len(futs) * at))]
        self._client.loop.add_callback(self._await_window, part)

    async def _await_window(self, futures: list[Any]) -> None:
        await all_done(futures)
        self._soon(self._next_window)

    def _next_window(self) -> None:
        """On the driver: measure and release what finished, then send the next window."""
        plan = self._windows
        if plan is None:
            return
        self._fetch_metas()   # the records of what finished: durations, and the outcome of what is released
        with self._lock:
            self._measure_and_release(plan)
            if not plan.held:
                return
            if self._cancelled or self._lost is not None or self._finished_event_sent:
                self._stop_windows(plan)
                return
            names: list[str] = []
            while plan.remaining and not names:
                names = plan.take(self._known, plan.next_size())
            if names:
                compiled = compile_window(self.workflow, self.id, self.agent, names, plan,
                                          location=self._location, known=self._known)
                self._units.update(compiled.units)
                self._location.update(compiled.location)
                self.log_event("keys", nodes={n: compiled.location[n][0] for n in names})
                self._submit(compiled)
                self._arm_window(compiled.keys)
            if not plan.remaining:
                self._stop_windows(plan)
            self._changed.notify_all()

    def _measure_and_release(self, plan: WindowPlan) -> None:
        """Learn the durations of units finished since last time; release those no child needs."""
        nodes, waiting = self.workflow.nodes, []
        for key in self._window_keys:
            fut = self._futures.get(key)
            if fut is None:
                continue  # replaced by the slow path: its new keys are never released here
            if fut.status != "finished":
                waiting.append(key)
                continue
            names = self._units[key]
            for n in (names if key in self._metas else ()):
                task = nodes[n].task.name
                if plan.enough(task):
                    continue
                m = self._metas.meta(n)
                if m[0] == "succeeded" and m[1] is not None and m[2] is not None:
                    plan.learn(task, m[2] - m[1])
            self._window_held.append((key, self._last_child(names)))
        self._window_keys = waiting
        if plan.keeps_values:
            self._window_held = []
            return
        held, gone = [], []
        done = self._finished_by_key()
        for key, last in self._window_held:
            # a unit a child of which is not sent yet (or a sink's: never) is not looked at again
            if last < plan.cursor and key in self._metas and releasable(self._units[key], self._children, done):
                gone.append(key)
            else:
                held.append((key, last))
        self._window_held = held
        # released last time (the scheduler has taken that release by now): forget their tasks there
        forget, self._window_forget = self._window_forget, gone
        if forget:
            self._client.loop.add_callback(forget_released, self._client, forget)
        if gone:
            release_futures(self._client, [self._futures.pop(k) for k in gone])
            for k in gone:
                self._released[k] = ("finished", None)
                plan.released.add(k)
            self._scan, self._scan_pos = None, 0

    def _last_child(self, names: tuple[str, ...] | list[str]) -> int:
        """The position in the workflow's order of the last child of ``names`` outside them (past
        the end when one of them is a sink: such a unit is never released)."""
        index, children, last = self._metas.index, self._children, -1
        for n in names:
            kids = children[n]
            if not kids:
                return len(index)
            for c in kids:
                i = index[c]
                if i > last:
                    last = i
        return last

    def _finished_by_key(self) -> Callable[[str], bool]:
        """:meth:`_finished`, asked once per unit: a batch's children share a few keys."""
        known, location, by_key = self._known, self._location, {}

        def done(node: str) -> bool:
            if node in known:
                return True
            loc = location.get(node)
            if loc is None:
                return False
            d = by_key.get(loc[0])
            if d is None:
                d = by_key[loc[0]] = self._finished(node)
            return d
        return done

    def _finished(self, node: str) -> bool:
        if node in self._known:
            return True
        loc = self._location.get(node)
        if loc is None:
            return False
        fut = self._futures.get(loc[0])
        return fut.status == "finished" if fut is not None else self.window_released(loc[0])

    def _stop_windows(self, plan: WindowPlan) -> None:
        """No window is left to send (or the run ends): the run stops waiting for windows."""
        if plan.held:
            plan.held = False
            self._timers = max(0, self._timers - 1)
            self._changed.notify_all()
            self._soon(self._maybe_finished)


def released_error(run_id: str, nodes: str) -> CleoError:
    """The error reading the value of a unit released during its run raises."""
    return CleoError(f"run {run_id}: the value of {nodes} {RELEASED}")
