"""Nodes added to a running run: mapped nodes expanded at run time (issue 19).

:func:`compile_mapped` compiles a workflow with mapped nodes (:mod:`cleo_dask.core.mapping`) for
a run: everything but the mapped nodes and what depends on them, which are *held* (not sent).
:class:`RunExpand` is the part of :class:`~cleo_dask.runs.run.Run` that carries the maps out on
the engine's driver thread: once the node a map is over has succeeded, a small Dask task
measures its result (on the worker holding it: the value never travels), the run's own copy of
the workflow gets the items and the gather (:meth:`Workflow.expand`), and every held node whose
parents are all sent or known goes out with :meth:`RunExpand.send_nodes`.  A parent that failed
or was skipped leaves the map node to the trigger rules (the slow path decided them already);
one that cannot be mapped over fails the map node with a :class:`MapError`.

Nothing waits on a worker: the run holds one of its ``_timers`` while nodes are held (it is not
done), like a windowed run.  The interface for other run-time nodes is small:

* ``add_held(names)`` — hold nodes of ``self.workflow`` (added to it) until ``release_held``;
* ``send_nodes(names)`` — compile and send nodes of ``self.workflow`` whose parents are sent or known.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cleo_dask.core.compile import Compiled, compile_workflow
from cleo_dask.core.mapping import GATHER, ItemNode, MapNode, expansion, map_length, max_length
from cleo_dask.core.outcome import NodeRecord
from cleo_dask.core.shipping import data_node
from cleo_dask.core.worker import SKIPPED, UPSTREAM_FAILED, failure_output, skipped_output


def has_maps(wf: Any) -> bool:
    """Whether ``wf`` has a mapped node."""
    return any(type(n) is MapNode for n in wf.nodes.values())


def held_nodes(wf: Any) -> list[str]:
    """The mapped nodes of ``wf`` and everything downstream of them, in topological order."""
    maps = [n for n, node in wf.nodes.items() if type(node) is MapNode]
    below = set(maps) | set(wf.descendants(maps))
    return [n for n in wf.nodes if n in below]


def compile_mapped(wf: Any, run_id: str, agent: Any, **options: Any) -> tuple[Any, Compiled, list[str]]:
    """A run's own copy of ``wf``, its first graph (the nodes not held) and the held nodes;
    ``options``: the keyword arguments of :func:`compile_workflow`."""
    run_wf = wf.copy()
    held = held_nodes(run_wf)
    out = set(held)
    names = [n for n in run_wf.nodes if n not in out]
    return run_wf, compile_workflow(run_wf, run_id, agent, names=names, **options), held


def resume_held(wf: Any, again: list[str]) -> tuple[Any, list[str], list[str]]:
    """For a resume: the run's copy of ``wf``, the nodes of ``again`` to hold (mapped nodes and
    what is below them: expanded again once what they map over is there) and the rest of ``again``."""
    if not has_maps(wf):
        return wf, [], again
    wf = wf.copy()
    below = set(held_nodes(wf))
    return wf, [n for n in again if n in below], [n for n in again if n not in below]


class RunExpand:
    """The run-time nodes part of :class:`~cleo_dask.runs.run.Run` (see the module docstring)."""

    _held: list[str] = []
    _armed: set[str] = set()
    #: a resumed durable run: ``names -> {name: (key, Dask task loading its stored output)}``
    stored_loader: Any = None

    def add_held(self, names: Iterable[str]) -> None:
        """Hold nodes of ``self.workflow`` (not sent yet): the run is not done until they are
        released (:meth:`release_held`) or sent (:meth:`send_nodes`)."""
        with self._lock:
            names = [n for n in names if n not in self._held]
            if not names:
                return
            if not self._held:
                self._timers += 1
                self._held, self._armed = [], set()
            self._held = self._held + names

    def start_maps(self) -> None:
        """The run's first graph was sent: wait for the nodes the held maps are over."""
        with self._lock:
            self._arm_maps()

    def map_children(self, name: str) -> tuple[str, ...]:
        """The items of mapped node ``name``, in order (``()``: not a mapped node, or not expanded)."""
        node = self.workflow.nodes.get(name)
        return node.parents if node is not None and node.task is GATHER and type(node) is not MapNode else ()

    def held(self) -> list[str]:
        """The nodes not sent yet (waiting for a map's expansion)."""
        return list(self._held)

    def send_nodes(self, names: list[str]) -> None:
        """Compile ``names`` (nodes of ``self.workflow``, topologically ordered, their parents sent
        or known) and send them; parents known on the client travel as data."""
        wf = self.workflow
        self._metas.grow([n for n in names if n not in self._metas.index])
        self._children = wf.children()
        inside, external, data = set(names), {}, {}
        for n in names:
            for p in wf.nodes[n].parents:
                if p in inside or p in external:
                    continue
                if p in self._known:
                    key = f"{p}-{self.id}-known-{self._gen}"
                    data[key] = self._known[p]
                    external[p] = (key, -1)
                else:
                    external[p] = self._location[p]
        inputs = getattr(self, "inputs", None)
        compiled = compile_workflow(wf, self.id, self.agent, defaults=self._defaults, priority=self.priority,
                                    names=names, external=external, inputs=inputs or None,
                                    fail_fast=self.fail_fast, critical_path=False)
        for key, out in data.items():
            compiled.dsk[key] = data_node(key, out)
        self._units.update(compiled.units)
        self._location.update(compiled.location)
        made = [n for n in names if isinstance(wf.nodes[n], ItemNode) or self.map_children(n)]   # new to monitors
        self.log_event("keys", nodes={n: compiled.location[n][0] for n in names}, edges=[
            [p, n] for n in made for p in wf.nodes[n].parents])
        self._submit(compiled)

    def release_held(self) -> None:
        """Send every held node that can go now (not a map waiting for its expansion, parents sent
        or known); what is known already is not sent.  The run stops waiting once none is held."""
        nodes, still, ready, known = self.workflow.nodes, [], [], self._known
        waiting: set[str] = set()
        for n in self._held:
            node = nodes[n]
            if n in known:
                continue
            if type(node) is MapNode or any(p in waiting for p in node.parents):
                still.append(n)
                waiting.add(n)
            else:
                ready.append(n)
        self._held = still
        if ready and not (self._cancelled or self._lost is not None):
            self.send_nodes(ready)
        if not self._held:
            self._timers = max(0, self._timers - 1)
            self._soon(self._maybe_finished)
        else:
            self._arm_maps()
        self._changed.notify_all()

    # -- maps ---------------------------------------------------------------------------------
    def _arm_maps(self) -> None:
        nodes = self.workflow.nodes
        for n in self._held:
            node = nodes[n]
            if type(node) is MapNode and n not in self._armed and node.over in self._location:
                self._armed.add(n)
                self._check_map(n)

    def _check_map(self, name: str) -> None:
        """On the driver: act on map ``name`` if the node it is over has its final state, else wait."""
        with self._lock:
            if name not in self._held:
                return
            if self._cancelled or self._lost is not None:
                self._held = []
                self._timers = max(0, self._timers - 1)
                self._soon(self._maybe_finished)
                return
            node = self.workflow.nodes[name]
            if node.over in self._known or name in self._known:   # failed or skipped: the trigger rules
                self.release_held()
                return
            key, idx = self._location[node.over]
            fut = self._futures.get(key)
            if fut is None or fut.status == "error":   # the slow path decides: look again soon
                self._later(0.05, self._check_map, name)
                return
            if fut.status == "finished":
                size = self._client.submit(map_length, fut, idx, name, node.over, max_length(),
                                           key=f"map-length-{self.id}-{name}-{key}", pure=False)
                self._client.loop.add_callback(self._await_then, size, self._expand_map, name, size)
                return
            self._client.loop.add_callback(self._await_then, fut, self._check_map, name)

    async def _await_then(self, fut: Any, fn: Any, *args: Any) -> None:
        if not fut.done():
            await fut._state.wait()
        self._soon(fn, *args)

    def _expand_map(self, name: str, size: Any) -> None:
        """On the driver: ``size`` (a future of :func:`map_length`) is done: expand map ``name``."""
        try:
            length, error, status, reason = size.result()
        except Exception as exc:  # noqa: BLE001 - e.g. the worker holding the parent was lost
            length, error, status, reason = -1, exc, "failed", None
        with self._lock:
            if name not in self._held:
                return
            node = self.workflow.nodes[name]
            if error is None and length < 0:   # the parent did not succeed: the map node does not run
                status = SKIPPED if status == SKIPPED else UPSTREAM_FAILED
                why = f"{node.over!r} was {status.replace('_', ' ')}" + (f" ({reason})" if reason else "")
                self._known[name] = skipped_output(why, status=status)
                self.log_event("skipped", node=name, key="", reason=why, status=status)
                self._propagate_failure(name)
            elif error is not None:
                record = self._records.setdefault(name, NodeRecord())
                record.error, record.traceback = error, f"{type(error).__name__}: {error}"
                self._known[name] = failure_output(name, error, record.traceback)
                self.log_event("outcome", node=name, status="failed", error=repr(error)[:500])
                self._propagate_failure(name)
            else:
                items, gather = expansion(node, length)
                self.workflow.expand(name, items, gather)
                self._children = self.workflow.children()
                stored = self._load_stored([i.name for i in items])
                at = self._held.index(name)
                self._held[at:at] = [i.name for i in items if i.name not in stored]
            self.release_held()

    def _load_stored(self, names: list[str]) -> set[str]:
        """A resumed run: send loaders for those of ``names`` finished before (not run again)."""
        if self.stored_loader is None:
            return set()
        loaders = self.stored_loader(names)
        if not loaders:
            return set()
        self._metas.grow([n for n in loaders if n not in self._metas.index])
        compiled = Compiled({key: task for key, task in loaders.values()},
                            {key: (n,) for n, (key, _) in loaders.items()},
                            {n: (key, -1) for n, (key, _) in loaders.items()})
        self._units.update(compiled.units)
        self._location.update(compiled.location)
        self.log_event("keys", nodes={n: key for n, (key, _) in loaders.items()})
        self._submit(compiled)
        return set(loaders)
